"""Audio folders -> embeddings, with a content-addressed embedding cache (FAD between folders: `fad_table`).

Loading policy (audioldm_eval's, official spec §9): every file is read at the embedder's rate (files at other
rates are resampled with soxr and counted in the result), the *first* channel is kept, files are sorted by their
relative path. NaN/inf samples, unreadable or empty files raise `mtmusicldm.audio.AudioError` naming the file.

Cache policy: audioldm_eval silently reuses `<dir>_fad_feature_cache.npy` even after the folder or the model
changed. Here a cache entry is keyed by sha256 over (every file's relative name, size, mtime_ns and byte content)
+ the loading options + `embedder.fingerprint()`, so touching, rewriting, adding or removing any file, or changing
the backbone's weights/preprocessing, always recomputes. The key is checked again after embedding and nothing is
stored if the folder changed meanwhile. Entries are named `<folder>-<path hash>-<backbone>-<fingerprint[:8]>-
<key[:16]>.npz`; saving deletes older entries of the same folder and backbone fingerprint (stale content), so
each backbone configuration keeps one entry per folder.
"""
from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from mtmusicldm.audio import AudioError, audio_info, load_audio
from mtmusicldm.evaluation.base import AudioEmbedder
from mtmusicldm.utils.fs import atomic_file

__all__ = [
    "AUDIO_SUFFIXES", "AudioSet", "DirEmbeddings", "EmbeddingCache", "directory_digest", "embed_dir", "embed_set",
    "list_audio_files", "load_audio_dir", "load_audio_set",
]  # fmt: skip

_log = logging.getLogger(__name__)
AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")
Channel = Literal["first", "mean"]
_CACHE_VERSION = 2


