"""Incremental retraining as DVC experiments: more steps or new data -> only the affected stages rerun.

    python -m flows.incremental --extra-steps 200          # continue training 200 more steps
    python -m flows.incremental --data-root /data/slakh_v2  # new/extra data: re-prepare, re-encode, continue

The flow never writes params.yaml. It validates the new values in memory (with the whole file, before any work),
then runs `dvc exp run -S train.steps=... --name incremental-<UTC time>`: DVC writes the values into the
workspace's params.yaml, reruns what they invalidate (a longer `train.steps`: train -> sample -> evaluate only; a
new corpus: everything from download on) and records the run as an experiment (a git ref under refs/exps). The
committed params.yaml and the branch are left alone: keep a result with `git commit` or `dvc exp branch`, compare
runs with `dvc exp show` (published as a Prefect artifact). The train stage resumes from the newest checkpoint in
`checkpoints/ldm/` (kept across runs): with more steps it continues the same run, with new data it continues from
the weights with a fresh data stream. Nothing starts over.
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flows import _env
from flows.end_to_end import summary_markdown
from flows.tasks import dvc_exp_run, dvc_exp_show
from mtmusicldm.config import Params, ParamsError, params_from_dict
from pipeline._common import load_params, read_params_yaml
from prefect import flow
from prefect.artifacts import create_markdown_artifact


def params_with_overrides(params_path: Path, overrides: Mapping[str, Any]) -> Params:
    """The params file with dotted-key overrides (`{"train.steps": 400}`) applied, validated; nothing is written.

    Raises:
        ParamsError: an override names no existing key, or the result is invalid (naming the key and the file).
    """
    raw = read_params_yaml(params_path)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            raise ParamsError(key, f"no such key in {params_path}")
        node[leaf] = value
    try:
        return params_from_dict(raw)
    except ParamsError as e:
        given = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        raise ParamsError(e.key, f"{e.reason} (in {params_path} with {given})") from None


@flow(name="mtmusicldm-incremental-retrain", log_prints=True)
def incremental_retrain(repo: str = str(_env.REPO_ROOT), extra_steps: int = 0, data_root: str | None = None,
                        stages: list[str] | None = None) -> dict[str, Any]:
    """Run the pipeline as a DVC experiment with more steps and/or new data; returns its name and the record."""
    root = Path(repo)
    if extra_steps < 0:
        raise ValueError(f"extra_steps must be >= 0, got {extra_steps}")
    params_path = root / "params.yaml"
    overrides: dict[str, Any] = {}
    if extra_steps:
        overrides["train.steps"] = load_params(params_path).train.steps + extra_steps
    if data_root is not None:
        overrides["data.local_root"] = str(Path(data_root).expanduser().resolve())
    params_with_overrides(params_path, overrides)
    name = f"incremental-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    print(f"incremental: experiment {name} with {overrides or 'no changes (rerunning what DVC finds stale)'}")
    dvc_exp_run(name, root, overrides, stages)
    table = dvc_exp_show(root)
    md = f"{summary_markdown(root)}\n\n## Experiments (`dvc exp show`)\n\n{table}"
    create_markdown_artifact(markdown=md, key="mtmusicldm-incremental", description=f"experiment {name}")
    return {"experiment": name, "overrides": overrides, "experiments": table}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extra-steps", type=int, default=0, help="train this many more steps")
    ap.add_argument("--data-root", default=None, help="use (new) corpus data at this path (data.local_root)")
    args = ap.parse_args()
    incremental_retrain(extra_steps=args.extra_steps, data_root=args.data_root)


if __name__ == "__main__":
    main()
