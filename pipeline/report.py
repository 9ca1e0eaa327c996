"""The evaluation report ``evaluation.md``: trained vs untrained vs shuffled vs real at a glance, then Tables 1-3
beside the paper's, coherence at signal and note level, the transcriber's F1; every number with its 95 % interval.

Written by the evaluate stage (``pipeline/evaluate.py``) from its metrics; every number comes from ``fad.json`` /
``coherence.json``, the paper's from ``pipeline/paper_results.json`` (copied into fad.json). ``summary_rows`` is
also ``summary.json``. Figures and ``arrangement.csv``: ``pipeline/report_figures.py``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtmusicldm.utils.fs import atomic_file
from pipeline.report_figures import plot_arrangement, plot_spectrograms

__all__ = ["banner", "markdown", "summary_rows", "write_report"]

PAPER_SAMPLES = "300 arrangement / 150 text samples of 10.24 s, VGGish, DDIM 200 steps"
SOURCES = ("trained", "untrained", "shuffled", "real")
_COH_SOURCE = {"trained": "generated", "untrained": "untrained", "shuffled": "shuffled", "real": "real"}
_NOTE_METRICS = {"pitch_class": "pitch-class agreement", "bass_root": "bass-root agreement",
                 "onset_alignment": "onset alignment"}


def banner(fad: dict[str, Any]) -> str | None:
    """The non-comparability banner, or None for a paper-comparable backbone."""
    if fad["comparable_to_paper"]:
        return None
    return (f"**{fad['backbone']} backbone: not comparable with published VGGish FAD.** Compare our rows with the "
            "reference rows measured with the same backbone, not with the paper's numbers.")


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _f(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}"


def _ci(rec: Any) -> str:
    """"value [low, high]" of an interval record, a plain number, or "–"."""
    if isinstance(rec, dict):
        if rec.get("value") is None:
            return "–"
        return f"{rec['value']:.3f} [{_f(rec.get('low'))}, {_f(rec.get('high'))}]"
    return _f(rec)


def _table(cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(c if isinstance(c, str) else _ci(c) for c in r) + " |" for r in rows]
    return out + [""]


# ---------------------------------------------------------------------------------------------------- summary


def _verdict(a: dict[str, Any] | None, b: dict[str, Any] | None, better: str) -> str | None:
    """"better" / "worse" when the intervals of a (trained) and b do not overlap, "overlap" when they do."""
    if not a or not b or None in (a.get("low"), a.get("high"), b.get("low"), b.get("high")):
        return None
    if a["high"] < b["low"]:
        return "better" if better == "lower" else "worse"
    if a["low"] > b["high"]:
        return "better" if better == "higher" else "worse"
    return "overlap"


def summary_rows(fad: dict[str, Any], coherence: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline comparisons: FAD (lower is better) and coherence (higher is better) of the trained model, the
    untrained model, shuffled real stems and real audio, with intervals and overlap verdicts."""
    t1, t3 = fad["table1"], fad.get("table3") or {}
    key = "audio_cond" if "audio_cond" in t1 else "uncond"
    rows = [("total generation FAD (mix)", "lower", {"trained": t1.get(key), "untrained": _get(t1, "ceiling", "mix"),
                                                     "shuffled": _get(t1, "shuffled", "mix"),
                                                     "real": _get(t1, "floor_heldout", "mix")})]
    n = len(t3.get("combinations") or [])
    for proto in ("mixture", "stems"):
        if t3:
            rows.append((f"arrangement FAD, {proto} protocol (mean of {n})", "lower",
                         {s: _get(t3, "mean", proto, s) for s in SOURCES}))
    if coherence.get("enabled") and "mean_delta" in coherence:
        for part in ("arrangement", "total"):
            for metric in ("rhythmic", "harmonic"):
                rows.append((f"{part}: {metric} coherence delta (mean)", "higher",
                             {s: _get(coherence, "mean_delta", part, _COH_SOURCE[s], metric) for s in SOURCES}))
    if _get(coherence, "notes", "enabled"):
        for part in ("arrangement", "total"):
            for metric, label in _NOTE_METRICS.items():
                rows.append((f"{part}: {label} (mean)", "higher",
                             {s: _get(coherence, "notes", "mean", part, _COH_SOURCE[s], metric) for s in SOURCES}))
    out = []
    for measure, better, vals in rows:
        if all(v is None for v in vals.values()):
            continue
        out.append({"measure": measure, "better": better, **vals,
                    "trained_vs_untrained": _verdict(vals["trained"], vals["untrained"], better),
                    "trained_vs_shuffled": _verdict(vals["trained"], vals["shuffled"], better)})
    return out


