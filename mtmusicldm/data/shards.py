"""WebDataset shards of multi-track segments: the sample schema, a deterministic writer and a reader.

A sample is one segment of one track: per stem one entry `<stem>.flac` (PCM_24 FLAC) or `<stem>.npy` (float32), plus
`json` metadata. Keys sort in the order they were written; tar headers carry a fixed mtime, owner and mode, so the
same inputs give byte-identical shards. Each shard is written to a temporary sibling and renamed into place: a
killed run never leaves a partial shard.

FLAC stores values in [-1, 1]. Summing several Slakh stems of one class can exceed that, so a segment whose peak is
above 1 is stored scaled by `1/peak` and its metadata carries `stem_gain = peak`; `decode_sample` multiplies it back
(loss: PCM_24 quantisation only). No audio is ever clipped.
"""
from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf

AudioFormat = Literal["flac", "npy"]
SHARD_PATTERN = "{split}-{index:06d}.tar"


def _flac_bytes(wav: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, sample_rate, format="FLAC", subtype="PCM_24")
    return buf.getvalue()


def _npy_bytes(wav: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, wav.astype(np.float32), allow_pickle=False)
    return buf.getvalue()


def encode_sample(key: str, audio: np.ndarray, meta: Mapping[str, Any], stems: Sequence[str],
                  sample_rate: int, audio_format: AudioFormat) -> dict[str, bytes | str]:
    """Serialise one segment.

    Args:
        key: sample key (unique within the dataset; no dots).
        audio: [S, T] float32 stem waveforms, S = len(stems).
        meta: JSON-serialisable metadata (track, split, offset, ...); `stem_gain` is added here.
        audio_format: "flac" (PCM_24) or "npy" (float32, exact).

    Returns:
        A WebDataset sample dict: `__key__`, `<stem>.<ext>` bytes, `json` bytes.
    """
    if "." in key:
        raise ValueError(f"sample key {key!r} must not contain '.' (WebDataset splits extensions on it)")
    if audio.ndim != 2 or audio.shape[0] != len(stems):
        raise ValueError(f"audio must be [S={len(stems)}, T], got {tuple(audio.shape)}")
    if not np.all(np.isfinite(audio)):
        raise ValueError(f"sample {key}: audio contains NaN or inf")
    gain = 1.0
    if audio_format == "flac":
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        # 24-bit PCM tops out at 1 - 2**-23; keep a hair of headroom so nothing is clipped.
        if peak > 0.999:
            gain = peak / 0.999
    sample: dict[str, bytes | str] = {"__key__": key}
    for s, stem in enumerate(stems):
        if audio_format == "flac":
            sample[f"{stem}.flac"] = _flac_bytes((audio[s] / gain).astype(np.float32), sample_rate)
        elif audio_format == "npy":
            sample[f"{stem}.npy"] = _npy_bytes(audio[s])
        else:
            raise ValueError(f"unknown audio_format {audio_format!r}")
    full_meta = dict(meta)
    full_meta["stem_gain"] = gain
    sample["json"] = json.dumps(full_meta, sort_keys=True).encode("utf-8")
    return sample


@dataclass
class DecodedSample:
    key: str
    audio: np.ndarray  # [S, T] float32
    meta: dict[str, Any]


def decode_sample(sample: Mapping[str, Any], stems: Sequence[str]) -> DecodedSample:
    """Inverse of `encode_sample` on a raw (undecoded) WebDataset sample dict."""
    key = sample["__key__"]
    if "json" not in sample:
        raise ValueError(f"sample {key}: no json metadata entry")
    meta = json.loads(sample["json"])
    waves = []
    for stem in stems:
        if f"{stem}.flac" in sample:
            wav, _ = sf.read(io.BytesIO(sample[f"{stem}.flac"]), dtype="float32")
        elif f"{stem}.npy" in sample:
            wav = np.load(io.BytesIO(sample[f"{stem}.npy"]), allow_pickle=False)
        else:
            raise ValueError(f"sample {key}: no entry for stem {stem!r} (has {sorted(k for k in sample if k[0] != '_')})")
        waves.append(wav.astype(np.float32))
    lengths = {len(w) for w in waves}
    if len(lengths) != 1:
        raise ValueError(f"sample {key}: stems have different lengths {sorted(lengths)}")
    audio = np.stack(waves) * np.float32(meta.get("stem_gain", 1.0))
    return DecodedSample(key=key, audio=audio, meta=meta)


class ShardWriter:
    """Deterministic, atomic WebDataset shard writer for one split.

    Shards are named `<split>-000000.tar`, ... in `out_dir`; each holds at most `samples_per_shard` samples.
    """

    def __init__(self, out_dir: Path, split: str, samples_per_shard: int) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.split = split
        self.samples_per_shard = samples_per_shard
        self.shards: list[str] = []
        self.counts: list[int] = []
        self._writer: Any = None  # webdataset.TarWriter while a shard is open
        self._tmp: Path | None = None
        self._final: Path | None = None
        self._count = 0

    def _open(self) -> None:
        name = SHARD_PATTERN.format(split=self.split, index=len(self.shards))
        self._final = self.out_dir / name
        self._tmp = self.out_dir / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        import webdataset as wds  # imported here: encode/decode workers need no webdataset (it imports torch)

        # Fixed header fields make the tar bytes a function of the content only.
        self._writer = wds.TarWriter(str(self._tmp), encoder=False, mtime=0.0, user="mtmusicldm",
                                     group="mtmusicldm", mode=0o644)
        self._count = 0

    def _close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        assert self._tmp is not None and self._final is not None
        os.replace(self._tmp, self._final)
        self.shards.append(self._final.name)
        self.counts.append(self._count)
        self._writer = None

    def write(self, sample: Mapping[str, bytes | str]) -> None:
        if self._writer is None:
            self._open()
        assert self._writer is not None
        self._writer.write(dict(sample))
        self._count += 1
        if self._count >= self.samples_per_shard:
            self._close()

    def close(self) -> list[str]:
        """Finish the last shard; returns the shard file names in order."""
        self._close()
        return self.shards

    def abort(self) -> None:
        """Drop the shard being written (on error)."""
        if self._writer is not None:
            self._writer.close()
            assert self._tmp is not None
            self._tmp.unlink(missing_ok=True)
            self._writer = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def list_shards(split_dir: Path) -> list[Path]:
    """Shard files of one split in order; raises FileNotFoundError naming the folder when there are none."""
    shards = sorted(Path(split_dir).glob("*.tar"))
    if not shards:
        raise FileNotFoundError(f"no .tar shards in {split_dir}")
    return shards


def iter_samples(shards: Sequence[Path], stems: Sequence[str]) -> Iterator[DecodedSample]:
    """Read samples from shards in order (no shuffling): for evaluation, encoding and tests."""
    import webdataset as wds

    ds = wds.WebDataset([str(p) for p in shards], shardshuffle=False, empty_check=False)
    for raw in ds:
        yield decode_sample(raw, stems)
