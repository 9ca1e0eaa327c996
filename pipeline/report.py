"""The evaluation report: ``evaluation.md`` (our FAD beside the paper's, reference rows, coherence) and figures.

Written by the evaluate stage (``pipeline/evaluate.py``) from its metrics; every number in the markdown comes from
``fad.json`` / ``coherence.json``, the paper's from ``pipeline/paper_results.json`` (copied into fad.json). Also
``arrangement.csv`` (a metrics file for DVC plots: one row per combination) and the figures ``fad_arrangement.png``
(grouped bars for the 14 combinations: ours, floor, held-out floor, ceiling, paper; one panel per protocol) and
``spectrograms.png`` (log-mel of a few target vs generated (vs untrained) mixes).
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtmusicldm.audio import load_audio
from mtmusicldm.utils.fs import atomic_file

CSV_COLUMNS = ["combination", "mixture", "stems", "floor_mixture", "floor_stems", "ceiling_mixture", "ceiling_stems",
               "paper_mixture", "paper_stems", "floor_heldout_mixture", "floor_heldout_stems"]
PAPER_SAMPLES = "300 arrangement / 150 text samples of 10.24 s, VGGish, DDIM 200 steps"
SPECTROGRAM_ITEMS = 3


def banner(fad: dict[str, Any]) -> str | None:
    """The non-comparability banner, or None for a paper-comparable backbone."""
    if fad["comparable_to_paper"]:
        return None
    return (f"**{fad['backbone']} backbone: not comparable with published VGGish FAD.** Compare our rows with the "
            "floor / ceiling rows measured with the same backbone, not with the paper's numbers.")


def _f(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}"


def _row(label: str, values: Sequence[Any]) -> str:
    return "| " + " | ".join([label, *(_f(v) if not isinstance(v, str) else v for v in values)]) + " |"


def _header(cols: Sequence[str]) -> list[str]:
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def protocol_differences(fad: dict[str, Any]) -> list[str]:
    """Ways this run differs from the paper's evaluation protocol."""
    out, s = [], fad["sampling"]
    if not fad["comparable_to_paper"]:
        out.append(f"backbone {fad['backbone']} (paper: VGGish with the released weights)")
    if fad["items"] != 300:
        out.append(f"{fad['items']} samples per setting (paper: 300 for arrangements, 150 for text)")
    if abs(fad["segment_seconds"] - 10.24) > 1e-6:
        out.append(f"{fad['segment_seconds']:g} s segments (paper: 10.24 s)")
    if (s.get("sampler"), s.get("steps")) != ("ddim", 200):
        out.append(f"sampler {s.get('sampler')} with {s.get('steps')} steps (paper: DDIM, 200 steps)")
    return out


def _table1(fad: dict[str, Any]) -> list[str]:
    t1, stems = fad["table1"], list(fad["table1"].get("per_stem") or fad["table1"]["floor"]["per_stem"])
    lines = ["## Table 1: total generation", "", "FAD of `total/mix` vs `target/mix` and per stem (lower is better).",
             "", *_header(["row", "mix", *stems])]
    for key in ("uncond", "audio_cond"):
        if key in t1:
            lines.append(_row(f"**ours ({key})**", [t1[key], *(t1["per_stem"][s] for s in stems)]))
    for name, v in (t1.get("text") or {}).items():
        lines.append(_row(f"ours `{name}` (mix)", [v, *["–"] * len(stems)]))
    refs = [("floor: real vs real (halves)", t1["floor"]), ("floor: held-out real segments", t1.get("floor_heldout")),
            ("ceiling: untrained model", t1.get("ceiling"))]
    for label, r in refs:
        if r is not None:
            lines.append(_row(label, [r.get("mix"), *(_get(r, "per_stem", s) for s in stems)]))
    for name, v in t1["paper"].items():
        lines.append(_row(f"paper: {name}", [v, *["–"] * len(stems)]))
    return lines + [""]


def _table2(fad: dict[str, Any]) -> list[str]:
    t2 = fad.get("table2")
    if not t2:
        return []
    cols = list(t2["references"])
    lines = ["## Table 2: text-conditioned generation", "",
             "FAD of `text_<prompt>/mix` (row) vs the reference folder of each category (column).", "",
             *_header(["row", *cols])]
    for p, vals in t2["fad"].items():
        lines.append(_row(f"**ours: {p}**", [vals[q] for q in cols]))
    lines.append(_row("floor: reference halves", [t2["floor"][q] for q in cols]))
    for p, vals in (t2.get("ceiling") or {}).items():
        lines.append(_row(f"ceiling (untrained): {p}", [vals[q] for q in cols]))
    for p, vals in t2["paper"].items():
        if isinstance(vals, dict):
            lines.append(_row(f"paper: {p}", [vals.get(q) for q in cols]))
    return lines + [""]