def _headline(summary: dict[str, Any]) -> list[str]:
    lines = ["## Trained vs untrained vs shuffled vs real", "",
             "Each cell: value [95 % interval]. *shuffled* = real stems of different songs mixed (right timbres, no "
             "coherence); *real* = held-out real segments (FAD) or the ground-truth stems (coherence). A model that "
             "learned must beat *untrained* (and, on coherence, *shuffled*) with intervals that do not overlap: the "
             "last two columns say whether they do (better / worse: apart; overlap: not distinguishable).", ""]
    rows = [[r["measure"] + (" ↓" if r["better"] == "lower" else " ↑"), *(r[s] for s in SOURCES),
             r["trained_vs_untrained"] or "–", r["trained_vs_shuffled"] or "–"] for r in summary["rows"]]
    return lines + _table(["measure", *SOURCES, "trained vs untrained", "trained vs shuffled"], rows)


# ---------------------------------------------------------------------------------------------------- tables


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
    t1 = fad["table1"]
    stems = list(t1.get("per_stem") or t1["floor"]["per_stem"])
    lines = ["## Table 1: total generation", "", "FAD of `total/mix` vs `target/mix` and per stem (lower is better).",
             ""]
    rows = [[f"**ours ({k})**", t1[k], *(t1["per_stem"][s] for s in stems)] for k in ("uncond", "audio_cond")
            if k in t1]
    rows += [[f"ours `{name}` (mix)", v, *["–"] * len(stems)] for name, v in (t1.get("text") or {}).items()]
    for label, r in (("untrained model", t1.get("ceiling")), ("shuffled real stems", t1.get("shuffled")),
                     ("real: held-out segments", t1.get("floor_heldout")),
                     ("real vs real (halves, N/2 each)", t1["floor"])):
        if r is not None:
            rows.append([label, r.get("mix"), *(_get(r, "per_stem", s) or "–" for s in stems)])
    rows += [[f"paper: {name}", v, *["–"] * len(stems)] for name, v in t1["paper"].items()]
    return lines + _table(["row", "mix", *stems], rows)


def _table2(fad: dict[str, Any]) -> list[str]:
    t2 = fad.get("table2")
    if not t2:
        return []
    cols = list(t2["references"])
    rows = [[f"**ours: {p}**", *(vals[q] for q in cols)] for p, vals in t2["fad"].items()]
    rows.append(["real: reference halves", *(t2["floor"][q] for q in cols)])
    rows += [[f"untrained: {p}", *(vals[q] for q in cols)] for p, vals in (t2.get("ceiling") or {}).items()]
    rows += [[f"paper: {p}", *(vals.get(q) for q in cols)] for p, vals in t2["paper"].items() if isinstance(vals, dict)]
    return ["## Table 2: text-conditioned generation", "",
            "FAD of `text_<prompt>/mix` (row) vs the reference folder of each category (column).", "",
            *_table(["row", *cols], rows)]


