"""Coherence of generated stems with their context, for the evaluate stage, over the sample stage's layout.

Entries: every generated stem of every arrangement ``arrange_<C>`` against the mix of its given (ground-truth)
stems, and every stem of ``total`` against the other stems of the same sample. Sources per entry:

* ``real``: the ground-truth stem (the ceiling of coherence);
* ``generated`` / ``untrained``: the trained / untrained model's stem (``<setting>`` / ``untrained/<setting>``; for
  ``total`` the context is that model's own other stems);
* ``shuffled``: the real stem of another song (item ``partners[i, 1]``, see
  ``mtmusicldm.evaluation.references``) against this item's context: the right timbre, no coherence.

Signal level (``signal_coherence``): rhythmic and harmonic pair-score matrices (``mtmusicldm.evaluation.coherence``)
give matched, mismatched and delta = matched - mismatched. Note level (``note_coherence``): basic-pitch
transcriptions give pitch-class agreement, bass-root agreement and onset alignment
(``mtmusicldm.evaluation.notes``) per item. Every number has a 95 % bootstrap interval; all entries resample the same
items (``resample(N, B, seed)``), so the means over entries are bootstrapped jointly. Files that cannot be read
(or are shorter than the segment) leave their items out of the entries that need them, with the reason listed.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtmusicldm.audio import AudioError, load_audio
from mtmusicldm.evaluation.bootstrap import interval, pair_replicates, resample
from mtmusicldm.evaluation.coherence import (
    chroma_features,
    coherence_from_scores,
    harmonic_scores,
    onset_features,
    rhythmic_scores,
)
from mtmusicldm.evaluation.notes import (
    BasicPitch,
    Notes,
    bass_root_agreement,
    drum_onsets,
    onset_alignment,
    pitch_class_agreement,
)

UNPITCHED = ("drums",)  # no harmonic / pitch metrics, onsets from librosa instead of transcribed notes
SOURCES = ("real", "generated", "untrained", "shuffled")


@dataclass(frozen=True)
class Entry:
    """One stem against its context: `part` "arrangement" (setting arrange_<combo>) or "total"."""

    part: str
    setting: str
    combo: str | None
    stem: str
    context: tuple[str, ...]


def entries(index: dict[str, Any], combos: dict[str, list[str]]) -> list[Entry]:
    """Arrangement entries (combination order) then total entries (stem order)."""
    stems, names = list(index["stems"]), {s["name"] for s in index["settings"]}
    out = [Entry("arrangement", f"arrange_{c}", c, g, tuple(s for s in stems if s not in gen))
           for c, gen in combos.items() if f"arrange_{c}" in names for g in gen]
    if "total" in names:
        out += [Entry("total", "total", None, s, tuple(o for o in stems if o != s)) for s in stems]
    return out


class Samples:
    """Reads samples/ files once at the index's rate and segment length; unreadable ones are remembered."""

    def __init__(self, root: Path, index: dict[str, Any]) -> None:
        self.root, self.sr, self.seg = Path(root), int(index["sample_rate"]), int(index["segment_samples"])
        self.items = [it["item"] for it in index["items"]]
        un = (index.get("untrained") or {}).get("dir")
        self.prefix = {"generated": ""} | ({"untrained": f"{un}/"} if un and (self.root / un).is_dir() else {})
        self.bad: dict[str, str] = {}
        self._cache: dict[str, np.ndarray | None] = {}

    def wav(self, rel: str) -> np.ndarray | None:
        if rel not in self._cache:
            try:
                y = load_audio(self.root / rel, self.sr)
                if y.shape[0] < self.seg:
                    raise AudioError(f"{self.root / rel}: {y.shape[0]} samples, shorter than the segment {self.seg}")
                self._cache[rel] = y[: self.seg]
            except AudioError as e:
                self.bad[rel] = str(e)
                self._cache[rel] = None
        return self._cache[rel]

    def stem_rel(self, e: Entry, source: str, stem: str, i: int) -> str:
        """File of `stem` of item i for a source (shuffled: the item's partner, resolved by the caller)."""
        if source in ("real", "shuffled") or (e.part == "arrangement" and stem in e.context):
            return f"target/{stem}/{self.items[i]}.wav"
        return f"{self.prefix[source]}{e.setting}/{stem}/{self.items[i]}.wav"


def _summary(point: float, reps: np.ndarray, n: int) -> dict[str, Any]:
    return interval(point, reps).as_dict() | {"n": n}


def _features(samples: Samples, rels: Sequence[Sequence[str]], kind: str, fn: Callable[[np.ndarray], np.ndarray],
              cache: dict[tuple[str, ...], np.ndarray | None]) -> list[np.ndarray | None]:
    """Feature `kind` of the sum of each item's files (None when one is unreadable), memoised per file tuple."""
    out = []
    for group in rels:
        key = (kind, *group)
        if key not in cache:
            wavs = [samples.wav(r) for r in group]
            cache[key] = None if any(w is None for w in wavs) else fn(np.sum(wavs, axis=0))
        out.append(cache[key])
    return out


