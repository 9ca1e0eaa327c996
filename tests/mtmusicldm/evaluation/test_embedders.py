"""Registry, offline backbone (determinism, sensitivity to musical content) and the thin CLAP wrapper."""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch

from mtmusicldm.evaluation import (
    EMBEDDERS,
    AudioEmbedder,
    ClapEmbedder,
    OfflineEmbedder,
    RankDeficientWarning,
    fad_from_embeddings,
    make_embedder,
)
from mtmusicldm.evaluation.offline import group_slices

SR = 16000


def test_registry() -> None:
    assert set(EMBEDDERS) == {"vggish", "clap", "offline", "crepe"}
    emb = make_embedder("offline", hop_s=0.48)
    assert isinstance(emb, OfflineEmbedder) and isinstance(emb, AudioEmbedder)
    assert emb.hop_frames == 48
    with pytest.raises(KeyError, match="unknown FAD backbone 'pann'"):
        make_embedder("pann")


def test_offline_shapes_determinism_and_fingerprint() -> None:
    emb = OfflineEmbedder()
    assert emb.comparable_to_paper is False and emb.dim == 80 and emb.sample_rate == SR
    wav = (0.1 * np.random.default_rng(0).normal(size=round(2.56 * SR))).astype(np.float32)
    a = emb.embed(wav)
    assert a.shape == (2, 80) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, emb.embed(wav.copy()))
    assert emb.embed(wav[:4000]).shape == (1, 80)  # padded to one block
    assert OfflineEmbedder(hop_s=0.48).embed(wav).shape == (4, 80)
    assert emb.fingerprint() == OfflineEmbedder().fingerprint()
    assert emb.fingerprint() != OfflineEmbedder(hop_s=0.48).fingerprint()
    with pytest.raises(ValueError, match="multiple of 0.01"):
        OfflineEmbedder(hop_s=0.005)
    with pytest.raises(ValueError, match="NaN"):
        emb.embed(np.full(20000, np.nan, np.float32))


def test_offline_fad_is_sensitive_to_musical_content(song_factory: Callable[[int, float], list[np.ndarray]]) -> None:
    """FAD(real, real') << FAD(real, stems of different songs mixed) << FAD(real, noise)."""
    n, seconds = 16, 3.0
    songs = [song_factory(i, seconds) for i in range(2 * n)]
    real = [np.sum(s, axis=0) for s in songs[:n]]
    real2 = [np.sum(s, axis=0) for s in songs[n:]]
    # every stem of a shuffled mix comes from a different song of the second half
    shuffled = [np.sum([songs[n + (i + 7 * k) % n][k] for k in range(4)], axis=0) for i in range(n)]
    rng = np.random.default_rng(123)
    noise = [(rng.normal(size=len(x)) * x.std()).astype(np.float32) for x in real]
    emb = OfflineEmbedder()
    e = {k: np.concatenate([emb.embed(w) for w in v]) for k, v in
         {"real": real, "real2": real2, "shuffled": shuffled, "noise": noise}.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankDeficientWarning)  # 48 frames for 80 dims: fine for a ranking
        d_real = fad_from_embeddings(e["real"], e["real2"])
        d_shuf = fad_from_embeddings(e["real"], e["shuffled"])
        d_noise = fad_from_embeddings(e["real"], e["noise"])
        # the cross-register groups alone (bass/upper chroma, band-onset sync, periodicity) separate strongly
        cols = np.r_[tuple(group_slices()[g] for g in ("harmony", "sync", "periodicity"))]
        c_real = fad_from_embeddings(e["real"][:, cols], e["real2"][:, cols])
        c_shuf = fad_from_embeddings(e["real"][:, cols], e["shuffled"][:, cols])
    assert 2.0 * d_real < d_shuf, (d_real, d_shuf)
    assert 5.0 * d_shuf < d_noise, (d_shuf, d_noise)
    assert 5.0 * c_real < c_shuf, (c_real, c_shuf)


class _FakeConditioner:
    """Duck-typed stand-in for ClapConditioner: a tiny linear 'model', unit-norm outputs."""

    def __init__(self) -> None:
        self.model = torch.nn.Linear(4, 512)
        self.calls: list[tuple[tuple[int, ...], str]] = []

    def embed_audio(self, wav_16k: torch.Tensor, *, generator: object = None, crop: str = "random") -> torch.Tensor:
        self.calls.append((tuple(wav_16k.shape), crop))
        feats = torch.stack([wav_16k.mean(1), wav_16k.std(1), wav_16k.abs().max(1).values, wav_16k[:, 0]], 1)
        return torch.nn.functional.normalize(self.model(feats), dim=-1)


def test_clap_wrapper_is_thin_and_deterministic() -> None:
    fake = _FakeConditioner()
    emb = ClapEmbedder(fake)
    wav = np.random.default_rng(1).normal(size=SR * 3).astype(np.float32)
    out = emb.embed(wav)
    assert out.shape == (1, 512) and out.dtype == np.float32
    assert np.linalg.norm(out) == pytest.approx(1.0, abs=1e-5)
    assert fake.calls == [((1, SR * 3), "start")]
    assert emb.comparable_to_paper is False and emb.dim == 512
    before = emb.fingerprint()
    with torch.no_grad():
        fake.model.bias[0] += 1.0
    assert ClapEmbedder(fake).fingerprint() != before
    assert ClapEmbedder(fake, crop="center").fingerprint() != ClapEmbedder(fake).fingerprint()
    with pytest.raises(ValueError, match="ClapConditioner or the local path"):
        ClapEmbedder()
    with pytest.raises(ValueError, match="deterministic"):
        ClapEmbedder(fake, crop="random")  # type: ignore[arg-type]


def test_clap_wrapper_matches_conditioner_api() -> None:
    """The real ClapConditioner accepts what the wrapper passes (checked by signature; no laion-clap import)."""
    from mtmusicldm import conditioning
    sig = inspect.signature(conditioning.ClapConditioner.embed_audio)
    assert "crop" in sig.parameters and sig.parameters["crop"].kind is inspect.Parameter.KEYWORD_ONLY
    assert "checkpoint" in inspect.signature(ClapEmbedder).parameters
    assert hasattr(conditioning.ClapConditioner, "from_checkpoint")
