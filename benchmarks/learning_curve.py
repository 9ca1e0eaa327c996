"""Learning curve of the embedded model: evaluation at CPU-minute marks of training, and samplers' steps vs FAD.

    python benchmarks/learning_curve.py --params params.yaml --workdir /tmp/lc --marks 2 5 10 20 40 60 \\
        --figure docs/learning_curve.png --samplers-figure docs/sampler_steps.png

Runs the pipeline's own stage functions in `--workdir` (download, prepare, train_codec, encode once; then
training resumed mark by mark from its checkpoints), so what it measures is what `make run` does with more
training. A mark is CPU time of the training process divided by its torch threads, i.e. the wall time on an idle
machine with that many cores, whatever else runs beside it. At each mark the model is sampled (`params.sample`)
and evaluated (`params.evaluate`): the headline rows of `metrics/summary.json` (total-generation FAD of the mix,
arrangement FAD of the mixture protocol averaged over the 14 combinations, arrangement rhythmic coherence delta),
each with its 95 % bootstrap interval, beside the untrained, shuffled and real references. With `--samplers`, the
last model's total generation is sampled with DDIM-200 (official) and DPM-Solver++(2M) at 5/10/20 steps: FAD of the
mix and seconds per sample. Prints markdown tables; writes `results.json` in the workdir and the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from mtmusicldm.config import Params
from mtmusicldm.utils.fs import write_json
from pipeline import download, encode, evaluate, prepare, sample, train, train_codec
from pipeline._common import load_params

HEADLINE = {"fad_total": "total generation FAD (mix)", "fad_arrangement": "arrangement FAD, mixture protocol",
            "rhythmic": "arrangement: rhythmic coherence delta"}
SOURCES = ("trained", "untrained", "shuffled", "real")
SAMPLER_GRID = (("ddim", 200), ("dpmpp_2m", 5), ("dpmpp_2m", 10), ("dpmpp_2m", 20))


def cpu_minutes() -> float:
    """CPU minutes of this process divided by the torch threads: idle wall minutes on that many cores."""
    return time.process_time() / 60.0 / max(1, torch.get_num_threads())


def prepare_data(p: Params, work: Path) -> None:
    """download -> prepare -> train_codec -> encode into `work` (skipped when already there)."""
    if not (work / "latents" / "latents.json").is_file():
        download.run(p.data, p.synthetic, work / "raw")
        prepare.run(p.seed, p.stems, p.audio, p.data, p.prepare, work / "raw", work / "shards")
        train_codec.run(p.seed, p.stems, p.audio, p.codec, work / "shards", work / "codec")
        encode.run(p.seed, p.stems, p.audio, p.codec, p.conditioning, p.encode, work / "shards", work / "codec",
                   work / "latents")


def headline(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The three measures of issue 13 from summary.json rows: {measure: {source: {value, low, high}}}."""
    out = {}
    for key, prefix in HEADLINE.items():
        row = next((r for r in summary["rows"] if r["measure"].startswith(prefix)), None)
        if row is not None:
            out[key] = {s: row.get(s) for s in SOURCES} | {"verdict": row.get("trained_vs_untrained")}
    return out


def evaluate_model(p: Params, work: Path, tag: str, sample_params: Any) -> tuple[dict[str, Any], float]:
    """Sample and evaluate `work/ldm`; returns (headline, sampling seconds)."""
    t0 = time.perf_counter()
    index = sample.run(p.seed, p.stems, p.audio, sample_params, work / "ldm", work / "shards", work / f"samples_{tag}")
    seconds = time.perf_counter() - t0
    evaluate.run(p.stems, p.evaluate, work / f"samples_{tag}", work / "shards", work / "raw", work / f"metrics_{tag}",
                 work / f"report_{tag}", work / "fad_cache")
    summary = json.loads((work / f"metrics_{tag}" / "summary.json").read_text())
    return headline(summary), seconds / max(1, len({r["item"] for r in index["samples"]}))


def learning_curve(p: Params, work: Path, marks: list[float]) -> list[dict[str, Any]]:
    """Train to each CPU-minute mark (resuming) and evaluate there."""
    results, step, spent, per_step = [], 0, 0.0, None
    for mark in marks:
        while spent < mark - 0.05:
            remaining = mark - spent
            # the first segment measures the step cost; later ones aim at the mark from it
            target = step + (max(1, int(remaining / per_step)) if per_step else 20)
            t_cpu = cpu_minutes()
            train.run(p.seed, p.stems, p.model, p.diffusion, p.conditioning,
                      p.train.replace(steps=target), work / "latents", work / "checkpoints", work / "ldm")
            spent += cpu_minutes() - t_cpu
            per_step = spent / target
            step = target
        metrics, _ = evaluate_model(p, work, f"{mark:g}min", p.sample.replace(examples=0))
        row = {"minutes": round(spent, 2), "mark": mark, "steps": step, **metrics}
        results.append(row)
        save_results(work, curve=results)
        print(json.dumps(row), flush=True)
    return results


def sampler_curve(p: Params, work: Path) -> list[dict[str, Any]]:
    """Total generation of the last model with each (sampler, steps): FAD of the mix and seconds per sample."""
    rows = []
    for name, steps in SAMPLER_GRID:
        params = p.sample.replace(sampler=name, steps=steps, arrangement=False, eta=None, examples=0)
        metrics, seconds = evaluate_model(p, work, f"{name}{steps}", params)
        rows.append({"sampler": name, "steps": steps, "seconds_per_sample": round(seconds, 2),
                     "fad_total": metrics.get("fad_total")})
        save_results(work, samplers=rows)
        print(json.dumps(rows[-1]), flush=True)
    return rows


