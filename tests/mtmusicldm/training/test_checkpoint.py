"""Checkpoints: atomic step dirs, keep-last-K, frozen-params refusal, RNG state round trip."""
import json

import numpy as np
import pytest
import torch

from mtmusicldm.training.checkpoint import (
    CheckpointError,
    check_frozen,
    clean_incomplete,
    find_latest,
    list_checkpoints,
    load_checkpoint,
    params_hashes,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _save(root, step, keep=3):
    sd = {"w": torch.full((2, 3), float(step)), "b": torch.arange(3.0)}
    return save_checkpoint(root, step, model=sd, ema={k: v * 2 for k, v in sd.items()},
                           optimizer={"optimizer": {"state": {}, "lr": 0.1}, "scaler": None},
                           state={"samples_seen": step * 4, "params_hash": {"frozen": {"model": "x"}}},
                           params_yaml="seed: 1\n", keep=keep)


def test_save_load_roundtrip(tmp_path):
    path = _save(tmp_path, 5)
    assert path.name == "step-5" and (tmp_path / "latest").read_text().strip() == "step-5"
    ck = load_checkpoint(path)
    assert ck.step == 5 and ck.state["samples_seen"] == 20 and ck.state["format"] == "mtmusicldm-ldm-checkpoint"
    assert torch.equal(ck.model["w"], torch.full((2, 3), 5.0)) and torch.equal(ck.ema["b"], torch.arange(3.0) * 2)
    assert ck.optimizer["optimizer"]["lr"] == 0.1 and (path / "params.yaml").read_text() == "seed: 1\n"


def test_incomplete_dir_ignored_and_cleaned(tmp_path):
    _save(tmp_path, 10)
    half = tmp_path / "step-20"  # killed while copying: no state.json
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    tmp = tmp_path / ".step-30.tmp-deadbeef"  # killed inside atomic_dir
    tmp.mkdir()
    assert find_latest(tmp_path) == tmp_path / "step-10"
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        load_checkpoint(half)
    removed = clean_incomplete(tmp_path)
    assert set(removed) == {half, tmp} and not half.exists() and not tmp.exists()
    assert find_latest(tmp_path) == tmp_path / "step-10"
    assert find_latest(tmp_path / "nothing") is None


def test_keep_last_k(tmp_path):
    for step in (1, 2, 3, 4, 5):
        _save(tmp_path, step, keep=3)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4, 5]


def test_frozen_params_refusal(tmp_path):
    a = params_hashes({"model": {"channels": 32}, "diffusion": {"timesteps": 1000}})
    b = params_hashes({"model": {"channels": 64}, "diffusion": {"timesteps": 1000}})
    check_frozen(a, dict(a), tmp_path / "step-1")
    with pytest.raises(CheckpointError, match="different model params") as e:
        check_frozen(a, b, tmp_path / "step-1")
    assert "diffusion" not in str(e.value)


def test_rng_state_roundtrip():
    state = json.loads(json.dumps(rng_state()))  # JSON-safe
    x, y = torch.rand(3), np.random.rand(3)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), x) and np.array_equal(np.random.rand(3), y)