def list_audio_files(directory: str | Path, *, recursive: bool = False) -> list[Path]:
    """Audio files of a folder, sorted by relative path.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: it holds no file with a suffix in `AUDIO_SUFFIXES` (the message names the folder).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: audio folder not found")
    pattern = "**/*" if recursive else "*"
    files = [p for p in directory.glob(pattern) if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES]
    if not files:
        raise ValueError(f"{directory}: no audio files ({', '.join(AUDIO_SUFFIXES)})"
                         + ("" if recursive else " at top level (recursive=False)"))
    return sorted(files, key=lambda p: p.relative_to(directory).as_posix())


def directory_digest(directory: str | Path, *, recursive: bool = False) -> str:
    """sha256 over each audio file's relative name, size, mtime_ns and bytes (sorted), hex."""
    directory = Path(directory)
    h = hashlib.sha256()
    for path in list_audio_files(directory, recursive=recursive):
        st = path.stat()
        h.update(f"{path.relative_to(directory).as_posix()}|{st.st_size}|{st.st_mtime_ns}|".encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class AudioSet:
    """Waveforms of one folder.

    Attributes:
        directory: the folder.
        names: relative posix paths, sorted.
        wavs: [T_i] float32 waveforms at `sample_rate`, one per name.
        sample_rate: rate of `wavs`.
        source_rates: native sample rate -> number of files (rates != `sample_rate` were resampled).
        skipped: (relative name, reason) of files left out (only with `skip_bad`).
    """

    directory: Path
    names: tuple[str, ...]
    wavs: tuple[np.ndarray, ...]
    sample_rate: int
    source_rates: dict[int, int]
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def resampled(self) -> int:
        """Number of files that were resampled."""
        return sum(n for sr, n in self.source_rates.items() if sr != self.sample_rate)


def load_audio_set(directory: str | Path, sample_rate: int = 16000, *, recursive: bool = False,
                   channel: Channel = "first", skip_bad: bool = False) -> AudioSet:
    """Load every audio file of a folder (see the module docstring for the policy).

    Args:
        directory: folder of wav/flac/ogg/mp3 files.
        sample_rate: output rate; other rates are resampled (soxr HQ) and logged.
        recursive: include sub-folders (names are then relative paths).
        channel: "first" (audioldm_eval) or "mean" (mix-down) for multi-channel files.
        skip_bad: leave unreadable / non-finite files out (listed in `AudioSet.skipped`) instead of raising.

    Returns:
        AudioSet.

    Raises:
        FileNotFoundError / ValueError: missing or empty folder.
        mtmusicldm.audio.AudioError: unreadable file or NaN/inf samples (names the file).
    """
    if channel not in ("first", "mean"):
        raise ValueError(f"channel must be 'first' or 'mean', got {channel!r}")
    directory = Path(directory)
    names, wavs, rates, skipped = [], [], Counter(), []
    for path in list_audio_files(directory, recursive=recursive):
        name = path.relative_to(directory).as_posix()
        try:
            rate = audio_info(path).sample_rate
            wav = load_audio(path, sample_rate, mono=channel == "mean")
        except AudioError as e:
            if not skip_bad:
                raise
            skipped.append((name, str(e).removeprefix(f"{path}: ")))
            continue
        rates[rate] += 1
        names.append(name)
        wavs.append(np.ascontiguousarray(wav if wav.ndim == 1 else wav[0]))
    result = AudioSet(directory, tuple(names), tuple(wavs), sample_rate, dict(sorted(rates.items())), tuple(skipped))
    if result.resampled:
        _log.warning("%s: %d of %d files resampled to %d Hz (native rates %s)", directory, result.resampled,
                     len(names), sample_rate, result.source_rates)
    return result


def load_audio_dir(directory: str | Path, sample_rate: int = 16000, *, recursive: bool = False,
                   channel: Channel = "first") -> list[tuple[str, np.ndarray]]:
    """`load_audio_set` as a sorted list of (relative name, [T] float32 waveform at `sample_rate`)."""
    s = load_audio_set(directory, sample_rate, recursive=recursive, channel=channel)
    return list(zip(s.names, s.wavs))


def _progress(items: Sequence, enabled: bool, desc: str) -> Iterable:
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return items
    return tqdm(items, desc=desc, leave=False)


def _embed_counts(embedder: AudioEmbedder, wavs: Sequence[np.ndarray] | Sequence[tuple[str, np.ndarray]],
                  progress: bool, skipped: list[tuple[str, str]] | None = None
                  ) -> tuple[np.ndarray, list[int], list[int]]:
    """Embed files: (pooled [frames, D], frames per kept file, indices of the kept files). With `skipped`, files
    whose embedding fails are appended there as (name, reason) instead of raising."""
    rows, counts, kept = [], [], []
    for i, item in enumerate(_progress(wavs, progress, f"embed[{embedder.name}]")):
        name, wav = item if isinstance(item, tuple) else (f"item {i}", item)
        try:
            emb = np.asarray(embedder.embed(np.asarray(wav, dtype=np.float32)))
            if emb.ndim != 2 or emb.shape[0] < 1 or emb.shape[1] != embedder.dim:
                raise ValueError(f"{name}: {embedder.name} returned shape {emb.shape}, expected [frames>=1, "
                                 f"{embedder.dim}]")
            if not np.isfinite(emb).all():
                raise ValueError(f"{name}: {embedder.name} returned NaN or infinite embeddings")
        except ValueError as e:
            if skipped is None:
                raise
            skipped.append((name, str(e).removeprefix(f"{name}: ")))
            continue
        rows.append(emb.astype(np.float32, copy=False))
        counts.append(emb.shape[0])
        kept.append(i)
    if not rows:
        raise ValueError("embed_set: no waveforms to embed" + (f" ({len(skipped)} skipped)" if skipped else ""))
    return np.concatenate(rows), counts, kept


def embed_set(embedder: AudioEmbedder, wavs: Sequence[np.ndarray] | Sequence[tuple[str, np.ndarray]],
              progress: bool = True) -> np.ndarray:
    """Embed files and pool their frames.

    Args:
        embedder: any `AudioEmbedder`; waveforms must already be at `embedder.sample_rate`.
        wavs: [T_i] waveforms, or (name, waveform) pairs (names appear in error messages).
        progress: show a tqdm bar.

    Returns:
        [frames_total, D] float32, files in the given order.
    """
    return _embed_counts(embedder, wavs, progress)[0]


@dataclass(frozen=True)
class DirEmbeddings:
    """Embeddings of one folder: `embeddings` [frames_total, D], per-file `frames`, provenance, and the
    (name, reason) of files left out (`skip_bad`)."""

    embeddings: np.ndarray
    names: tuple[str, ...]
    frames: tuple[int, ...]
    source_rates: dict[int, int] = field(default_factory=dict)
    cache_hit: bool = False
    skipped: tuple[tuple[str, str], ...] = ()


class EmbeddingCache:
    """`.npz` files keyed by folder content + loading options + backbone fingerprint (see module docstring).

    Args:
        cache_dir: where the `.npz` files live (created on first save).
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir)

    @staticmethod
    def key(directory: str | Path, embedder: AudioEmbedder, *, recursive: bool = False,
            channel: Channel = "first", skip_bad: bool = False) -> str:
        """The cache key (hex sha256); reads every file's bytes."""
        h = hashlib.sha256(f"v{_CACHE_VERSION}|{embedder.name}|{embedder.fingerprint()}|{embedder.sample_rate}|"
                           f"{recursive}|{channel}|{skip_bad}|".encode())
        h.update(directory_digest(directory, recursive=recursive).encode())
        return h.hexdigest()

    def _stem(self, directory: str | Path, embedder: AudioEmbedder) -> str:
        resolved = Path(directory).resolve()
        where = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in resolved.name) or "root"
        return f"{safe}-{where}-{embedder.name}-{embedder.fingerprint()[:8]}"

    def path(self, directory: str | Path, embedder: AudioEmbedder, key: str) -> Path:
        return self.cache_dir / f"{self._stem(directory, embedder)}-{key[:16]}.npz"

    def load(self, directory: str | Path, embedder: AudioEmbedder, key: str) -> DirEmbeddings | None:
        """The entry for `key`, or None (missing, unreadable or with a different stored key)."""
        path = self.path(directory, embedder, key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) != key:
                    return None
                emb, names = z["embeddings"], tuple(str(n) for n in z["names"])
                frames = tuple(int(f) for f in z["frames"])
                rates = {int(sr): int(n) for sr, n in z["rates"].reshape(-1, 2)}
                skipped = tuple(tuple(str(x).split("\t", 1)) for x in z["skipped"])
        except (OSError, KeyError, ValueError) as e:
            _log.warning("%s: unreadable embedding cache (%s); recomputing", path, e)
            return None
        if emb.ndim != 2 or emb.shape[0] != sum(frames) or not np.isfinite(emb).all():
            return None
        return DirEmbeddings(emb, names, frames, rates, cache_hit=True, skipped=skipped)  # type: ignore[arg-type]

    def save(self, directory: str | Path, embedder: AudioEmbedder, key: str, entry: DirEmbeddings) -> Path:
        """Write the entry atomically and delete older entries of the same folder and backbone fingerprint."""
        path = self.path(directory, embedder, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "wb") as f:
            np.savez(f, key=np.array(key), embeddings=entry.embeddings, names=np.array(entry.names),
                     frames=np.array(entry.frames, dtype=np.int64), fingerprint=np.array(embedder.fingerprint()),
                     rates=np.array(sorted(entry.source_rates.items()), dtype=np.int64).reshape(-1, 2),
                     skipped=np.array([f"{n}\t{r}" for n, r in entry.skipped], dtype=str))
        for old in self.cache_dir.glob(f"{self._stem(directory, embedder)}-*.npz"):
            if old != path:
                old.unlink(missing_ok=True)
        return path


