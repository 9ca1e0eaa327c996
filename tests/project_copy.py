"""A copy of the project with tiny params, as a fresh git + DVC repo, for stage and flow tests."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def make_project(dest: Path, *, mutate=None) -> Path:
    """Copy the project (code, dvc.yaml, tiny params) into `dest` as a fresh git + DVC repo."""
    for name in ("mtmusicldm", "pipeline", "profiles", "flows"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", dest / "dvc.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["audio"]["segment_samples"] = 10240
    raw["synthetic"].update(tracks={"train": 2, "validation": 1, "test": 1}, min_seconds=2.0, max_seconds=3.0)
    raw["prepare"]["workers"] = 0
    raw["codec"].update(train_steps=2, batch_size=2, train_crop_frames=16, griffin_lim_iters=2)
    raw["encode"].update(batch_size=4, scale_segments=4)
    raw["model"].update(channels=32, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[2],
                        num_head_channels=16)
    raw["train"].update(steps=3, batch_size=2, warmup_steps=1, checkpoint_every=2, log_every=1)
    raw["sample"].update(count=2, batch_size=2, sampler="ddim", steps=2, examples=1, examples_seconds=1.28)
    raw["evaluate"].update(coherence=False)
    if mutate is not None:
        mutate(raw)
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=dest, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], cwd=dest, check=True)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "tiny project"], cwd=dest, check=True)
    return dest
