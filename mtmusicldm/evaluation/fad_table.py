"""Folder-to-folder FAD with 95 % bootstrap intervals: the one home of "FAD between two audio folders".

`FadTable` embeds each folder once (through the content-addressed `EmbeddingCache`, see `audio_sets`) and computes
FADs between folders or halves of folders (even / odd files). Every value comes with its 95 % bootstrap interval
(`bootstrap`): files are resampled with a generator seeded from `seed` and the set size, paired (the same indices
for both sets) when both folders hold the same file names, e.g. generated item i and its target i, and
independently otherwise (halves, held-out segments). Rows over the same items therefore share their resamples, so
`mean_row` of several rows (e.g. the 14 arrangements) is bootstrapped jointly. The point estimate is
`fad.fad_from_embeddings`. With `skip_bad`, unreadable or non-finite files are left out and listed in `notes`.

Used by the evaluate stage (`pipeline/evaluate.py`), the `mtmusicldm fad` command and the benchmarks.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from mtmusicldm.evaluation.audio_sets import DirEmbeddings, EmbeddingCache, embed_dir
from mtmusicldm.evaluation.base import AudioEmbedder
from mtmusicldm.evaluation.bootstrap import Resampled, fad_replicates, interval, resample
from mtmusicldm.evaluation.fad import RankDeficientWarning, fad_from_embeddings

__all__ = ["FadRow", "FadTable", "mean_row"]

Part = Literal["all", "even", "odd"]
_REFERENCES_KEPT = 4  # reference sets whose resampled statistics (B x D x D roots) stay in memory


@dataclass(frozen=True)
class FadRow:
    """One FAD with its interval.

    Attributes:
        value: FAD (frames pooled over files, not square-rooted).
        low, high: 95 % bootstrap interval.
        n_a, n_b: files in each set.
        frames_a, frames_b: embeddings in each set.
        paired: the two sets were resampled together (same file names).
        replicates: [B] FAD of each bootstrap resample.
    """

    value: float
    low: float
    high: float
    n_a: int
    n_b: int
    frames_a: int
    frames_b: int
    paired: bool
    replicates: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros(0))

    def as_dict(self) -> dict[str, float | int]:
        """The fad.json record: value, low, high, n_a, n_b."""
        return {"value": round(self.value, 6), "low": round(self.low, 6), "high": round(self.high, 6),
                "n_a": self.n_a, "n_b": self.n_b}


class FadTable:
    """Embeds folders once and computes FADs with intervals between folders or halves of folders.

    Args:
        embedder: the backbone.
        cache_dir: embedding cache folder, None for no cache.
        n_boot: bootstrap resamples per row.
        seed: seed of the resampling.
        skip_bad: leave out files that cannot be read or embedded (noted) instead of raising.
    """

    def __init__(self, embedder: AudioEmbedder, cache_dir: str | Path | None = None, *, n_boot: int = 200,
                 seed: int = 0, skip_bad: bool = False) -> None:
        if n_boot < 10:
            raise ValueError(f"FadTable: n_boot must be >= 10 for a 95 % interval, got {n_boot}")
        self.embedder = embedder
        self.cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
        self.n_boot, self.seed, self.skip_bad = int(n_boot), int(seed), skip_bad
        self._emb: dict[tuple[Path, bool], DirEmbeddings] = {}
        self._refs: dict[tuple[Path, str, bool, bool], Resampled] = {}  # a few reference sets, most recent last
        self.rank_deficient: list[str] = []
        self.notes: list[str] = []

    def embeddings(self, folder: str | Path, recursive: bool = False) -> DirEmbeddings:
        """The folder's embeddings (embedded on first use, through the cache)."""
        key = (Path(folder).resolve(), recursive)
        if key not in self._emb:
            d = embed_dir(folder, self.embedder, cache=self.cache, recursive=recursive, skip_bad=self.skip_bad)
            self.notes += [f"{folder}/{name}: skipped ({why})" for name, why in d.skipped]
            self._emb[key] = d
        return self._emb[key]

    def files(self, folder: str | Path, part: Part = "all", recursive: bool = False
              ) -> tuple[list[str], list[np.ndarray]]:
        """(names, per-file [frames_i, D] embeddings) of all, or of the even / odd files (sorted names)."""
        if part not in ("all", "even", "odd"):
            raise ValueError(f"part must be 'all', 'even' or 'odd', got {part!r}")
        d = self.embeddings(folder, recursive)
        ends = np.cumsum((0, *d.frames))
        keep = range(len(d.frames)) if part == "all" else range(0 if part == "even" else 1, len(d.frames), 2)
        return [d.names[i] for i in keep], [d.embeddings[ends[i]:ends[i + 1]] for i in keep]

    def fad(self, a: str | Path, b: str | Path, what: str, *, part_a: Part = "all", part_b: Part = "all",
            required: bool = True, recursive_a: bool = False, recursive_b: bool = False) -> FadRow | None:
        """FAD between two folders (or halves) with its 95 % interval.

        Args:
            a, b: folders (a: generated / first half, b: reference).
            what: label in messages, in `rank_deficient` and in the row's resampling seed.
            part_a, part_b: "all", "even" or "odd".
            required: raise on fewer than 2 embeddings (else note it and return None).
            recursive_a, recursive_b: read the folder recursively.

        Raises:
            ValueError: fewer than 2 embeddings in a set while `required`.
        """
        try:
            names_a, fa = self.files(a, part_a, recursive_a)
            names_b, fb = self.files(b, part_b, recursive_b)
        except ValueError as e:  # e.g. every file of a folder skipped
            if required:
                raise
            self.notes.append(f"{what}: {e}")
            return None
        na, nb = sum(len(f) for f in fa), sum(len(f) for f in fb)
        if min(na, nb) < 2:
            msg = (f"{what}: need at least 2 embeddings per set for a covariance, got {na} ({a}, {part_a}) "
                   f"and {nb} ({b}, {part_b}); sample more or longer segments")
            if required:
                raise ValueError(msg)
            self.notes.append(msg)
            return None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RankDeficientWarning)
            value = fad_from_embeddings(np.concatenate(fa), np.concatenate(fb))
        if any(issubclass(w.category, RankDeficientWarning) for w in caught):
            self.rank_deficient.append(what)
        paired = names_a == names_b
        idx_a = resample(len(fa), self.n_boot, self.seed)
        reps = fad_replicates(Resampled(fa, idx_a), self._reference(b, part_b, recursive_b, paired, fb))
        ci = interval(value, reps, nonnegative=True)
        return FadRow(float(value), ci.low, ci.high, len(fa), len(fb), na, nb, paired, reps)

    def _reference(self, folder: str | Path, part: Part, recursive: bool, paired: bool,
                   files: list[np.ndarray]) -> Resampled:
        """Set B's resampled statistics (paired: the same indices as set A), kept for the next rows."""
        key = (Path(folder).resolve(), part, recursive, paired)
        if key not in self._refs:
            idx = resample(len(files), self.n_boot, self.seed + (0 if paired else 1))
            self._refs[key] = Resampled(files, idx)
            while len(self._refs) > _REFERENCES_KEPT:
                self._refs.pop(next(iter(self._refs)))
        else:
            self._refs[key] = self._refs.pop(key)  # most recently used last
        return self._refs[key]


def mean_row(rows: Sequence[FadRow | None]) -> dict[str, float] | None:
    """Mean of several rows' FADs with its interval (replicate-wise mean: rows over the same items share their
    resamples); None when a row is missing."""
    if not rows or any(r is None for r in rows):
        return None
    value = float(np.mean([r.value for r in rows]))  # type: ignore[union-attr]
    reps = np.mean([r.replicates for r in rows], axis=0)  # type: ignore[union-attr]
    return interval(value, reps, nonnegative=True).as_dict()