def _table3(fad: dict[str, Any]) -> list[str]:
    t3 = fad.get("table3")
    if not t3:
        return []
    lines = ["## Table 3: arrangement generation", "",
             "Combination = the stems GENERATED, the others given. *mixture*: `arrange_X/mix` vs `target/mix`; "
             "*stems*: `arrange_X/sum` vs `target/sum_X`. The shuffled row of the stems protocol is left out: its "
             "set is the target set itself, reordered.", ""]
    for proto in ("mixture", "stems"):
        cols = ["combination", "**ours**", "untrained", *(["shuffled"] if proto == "mixture" else []), "real held-out",
                "real halves", "paper MT-MusicLDM", "paper MSDM"]
        rows = []
        for c in [*t3["combinations"], "mean"]:
            def cell(*path: str, c: str = c) -> Any:
                v = _get(t3, *path)
                return v if not isinstance(v, dict) or "value" in v else v.get(c)
            if c == "mean":
                mean = t3["mean"][proto]
                shuffled = [mean.get("shuffled")] if proto == "mixture" else []
                rows.append(["**mean**", mean.get("trained"), mean.get("untrained"), *shuffled, mean.get("real"), "–",
                             "–", "–"])
                continue
            rows.append([c, t3[proto][c], cell("ceiling", proto), *([cell("shuffled", proto)] if proto == "mixture"
                                                                       else []),
                         cell("floor_heldout", proto), cell("floor", proto), _get(t3, "paper", proto, c),
                         _get(t3, "paper_msdm", proto, c)])
        lines += [f"### {proto} protocol", "", *_table(cols, rows)]
    return lines + ["![FAD per arrangement combination](fad_arrangement.png)", ""]


def _coherence(coh: dict[str, Any]) -> list[str]:
    lines = ["## Coherence (our addition)", ""]
    if not coh.get("enabled"):
        return lines + ["Disabled (`evaluate.coherence: false`).", ""]
    if "skipped" in coh:
        return lines + [f"Skipped: {coh['skipped']}.", ""]
    srcs = [s for s in ("generated", "untrained", "shuffled", "real") if s in (coh["mean_delta"].get("arrangement")
                                                                              or coh["mean_delta"]["total"])]
    lines += ["Signal level: delta = matched - mismatched pair score (> 0: a stem follows its own context). "
              "Arrangements: each generated stem vs the mix of the given stems; *real* = the ground-truth stem; "
              "*shuffled* = the real stem of another song. Total: each stem vs the other stems of the same sample. "
              "Harmonic: pitched stems only.", ""]
    for part in ("arrangement", "total"):
        entries = ([(f"{c}: {g}", v) for c, gs in coh[part].items() for g, v in gs.items()] if part == "arrangement"
                   else list(coh[part].items()))
        if not entries:
            continue
        rows = [[f"{label} ({m})", *(_get(v, s, m, "delta") or "–" for s in srcs)] for m in ("rhythmic", "harmonic")
                for label, v in entries if any(_get(v, s, m) for s in srcs)]
        rows += [[f"**mean ({m})**", *(_get(coh, "mean_delta", part, s, m) or "–" for s in srcs)]
                 for m in ("rhythmic", "harmonic")]
        lines += [f"### {part}: delta", "", *_table(["entry", *srcs], rows)]
    return lines + _notes(coh.get("notes") or {}, srcs)


