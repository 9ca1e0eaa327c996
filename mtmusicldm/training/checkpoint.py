"""Training checkpoints `checkpoints/ldm/step-<N>/` (docs/formats.md): Accelerate's state inside our atomic,
refusing, pruned step directories.

What Accelerate does (`Accelerator.save_state` / `load_state`): the prepared UNet (`model.safetensors`), the
optimizer (`optimizer.bin`), the lr scheduler (`scheduler.bin`), the fp16 grad scaler (`scaler.pt`) and every
rank's python / numpy / torch / CUDA RNG states (`random_states_<rank>.pkl`, read back with torch's weights-only
loader). `CheckpointHooks` adapts two things through Accelerate's own save/load pre-hooks: the UNet is stored
unwrapped (no DDP `module.` prefix, so a checkpoint does not depend on the process count), and the EMA weights go
to `ema.safetensors`. Accelerate's `register_for_checkpointing` does not fit the EMA: it pickles the object and
loads it back with `weights_only=False`, i.e. loading a checkpoint could run code. It does not fit the training
state either (step, data position, params hashes): that must be read *before* anything is loaded, to refuse an
incompatible checkpoint and to build the data stream.

What stays ours, on top, and why:

* Atomicity: `save_state` writes straight into its folder, so a kill leaves a half-written checkpoint. All ranks
  write into one temporary sibling (its name broadcast from rank 0); rank 0 then writes `params.yaml` and, last,
  `state.json` (the completion marker) and renames the folder into place. A folder without `state.json` is ignored
  by `find_latest` and removed by `clean_incomplete`. The `latest` text file is updated after the rename; resuming
  uses the highest complete step, so a kill between the rename and the pointer update loses nothing.
* Refusal: `state.json` records the params sections that must not change on resume (hashed per section,
  `params_hashes` / `check_frozen`) next to those that may (train schedule, data).
* Exact resume: `load_state` swallows a failure to restore the RNG states (it logs "Could not load random states"
  and goes on), which would silently break exact resume. `state.json` records the sha256 of every rank's
  `random_states_<rank>.pkl`, and `load_checkpoint` refuses a file that does not match before loading. (The file,
  not the live states: another thread of the process may draw from the global RNGs at any time, e.g. the
  `websockets` keepalive of a Prefect client calls `random.getrandbits`.)
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import RNG_STATE_NAME, broadcast_object_list, gather_object
from safetensors.torch import load_file, save_file

from mtmusicldm.utils.fs import atomic_file, clean_stale_tmp, sha256_file

CHECKPOINT_FORMAT = "mtmusicldm-ldm-checkpoint"
CHECKPOINT_VERSION = 2  # 2: Accelerate state (1: our own model/ema/optimizer files and JSON RNG states)
KEEP_LAST = 3
STATE_FILE = "state.json"  # written last: the completion marker
EMA_FILE = "ema.safetensors"
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


def read_state(path: Path) -> dict[str, Any]:
    """`state.json` of a complete checkpoint of this format.

    Raises:
        CheckpointError: incomplete directory or unknown format/version.
    """
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    state = json.loads((path / STATE_FILE).read_text())
    if state.get("format") != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}/{STATE_FILE}: expected format {CHECKPOINT_FORMAT!r} version "
                              f"{CHECKPOINT_VERSION}, got {state.get('format')!r} version {state.get('version')}; "
                              f"move {path.parent} away to train from scratch")
    return state


# ----------------------------------------------------------------------------------------------------------------
# Save / load through Accelerate


class CheckpointHooks:
    """Accelerate save/load pre-hooks, registered while the context is open: the UNet unwrapped (no DDP prefix),
    the EMA as `ema.safetensors`."""

    def __init__(self, accelerator: Accelerator, ema: torch.nn.Module) -> None:
        self.accelerator, self.ema = accelerator, ema
        self.handles: list[Any] = []

    def _save(self, models: list[torch.nn.Module], weights: list[dict[str, torch.Tensor]], output_dir: str) -> None:
        weights[:] = [self.accelerator.unwrap_model(m).state_dict() for m in models]
        if self.accelerator.is_main_process:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.ema.state_dict().items()},
                      str(Path(output_dir) / EMA_FILE))

    def _load(self, models: list[torch.nn.Module], input_dir: str) -> None:
        models[:] = [self.accelerator.unwrap_model(m) for m in models]  # the DDP module shares these parameters
        self.ema.load_state_dict(load_file(str(Path(input_dir) / EMA_FILE), device=str(self.accelerator.device)))

    def __enter__(self) -> CheckpointHooks:
        self.handles = [self.accelerator.register_save_state_pre_hook(self._save),
                        self.accelerator.register_load_state_pre_hook(self._load)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()


def save_checkpoint(accelerator: Accelerator, root: Path, step: int, ema: torch.nn.Module, state: Mapping[str, Any],
                    *, params_yaml: str | None = None, keep: int = KEEP_LAST) -> Path:
    """Write `root/step-<step>/` atomically (every rank calls this), point `root/latest` at it, keep `keep`.

    Args:
        ema: the EMA UNet (saved by `CheckpointHooks`; the prepared objects by Accelerate).
        state: JSON-serialisable training state (samples seen, data position, params hashes, ...); `format`,
            `version`, `step`, `world_size` and the ranks' RNG fingerprints are added.
        params_yaml: the resolved params text, saved next to the weights.

    Returns:
        The step directory.
    """
    root, out = Path(root), step_dir(root, step)
    name = [f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}" if accelerator.is_main_process else None]
    tmp = root / broadcast_object_list(name)[0]  # one folder for every rank
    if accelerator.is_main_process:
        tmp.mkdir(parents=True)
    try:
        accelerator.wait_for_everyone()
        with CheckpointHooks(accelerator, ema):
            accelerator.save_state(str(tmp), safe_serialization=True)
        rngs = gather_object([sha256_file(_rng_file(tmp, accelerator.process_index))])
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if params_yaml is not None:
                (tmp / "params.yaml").write_text(params_yaml)
            full = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state, "step": step,
                    "world_size": accelerator.num_processes, "rng_sha256": rngs}
            with open(tmp / STATE_FILE, "w") as f:
                f.write(json.dumps(full, indent=2, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
            if out.exists():  # a rerun reaching the same step: the new one replaces it
                shutil.rmtree(out)
            os.replace(tmp, out)
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if accelerator.is_main_process:
        with atomic_file(root / "latest", "w") as f:
            f.write(out.name + "\n")
        prune(root, keep)
    accelerator.wait_for_everyone()
    return out


def load_checkpoint(accelerator: Accelerator, path: Path, state: Mapping[str, Any], ema: torch.nn.Module) -> None:
    """Restore the prepared objects, the EMA (through `CheckpointHooks`) and this rank's RNG states from `path`.

    Args:
        state: its `read_state(path)`.
        ema: the EMA UNet to load.

    Raises:
        CheckpointError: this rank's RNG states file is missing or not the one saved (with the same world size),
            so the run could not continue exactly.
    """
    rank, rng_file = accelerator.process_index, _rng_file(path, accelerator.process_index)
    if state["world_size"] == accelerator.num_processes and (
            not rng_file.is_file() or sha256_file(rng_file) != state["rng_sha256"][rank]):
        raise CheckpointError(f"{path}: the RNG states of rank {rank} ({rng_file.name}) are missing or damaged, so "
                              "training cannot continue exactly; use an older checkpoint or move "
                              f"{path.parent} away to train from scratch")
    with CheckpointHooks(accelerator, ema):
        accelerator.load_state(str(path))


def _rng_file(directory: Path, rank: int) -> Path:
    """Accelerate's RNG states file of `rank` (`accelerate.utils.RNG_STATE_NAME`)."""
    return Path(directory) / f"{RNG_STATE_NAME}_{rank}.pkl"