def _table3(fad: dict[str, Any]) -> list[str]:
    t3 = fad.get("table3")
    if not t3:
        return []
    combos = t3["combinations"]
    lines = ["## Table 3: arrangement generation", "",
             "Combination = the stems GENERATED, the others given. *mixture*: `arrange_X/mix` vs `target/mix`; "
             "*stems*: `arrange_X/sum` vs `target/sum_X`.", ""]
    for proto in ("mixture", "stems"):
        floor = _get(t3, "floor", proto)
        held = _get(t3, "floor_heldout", proto)
        rows = [("**ours**", [t3[proto][c] for c in combos]),
                ("floor: real vs real (halves)", [floor if not isinstance(floor, dict) else floor[c] for c in combos]),
                ("floor: held-out real", None if held is None else
                 [held if not isinstance(held, dict) else held[c] for c in combos]),
                ("ceiling: untrained model", None if t3.get("ceiling") is None else
                 [t3["ceiling"][proto][c] for c in combos]),
                ("paper: MT-MusicLDM", [t3["paper"][proto].get(c) for c in combos]),
                ("paper: MSDM", [t3["paper_msdm"][proto].get(c) for c in combos])]
        lines += [f"### {proto} protocol", "", *_header(["row", *combos])]
        lines += [_row(label, vals) for label, vals in rows if vals is not None] + [""]
    return lines + ["![FAD per arrangement combination](fad_arrangement.png)", ""]


def _coherence(coh: dict[str, Any]) -> list[str]:
    lines = ["## Coherence (our addition)", ""]
    if not coh.get("enabled"):
        return lines + ["Disabled (`evaluate.coherence: false`).", ""]
    if "skipped" in coh:
        return lines + [f"Skipped: {coh['skipped']}.", ""]
    lines += ["delta = matched - mismatched pair score (> 0: a stem follows its own context). Arrangements: each "
              "generated stem vs the mix of the given stems (*real* = the ground-truth stem: the ceiling). Total: "
              "each stem vs the mix of the other stems of the same sample. Harmonic: pitched stems only.", ""]
    for part in ("arrangement", "total"):
        means = coh["mean_delta"].get(part) or {}
        if not means:
            continue
        srcs = [s for s in ("generated", "real", "untrained") if s in means]
        lines += [f"### {part}: mean delta", "", *_header(["metric", *srcs])]
        for metric in ("rhythmic", "harmonic"):
            lines.append(_row(metric, [means[s][metric] for s in srcs]))
        lines += ["", *_header(["entry", *(f"{m} {s}" for m in ("rhythmic", "harmonic") for s in srcs)])]
        entries = ([(f"{c}: {g}", v) for c, gs in coh[part].items() for g, v in gs.items()] if part == "arrangement"
                   else list(coh[part].items()))
        for label, v in entries:
            lines.append(_row(label, [_get(v, s, m, "delta") for m in ("rhythmic", "harmonic") for s in srcs]))
        lines.append("")
    return lines


def markdown(fad: dict[str, Any], coherence: dict[str, Any]) -> str:
    """The report text."""
    model, s = fad["model"], fad["sampling"]
    lines = ["# Evaluation", ""]
    if (b := banner(fad)) is not None:
        lines += [f"> {b}", ""]
    lines += ["## Setup", "", *_header(["", ""]),
              f"| backbone | {fad['backbone']} ({fad['embedding_dim']}-d, fingerprint `{fad['fingerprint'][:12]}`), "
              f"comparable_to_paper: {fad['comparable_to_paper']} |",
              f"| samples | {fad['items']} per setting, {fad['segment_seconds']:g} s at {fad['sample_rate']} Hz |",
              f"| paper | {PAPER_SAMPLES} |",
              f"| model | source {model.get('source')}, trained steps {model.get('trained_steps')}, "
              f"conditional {model.get('conditional')} |",
              f"| sampling | {s['sampler']}, {s['steps']} steps, eta {s['eta']}, guidance {s['guidance_scale']} "
              f"(arrangement {s['arrangement_guidance_scale']}, {s['arrangement_conditioning']}) |", "",
              "Reference rows, same protocol and backbone: **floor** = real test audio against itself (even vs odd "
              "items: half the files per set, so slightly pessimistic); **held-out floor** = as many other test "
              "segments vs the targets; **ceiling** = the same settings sampled by the untrained model.", ""]
    diffs = protocol_differences(fad)
    if diffs:
        lines += ["Differences from the paper's protocol: " + "; ".join(diffs) + ".", ""]
    lines += _table1(fad) + _table2(fad) + _table3(fad) + _coherence(coherence)
    lines += ["## Spectrograms", "", "![log-mel spectrograms](spectrograms.png)", ""]
    notes = [f"rank-deficient covariance (fewer embeddings than {fad['embedding_dim'] + 1}): "
             + ", ".join(fad["rank_deficient"])] if fad["rank_deficient"] else []
    notes += fad["notes"]
    if notes:
        lines += ["## Notes", "", *(f"* {n}" for n in notes), ""]
    return "\n".join(lines)


