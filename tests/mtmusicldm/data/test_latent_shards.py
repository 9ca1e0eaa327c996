"""Latent shards: schema round trip, latents.json, and the seeded rank-split training stream."""
import json
from pathlib import Path

import numpy as np
import pytest

from mtmusicldm import STEMS
from mtmusicldm.data.latents import (
    LatentsIndex,
    check_latents,
    decode_latent_sample,
    encode_latent_sample,
    iter_latent_samples,
    make_latent_loader,
    read_latents_index,
    write_latent_split,
    write_latents_index,
)
from mtmusicldm.geometry import GEOMETRY

SHAPE = (4, 8, 16, 16)


def _dataset(root: Path, n: int, per_shard: int, *, shape=SHAPE, clap: bool = True) -> LatentsIndex:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        z = rng.standard_normal(shape).astype(np.float32)
        c = rng.standard_normal(512).astype(np.float32) if clap else None
        samples.append(encode_latent_sample(f"T{i:03d}_c0000_v00", z, np.abs(z), z, c, {"track": f"T{i:03d}"}))
    shards, count = write_latent_split(root, "train", samples, per_shard)
    index = LatentsIndex(root=root, stems=STEMS[: shape[0]], latent_shape=shape, scale_factor=1.0,
                         scale_segments=n, posterior="sample", clap={"kind": "random"} if clap else None,
                         uncond_clap=tuple([0.0] * 512) if clap else None, codec_sha256="0" * 64,
                         splits={"train": {"samples": count, "shards": shards}})
    write_latents_index(index)
    return read_latents_index(root)


def test_sample_roundtrip():
    rng = np.random.default_rng(1)
    z = rng.standard_normal(SHAPE).astype(np.float32)
    clap = rng.standard_normal(512).astype(np.float32)
    s = decode_latent_sample(encode_latent_sample("k", z, z * 0 + 1, z, clap, {"track": "T1"}))
    assert s.latents.dtype == np.float16 and s.latents.shape == SHAPE
    np.testing.assert_array_equal(s.latents, z.astype(np.float16))
    np.testing.assert_array_equal(s.clap, clap)
    assert s.meta == {"track": "T1"} and s.mean is not None and s.std is not None
    with pytest.raises(ValueError, match="must not contain"):
        encode_latent_sample("a.b", z, z, z, None, {})
    with pytest.raises(ValueError, match="std must be"):
        encode_latent_sample("k", z, z[:3], z, None, {})


def test_write_read_index(tmp_path):
    index = _dataset(tmp_path, 5, 2)
    assert index.splits["train"] == {"samples": 5, "shards": ["train-000000.tar", "train-000001.tar",
                                                             "train-000002.tar"]}
    keys = [s.key for s in iter_latent_samples(index.shard_paths("train"))]
    assert keys == [f"T{i:03d}_c0000_v00" for i in range(5)]
    assert index.latent_shape == SHAPE and len(index.uncond_clap) == 512
    raw = json.loads((tmp_path / "latents.json").read_text())
    assert raw["geometry"] == {"sample_rate": 16000, "hop": 160, "downsample": 4} and index.geometry == GEOMETRY
    del raw["geometry"]  # latents.json written before the geometry was recorded: the one geometry there was
    (tmp_path / "latents.json").write_text(json.dumps(raw))
    assert read_latents_index(tmp_path).geometry == GEOMETRY
    (tmp_path / "latents.json").write_text(json.dumps(raw | {"geometry": {"sample_rate": 16000, "hop": 160}}))
    with pytest.raises(ValueError, match="geometry: expected the keys"):
        read_latents_index(tmp_path)
    (tmp_path / "latents.json").write_text('{"format": "other", "version": 1}')
    with pytest.raises(ValueError, match="missing keys"):
        read_latents_index(tmp_path)


def _keys(loader, batches: int) -> list[list[str]]:
    it = iter(loader)
    return [next(it)["keys"] for _ in range(batches)]


def test_loader_deterministic_and_resumable(tmp_path):
    index = _dataset(tmp_path, 12, 3)
    shards = index.shard_paths("train")
    a = _keys(make_latent_loader(shards, batch_size=4, seed=7), 6)
    b = _keys(make_latent_loader(shards, batch_size=4, seed=7), 6)
    c = _keys(make_latent_loader(shards, batch_size=4, seed=8), 6)
    assert a == b and a != c
    assert sorted(k for batch in a[:3] for k in batch) == sorted(f"T{i:03d}_c0000_v00" for i in range(12))
    assert a[:3] != a[3:]  # the next epoch is reshuffled
    resumed = _keys(make_latent_loader(shards, batch_size=4, seed=7, start_position=2), 4)
    assert resumed == a[2:]


def test_loader_workers_resume(tmp_path):
    index = _dataset(tmp_path, 8, 1)
    shards = index.shard_paths("train")
    full = _keys(make_latent_loader(shards, batch_size=2, seed=3, num_workers=2), 6)
    assert _keys(make_latent_loader(shards, batch_size=2, seed=3, num_workers=2, start_position=3), 3) == full[3:]


@pytest.mark.parametrize("per_shard", [1, 12])  # split by shard / by sample (fewer shards than ranks)
def test_ranks_disjoint(tmp_path, per_shard):
    index = _dataset(tmp_path, 12, per_shard)
    shards = index.shard_paths("train")
    seen = []
    for rank in range(2):
        batch = next(iter(make_latent_loader(shards, batch_size=6, seed=1, rank=rank, world_size=2)))
        assert batch["latents"].shape == (6, *SHAPE) and batch["clap"].shape == (6, 512)
        seen.append(set(batch["keys"]))
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 12


def test_shape_mismatch_errors(tmp_path):
    index = _dataset(tmp_path, 4, 4, shape=(3, 8, 16, 16), clap=False)
    with pytest.raises(ValueError, match="S=3 but params.stems has 4"):
        check_latents(index, stems=STEMS, film_dim=None, downsampling=2)
    with pytest.raises(ValueError, match="expected"):
        next(iter(make_latent_loader(index.shard_paths("train"), batch_size=2, seed=0,
                                     expected_shape=(4, 8, 16, 16))))
    index4 = _dataset(tmp_path / "b", 2, 2, clap=False)
    with pytest.raises(ValueError, match="no CLAP embeddings"):
        check_latents(index4, stems=STEMS, film_dim=512, downsampling=2)
    with pytest.raises(ValueError, match="divisible"):
        check_latents(index4, stems=STEMS, film_dim=None, downsampling=32)
    batch = next(iter(make_latent_loader(index4.shard_paths("train"), batch_size=2, seed=0)))
    assert batch["clap"] is None
