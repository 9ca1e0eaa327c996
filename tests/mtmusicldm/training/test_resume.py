"""Exact resume through Accelerate's state (weights, EMA, optimizer, schedule and RNG states), the warm-up schedule
against the official formula, and the refusals on top of Accelerate."""
import csv
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from diffusers.optimization import get_constant_schedule_with_warmup
from safetensors.torch import load_file

from mtmusicldm.training import loop
from mtmusicldm.training.checkpoint import CheckpointError, list_checkpoints
from test_loop import (  # tests/mtmusicldm/training is on sys.path
    COND,
    DIFFUSION,
    MODEL,
    TRAIN,
    _quiet_single_thread,  # noqa: F401 - its autouse fixture applies here too
    make_latents,
    run_train,
)

STATE_FILES = ("model.safetensors", "ema.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl")


def official_lr(lr: float, step: int, warmup_steps: int) -> float:
    """The official rule: `lr * min(1, step / warmup_steps)`, step = optimizer steps already done."""
    return lr if warmup_steps <= 0 else lr * min(1.0, step / warmup_steps)


def new_process(k: int) -> None:
    """Give the process-wide RNGs other states, as a fresh process has (torch seeds itself randomly here)."""
    random.seed(k)
    np.random.seed(k)
    torch.manual_seed(1000 + k)


@pytest.fixture
def global_rng_in_the_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """Like a dropout layer: the loss draws from the process-wide python, numpy and torch RNGs, so the weights
    depend on their states (the loop itself draws only from explicit generators)."""
    real = loop.diffusion_loss

    def loss(*args: object, **kwargs: object) -> torch.Tensor:
        jitter = torch.rand(()) + np.random.rand() + random.random()
        return real(*args, **kwargs) * (1 + 1e-3 * jitter)

    monkeypatch.setattr(loop, "diffusion_loss", loss)


def _load(path: Path) -> object:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, weights_only=False)


def _equal(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _lrs(loss_csv: Path) -> list[str]:
    with open(loss_csv, newline="") as f:
        return [r["lr"] for r in csv.DictReader(f)]


def _logged(*lrs: float) -> list[str]:
    """As loss.csv writes them."""
    return [f"{lr:.6g}" for lr in lrs]


@pytest.mark.parametrize("warmup", [0, 1, 3, 7])
def test_library_warmup_schedule_is_the_official_rule(warmup: int) -> None:
    """diffusers' constant-with-warm-up schedule, prepared by Accelerate: the lr of step s is the official
    `lr * min(1, s / warmup_steps)`, bit for bit."""
    acc = Accelerator(cpu=True, step_scheduler_with_optimizer=False)
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=3e-4)
    optimizer, scheduler = acc.prepare(optimizer, get_constant_schedule_with_warmup(optimizer, warmup))
    for step in range(12):
        assert optimizer.param_groups[0]["lr"] == official_lr(3e-4, step, warmup), step
        optimizer.step()
        scheduler.step()


def test_resumed_twice_equals_uninterrupted_weights_and_rng_states(tmp_path: Path,
                                                                  global_rng_in_the_loss: None) -> None:
    """Every file of the step-6 checkpoint (weights, EMA, optimizer, schedule, RNG states) of a run stopped at
    step 2 and at step 4, each time continued in a 'new process', equals the uninterrupted run's."""
    index = make_latents(tmp_path / "lat")
    new_process(0)
    straight = run_train(index, tmp_path / "a")
    for k, steps in enumerate((2, 4, 6)):
        new_process(k + 1)
        resumed = run_train(index, tmp_path / "b", steps=steps)
    assert resumed.start_step == 4
    for step in (4, 6):
        for name in STATE_FILES:
            a, b = (_load(tmp_path / run / f"step-{step}" / name) for run in ("a", "b"))
            assert _equal(a, b), f"step {step}: {name} differs"
    # the lr of each step follows the official warm-up (loss.csv logs the lr of every step)
    assert _lrs(straight.loss_csv) == _logged(*(official_lr(1e-3, s, 3) for s in range(6)))


def test_changed_train_params_apply_from_the_resumed_step(tmp_path: Path) -> None:
    index = make_latents(tmp_path / "lat")
    run_train(index, tmp_path / "ck", steps=2)
    resumed = run_train(index, tmp_path / "ck", steps=4, lr=5e-4, warmup_steps=4, weight_decay=0.5)
    assert _lrs(resumed.loss_csv) == _logged(official_lr(1e-3, 0, 3), official_lr(1e-3, 1, 3),
                                             official_lr(5e-4, 2, 4), official_lr(5e-4, 3, 4))
    optimizer = _load(tmp_path / "ck" / "step-4" / "optimizer.bin")
    assert optimizer["param_groups"][0]["weight_decay"] == 0.5


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_rng_states_that_cannot_be_restored_are_refused(tmp_path: Path, damage: str) -> None:
    """Accelerate's load_state only logs a failure to restore RNG states; resuming inexactly is refused."""
    index = make_latents(tmp_path / "lat")
    run_train(index, tmp_path / "ck", steps=2)
    rng_file = tmp_path / "ck" / "step-2" / "random_states_0.pkl"
    if damage == "garbage":
        rng_file.write_bytes(b"not a pickle")
    else:
        rng_file.unlink()
    with pytest.raises(CheckpointError, match=r"RNG states of rank 0 \(random_states_0.pkl\) are missing or damaged"):
        run_train(index, tmp_path / "ck", steps=4)
    assert [s for s, _ in list_checkpoints(tmp_path / "ck")] == [2]


def test_refusals(tmp_path: Path) -> None:
    index = make_latents(tmp_path / "lat")
    with pytest.raises(ValueError, match="step_scheduler_with_optimizer=False"):  # N processes: N steps per step
        loop.train(seed=0, stems=index.stems, model=MODEL, diffusion=DIFFUSION, conditioning=COND, train=TRAIN,
                   latents=index, checkpoints=tmp_path / "ck",
                   accelerator=Accelerator(cpu=True, gradient_accumulation_steps=TRAIN.grad_accum))
    run_train(index, tmp_path / "ck", steps=2)
    state = tmp_path / "ck" / "step-2" / "state.json"
    state.write_text(state.read_text().replace('"version": 2', '"version": 1'))
    with pytest.raises(CheckpointError, match="expected format .* version 2, got .* version 1; move .* away"):
        run_train(index, tmp_path / "ck", steps=4)
