"""Ingest multitrack corpora as per-track 4-stem audio (`mtmusicldm.STEMS` order: bass, drums, guitar, piano).

Three on-disk layouts are understood (plus the synthetic band dataset, which uses the Slakh redux layout):

* Slakh2100 flac redux: `root/{train,validation,test,omitted}/TrackNNNNN/metadata.yaml` + `stems/SXX.flac`.
  Stems are classed by MIDI program family (Piano 0-7, Guitar 24-31, Bass 32-39) or `is_drum: true` (Drums,
  whatever the program). Other classes are ignored; several stems of one class are summed.
* MSDM's 4-stem Slakh release: `root/{train,validation,test}/TrackNNNNN/{bass,drums,guitar,piano}.wav`.
* BabySlakh: `root[/babyslakh_16k]/TrackNNNNN/metadata.yaml` + `stems/SXX.wav`, no splits: each track's split is
  a fixed function of a hash of its id, so it does not depend on which other tracks exist.

Scanning touches no audio (only listings and metadata); `load_track` decodes, mixes down, resamples and sums.
Bad tracks are reported, never silently dropped: scanners return `SkippedTrack`s with a reason, and `load_track`
raises `TrackError` naming the track and the file.
"""
from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from mtmusicldm import STEMS
from mtmusicldm.audio.io import AudioError, audio_info, load_audio
from mtmusicldm.data.gm import CLASS_PROGRAMS
from mtmusicldm.geometry import SAMPLE_RATE

__all__ = ["TrackSource", "SkippedTrack", "LoadedTrack", "TrackError", "SCANNERS", "classify_stem",
           "scan_slakh_redux", "scan_msdm", "scan_babyslakh", "scan_source", "load_track", "babyslakh_split"]

MissingStemPolicy = Literal["drop", "silent"]
_TRACK_RE = re.compile(r"^Track\d+$")
_AUDIO_SUFFIXES = (".flac", ".wav")
_LENGTH_NOTE_S = 0.1  # stems whose lengths differ by more than this are noted


@dataclass(frozen=True)
class TrackSource:
    """Where one track's stems live, before any audio is read.

    Attributes:
        track_id: e.g. "Track00001".
        split: "train" | "validation" | "test" (or another split asked for, e.g. "omitted").
        stem_files: stem name (each of `STEMS`) -> files to sum; an empty list means "absent: load as silence".
        source_layout: "slakh_redux" | "msdm" | "babyslakh".
        notes: human-readable remarks (stems ignored, unrendered, missing on disk, ...).
    """

    track_id: str
    split: str
    stem_files: dict[str, list[Path]]
    source_layout: str
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SkippedTrack:
    """A track left out at scan or load time, and why."""

    track_id: str
    split: str
    reason: str


@dataclass(frozen=True)
class LoadedTrack:
    """Decoded stems of one track.

    Attributes:
        audio: float32 `[S=4, T]` in `STEMS` order, mono, at the requested rate; shorter stems zero-padded.
        silent: per stem, True when the stem is absent or its RMS is below the silence threshold.
        source_sample_rate: rate of the source files (the first file's rate when they differ; see notes).
    """

    track_id: str
    split: str
    audio: np.ndarray
    silent: list[bool]
    source_sample_rate: int
    notes: list[str]


class TrackError(ValueError):
    """A track could not be loaded (corrupt, truncated, zero-length or missing file); names track and reason."""

    def __init__(self, track_id: str, reason: str) -> None:
        super().__init__(f"{track_id}: {reason}")
        self.track_id = track_id
        self.reason = reason


# ---------------------------------------------------------------------------------------------------- scanning
def classify_stem(stem_meta: Mapping[str, Any]) -> str | None:
    """Stem name for one Slakh `metadata.yaml` stem entry, or None for classes outside `STEMS`.

    `is_drum: true` means drums whatever the program (Slakh stores program 0 for drum stems); otherwise the
    MIDI program family decides: Piano 0-7, Guitar 24-31, Bass 32-39.
    """
    if stem_meta.get("is_drum") is True:
        return "drums"
    program = stem_meta.get("program_num")
    if isinstance(program, bool) or not isinstance(program, int):
        return None
    return next((name for name, progs in CLASS_PROGRAMS.items() if program in progs), None)