def _notes(notes: dict[str, Any], srcs: list[str]) -> list[str]:
    lines = ["## Note-level coherence (basic-pitch transcriptions)", ""]
    if not notes.get("enabled"):
        return lines + ["Disabled (`evaluate.notes: off`).", ""]
    lines += [f"Settings: {', '.join(notes['settings'])} (`evaluate.notes: {notes['mode']}`). Per item: *pitch-class "
              "agreement* = share of the stem's note time whose pitch class sounds in the given pitched stems "
              "within ±0.25 s; *bass-root agreement* = share of bass time on the root of the given stems' chord; "
              "*onset alignment* = share of the stem's onsets within 50 ms of an onset of the given stems (drums: "
              "librosa onsets). Mean over items with its interval.", ""]
    tr = notes.get("transcriber") or {}
    if tr.get("available"):
        lines += ["Transcriber note F1 (onset within 50 ms, pitch within 50 cents) on the real stems against the "
                  "corpus MIDI: how far to trust these numbers.", "",
                  *_table(["stem", "F1", "items"], [[s, r, str(r["n"])] for s, r in tr["per_stem"].items()])]
    else:
        lines += [f"Transcriber F1 not measured: {tr.get('reason', 'no ground truth')}.", ""]
    for part in ("arrangement", "total"):
        entries = ([(f"{c}: {g}", v) for c, gs in notes[part].items() for g, v in gs.items()]
                   if part == "arrangement" else list(notes[part].items()))
        rows = [[f"{label}: {name}", *(_get(v, s, m) or "–" for s in srcs)] for m, name in _NOTE_METRICS.items()
                for label, v in entries if any(_get(v, s, m) for s in srcs)]
        rows += [[f"**mean: {name}**", *(_get(notes, "mean", part, s, m) or "–" for s in srcs)]
                 for m, name in _NOTE_METRICS.items()]
        if entries:
            lines += [f"### {part}", "", *_table(["entry", *srcs], rows)]
    return lines


def markdown(fad: dict[str, Any], coherence: dict[str, Any], summary: dict[str, Any]) -> str:
    """The report text."""
    model, s = fad["model"], fad["sampling"]
    lines = ["# Evaluation", ""]
    if (b := banner(fad)) is not None:
        lines += [f"> {b}", ""]
    lines += ["## Setup", "", "| | |", "|---|---|",
              f"| backbone | {fad['backbone']} ({fad['embedding_dim']}-d, fingerprint `{fad['fingerprint'][:12]}`), "
              f"comparable_to_paper: {fad['comparable_to_paper']} |",
              f"| samples | {fad['items']} per setting, {fad['segment_seconds']:g} s at {fad['sample_rate']} Hz |",
              f"| paper | {PAPER_SAMPLES} |",
              f"| model | source {model.get('source')}, trained steps {model.get('trained_steps')}, "
              f"conditional {model.get('conditional')} |",
              f"| sampling | {s['sampler']}, {s['steps']} steps, eta {s['eta']}, guidance {s['guidance_scale']} "
              f"(arrangement {s['arrangement_guidance_scale']}, {s['arrangement_conditioning']}) |",
              f"| intervals | 95 %, {fad['bootstrap']} bootstrap resamples of the items (numpy seed {fad['seed']}): "
              "percentile interval shifted by the bootstrap's bias estimate (resampling inflates FAD's small-sample "
              "bias); items resampled together where sets are paired |", ""]
    diffs = protocol_differences(fad)
    if diffs:
        lines += ["Differences from the paper's protocol: " + "; ".join(diffs) + ".", ""]
    lines += _headline(summary) + _table1(fad) + _table2(fad) + _table3(fad) + _coherence(coherence)
    lines += ["## Spectrograms", "", "![log-mel spectrograms](spectrograms.png)", ""]
    notes = [f"rank-deficient covariance (fewer embeddings than {fad['embedding_dim'] + 1}): "
             + ", ".join(fad["rank_deficient"])] if fad["rank_deficient"] else []
    notes += fad["notes"] + [f"{rel}: left out ({why})" for rel, why in (coherence.get("unreadable") or {}).items()]
    notes += _get(coherence, "notes", "transcriber", "skipped") or []
    if notes:
        lines += ["## Notes", "", *(f"* {n}" for n in notes), ""]
    return "\n".join(lines)


def write_report(fad: dict[str, Any], coherence: dict[str, Any], summary: dict[str, Any], samples: Path,
                 index: dict[str, Any], out: Path) -> list[Path]:
    """Write ``evaluation.md`` and the figures into ``out``; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_arrangement(fad, out / "fad_arrangement.png")
    plot_spectrograms(Path(samples), index, out / "spectrograms.png")
    with atomic_file(out / "evaluation.md", "w") as f:
        f.write(markdown(fad, coherence, summary))
    return [out / "fad_arrangement.png", out / "spectrograms.png", out / "evaluation.md"]
