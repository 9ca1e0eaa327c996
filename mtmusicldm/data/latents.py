"""Latent shards (`data/latents/`): the sample schema, `latents.json`, and the seeded training stream.

A latent sample holds, for one segment, the VAE posterior of every stem (`mean.npy`, `std.npy`, the stored draw
`latents.npy`, all float16 `[S, C, T', F']`, unscaled), the optional CLAP embedding of the mixture (`clap.npy`,
float32 `[512]`) and the segment's metadata (`json`). See docs/formats.md.

Training stream (`make_latent_loader`): a deterministic function of `(seed, rank, world_size, num_workers)`.

* Epoch `e` visits every shard once, in an order drawn from `random.Random(seed, e)`.
* Read slots: `world_size * max(num_workers, 1)` (rank-major). With at least as many shards as slots, slot `k`
  reads shards `k, k + slots, ...` of the epoch order; with fewer shards every slot reads all of them and keeps
  the samples whose index in the epoch is `k mod slots`. Either way an epoch's samples are split disjointly.
* Each slot shuffles its samples with a buffer (`SHUFFLE_BUFFER`) seeded by `(seed, epoch, slot)`, and batches
  them. `resample=True` loops over epochs forever (batches may straddle epochs).
* The DataLoader takes worker batches round-robin (batch `j` of a rank comes from worker `j mod num_workers`), so
  resuming after `start_position` batches is exact: each worker drops its share of those batches as raw bytes,
  before any decoding, which is cheap for latents.
"""
from __future__ import annotations

import hashlib
import io
import json
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mtmusicldm.data.shards import ShardWriter, list_shards
from mtmusicldm.geometry import GEOMETRY, FrameGeometry
from mtmusicldm.utils.fs import write_json
from mtmusicldm.utils.rng import hash_seed

LATENTS_FORMAT = "mtmusicldm-latents"
LATENTS_VERSION = 1
SHUFFLE_BUFFER = 512  # samples per read slot (~130 MB of raw latents at paper size)
SHUFFLE_INITIAL = 64
TRAIN_ENTRIES = ("latents.npy", "clap.npy", "json")  # what the training stream reads (mean/std are skipped)


# ----------------------------------------------------------------------------------------------------------------
# Sample schema


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return buf.getvalue()


