"""Incremental retraining: more steps or new data -> only the affected stages rerun; training continues.

    python -m flows.incremental --extra-steps 200          # continue training 200 more steps
    python -m flows.incremental --data-root /data/slakh_v2  # new/extra data: re-prepare, re-encode, continue

DVC decides what reruns: a longer `train.steps` invalidates train -> sample -> evaluate only; a new corpus
invalidates everything from download on. The train stage itself resumes from the newest checkpoint in
`checkpoints/ldm/` (kept across reruns): with more steps it continues the same run, with new data it continues from
the weights with a fresh data stream. Nothing starts over.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flows import _env
from flows.end_to_end import end_to_end
from pipeline.params_edit import get_param, set_params
from prefect import flow, task
from prefect.cache_policies import NONE


@task(cache_policy=NONE)
def update_params(repo: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Validated in-place edit of params.yaml (comments kept); returns the overrides applied."""
    if overrides:
        set_params(repo / "params.yaml", overrides)
    return overrides


@flow(name="mtmusicldm-incremental-retrain", log_prints=True)
def incremental_retrain(repo: str = str(_env.REPO_ROOT), extra_steps: int = 0, data_root: str | None = None,
                        stages: list[str] | None = None) -> dict[str, Any]:
    root = Path(repo)
    overrides: dict[str, Any] = {}
    if extra_steps:
        if extra_steps < 0:
            raise ValueError(f"extra_steps must be >= 0, got {extra_steps}")
        overrides["train.steps"] = int(get_param(root / "params.yaml", "train.steps")) + extra_steps
    if data_root is not None:
        overrides["data.local_root"] = str(Path(data_root).expanduser().resolve())
    applied = update_params(root, overrides)
    print(f"incremental: params changed: {applied or 'nothing (rerunning what DVC finds stale)'}")
    summary = end_to_end(repo=str(root), stages=stages)
    return {"overrides": applied, "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extra-steps", type=int, default=0, help="train this many more steps")
    ap.add_argument("--data-root", default=None, help="use (new) corpus data at this path (data.local_root)")
    args = ap.parse_args()
    incremental_retrain(extra_steps=args.extra_steps, data_root=args.data_root)


if __name__ == "__main__":
    main()
