"""encode stage on tiny shards: layout and keys, scale factor, determinism, resume, NaN errors, CLAP embeddings."""
from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from mtmusicldm.codec.build import codec_from_params
from mtmusicldm.codec.codec_dir import save_codec
from mtmusicldm.data.latents import iter_latent_samples, read_latents_index
from mtmusicldm.data.shards import ShardWriter, encode_sample, iter_samples, list_shards
from mtmusicldm.utils.rng import hash_seed_joined
from pipeline import encode
from tests.pipeline.test_train_codec import SR, STEMS, stem_audio, tiny_params, write_tiny_shards

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

os.environ["MTMUSICLDM_NO_PROGRESS"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

LATENT_SHAPE = [4, 8, 16, 16]


def run_encode(shards: Path, codec_dir: Path, out: Path, **overrides) -> dict:
    p = tiny_params()
    conditioning = p.conditioning.replace(clap="none")
    encode_params = p.encode
    for name, value in overrides.items():
        if name in ("clap", "amodel"):
            conditioning = conditioning.replace(**{name: value})
        else:
            encode_params = encode_params.replace(**{name: value})
    return encode.run(p.seed, p.stems, p.audio, p.codec, conditioning, encode_params, shards, codec_dir, out)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny codec (encoding does not care whether it was trained)."""
    p = tiny_params()
    codec = codec_from_params(p.codec, seed=0)
    out = tmp_path_factory.mktemp("models") / "codec"
    save_codec(out, codec.vae, codec.vocoder)
    return out


@pytest.fixture(scope="module")
def encoded(shards: Path, codec_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("data") / "latents"
    return out, run_encode(shards, codec_dir, out)


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------- layout


def test_layout_keys_shapes_and_metadata(shards: Path, encoded: tuple[Path, dict]) -> None:
    out, meta = encoded
    index = read_latents_index(out)
    assert list(index.latent_shape) == LATENT_SHAPE and index.stems == STEMS
    assert index.clap is None and index.uncond_clap is None and index.posterior == "sample"
    assert meta["encoded_shards"] == 4 and meta["resumed_shards"] == 0
    for split in ("train", "validation", "test"):
        inputs = list_shards(shards / split)
        assert index.splits[split]["shards"] == [p.name for p in inputs]
        assert sorted(p.name for p in (out / split).iterdir()) == [p.name for p in inputs]
        audio = list(iter_samples(inputs, STEMS))
        latents = list(iter_latent_samples(index.shard_paths(split)))
        assert [s.key for s in latents] == [s.key for s in audio]
        assert index.splits[split]["samples"] == len(audio)
        for a, z in zip(audio, latents):
            assert z.meta == a.meta
            assert z.clap is None
            for x in (z.latents, z.mean, z.std):
                assert x.dtype == np.float16 and list(x.shape) == LATENT_SHAPE
            assert np.all(z.std > 0) and not np.array_equal(z.latents, z.mean)
    assert not list(out.parent.glob(".latents.encode-partial-*"))  # the work dir became `out`


def test_scale_factor_is_inverse_std_of_first_training_latents(encoded: tuple[Path, dict]) -> None:
    out, meta = encoded
    index = read_latents_index(out)
    first = [s.latents for s in iter_latent_samples(index.shard_paths("train"))][:3]  # encode.scale_segments = 3
    expected = 1.0 / torch.from_numpy(np.stack(first).astype(np.float64)).std().item()
    assert index.scale_factor == pytest.approx(expected, rel=1e-12)
    assert index.scale_segments == 3


def test_stored_latent_is_the_seeded_posterior_draw(encoded: tuple[Path, dict]) -> None:
    out, _ = encoded
    p = tiny_params()
    sample = next(iter_latent_samples(read_latents_index(out).shard_paths("validation")))
    g = torch.Generator().manual_seed(hash_seed_joined(p.seed, sample.key, "posterior"))
    eps = torch.randn(LATENT_SHAPE, generator=g).numpy()
    draw = sample.mean.astype(np.float32) + sample.std.astype(np.float32) * eps
    np.testing.assert_allclose(sample.latents.astype(np.float32), draw, atol=2e-2, rtol=2e-3)


# ------------------------------------------------------------------------------------------------- determinism, resume


def test_same_inputs_give_identical_bytes(shards: Path, codec_dir: Path, encoded: tuple[Path, dict],
                                          tmp_path: Path) -> None:
    out, _ = encoded
    again = tmp_path / "latents"
    run_encode(shards, codec_dir, again)
    assert _file_bytes(again) == _file_bytes(out)


def test_resume_reuses_finished_shards(shards: Path, codec_dir: Path, encoded: tuple[Path, dict],
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "latents"
    real = encode.encode_shard
    calls: list[Path] = []

    def killed_after_one(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt("simulated kill")
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(encode, "encode_shard", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        run_encode(shards, codec_dir, out)
    assert not out.exists()
    (work,) = tmp_path.glob(".latents.encode-partial-*")
    done = work / "train" / calls[0].name
    mtime = done.stat().st_mtime_ns
    monkeypatch.setattr(encode, "encode_shard", real)
    meta = run_encode(shards, codec_dir, out)
    assert meta["resumed_shards"] == 1 and meta["encoded_shards"] == 3
    assert (out / "train" / calls[0].name).stat().st_mtime_ns == mtime  # renamed, never rewritten
    assert _file_bytes(out) == _file_bytes(encoded[0])  # resuming changes nothing


def test_changed_params_do_not_reuse_partial_work(shards: Path, codec_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "latents"
    stale = tmp_path / ".latents.encode-partial-0123456789abcdef"
    (stale / "train").mkdir(parents=True)
    (stale / "train" / "train-000000.tar").write_bytes(b"not a shard")
    meta = run_encode(shards, codec_dir, out, posterior="mean")
    assert meta["resumed_shards"] == 0 and not stale.exists()
    z = next(iter_latent_samples(list_shards(out / "train")))
    assert np.array_equal(z.latents, z.mean)


# ------------------------------------------------------------------------------------------------- errors


def _nan_shards(root: Path) -> Path:
    rng = np.random.default_rng(1)
    with ShardWriter(root / "train", "train", 8) as writer:
        for i, key in enumerate(["TrackA_c0000_v00", "TrackB_c0000_v00"]):
            sample = encode_sample(key, stem_audio(rng, [False] * 4), {"silent": [False] * 4}, STEMS, SR, "npy")
            if i == 1:
                bad = np.zeros(stem_audio(rng, [True] * 4).shape[1], np.float32)
                bad[100] = np.nan
                buf = io.BytesIO()
                np.save(buf, bad)
                sample["drums.npy"] = buf.getvalue()
            writer.write(sample)
    return root


def test_nan_audio_names_the_sample(codec_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="TrackB_c0000_v00: audio contains NaN"):
        run_encode(_nan_shards(tmp_path / "shards"), codec_dir, tmp_path / "latents")
    assert not (tmp_path / "latents").exists()


def test_codec_errors(shards: Path, codec_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="codec directory"):
        run_encode(shards, tmp_path / "nowhere", tmp_path / "latents")
    p = tiny_params()
    wide = codec_from_params(p.codec.replace(latent_channels=4), seed=0)
    save_codec(tmp_path / "codec4", wide.vae, wide.vocoder)
    with pytest.raises(ValueError, match="latent channels"):
        run_encode(shards, tmp_path / "codec4", tmp_path / "latents")
    with pytest.raises(FileNotFoundError, match="no training shards"):
        run_encode(tmp_path / "empty", codec_dir, tmp_path / "latents")


# ------------------------------------------------------------------------------------------------- CLAP


@contextlib.contextmanager
def _fast_clap_init() -> Iterator[None]:
    """Skip laion-clap's slow erfinv-based trunc_normal_ init (weights stay random, shapes unchanged)."""
    from mtmusicldm.conditioning.clap import import_laion_clap

    import_laion_clap()
    import laion_clap.clap_module.htsat as htsat

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(htsat, "trunc_normal_", lambda tensor, *args, **kwargs: tensor)
        yield


@pytest.mark.slow
def test_random_clap_writes_unit_embeddings_and_uncond(codec_dir: Path, tmp_path: Path) -> None:
    shards = write_tiny_shards(tmp_path / "shards", per_split={"train": [2], "validation": [], "test": []})
    with _fast_clap_init():
        meta = run_encode(shards, codec_dir, tmp_path / "latents", clap="random", amodel="HTSAT-tiny")
    index = read_latents_index(tmp_path / "latents")
    assert index.clap is not None and index.clap["kind"] == "random" and index.clap["amodel"] == "HTSAT-tiny"
    assert index.splits["validation"] == {"samples": 0, "shards": []}
    uncond = np.asarray(index.uncond_clap)
    assert uncond.shape == (512,) and abs(np.linalg.norm(uncond) - 1) < 1e-5
    embeddings = [s.clap for s in iter_latent_samples(index.shard_paths("train"))]
    assert len(embeddings) == 2
    for e in embeddings:
        assert e.dtype == np.float32 and e.shape == (512,) and abs(np.linalg.norm(e) - 1) < 1e-5
    assert not np.allclose(embeddings[0], embeddings[1])  # different mixtures
    assert json.loads((tmp_path / "latents" / "latents.json").read_text())["uncond_clap"] == meta["uncond_clap"]
