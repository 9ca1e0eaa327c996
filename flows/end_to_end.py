"""The main job: every DVC stage in dvc.yaml order as a Prefect task, then a summary artifact.

    python -m flows.end_to_end            # what `make run` calls
A failing stage stops the flow with its error; finished stages stay cached by DVC, so a rerun resumes there.
params.yaml is validated first: a bad value stops the flow before DVC touches any output.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from flows import _env
from flows.tasks import check_params, repro_task
from prefect import flow
from prefect.artifacts import create_markdown_artifact


OUTPUTS = """
Outputs
  corpus           data/raw/              (source.json: what and where)
  shards           data/shards/           (report.json: tracks, segments, skipped tracks and why)
  codec            models/codec/          (report.json + recon.png: reconstruction quality)
  latents          data/latents/          (latents.json: shape, scale factor)
  model            models/ldm/            (loss.png; load with mtmusicldm.MTMusicLDM.from_pretrained)
  audio            samples/               (per setting: <stem>.wav + mix.wav; index.json)
  metrics          metrics/fad.json, metrics/coherence.json, metrics/arrangement.csv
  report           reports/evaluation.md  (+ fad_arrangement.png, spectrograms.png)
Try: mtmusicldm arrange --model models/ldm --given bass=samples/target/bass/<file>.wav --out out/
     mtmusicldm studio --model models/ldm
"""


def stage_names(repo: Path) -> list[str]:
    """Stages in the order dvc.yaml lists them (which is a valid topological order)."""
    return list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])


def summary_markdown(repo: Path) -> str:
    lines = ["# mtmusicldm run", ""]
    report = repo / "data" / "shards" / "report.json"
    if report.is_file():
        r = json.loads(report.read_text())
        lines += [f"Corpus `{r['source']}`, {r['segment_seconds']:.2f} s segments at {r['sample_rate']} Hz.", "",
                  "| split | tracks | segments | hours |", "|---|---|---|---|"]
        for split, s in r["splits"].items():
            lines.append(f"| {split} | {s['tracks']} | {s['segments']} | {s['hours_segments']:.3f} |")
        lines.append(f"\nSkipped tracks: {len(r['skipped'])} (reasons in `data/shards/report.json`).")
    evaluation = repo / "reports" / "evaluation.md"
    if evaluation.is_file():  # the FAD tables beside the paper's numbers, written by the evaluate stage
        lines += ["", evaluation.read_text()]
    return "\n".join(lines)


@flow(name="mtmusicldm-end-to-end", log_prints=True)
def end_to_end(repo: str = str(_env.REPO_ROOT), stages: list[str] | None = None, force: bool = False) -> str:
    root = Path(repo)
    check_params(root)  # before DVC removes any stage's outputs
    for stage in stages or stage_names(root):
        repro_task(stage)(stage, root, force=force)
    md = summary_markdown(root)
    create_markdown_artifact(markdown=md, key="mtmusicldm-run-summary", description="end-to-end run summary")
    print(md)
    return md


def main() -> None:
    parser = argparse.ArgumentParser(description="run the whole pipeline (dvc stages) as a Prefect flow")
    parser.add_argument("--stage", action="append", help="run only these stages (repeatable)")
    parser.add_argument("--force", action="store_true", help="rerun stages even if DVC has them cached")
    args = parser.parse_args()
    end_to_end(stages=args.stage, force=args.force)
    print(OUTPUTS)


if __name__ == "__main__":
    main()
