"""Checkpoints: Accelerate's state in atomic step dirs, keep-last-K, incomplete dirs, frozen-params refusal."""
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from diffusers.optimization import get_constant_schedule_with_warmup

from mtmusicldm.training.checkpoint import (
    CheckpointError,
    check_frozen,
    clean_incomplete,
    find_latest,
    list_checkpoints,
    load_checkpoint,
    params_hashes,
    read_state,
    save_checkpoint,
)


class Trainer:
    """A prepared tiny model, optimizer and schedule, plus an EMA copy: what the loop checkpoints."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.acc = Accelerator(cpu=True, step_scheduler_with_optimizer=False)
        model = torch.nn.Linear(3, 2)
        self.ema = torch.nn.Linear(3, 2).requires_grad_(False)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
        self.model, self.optimizer, self.scheduler = self.acc.prepare(
            model, optimizer, get_constant_schedule_with_warmup(optimizer, 4))

    def step(self) -> None:
        self.model(torch.randn(5, 3)).square().mean().backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        with torch.no_grad():
            self.ema.weight.mul_(0.5).add_(self.model.weight, alpha=0.5)

    def snapshot(self) -> dict:
        return {"model": {k: v.clone() for k, v in self.model.state_dict().items()},
                "ema": {k: v.clone() for k, v in self.ema.state_dict().items()},
                "optimizer": str(self.optimizer.state_dict()), "lr": self.optimizer.param_groups[0]["lr"],
                "epoch": self.scheduler.scheduler.last_epoch,
                "rng": (torch.rand(2), np.random.rand(2), random.random())}


def _save(trainer: Trainer, root: Path, step: int, keep: int = 3) -> Path:
    return save_checkpoint(trainer.acc, root, step, trainer.ema,
                           {"samples_seen": step * 4, "params_hash": {"frozen": {"model": "x"}}},
                           params_yaml="seed: 1\n", keep=keep)


def test_save_load_roundtrip(tmp_path: Path) -> None:
    trainer = Trainer()
    for _ in range(3):
        trainer.step()
    path = _save(trainer, tmp_path, 3)
    expected = trainer.snapshot()  # its RNG draws come from the states at the save
    assert path.name == "step-3" and (tmp_path / "latest").read_text().strip() == "step-3"
    assert {"model.safetensors", "ema.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl",
            "params.yaml", "state.json"} <= {p.name for p in path.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-3"]  # no temporary folder left
    state = read_state(path)
    assert state["step"] == 3 and state["samples_seen"] == 12 and state["world_size"] == 1

    other = Trainer(seed=1)  # another process: other weights, optimizer state, schedule position, RNG states
    other.step()
    load_checkpoint(other.acc, path, state, other.ema)
    restored = other.snapshot()
    for key in ("model", "ema"):
        assert all(torch.equal(restored[key][k], expected[key][k]) for k in expected[key])
    assert torch.equal(restored["rng"][0], expected["rng"][0]) and np.array_equal(restored["rng"][1],
                                                                                  expected["rng"][1])
    assert restored["rng"][2] == expected["rng"][2]
    assert restored["optimizer"] == expected["optimizer"] and restored["epoch"] == expected["epoch"] == 3
    assert restored["lr"] == expected["lr"] == pytest.approx(0.1 * 3 / 4)


def test_rng_states_are_restored_by_the_load(tmp_path: Path) -> None:
    trainer = Trainer()
    path = _save(trainer, tmp_path, 1)
    after_save = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    load_checkpoint(trainer.acc, path, read_state(path), trainer.ema)
    assert torch.equal(torch.rand(3), after_save[0]) and np.array_equal(np.random.rand(3), after_save[1])
    assert random.random() == after_save[2]


def test_incomplete_dir_ignored_and_cleaned(tmp_path: Path) -> None:
    _save(Trainer(), tmp_path, 10)
    half = tmp_path / "step-20"  # killed while copying: no state.json
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    tmp = tmp_path / ".step-30.tmp-deadbeef"  # killed inside a save
    tmp.mkdir()
    assert find_latest(tmp_path) == tmp_path / "step-10"
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        read_state(half)
    removed = clean_incomplete(tmp_path)
    assert set(removed) == {half, tmp} and not half.exists() and not tmp.exists()
    assert find_latest(tmp_path) == tmp_path / "step-10"
    assert find_latest(tmp_path / "nothing") is None


def test_failed_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = Trainer()
    _save(trainer, tmp_path, 1)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(trainer.acc, "save_state", broken)
    with pytest.raises(OSError, match="disk full"):
        _save(trainer, tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-1"]


def test_keep_last_k(tmp_path: Path) -> None:
    trainer = Trainer()
    for step in (1, 2, 3, 4, 5):
        _save(trainer, tmp_path, step, keep=3)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4, 5]


def test_frozen_params_refusal(tmp_path: Path) -> None:
    a = params_hashes({"model": {"channels": 32}, "diffusion": {"timesteps": 1000}})
    b = params_hashes({"model": {"channels": 64}, "diffusion": {"timesteps": 1000}})
    check_frozen(a, dict(a), tmp_path / "step-1")
    with pytest.raises(CheckpointError, match="different model params") as e:
        check_frozen(a, b, tmp_path / "step-1")
    assert "diffusion" not in str(e.value)


def test_state_file_is_the_marker(tmp_path: Path) -> None:
    path = _save(Trainer(), tmp_path, 4)
    assert json.loads((path / "state.json").read_text())["format"] == "mtmusicldm-ldm-checkpoint"
    (path / "state.json").unlink()
    assert find_latest(tmp_path) is None
