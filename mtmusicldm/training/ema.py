"""Exponential moving average of the UNet weights (official `LitEma`, updated in the k-diffusion style)."""
from __future__ import annotations

import torch
from torch import nn


def ema_decay_at(num_updates: int, max_decay: float) -> float:
    """Official EMA warm-up: `min(max_decay, (1 + n) / (10 + n))`.

    Args:
        num_updates: EMA updates done *including* the one being applied (LitEma increments its counter first,
            so the first update uses n = 1, i.e. 2/11).
        max_decay: the cap (official 0.9999).
    """
    if num_updates < 0:
        raise ValueError(f"num_updates must be >= 0, got {num_updates}")
    return min(max_decay, (1.0 + num_updates) / (10.0 + num_updates))


@torch.no_grad()
def ema_update(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """In place `ema = decay * ema + (1 - decay) * param` for every parameter; buffers are copied.

    Args:
        ema_model: the averaged copy (same architecture as `model`).
        model: the trained model (unwrapped from DDP).
        decay: in [0, 1]; 0 copies `model`.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    model_params = dict(model.named_parameters())
    ema_params = dict(ema_model.named_parameters())
    if model_params.keys() != ema_params.keys():
        diff = sorted(model_params.keys() ^ ema_params.keys())
        raise ValueError(f"EMA and model parameters differ: {diff[:10]}")
    for name, param in model_params.items():
        ema_params[name].mul_(decay).add_(param.detach().to(ema_params[name].dtype), alpha=1.0 - decay)
    model_buffers = dict(model.named_buffers())
    for name, buf in ema_model.named_buffers():
        buf.copy_(model_buffers[name])