def save_results(work: Path, **parts: list[dict[str, Any]]) -> None:
    """Update `work/results.json` after every mark, so that a long run interrupted keeps what it measured."""
    path = work / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {"curve": [], "samplers": []}
    results.update(parts)
    write_json(path, results)


def _cell(rec: dict[str, Any] | None) -> str:
    if not rec or rec.get("value") is None:
        return "–"
    return f"{rec['value']:.2f} [{rec['low']:.2f}, {rec['high']:.2f}]"


def print_tables(curve: list[dict[str, Any]], samplers: list[dict[str, Any]]) -> None:
    for key, label in HEADLINE.items():
        print(f"\n{label} (95 % interval)\n\n| CPU min | steps | trained | untrained | shuffled | real |")
        print("|---|---|---|---|---|---|")
        for r in curve:
            m = r.get(key, {})
            print(f"| {r['minutes']:.1f} | {r['steps']} | " + " | ".join(_cell(m.get(s)) for s in SOURCES) + " |")
    if samplers:
        print("\n| sampler | steps | s / sample | FAD total (mix) |\n|---|---|---|---|")
        for r in samplers:
            print(f"| {r['sampler']} | {r['steps']} | {r['seconds_per_sample']} | {_cell((r['fad_total'] or {}).get('trained'))} |")


def plot(curve: list[dict[str, Any]], samplers: list[dict[str, Any]], figure: Path | None,
         samplers_figure: Path | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    colours = {"trained": "C0", "untrained": "C3", "shuffled": "C2", "real": "C7"}
    if figure is not None and curve:
        fig, axes = plt.subplots(1, len(HEADLINE), figsize=(5 * len(HEADLINE), 3.8), layout="constrained")
        minutes = [r["minutes"] for r in curve]
        for ax, (key, label) in zip(axes, HEADLINE.items()):
            for s in SOURCES:
                recs = [r.get(key, {}).get(s) for r in curve]
                if not all(recs):
                    continue
                v = [x["value"] for x in recs]
                lo, hi = [x["low"] for x in recs], [x["high"] for x in recs]
                style = "-o" if s == "trained" else "--"
                ax.plot(minutes, v, style, color=colours[s], label=s, ms=3)
                ax.fill_between(minutes, lo, hi, color=colours[s], alpha=0.15)
            ax.set_xscale("log")
            ax.set_xticks(minutes, [f"{m:.0f}" for m in minutes])
            ax.xaxis.set_minor_formatter(NullFormatter())
            if key.startswith("fad"):
                ax.set_yscale("log")  # the untrained model is an order of magnitude away
                ax.yaxis.set_major_formatter(ScalarFormatter())
                ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("training, CPU minutes (2 cores)")
            ax.set_title(label + (" (offline backbone) ↓" if key.startswith("fad") else " ↑"), fontsize=9)
            ax.grid(alpha=0.3, which="both")
        axes[0].legend(fontsize=8)
        fig.savefig(figure, dpi=90)
        plt.close(fig)
    if samplers_figure is not None and samplers:
        fig, ax = plt.subplots(figsize=(5, 3.6), layout="constrained")
        for name in dict.fromkeys(r["sampler"] for r in samplers):
            rs = [r for r in samplers if r["sampler"] == name and r["fad_total"]]
            t = [r["fad_total"]["trained"] for r in rs]
            ax.errorbar([r["steps"] for r in rs], [x["value"] for x in t],
                        yerr=[[x["value"] - x["low"] for x in t], [x["high"] - x["value"] for x in t]],
                        fmt="-o", capsize=3, label=name)
        for r in samplers:
            if r["fad_total"]:
                ax.annotate(f"{r['seconds_per_sample']:g} s", (r["steps"], r["fad_total"]["trained"]["value"]),
                            textcoords="offset points", xytext=(6, -10), fontsize=7)
        ax.set_xscale("log")
        steps = sorted({r["steps"] for r in samplers})
        ax.set_xticks(steps, [str(n) for n in steps])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("sampler steps (UNet evaluations); labels: seconds per sample")
        ax.set_ylabel("total-generation FAD (mix), offline")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.savefig(samplers_figure, dpi=90)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--marks", type=float, nargs="*", default=[2, 5, 10, 20, 40, 60],
                        help="CPU-minute marks; none (`--marks`) re-uses the curve in results.json")
    parser.add_argument("--samplers", action="store_true", help="steps-vs-FAD of the samplers on the last model")
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument("--samplers-figure", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("MTMUSICLDM_NO_PROGRESS", "1")
    p = load_params(args.params)
    args.workdir.mkdir(parents=True, exist_ok=True)
    prepare_data(p, args.workdir)
    saved = json.loads((args.workdir / "results.json").read_text()) if (args.workdir / "results.json").is_file() else {}
    curve = learning_curve(p, args.workdir, sorted(args.marks)) if args.marks else saved.get("curve", [])
    samplers = sampler_curve(p, args.workdir) if args.samplers else saved.get("samplers", [])
    print_tables(curve, samplers)
    plot(curve, samplers, args.figure, args.samplers_figure)


if __name__ == "__main__":
    main()
