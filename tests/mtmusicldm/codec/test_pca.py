"""Patch-PCA codec: sklearn's PCA as the oracle, exact streamed statistics, the latent contract, save/load."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from mtmusicldm.codec.latents import decode_stems, encode_stems, posterior_stems
from mtmusicldm.codec.pca import PatchPCAAutoencoder, PatchStatistics


def _mels(n: int = 6, t: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random log-mels [n, 1, t, 64] (low-pass noise + per-bin offsets, as spectrogram-like data)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, t, 64, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1) * 3.0
    return x + torch.linspace(-2.0, -8.0, 64) + torch.randn(n, 1, 1, 64, generator=g)


def _patches(mel: torch.Tensor) -> np.ndarray:
    n, _, t, f = mel.shape
    return mel.reshape(n, t // 4, 4, f // 4, 4).permute(0, 1, 3, 2, 4).reshape(-1, 16).double().numpy()


def test_fit_matches_sklearn_pca() -> None:
    mel = _mels()
    vae = PatchPCAAutoencoder(latent_channels=5).fit([mel[:2], mel[2:]])
    oracle = PCA(n_components=5).fit(_patches(mel))
    np.testing.assert_allclose(vae.mean.double().numpy(), oracle.mean_, atol=1e-5)
    for ours, theirs in zip(vae.components.double().numpy(), oracle.components_):
        assert abs(abs(ours @ theirs) - 1.0) < 1e-4  # the same direction, up to sign
    np.testing.assert_allclose(vae.variances.double().numpy(), oracle.explained_variance_, rtol=1e-4)
    (rec,) = vae.decode(vae.encoder(mel)[:, :5])
    expected = oracle.inverse_transform(oracle.transform(_patches(mel)))
    np.testing.assert_allclose(_patches(rec), expected, atol=1e-4)


def test_statistics_do_not_depend_on_batching() -> None:
    mel = _mels(n=5)
    one, many = PatchStatistics(), PatchStatistics()
    one.update(mel)
    for i in range(5):
        many.update(mel[i:i + 1])
    for a, b in zip(one.principal(8), many.principal(8)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_all_components_reconstruct_exactly_and_whitening_round_trips() -> None:
    mel = _mels()
    full = PatchPCAAutoencoder(latent_channels=16).fit([mel])
    (rec,) = full.decode(full.encoder(mel)[:, :16])
    torch.testing.assert_close(rec, mel, atol=1e-4, rtol=0)
    white = PatchPCAAutoencoder(latent_channels=6, whiten=True).fit([mel])
    plain = PatchPCAAutoencoder(latent_channels=6).fit([mel])
    z = white.encoder(mel)[:, :6]
    std = z.transpose(0, 1).reshape(6, -1).std(1)
    torch.testing.assert_close(std, torch.ones(6), atol=0.02, rtol=0)  # unit variance per channel
    torch.testing.assert_close(white.decode(z)[0], plain.decode(plain.encoder(mel)[:, :6])[0], atol=1e-4, rtol=0)
    assert (plain.encoder(mel)[:, :6].transpose(0, 1).reshape(6, -1).std(1).diff() <= 1e-6).all()  # by variance


def test_stacked_stem_contract_and_deterministic_posterior() -> None:
    vae = PatchPCAAutoencoder(latent_channels=8).fit([_mels()])
    mel = _mels(n=8, seed=1)[:, 0].reshape(2, 4, 32, 64)  # [B, S, T, F]
    z = encode_stems(vae, mel, sample=True, generator=torch.Generator().manual_seed(0))
    mean, std = posterior_stems(vae, mel)
    assert z.shape == (2, 4, 8, 8, 16) and std.max() < 1e-6
    torch.testing.assert_close(z, mean, atol=1e-5, rtol=0)
    rec = decode_stems(vae, mean)
    assert rec.shape == mel.shape and (rec - mel).abs().mean() < 0.5


def test_save_and_load_pretrained(tmp_path) -> None:
    vae = PatchPCAAutoencoder(latent_channels=4, whiten=True).fit([_mels()])
    vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    assert {p.name for p in (tmp_path / "vae").iterdir()} == {"config.json", "diffusion_pytorch_model.safetensors"}
    loaded = PatchPCAAutoencoder.from_pretrained(tmp_path / "vae")
    mel = _mels(seed=3)
    torch.testing.assert_close(loaded.encoder(mel), vae.encoder(mel), atol=0, rtol=0)
    assert loaded.config.whiten and loaded.config.latent_channels == 4 and loaded.fitted


def test_bad_shapes_and_sizes() -> None:
    with pytest.raises(ValueError, match="latent_channels"):
        PatchPCAAutoencoder(latent_channels=17)
    vae = PatchPCAAutoencoder(latent_channels=4).fit([_mels()])
    with pytest.raises(ValueError, match="divisible by 4"):
        vae.encoder(torch.zeros(1, 1, 30, 64))
    with pytest.raises(ValueError, match="z must be"):
        vae.decode(torch.zeros(1, 8, 4, 16))
    with pytest.raises(ValueError, match="at least 2 patches"):
        PatchStatistics().principal(4)