def _pair_metric(fa: list[np.ndarray | None], fb: list[np.ndarray | None], scores: Callable[..., np.ndarray],
                 idx: np.ndarray, seed: int) -> tuple[dict[str, Any] | None, np.ndarray | None]:
    """matched / mismatched / delta summary and the delta replicates [B] over the items with both features."""
    ok = [i for i in range(len(fa)) if fa[i] is not None and fb[i] is not None]
    if len(ok) < 2:
        return None, None
    s = scores(np.stack([fa[i] for i in ok]), np.stack([fb[i] for i in ok]))
    r = coherence_from_scores(s, seed=seed)
    sub = idx if len(ok) == idx.shape[1] else resample(len(ok), idx.shape[0], seed)
    matched, mismatched = pair_replicates(s, sub)
    delta = matched - mismatched
    return {"matched": _summary(r.matched, matched, r.n), "mismatched": _summary(r.shuffled, mismatched, r.n),
            "delta": _summary(r.delta, delta, r.n), "z": None if not np.isfinite(r.z) else round(float(r.z), 4)}, delta


def signal_coherence(samples: Samples, index: dict[str, Any], combos: dict[str, list[str]],
                     partners: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """Rhythmic / harmonic coherence with intervals for every entry and source, and their means per part."""
    sr, n = samples.sr, len(samples.items)
    idx = resample(n, n_boot, seed)
    cache: dict[tuple[str, ...], np.ndarray | None] = {}
    kinds = {"rhythmic": (lambda y: onset_features(y, sr), rhythmic_scores),
             "harmonic": (lambda y: chroma_features(y, sr), harmonic_scores)}
    out: dict[str, Any] = {"arrangement": {}, "total": {}}
    deltas: dict[tuple[str, str, str], list[np.ndarray]] = {}
    for e in entries(index, combos):
        result = {}
        for source in [s for s in SOURCES if s in ("real", "shuffled") or s in samples.prefix]:
            owner = partners[:, 1] if source == "shuffled" else np.arange(n)
            stem = [[samples.stem_rel(e, source, e.stem, int(owner[i]))] for i in range(n)]
            ctx_src = "real" if source == "shuffled" else source
            ctx = [[samples.stem_rel(e, ctx_src, c, i) for c in e.context] for i in range(n)]
            metrics: dict[str, Any] = {}
            for name, (fn, scores) in kinds.items():
                if name == "harmonic" and e.stem in UNPITCHED:
                    metrics[name] = None
                    continue
                summary, reps = _pair_metric(_features(samples, stem, name, fn, cache),
                                             _features(samples, ctx, name, fn, cache), scores, idx, seed)
                metrics[name] = summary
                if reps is not None:
                    deltas.setdefault((e.part, source, name), []).append(reps)
            result[source] = metrics
        target = out["arrangement"].setdefault(e.combo, {}) if e.part == "arrangement" else out["total"]
        target[e.stem] = result
    out["mean_delta"] = {part: _mean_deltas(out[part], deltas, part) for part in ("arrangement", "total")}
    return out


def _mean_deltas(part: dict[str, Any], deltas: dict[tuple[str, str, str], list[np.ndarray]],
                 name: str) -> dict[str, dict[str, dict[str, float] | None]]:
    """Mean delta over the part's entries per source and metric, with the joint interval."""
    leaves = [v for v in part.values() if "real" in v] or [v for c in part.values() for v in c.values()]
    out: dict[str, dict[str, dict[str, float] | None]] = {}
    for src in [s for s in SOURCES if any(s in v for v in leaves)]:
        out[src] = {}
        for metric in ("rhythmic", "harmonic"):
            vals = [v[src][metric]["delta"]["value"] for v in leaves if src in v and v[src][metric] is not None
                    and v[src][metric]["delta"]["value"] is not None]
            reps = deltas.get((name, src, metric), [])
            out[src][metric] = (interval(float(np.mean(vals)), np.mean(reps, axis=0)).as_dict()
                                if vals and len(reps) == len(vals) else None)
    return out


# ---------------------------------------------------------------------------------------------------- note level


def note_settings(index: dict[str, Any], combos: dict[str, list[str]], mode: str) -> set[str]:
    """Settings with note-level metrics: "single" = total + one-stem arrangements, "all" = every setting."""
    names = {s["name"] for s in index["settings"]}
    chosen = {"total"} | {f"arrange_{c}" for c, g in combos.items() if mode == "all" or len(g) == 1}
    return chosen & names


def transcribe_all(samples: Samples, rels: Sequence[str], transcriber: BasicPitch, known: dict[str, Notes]) -> None:
    """Add the notes of every readable file of `rels` not in `known` to it (one batched basic-pitch call)."""
    todo = [r for r in dict.fromkeys(rels) if r not in known and samples.wav(r) is not None]
    if todo:
        known.update(zip(todo, transcriber.transcribe([samples.wav(r) for r in todo], samples.sr)))


def note_coherence(samples: Samples, index: dict[str, Any], combos: dict[str, list[str]], partners: np.ndarray,
                   settings: set[str], transcriber: BasicPitch, known: dict[str, Notes], n_boot: int,
                   seed: int) -> dict[str, Any]:
    """Pitch-class / bass-root / onset metrics with intervals for the chosen settings' entries and sources.

    `known` holds transcriptions by samples/-relative path; the missing ones are added to it."""
    n, seconds = len(samples.items), samples.seg / samples.sr
    chosen = [e for e in entries(index, combos) if e.setting in settings]
    sources = [s for s in SOURCES if s in ("real", "shuffled") or s in samples.prefix]

    def files(e: Entry, source: str, stem: str, i: int) -> str:
        ctx_src = "real" if source == "shuffled" else source
        return samples.stem_rel(e, ctx_src if stem != e.stem else source, stem,
                                int(partners[i, 1]) if source == "shuffled" and stem == e.stem else i)

    every = {files(e, s, st, i) for e in chosen for s in sources for st in (e.stem, *e.context) for i in range(n)}
    transcribe_all(samples, sorted(r for r in every if r.split("/")[-2] not in UNPITCHED), transcriber, known)
    notes = {r: known[r] for r in every if r in known}
    onsets = {r: notes[r].onsets for r in notes}
    onsets |= {r: drum_onsets(samples.wav(r), samples.sr) for r in every
               if r.split("/")[-2] in UNPITCHED and samples.wav(r) is not None}
    idx = resample(n, n_boot, seed)
    out: dict[str, Any] = {"arrangement": {}, "total": {}}
    reps: dict[tuple[str, str, str], list[np.ndarray]] = {}
    for e in chosen:
        result = {}
        for source in sources:
            values: dict[str, list[float]] = {"pitch_class": [], "bass_root": [], "onset_alignment": []}
            for i in range(n):
                stem, ctx = files(e, source, e.stem, i), [files(e, source, c, i) for c in e.context]
                if stem not in onsets or any(c not in onsets for c in ctx):
                    for v in values.values():
                        v.append(float("nan"))
                    continue
                pitched = Notes.concat([notes[c] for c in ctx if c in notes])
                context_onsets = np.concatenate([onsets[c] for c in ctx])
                values["onset_alignment"].append(onset_alignment(onsets[stem], context_onsets))
                values["pitch_class"].append(pitch_class_agreement(notes[stem], pitched, seconds)
                                             if stem in notes else float("nan"))
                values["bass_root"].append(bass_root_agreement(notes[stem], pitched, seconds)
                                           if e.stem == "bass" and stem in notes else float("nan"))
            result[source] = {}
            for metric, vals in values.items():
                v = np.asarray(vals)
                if metric == "pitch_class" and e.stem in UNPITCHED or metric == "bass_root" and e.stem != "bass":
                    result[source][metric] = None
                    continue
                r = _item_replicates(v, idx)
                finite = np.isfinite(v)
                result[source][metric] = _summary(float(v[finite].mean()) if finite.any() else float("nan"), r,
                                                  int(finite.sum()))
                if finite.any():
                    reps.setdefault((e.part, source, metric), []).append(r)
        target = out["arrangement"].setdefault(e.combo, {}) if e.part == "arrangement" else out["total"]
        target[e.stem] = result
    out["mean"] = {part: {src: {m: _mean_of(out[part], reps, part, src, m)
                                for m in ("pitch_class", "bass_root", "onset_alignment")} for src in sources}
                   for part in ("arrangement", "total")}
    out["transcribed_files"] = len(notes)
    return out


def _item_replicates(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean over the resampled items, NaN items left out: [B]."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample of NaN items only: NaN, dropped later
        return np.nanmean(values[idx], axis=1)


def _mean_of(part: dict[str, Any], reps: dict[tuple[str, str, str], list[np.ndarray]], name: str, src: str,
             metric: str) -> dict[str, float] | None:
    leaves = [v for v in part.values() if "real" in v] or [v for c in part.values() for v in c.values()]
    vals = [v[src][metric]["value"] for v in leaves if src in v and v[src][metric] is not None
            and v[src][metric]["value"] is not None]
    r = reps.get((name, src, metric), [])
    if not vals or len(r) != len(vals):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return interval(float(np.mean(vals)), np.nanmean(np.stack(r), axis=0)).as_dict()
