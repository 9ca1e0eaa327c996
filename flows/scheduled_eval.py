"""Scheduled evaluation of the latest model, with a metrics history.

    python -m flows.scheduled_eval --once                 # evaluate now
    python -m flows.scheduled_eval --cron "0 3 * * *"     # serve: evaluate every night at 03:00 (Ctrl-C stops)

Each run brings `sample` and `evaluate` up to date with DVC (a cache hit when the model did not change since the
last evaluation) and appends one line to `metrics_history/evaluations.jsonl` (time, git revision, model
fingerprint, trained steps, FAD values), which is also published as a Prefect table artifact. The history lives
outside DVC's outputs, so reruns never erase it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from flows import _env
from flows.tasks import check_params, repro_task
from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE

HISTORY = Path("metrics_history") / "evaluations.jsonl"
EVAL_STAGES = ("sample", "evaluate")


def _git_rev(repo: Path) -> str | None:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
    return proc.stdout.strip() or None


def model_fingerprint(model_dir: Path) -> dict[str, Any]:
    """sha256 of the EMA weights (what sampling uses) and the trained step count from config.json."""
    cfg = json.loads((model_dir / "config.json").read_text())
    weights = model_dir / "unet_ema.safetensors"
    h = hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.is_file() else None
    return {"model_sha256": h, "trained_steps": cfg.get("trained_steps")}


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_metrics(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


@task(cache_policy=NONE)
def record(repo: Path) -> dict[str, Any]:
    """Append this evaluation to the history file; returns the record."""
    metrics_file = repo / "metrics" / "fad.json"
    entry: dict[str, Any] = {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_rev": _git_rev(repo),
        **model_fingerprint(repo / "models" / "ldm"),
        "metrics": flatten_metrics(json.loads(metrics_file.read_text())) if metrics_file.is_file() else {},
    }
    path = repo / HISTORY
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
    return entry


def read_history(repo: Path) -> list[dict[str, Any]]:
    path = repo / HISTORY
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@flow(name="mtmusicldm-scheduled-evaluation", log_prints=True)
def evaluate_latest(repo: str = str(_env.REPO_ROOT), keys: list[str] | None = None) -> dict[str, Any]:
    root = Path(repo)
    check_params(root)
    for stage in EVAL_STAGES:
        repro_task(stage)(stage, root)
    entry = record(root)
    history = read_history(root)
    keys = keys or ["table1.uncond.value", "table1.audio_cond.value", "table1.floor_heldout.mix.value",
                    "table1.ceiling.mix.value"]
    rows = [{"time": h["time"], "git_rev": h.get("git_rev"), "trained_steps": h.get("trained_steps"),
             "model": h.get("model_sha256"), **{k: h["metrics"].get(k) for k in keys}} for h in history]
    create_table_artifact(table=rows, key="mtmusicldm-evaluation-history",
                          description="FAD of the latest model over time")
    print(f"evaluation #{len(history)}: {json.dumps(entry['metrics'], sort_keys=True)[:400]}")
    return entry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--once", action="store_true", help="evaluate now and exit")
    ap.add_argument("--cron", default="0 3 * * *", help="schedule for serving (default: nightly at 03:00)")
    args = ap.parse_args()
    if args.once:
        evaluate_latest()
    else:
        evaluate_latest.serve(name="nightly-evaluation", cron=args.cron)


if __name__ == "__main__":
    main()