def _load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def encode_latent_sample(key: str, mean: np.ndarray, std: np.ndarray, latents: np.ndarray, clap: np.ndarray | None,
                         meta: Mapping[str, Any]) -> dict[str, bytes | str]:
    """Serialise one latent sample.

    Args:
        key: the shard sample key (no dots).
        mean: posterior mean [S, C, T', F'] (stored float16).
        std: posterior std [S, C, T', F'] (stored float16).
        latents: the stored latent [S, C, T', F'] (stored float16), unscaled.
        clap: CLAP mixture embedding [512] (stored float32), or None for unconditional data.
        meta: JSON-serialisable metadata (the audio shard's `json`).

    Returns:
        A WebDataset sample dict: `__key__`, `mean.npy`, `std.npy`, `latents.npy`, [`clap.npy`], `json`.
    """
    if "." in key:
        raise ValueError(f"sample key {key!r} must not contain '.' (WebDataset splits extensions on it)")
    arrays = {"mean": mean, "std": std, "latents": latents}
    for name, x in arrays.items():
        if x.ndim != 4 or x.shape != latents.shape:
            raise ValueError(f"sample {key}: {name} must be [S, C, T', F'] like latents {latents.shape}, got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"sample {key}: {name} contains NaN or inf")
    sample: dict[str, bytes | str] = {"__key__": key}
    for name, x in arrays.items():
        sample[f"{name}.npy"] = _npy(np.asarray(x, dtype=np.float16))
    if clap is not None:
        if clap.ndim != 1:
            raise ValueError(f"sample {key}: clap must be [D], got {clap.shape}")
        sample["clap.npy"] = _npy(np.asarray(clap, dtype=np.float32))
    sample["json"] = json.dumps(dict(meta), sort_keys=True).encode("utf-8")
    return sample


@dataclass
class LatentSample:
    """One decoded latent sample (arrays as stored: float16 latents, float32 clap)."""

    key: str
    latents: np.ndarray  # [S, C, T', F']
    meta: dict[str, Any]
    clap: np.ndarray | None = None  # [512]
    mean: np.ndarray | None = None  # [S, C, T', F'] (absent from the training stream)
    std: np.ndarray | None = None


def decode_latent_sample(sample: Mapping[str, Any]) -> LatentSample:
    """Inverse of `encode_latent_sample` on a raw WebDataset sample (bytes entries)."""
    key = sample["__key__"]
    for entry in ("latents.npy", "json"):
        if entry not in sample:
            entries = sorted(k for k in sample if k[0] != "_")
            raise ValueError(f"latent sample {key}: no {entry!r} entry (has {entries})")

    def opt(name: str) -> np.ndarray | None:
        return _load_npy(sample[name]) if name in sample else None

    return LatentSample(key=key, latents=_load_npy(sample["latents.npy"]), meta=json.loads(sample["json"]),
                        clap=opt("clap.npy"), mean=opt("mean.npy"), std=opt("std.npy"))


def write_latent_split(out_dir: Path, split: str, samples: Iterable[Mapping[str, bytes | str]],
                       samples_per_shard: int) -> tuple[list[str], int]:
    """Write encoded samples as `<out_dir>/<split>/<split>-NNNNNN.tar` (atomic per shard).

    Returns:
        (shard file names, number of samples).
    """
    n = 0
    with ShardWriter(Path(out_dir) / split, split, samples_per_shard) as writer:
        for s in samples:
            writer.write(s)
            n += 1
    return writer.shards, n


def iter_latent_samples(shards: Sequence[Path]) -> Iterator[LatentSample]:
    """Read latent samples in stored order (no shuffling): for evaluation and tests."""
    ds = wds.WebDataset([str(p) for p in shards], shardshuffle=False, empty_check=False)
    for raw in ds:
        yield decode_latent_sample(raw)


# ----------------------------------------------------------------------------------------------------------------
# latents.json


@dataclass(frozen=True)
class LatentsIndex:
    """`latents.json` of a latent dataset (docs/formats.md).

    Attributes:
        root: the dataset directory (not stored in the file).
        latent_shape: [S, C, T', F'] of every stored latent.
        scale_factor: 1 / std of the unscaled training latents; models use `z * scale_factor`.
        clap: CLAP embedder description, or None when the data has no conditioning.
        uncond_clap: CLAP embedding of "" [512] (the CFG token), or None.
        splits: per split `{samples, shards}`.
        codec_dir: path of the codec dir the latents were encoded with (optional key), or None.
        geometry: the frame geometry of the latents (optional key: files without it read as `GEOMETRY`).
    """

    root: Path
    stems: tuple[str, ...]
    latent_shape: tuple[int, int, int, int]
    scale_factor: float
    scale_segments: int
    posterior: str
    clap: dict[str, Any] | None
    uncond_clap: tuple[float, ...] | None
    codec_sha256: str
    splits: dict[str, dict[str, Any]]
    codec_dir: str | None = None
    geometry: FrameGeometry = GEOMETRY

    def shard_paths(self, split: str) -> list[Path]:
        """The split's shard files, in order."""
        if split not in self.splits:
            raise ValueError(f"{self.root}/latents.json has no split {split!r} (has {sorted(self.splits)})")
        paths = [self.root / split / name for name in self.splits[split]["shards"]]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"latent shards listed in {self.root}/latents.json are missing: {missing[:5]}")
        return paths or list_shards(self.root / split)

    def fingerprint(self, splits: Sequence[str]) -> str:
        """sha256 of latents.json plus the names and sizes of the given splits' shards (detects new data)."""
        h = hashlib.sha256((self.root / "latents.json").read_bytes())
        for split in splits:
            for p in self.shard_paths(split):
                h.update(f"{split}/{p.name}:{p.stat().st_size}\n".encode())
        return h.hexdigest()


_REQUIRED = ("format", "version", "stems", "latent_shape", "scale_factor", "scale_segments", "posterior", "clap",
             "uncond_clap", "codec_sha256", "splits")