def embed_dir(directory: str | Path, embedder: AudioEmbedder, *, cache: EmbeddingCache | None = None,
              recursive: bool = False, channel: Channel = "first", progress: bool = False,
              skip_bad: bool = False) -> DirEmbeddings:
    """Load a folder at the embedder's rate and embed it, through `cache` when given.

    Args:
        skip_bad: leave out files that cannot be read or embedded (listed in `skipped`) instead of raising.

    Returns:
        DirEmbeddings (`cache_hit` True when nothing was recomputed).
    """
    key = None
    if cache is not None:
        key = cache.key(directory, embedder, recursive=recursive, channel=channel, skip_bad=skip_bad)
        hit = cache.load(directory, embedder, key)
        if hit is not None:
            return hit
    audio = load_audio_set(directory, embedder.sample_rate, recursive=recursive, channel=channel, skip_bad=skip_bad)
    skipped = list(audio.skipped)
    emb, counts, kept = _embed_counts(embedder, list(zip(audio.names, audio.wavs)), progress,
                                      skipped if skip_bad else None)
    entry = DirEmbeddings(emb, tuple(audio.names[i] for i in kept), tuple(counts), audio.source_rates,
                          cache_hit=False, skipped=tuple(skipped))
    if cache is not None and key is not None:
        if cache.key(directory, embedder, recursive=recursive, channel=channel, skip_bad=skip_bad) == key:
            cache.save(directory, embedder, key, entry)
        else:
            _log.warning("%s changed while it was embedded; result not cached", directory)
    return entry
