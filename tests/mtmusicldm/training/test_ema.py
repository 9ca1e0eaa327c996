"""EMA: the official decay warm-up and the in-place update."""
import pytest
import torch
from torch import nn

from mtmusicldm.training.ema import ema_decay_at, ema_update


def test_decay_rule():
    assert ema_decay_at(0, 0.9999) == pytest.approx(0.1)
    assert ema_decay_at(1, 0.9999) == pytest.approx(2 / 11)  # LitEma's first update
    assert ema_decay_at(90, 0.9999) == pytest.approx(0.91)
    assert ema_decay_at(10**6, 0.9999) == 0.9999  # capped
    assert ema_decay_at(100, 0.5) == 0.5
    with pytest.raises(ValueError):
        ema_decay_at(-1, 0.9)


def test_update_in_place():
    torch.manual_seed(0)
    model, ema = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)), nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    model[1].running_mean.fill_(5.0)
    before = ema[0].weight.clone()
    ema_update(ema, model, 0.9)
    torch.testing.assert_close(ema[0].weight, 0.9 * before + 0.1 * model[0].weight, rtol=0, atol=1e-7)
    assert torch.equal(ema[1].running_mean, model[1].running_mean)  # buffers are copied
    assert not ema[0].weight.requires_grad or ema[0].weight.grad is None
    ema_update(ema, model, 0.0)
    assert torch.equal(ema[0].weight, model[0].weight)
    with pytest.raises(ValueError, match="differ"):
        ema_update(nn.Linear(3, 2), model, 0.5)