def read_latents_index(root: Path) -> LatentsIndex:
    """Read and check `<root>/latents.json`.

    Raises:
        FileNotFoundError: no latents.json.
        ValueError: wrong format/version or a missing key (named).
    """
    path = Path(root) / "latents.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the encode stage first")
    raw = json.loads(path.read_text())
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    if raw["format"] != LATENTS_FORMAT or raw["version"] != LATENTS_VERSION:
        raise ValueError(f"{path}: expected format {LATENTS_FORMAT!r} version {LATENTS_VERSION}, "
                         f"got {raw['format']!r} version {raw['version']}")
    shape = tuple(int(v) for v in raw["latent_shape"])
    if len(shape) != 4:
        raise ValueError(f"{path}: latent_shape must be [S, C, T', F'], got {raw['latent_shape']}")
    uncond = raw["uncond_clap"]
    return LatentsIndex(
        root=Path(root), stems=tuple(raw["stems"]), latent_shape=shape,  # type: ignore[arg-type]
        scale_factor=float(raw["scale_factor"]), scale_segments=int(raw["scale_segments"]),
        posterior=str(raw["posterior"]), clap=raw["clap"],
        uncond_clap=None if uncond is None else tuple(float(v) for v in uncond),
        codec_sha256=str(raw["codec_sha256"]), splits=dict(raw["splits"]),
        codec_dir=raw["codec_dir"] if "codec_dir" in raw else None,  # optional key
        geometry=FrameGeometry.from_dict(raw["geometry"] if "geometry" in raw else None, f"{path}: geometry"),
    )


def index_to_json(index: LatentsIndex) -> dict[str, Any]:
    """The `latents.json` mapping of an index (inverse of `read_latents_index`)."""
    out = {
        "format": LATENTS_FORMAT, "version": LATENTS_VERSION, "stems": list(index.stems),
        "latent_shape": list(index.latent_shape), "scale_factor": index.scale_factor,
        "scale_segments": index.scale_segments, "posterior": index.posterior, "clap": index.clap,
        "uncond_clap": None if index.uncond_clap is None else list(index.uncond_clap),
        "codec_sha256": index.codec_sha256, "splits": index.splits, "geometry": index.geometry.to_dict(),
    }
    if index.codec_dir is not None:
        out["codec_dir"] = index.codec_dir
    return out


def write_latents_index(index: LatentsIndex) -> Path:
    """Write `<index.root>/latents.json` atomically (key-sorted JSON); returns its path."""
    path = index.root / "latents.json"
    write_json(path, index_to_json(index))
    return path


def check_latents(index: LatentsIndex, *, stems: Sequence[str], film_dim: int | None, downsampling: int) -> None:
    """Check that a latent dataset fits the model params before training.

    Raises:
        ValueError: naming the mismatch (stem count/names, T'/F' vs the UNet downsampling, CLAP presence).
    """
    s, _, t, f = index.latent_shape
    if s != len(stems):
        raise ValueError(f"latent shards have S={s} but params.stems has {len(stems)} ({list(stems)})")
    if tuple(index.stems) != tuple(stems):
        raise ValueError(f"latent shards have stems {list(index.stems)} but params.stems is {list(stems)}")
    if t % downsampling or f % downsampling:
        raise ValueError(f"latent T'={t}, F'={f} must be divisible by the UNet downsampling {downsampling} "
                         "(model.channel_mult)")
    if film_dim is not None and index.clap is None:
        raise ValueError("conditioning.clap is on but the latent dataset has no CLAP embeddings (clap: null in "
                         "latents.json): re-run encode with conditioning, or set conditioning.clap: none")


# ----------------------------------------------------------------------------------------------------------------
# Training stream


def _is_train_entry(name: str) -> bool:
    return name.split(".", 1)[-1] in TRAIN_ENTRIES


def collate_latents(samples: Sequence[LatentSample]) -> dict[str, Any]:
    """Stack samples into a batch `{latents [B,S,C,T,F] float32 (unscaled), clap [B,D] | None, keys}`."""
    has_clap = {s.clap is not None for s in samples}
    if len(has_clap) > 1:
        raise ValueError(f"batch mixes samples with and without clap.npy: {[s.key for s in samples]}")
    clap = torch.from_numpy(np.stack([s.clap for s in samples])).float() if has_clap == {True} else None
    return {
        "latents": torch.from_numpy(np.stack([s.latents for s in samples]).astype(np.float32)),
        "clap": clap,
        "keys": [s.key for s in samples],
    }


