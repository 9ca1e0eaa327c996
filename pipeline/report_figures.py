"""Figures and the DVC plots file of the evaluation report (see pipeline/report.py).

* ``fad_arrangement.png``: grouped bars per combination (ours, untrained, shuffled, real held-out, real halves,
  paper) with 95 % interval whiskers, one panel per protocol.
* ``spectrograms.png``: log-mel of a few target vs generated (vs untrained) mixes, time in seconds, mel bands
  labelled in Hz (``mtmusicldm.utils.figures.show_log_mel``), one shared dB colour scale.
* ``arrangement.csv``: one row per combination (values and the intervals of ours and the untrained model).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from mtmusicldm.audio import load_audio
from mtmusicldm.utils.fs import atomic_file

CSV_COLUMNS = ["combination", "mixture", "stems", "floor_mixture", "floor_stems", "ceiling_mixture", "ceiling_stems",
               "paper_mixture", "paper_stems", "floor_heldout_mixture", "floor_heldout_stems", "shuffled_mixture",
               "mixture_low", "mixture_high", "ceiling_mixture_low", "ceiling_mixture_high"]
SPECTROGRAM_ITEMS = 3
MEL_BANDS, MEL_HOP, MEL_FFT = 64, 160, 1024


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _save(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    with atomic_file(path, "wb") as f:
        f.write(buf.getvalue())


def _series(t3: dict[str, Any], path: tuple[str, ...], combos: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Values [C] and whisker lengths [2, C] (NaN where absent) of one bar series."""
    vals, err = np.full(len(combos), np.nan), np.full((2, len(combos)), np.nan)
    node = _get(t3, *path)
    for k, c in enumerate(combos):
        rec = node if not isinstance(node, dict) or "value" in node else node.get(c)
        if isinstance(rec, dict) and rec.get("value") is not None:
            vals[k] = rec["value"]
            if rec.get("low") is not None:
                err[:, k] = [rec["value"] - rec["low"], rec["high"] - rec["value"]]
        elif isinstance(rec, (int, float)):
            vals[k] = rec
    return vals, err


def plot_arrangement(fad: dict[str, Any], path: Path) -> None:
    """Grouped bars per combination with interval whiskers, one panel per protocol."""
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
        bars = [("ours", (proto,)), ("untrained", ("ceiling", proto)), ("shuffled", ("shuffled", proto)),
                ("real held-out", ("floor_heldout", proto)), ("real halves", ("floor", proto)),
                ("paper MT-MusicLDM", ("paper", proto))]
        series = [(label, *_series(t3, p, combos)) for label, p in bars]  # absent series keep their slot/colour
        width, x = 0.8 / len(series), np.arange(len(combos))
        for k, (label, vals, err) in enumerate(series):
            ax.bar(x + (k - (len(series) - 1) / 2) * width, vals, width, label=label, color=f"C{k}",
                   yerr=np.nan_to_num(err) if np.isfinite(err).any() else None, capsize=2, error_kw={"lw": 0.8})
        finite = np.concatenate([v[np.isfinite(v) & (v > 0)] for _, v, _ in series])
        if finite.size and finite.max() / finite.min() > 50:
            ax.set_yscale("log")
        ax.set_xticks(x, combos)
        ax.set_xlabel("stems generated")
        ax.set_ylabel(f"FAD ({fad['backbone']})")
        ax.set_title(f"{proto} protocol (whiskers: 95 % interval)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, bbox_to_anchor=(0.5, -0.03))
    title = f"Arrangement FAD, {fad['items']} samples per setting"
    if not fad["comparable_to_paper"]:
        title += f"\n{fad['backbone']} backbone: not comparable with published VGGish FAD (paper bars on another scale)"
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _save(fig, path)


def plot_spectrograms(samples: Path, index: dict[str, Any], path: Path) -> None:
    """Log-mel spectrograms of the first items: target mix, generated mix, untrained mix (when sampled)."""
    import librosa
    from matplotlib.figure import Figure

    from mtmusicldm.utils.figures import show_log_mel

    names = [s["name"] for s in index["settings"]]
    setting = "total" if "total" in names else names[0]
    un = (index.get("untrained") or {}).get("dir")
    cols = [("target", "target/mix"), (setting, f"{setting}/mix")]
    if un and (samples / un / setting / "mix").is_dir():
        cols.append((f"untrained {setting}", f"{un}/{setting}/mix"))
    items = [it["item"] for it in index["items"][:SPECTROGRAM_ITEMS]]
    sr = int(index["sample_rate"])
    mels = [[librosa.power_to_db(librosa.feature.melspectrogram(
        y=load_audio(samples / folder / f"{it}.wav", sr), sr=sr, n_fft=MEL_FFT, hop_length=MEL_HOP, n_mels=MEL_BANDS,
        fmax=sr / 2), ref=1.0, top_db=None).T for _, folder in cols] for it in items]  # [T, mels]
    hi = max(float(m.max()) for row in mels for m in row)
    fig = Figure(figsize=(4.2 * len(cols), 2.4 * len(items) + 0.8))
    axes = np.atleast_2d(fig.subplots(len(items), len(cols), squeeze=False))
    image = None
    for r, it in enumerate(items):
        for c, (label, _) in enumerate(cols):
            ax = axes[r, c]
            image = show_log_mel(ax, mels[r][c], vmin=hi - 80, vmax=hi, title=f"{label}: {it}", hop=MEL_HOP,
                                 sample_rate=sr, fmin=0.0, fmax=sr / 2, labels=False)
            if r == len(items) - 1:
                ax.set_xlabel("time (s)", fontsize=7)
            if c == 0:
                ax.set_ylabel("frequency (Hz)", fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), label="dB", shrink=0.8)
    fig.suptitle(f"log-mel ({MEL_BANDS} bands, dB, shared scale)")
    _save(fig, path)


def write_arrangement_csv(path: Path, t3: dict[str, Any] | None) -> None:
    """One row per combination (empty cells for missing values), for DVC plots."""

    def v(rec: Any, part: str = "value") -> Any:
        return rec.get(part) if isinstance(rec, dict) else rec

    with atomic_file(Path(path), "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for c in (t3 or {}).get("combinations", []):
            vals = [v(t3["mixture"][c]), v(t3["stems"][c]), v(_get(t3, "floor", "mixture")),
                    v(_get(t3, "floor", "stems", c)), v(_get(t3, "ceiling", "mixture", c)),
                    v(_get(t3, "ceiling", "stems", c)), _get(t3, "paper", "mixture", c), _get(t3, "paper", "stems", c),
                    v(_get(t3, "floor_heldout", "mixture")), v(_get(t3, "floor_heldout", "stems", c)),
                    v(_get(t3, "shuffled", "mixture", c)), v(t3["mixture"][c], "low"), v(t3["mixture"][c], "high"),
                    v(_get(t3, "ceiling", "mixture", c), "low"), v(_get(t3, "ceiling", "mixture", c), "high")]
            w.writerow([c, *("" if x is None else x for x in vals)])