def _save(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    with atomic_file(path, "wb") as f:
        f.write(buf.getvalue())


def plot_arrangement(fad: dict[str, Any], path: Path) -> None:
    """Grouped bars per combination (ours, floor, held-out floor, ceiling, paper), one panel per protocol."""
    from matplotlib.figure import Figure

    t3 = fad.get("table3")
    if not t3:  # keep the declared output: a placeholder
        fig = Figure(figsize=(6, 1.5))
        fig.text(0.5, 0.5, "no arrangement settings in samples/ (sample.arrangement: false)", ha="center")
        _save(fig, path)
        return
    combos = t3["combinations"]
    fig = Figure(figsize=(13, 7.5))
    axes = fig.subplots(2, 1)
    for ax, proto in zip(axes, ("mixture", "stems")):
        def series(v: Any) -> list[float]:
            return [np.nan if (x := (v[c] if isinstance(v, dict) else v)) is None else x for c in combos]
        bars = [("ours", series(t3[proto])), ("floor (halves)", series(_get(t3, "floor", proto)))]
        if t3.get("floor_heldout"):
            bars.append(("floor (held-out)", series(t3["floor_heldout"][proto])))
        if t3.get("ceiling"):
            bars.append(("ceiling (untrained)", series(t3["ceiling"][proto])))
        bars.append(("paper MT-MusicLDM", series(t3["paper"][proto] | {c: None for c in combos
                                                                        if c not in t3["paper"][proto]})))
        width = 0.8 / len(bars)
        x = np.arange(len(combos))
        for k, (label, vals) in enumerate(bars):
            ax.bar(x + (k - (len(bars) - 1) / 2) * width, vals, width, label=label)
        finite = np.array([v for _, vals in bars for v in vals if np.isfinite(v) and v > 0])
        if finite.size and finite.max() / finite.min() > 50:
            ax.set_yscale("log")
        ax.set_xticks(x, combos)
        ax.set_ylabel(f"FAD ({fad['backbone']})")
        ax.set_title(f"{proto} protocol")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, bbox_to_anchor=(0.5, -0.02))
    title = f"Arrangement FAD, {fad['items']} samples per setting"
    if not fad["comparable_to_paper"]:
        title += f"\n{fad['backbone']} backbone: not comparable with published VGGish FAD (paper bars on another scale)"
    fig.suptitle(title)
    _save(fig, path)


def plot_spectrograms(samples: Path, index: dict[str, Any], path: Path) -> None:
    """Log-mel spectrograms of the first items: target mix, generated mix, untrained mix (when sampled)."""
    import librosa
    from matplotlib.figure import Figure

    names = [s["name"] for s in index["settings"]]
    setting = "total" if "total" in names else names[0]
    un = (index.get("untrained") or {}).get("dir")
    cols = [("target", "target/mix"), (setting, f"{setting}/mix")]
    if un and (samples / un / setting / "mix").is_dir():
        cols.append((f"untrained {setting}", f"{un}/{setting}/mix"))
    items = [it["item"] for it in index["items"][:SPECTROGRAM_ITEMS]]
    sr = int(index["sample_rate"])
    mels = [[librosa.power_to_db(librosa.feature.melspectrogram(
        y=load_audio(samples / folder / f"{it}.wav", sr), sr=sr, n_fft=1024, hop_length=160, n_mels=64,
        fmax=sr / 2), ref=1.0, top_db=None) for _, folder in cols] for it in items]
    hi = max(float(m.max()) for row in mels for m in row)
    fig = Figure(figsize=(4 * len(cols), 2.2 * len(items) + 0.6))
    axes = np.atleast_2d(fig.subplots(len(items), len(cols), squeeze=False))
    for r, it in enumerate(items):
        for c, (label, _) in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(mels[r][c], origin="lower", aspect="auto", vmin=hi - 80, vmax=hi, cmap="magma")
            ax.set_title(f"{label}: {it}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("log-mel (64 bands, dB, shared scale)")
    _save(fig, path)


def write_arrangement_csv(path: Path, t3: dict[str, Any] | None) -> None:
    """One row per combination (empty cells for missing values), for DVC plots."""
    with atomic_file(Path(path), "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for c in (t3 or {}).get("combinations", []):
            vals = [t3["mixture"][c], t3["stems"][c], _get(t3, "floor", "mixture"), _get(t3, "floor", "stems", c),
                    _get(t3, "ceiling", "mixture", c), _get(t3, "ceiling", "stems", c), _get(t3, "paper", "mixture", c),
                    _get(t3, "paper", "stems", c), _get(t3, "floor_heldout", "mixture"),
                    _get(t3, "floor_heldout", "stems", c)]
            w.writerow([c, *("" if v is None else v for v in vals)])


def write_report(fad: dict[str, Any], coherence: dict[str, Any], samples: Path, index: dict[str, Any],
                 out: Path) -> list[Path]:
    """Write ``evaluation.md`` and the figures into ``out``; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_arrangement(fad, out / "fad_arrangement.png")
    plot_spectrograms(Path(samples), index, out / "spectrograms.png")
    written = [out / "fad_arrangement.png", out / "spectrograms.png"]
    with atomic_file(out / "evaluation.md", "w") as f:
        f.write(markdown(fad, coherence))
    return [*written, out / "evaluation.md"]