def _track_dirs(parent: Path) -> list[Path]:
    """`TrackNNNNN` directories under `parent`, sorted (hidden temporaries and other names are ignored)."""
    return sorted(p for p in parent.iterdir() if p.is_dir() and _TRACK_RE.match(p.name))


def _check_policy(policy: str) -> None:
    if policy not in ("drop", "silent"):
        raise ValueError(f"missing_stem_policy must be 'drop' or 'silent', got {policy!r}")


def _apply_policy(track_id: str, split: str, layout: str, files: dict[str, list[Path]], notes: list[str],
                  policy: MissingStemPolicy) -> TrackSource | SkippedTrack:
    """Drop the track if a stem class is absent (policy "drop"), or keep it with an empty list ("silent")."""
    missing = [s for s in STEMS if not files[s]]
    if len(missing) == len(STEMS):
        return SkippedTrack(track_id, split, "no usable stem of any of " + ", ".join(STEMS))
    if missing and policy == "drop":
        detail = f" ({'; '.join(notes)})" if notes else ""
        return SkippedTrack(track_id, split, "; ".join(f"no {s} stem" for s in missing) + detail)
    notes = notes + [f"no {s} stem: loaded as silence" for s in missing]
    return TrackSource(track_id, split, {s: files[s] for s in STEMS}, layout, notes)


def _find_audio(folder: Path, name: str) -> Path | None:
    return next((folder / f"{name}{ext}" for ext in _AUDIO_SUFFIXES if (folder / f"{name}{ext}").is_file()), None)


