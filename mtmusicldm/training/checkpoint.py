"""Training checkpoints `checkpoints/ldm/step-<N>/` (docs/formats.md): atomic save, resume, pruning.

A step directory is written into a temporary sibling and renamed into place; inside it `state.json` is written
last and is the completion marker, so a directory without it (a killed copy, a half-synced folder) is ignored by
`find_latest` and removed by `clean_incomplete`. The `latest` text file is updated after the rename; resuming
uses the highest complete step, so a kill between the rename and the pointer update loses nothing.

`state.json` records the parameter sections that must not change on resume (hashed per section, see
`params_hashes` / `check_frozen`) next to those that may (train schedule, data).
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from mtmusicldm.utils.fs import atomic_dir, atomic_file, clean_stale_tmp

CHECKPOINT_FORMAT = "mtmusicldm-ldm-checkpoint"
CHECKPOINT_VERSION = 1
KEEP_LAST = 3
STATE_FILE = "state.json"  # written last: the completion marker
_STEP_RE = re.compile(r"^step-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint cannot be used to resume this run (message says why and what to do)."""


# ----------------------------------------------------------------------------------------------------------------
# Params hashes


def params_hashes(sections: Mapping[str, Any]) -> dict[str, str]:
    """sha256 (hex, 16 chars) of the canonical JSON of each section.

    Args:
        sections: name -> JSON-serialisable value (e.g. `params_to_dict(model)`, a latent shape list).
    """
    return {name: hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
            for name, value in sections.items()}


def check_frozen(saved: Mapping[str, str], current: Mapping[str, str], where: Path) -> None:
    """Refuse to resume when a frozen section changed.

    Raises:
        CheckpointError: naming the differing sections.
    """
    differ = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
    if differ:
        raise CheckpointError(
            f"{where} was trained with different {', '.join(differ)} params; these cannot change when resuming. "
            f"Restore the previous values, or move {where.parent} away to train from scratch.")


# ----------------------------------------------------------------------------------------------------------------
# RNG states (JSON-safe)


def _b64(t: Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode()


def _unb64(s: str) -> Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def rng_state() -> dict[str, Any]:
    """The process's global torch (CPU and CUDA) and numpy RNG states, JSON-serialisable."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": _b64(torch.get_rng_state()),
        "numpy": {"kind": kind, "keys": base64.b64encode(keys.astype(np.uint32).tobytes()).decode(), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "cuda": [_b64(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else None,
    }
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore states saved by `rng_state` (CUDA states only when CUDA is available and they were saved)."""
    torch.set_rng_state(_unb64(state["torch"]))
    np_state = state["numpy"]
    keys = np.frombuffer(base64.b64decode(np_state["keys"]), dtype=np.uint32).copy()
    np.random.set_state((np_state["kind"], keys, np_state["pos"], np_state["has_gauss"], np_state["gauss"]))
    if state["cuda"] is not None and torch.cuda.is_available():
        cuda = [_unb64(s) for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------------------------------------------
# Listing


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step-{step}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (with `state.json`) under `root`, sorted by step."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def find_latest(root: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def clean_incomplete(root: Path) -> list[Path]:
    """Remove leftovers of killed saves: temporary siblings and step dirs without `state.json`."""
    root = Path(root)
    removed = clean_stale_tmp(root)
    if root.is_dir():
        for p in root.iterdir():
            if _STEP_RE.match(p.name) and p.is_dir() and not (p / STATE_FILE).is_file():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def prune(root: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest complete checkpoints; returns the removed dirs."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    old = list_checkpoints(root)[:-keep]
    for _, p in old:
        shutil.rmtree(p, ignore_errors=True)
    return [p for _, p in old]


# ----------------------------------------------------------------------------------------------------------------
# Save / load


def _tensors(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}


def save_checkpoint(root: Path, step: int, *, model: Mapping[str, Tensor], ema: Mapping[str, Tensor],
                    optimizer: Mapping[str, Any], state: Mapping[str, Any], params_yaml: str | None = None,
                    keep: int = KEEP_LAST) -> Path:
    """Write `root/step-<step>/` atomically, point `root/latest` at it and keep the newest `keep`.

    Args:
        model, ema: UNet state dicts (raw and EMA weights), saved as safetensors.
        optimizer: optimizer (and grad scaler) state, saved with `torch.save`.
        state: JSON-serialisable training state (samples seen, data position, rng, params hashes, ...);
            `format`, `version` and `step` are added.
        params_yaml: the resolved params text, saved next to the weights.

    Returns:
        The step directory.
    """
    out = step_dir(root, step)
    with atomic_dir(out) as tmp:
        save_file(_tensors(model), str(tmp / "model.safetensors"))
        save_file(_tensors(ema), str(tmp / "ema.safetensors"))
        torch.save(dict(optimizer), tmp / "optimizer.pt")
        if params_yaml is not None:
            (tmp / "params.yaml").write_text(params_yaml)
        full = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state, "step": step}
        (tmp / STATE_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    with atomic_file(Path(root) / "latest", "w") as f:
        f.write(out.name + "\n")
    prune(root, keep)
    return out


@dataclass
class Checkpoint:
    """A loaded checkpoint (tensors on the requested device)."""

    path: Path
    step: int
    state: dict[str, Any]
    model: dict[str, Tensor]
    ema: dict[str, Tensor]
    optimizer: dict[str, Any]


def load_checkpoint(path: Path, *, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a step directory written by `save_checkpoint`.

    Raises:
        CheckpointError: incomplete directory or unknown format/version.
    """
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    state = json.loads((path / STATE_FILE).read_text())
    if state.get("format") != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}/{STATE_FILE}: expected format {CHECKPOINT_FORMAT!r} version "
                              f"{CHECKPOINT_VERSION}, got {state.get('format')!r} version {state.get('version')}")
    dev = str(device)
    optimizer = torch.load(path / "optimizer.pt", map_location=dev, weights_only=True)
    return Checkpoint(path=path, step=int(state["step"]), state=state,
                      model=load_file(str(path / "model.safetensors"), device=dev),
                      ema=load_file(str(path / "ema.safetensors"), device=dev), optimizer=optimizer)