class LatentStream(IterableDataset):
    """The seeded, rank/worker-split latent batch stream described in the module docstring."""

    def __init__(self, shards: Sequence[Path], *, batch_size: int, seed: int, rank: int, world_size: int,
                 num_workers: int, resample: bool, start_position: int,
                 expected_shape: tuple[int, ...] | None) -> None:
        super().__init__()
        if not shards:
            raise ValueError("no latent shards given")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if batch_size < 1 or start_position < 0:
            raise ValueError(f"need batch_size >= 1 and start_position >= 0, got {batch_size}, {start_position}")
        self.shards = [str(p) for p in shards]
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.num_workers, self.resample, self.start_position = num_workers, resample, start_position
        self.expected_shape = expected_shape

    def _role(self) -> tuple[int, int, int]:
        """(slot, slots, role) of the calling worker.

        Batch `j` of a fresh stream comes from role `j mod workers`. A stream resumed at position `p` starts its
        round-robin at worker 0, so worker `w` plays role `(w + p) mod workers`.
        """
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        role = (worker + self.start_position) % workers
        return self.rank * workers + role, self.world_size * workers, role

    def _epoch(self, epoch: int, slot: int, slots: int) -> Iterator[dict[str, Any]]:
        """Raw samples of one epoch for one slot, shuffled."""
        order = list(self.shards)
        random.Random(hash_seed(self.seed, "shards", epoch)).shuffle(order)
        by_shard = len(order) >= slots
        mine = order[slot::slots] if by_shard else order
        read = wds.tarfile_to_samples(select_files=_is_train_entry)  # a pipeline stage: stage(urls) -> samples
        raw: Iterable[dict[str, Any]] = read(iter([{"url": u} for u in mine]))
        if not by_shard:
            raw = (s for i, s in enumerate(raw) if i % slots == slot)
        rng = random.Random(hash_seed(self.seed, "buffer", epoch, slot))
        yield from wds.shuffle(bufsize=SHUFFLE_BUFFER, initial=SHUFFLE_INITIAL, rng=rng)(iter(raw))

    def _decode(self, raw: dict[str, Any]) -> LatentSample:
        s = decode_latent_sample(raw)
        if self.expected_shape is not None and tuple(s.latents.shape) != tuple(self.expected_shape):
            raise ValueError(f"latent sample {s.key} has shape {list(s.latents.shape)}, expected "
                             f"{list(self.expected_shape)} (latents.json latent_shape)")
        return s

    def __iter__(self) -> Iterator[dict[str, Any]]:
        slot, slots, role = self._role()
        workers = slots // self.world_size
        # batches j < start_position with j % workers == role were this role's: drop them undecoded
        skip = (self.start_position - role + workers - 1) // workers * self.batch_size
        epoch, buf = 0, []
        while True:
            n_epoch = 0
            for raw in self._epoch(epoch, slot, slots):
                n_epoch += 1
                if skip:
                    skip -= 1
                    continue
                buf.append(self._decode(raw))
                if len(buf) == self.batch_size:
                    yield collate_latents(buf)
                    buf = []
            if n_epoch == 0:
                raise ValueError(f"read slot {slot}/{slots} got no latent samples from {len(self.shards)} shards")
            epoch += 1
            if not self.resample:
                break
        if buf:
            yield collate_latents(buf)


def _identity(batch: Any) -> Any:
    return batch


def make_latent_loader(shards: Sequence[Path], *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                       num_workers: int = 0, resample: bool = True, start_position: int = 0,
                       expected_shape: tuple[int, ...] | None = None) -> DataLoader:
    """Seeded latent batches for one rank (see the module docstring for the exact stream).

    Args:
        shards: latent shard files (e.g. `LatentsIndex.shard_paths("train")` of the training splits).
        batch_size: samples per batch on this rank.
        seed: stream seed; the stream is a deterministic function of (seed, rank, world_size, num_workers).
        rank, world_size: this process's slice of every epoch (disjoint across ranks).
        num_workers: DataLoader worker processes (0 = read in the calling process).
        resample: loop over epochs forever (training); False = one epoch, last batch may be partial.
        start_position: batches of this stream already consumed (resume); they are skipped undecoded.
        expected_shape: [S, C, T', F'] every sample must have; a mismatch raises ValueError naming the key.

    Returns:
        A DataLoader yielding `{latents: [B, S, C, T', F'] float32 unscaled, clap: [B, 512] float32 | None,
        keys: list[str]}`.
    """
    ds = LatentStream(shards, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size,
                      num_workers=num_workers, resample=resample, start_position=start_position,
                      expected_shape=expected_shape)
    # an explicit generator: worker base seeds must not consume the global torch RNG
    return DataLoader(ds, batch_size=None, num_workers=num_workers, collate_fn=_identity, persistent_workers=False,
                      in_order=True, generator=torch.Generator().manual_seed(hash_seed(seed, "loader", rank)))