def _from_metadata(track_dir: Path, split: str, layout: str,
                   policy: MissingStemPolicy) -> TrackSource | SkippedTrack:
    """Read a Slakh-style `metadata.yaml` and map its stems onto `STEMS`."""
    tid = track_dir.name
    meta_path = track_dir / "metadata.yaml"
    if not meta_path.is_file():
        return SkippedTrack(tid, split, "missing metadata.yaml")
    try:
        meta = yaml.safe_load(meta_path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        return SkippedTrack(tid, split, f"unparsable metadata.yaml ({type(e).__name__}: {e})".replace("\n", " "))
    if not isinstance(meta, dict) or not isinstance(meta.get("stems"), dict):
        return SkippedTrack(tid, split, "metadata.yaml has no 'stems' mapping")
    audio_dir = track_dir / str(meta.get("audio_dir") or "stems")
    files: dict[str, list[Path]] = {s: [] for s in STEMS}
    notes: list[str] = []
    for name in sorted(meta["stems"]):
        entry = meta["stems"][name]
        if not isinstance(entry, dict):
            notes.append(f"{name}: malformed stem entry, ignored")
            continue
        stem = classify_stem(entry)
        if stem is None:
            continue  # a class outside STEMS (strings, organ, ...): ignored by design
        if entry.get("audio_rendered") is False:
            notes.append(f"{name} ({stem}): audio_rendered is false, skipped")
            continue
        path = _find_audio(audio_dir, str(name))
        if path is None:
            notes.append(f"{name} ({stem}): no audio file in {audio_dir.name}/, skipped")
            continue
        files[stem].append(path)
    for s in STEMS:
        if len(files[s]) > 1:
            notes.append(f"{s}: summing {len(files[s])} stems ({', '.join(p.stem for p in files[s])})")
    return _apply_policy(tid, split, layout, files, notes, policy)


def _split_dirs(root: Path, splits: Sequence[str]) -> list[tuple[str, Path]]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist")
    found = [(s, root / s) for s in splits if (root / s).is_dir()]
    if not found:
        raise FileNotFoundError(f"{root}: none of the split folders {list(splits)} exists")
    return found


def _collect(items: Iterable[TrackSource | SkippedTrack]) -> tuple[list[TrackSource], list[SkippedTrack]]:
    kept: list[TrackSource] = []
    skipped: list[SkippedTrack] = []
    for item in items:
        (kept if isinstance(item, TrackSource) else skipped).append(item)  # type: ignore[arg-type]
    return kept, skipped


def scan_slakh_redux(root: Path, *, splits: Sequence[str] = ("train", "validation", "test"),
                     missing_stem_policy: MissingStemPolicy = "drop") -> tuple[list[TrackSource], list[SkippedTrack]]:
    """Scan Slakh2100 flac redux (or the synthetic band dataset): `root/<split>/TrackNNNNN/metadata.yaml`.

    Args:
        root: folder holding the split folders. Splits that do not exist are skipped (at least one must).
        splits: split folders to read, in order; Slakh's `omitted` split is read only if listed.
        missing_stem_policy: "drop" skips a track lacking one of `STEMS`; "silent" keeps it with an empty file
            list for that stem (loaded as zeros and flagged silent).

    Returns:
        (sources, skipped), each sorted by split order then track id.

    Raises:
        FileNotFoundError: `root` or all of its split folders are missing.
    """
    _check_policy(missing_stem_policy)
    return _collect(_from_metadata(d, split, "slakh_redux", missing_stem_policy)
                    for split, folder in _split_dirs(root, splits) for d in _track_dirs(folder))


def scan_msdm(root: Path, *, splits: Sequence[str] = ("train", "validation", "test"),
              missing_stem_policy: MissingStemPolicy = "drop") -> tuple[list[TrackSource], list[SkippedTrack]]:
    """Scan MSDM's 4-stem Slakh (22.05 kHz): `root/<split>/TrackNNNNN/{bass,drums,guitar,piano}.wav`.

    Arguments and return value as `scan_slakh_redux`; a missing `<stem>.wav` is an absent stem.
    """
    _check_policy(missing_stem_policy)

    def one(track_dir: Path, split: str) -> TrackSource | SkippedTrack:
        files = {s: [track_dir / f"{s}.wav"] if (track_dir / f"{s}.wav").is_file() else [] for s in STEMS}
        return _apply_policy(track_dir.name, split, "msdm", files, [], missing_stem_policy)

    return _collect(one(d, split) for split, folder in _split_dirs(root, splits) for d in _track_dirs(folder))


def babyslakh_split(track_id: str, *, validation_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """Deterministic split of a track from the SHA-256 of its id (independent of the other tracks)."""
    if not (0 <= validation_fraction and 0 <= test_fraction and validation_fraction + test_fraction <= 1):
        raise ValueError(f"need fractions >= 0 summing to <= 1, got validation={validation_fraction}, "
                         f"test={test_fraction}")
    u = int.from_bytes(hashlib.sha256(track_id.encode()).digest()[:8], "big") / 2.0 ** 64  # uniform in [0, 1)
    return "test" if u < test_fraction else "validation" if u < test_fraction + validation_fraction else "train"


def scan_babyslakh(root: Path, *, splits: Sequence[str] = ("train", "validation", "test"),
                   validation_fraction: float = 0.1, test_fraction: float = 0.1,
                   missing_stem_policy: MissingStemPolicy = "drop") -> tuple[list[TrackSource], list[SkippedTrack]]:
    """Scan BabySlakh (`root[/babyslakh_16k]/TrackNNNNN/metadata.yaml` + `stems/SXX.wav`, 16 kHz, no splits).

    Each track gets a split from `babyslakh_split(track_id, ...)`; only tracks whose split is in `splits` are
    returned. Other arguments as `scan_slakh_redux`.

    Raises:
        FileNotFoundError: `root` holds no `TrackNNNNN` folder.
    """
    _check_policy(missing_stem_policy)
    root = Path(root)
    if (root / "babyslakh_16k").is_dir():
        root = root / "babyslakh_16k"
    tracks = _track_dirs(root) if root.is_dir() else []
    if not tracks:
        raise FileNotFoundError(f"{root}: no TrackNNNNN folders (expected the BabySlakh layout)")
    assigned = [(babyslakh_split(d.name, validation_fraction=validation_fraction, test_fraction=test_fraction), d)
                for d in tracks]
    return _collect(_from_metadata(d, split, "babyslakh", missing_stem_policy)
                    for want in splits for split, d in assigned if split == want)


SCANNERS: dict[str, Callable[..., tuple[list[TrackSource], list[SkippedTrack]]]] = {
    "synthetic": scan_slakh_redux, "slakh": scan_slakh_redux, "msdm": scan_msdm, "babyslakh": scan_babyslakh}
"""Scanner per source kind (`synthetic` is written in the Slakh redux layout): the one list of corpus sources."""
SourceKind = Literal[tuple(SCANNERS)]  # type: ignore[valid-type]  # the `data.source` values, from the registry


def scan_source(kind: SourceKind, root: Path, **kwargs: Any) -> tuple[list[TrackSource], list[SkippedTrack]]:
    """Scan `root` with the scanner registered for `kind`; keyword arguments go to that scanner."""
    if kind not in SCANNERS:
        raise ValueError(f"unknown source kind {kind!r}; expected one of {sorted(SCANNERS)}")
    return SCANNERS[kind](Path(root), **kwargs)


# ---------------------------------------------------------------------------------------------------- loading
def _rms_db(x: np.ndarray) -> float:
    ms = float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0
    return 10.0 * math.log10(ms) if ms > 0 else -math.inf


def _pad_stack(waves: Sequence[np.ndarray]) -> np.ndarray:
    """Zero-pad 1-D arrays on the right to the longest and stack them, `[N, T]`."""
    n = max((w.size for w in waves), default=0)
    out = np.zeros((len(waves), n), dtype=np.float32)
    for i, w in enumerate(waves):
        out[i, : w.size] = w
    return out


def _length_note(lengths: Mapping[str, int], sample_rate: int, what: str) -> str | None:
    if not lengths or max(lengths.values()) - min(lengths.values()) <= _LENGTH_NOTE_S * sample_rate:
        return None
    parts = ", ".join(f"{k} {v / sample_rate:.2f} s" for k, v in lengths.items())
    return f"{what} lengths differ ({parts}); zero-padded to {max(lengths.values()) / sample_rate:.2f} s"


def load_track(src: TrackSource, sample_rate: int = SAMPLE_RATE, *, silence_db: float = -60.0) -> LoadedTrack:
    """Decode a track's stems: mono mixdown, resampling, summing per class, padding to a common length.

    Args:
        src: from a scanner.
        sample_rate: output rate (Hz).
        silence_db: a stem whose RMS is below this (dBFS) is flagged silent; absent stems are always silent.

    Returns:
        LoadedTrack with `audio` float32 `[4, T]` in `STEMS` order.

    Raises:
        TrackError: a file is missing, corrupt, truncated, zero-length or non-finite (wraps the AudioError).
    """
    notes = list(src.notes)
    stems: list[np.ndarray] = []
    rates: dict[Path, int] = {}
    for stem in STEMS:
        waves, lengths = [], {}
        for path in src.stem_files[stem]:
            try:
                rates[path] = audio_info(path).sample_rate
                wav = load_audio(path, sample_rate, mono=True)
            except (AudioError, OSError) as e:
                raise TrackError(src.track_id, f"{stem} file {path.name} ({src.split}): {e}") from e
            waves.append(wav)
            lengths[path.name] = wav.size
        if note := _length_note(lengths, sample_rate, f"{stem} stems"):
            notes.append(note)
        stems.append(_pad_stack(waves).sum(axis=0, dtype=np.float32) if waves else np.zeros(0, np.float32))
    if note := _length_note({s: w.size for s, w in zip(STEMS, stems) if src.stem_files[s]}, sample_rate,
                            "stem"):
        notes.append(note)
    audio = _pad_stack(stems)
    silent = [not src.stem_files[s] or _rms_db(stems[i]) < silence_db for i, s in enumerate(STEMS)]
    notes += [f"{s}: silent (RMS below {silence_db:g} dBFS)" for i, s in enumerate(STEMS)
              if src.stem_files[s] and silent[i]]
    distinct = sorted(set(rates.values()))
    if len(distinct) > 1:
        notes.append(f"source files have different sample rates {distinct}; all resampled to {sample_rate}")
    source_rate = next(iter(rates.values())) if rates else sample_rate
    return LoadedTrack(src.track_id, src.split, audio, silent, source_rate, notes)
