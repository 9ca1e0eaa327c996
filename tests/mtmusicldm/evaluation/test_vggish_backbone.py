"""VGGish re-implementation: torchvggish layout, audioldm_eval preprocessing, shapes, weights loading.

The oracles against torchvggish and frechet-audio-distance's loader are in test_vggish_oracle.py; here the flatten
order is checked against torchvggish's transpose sequence, and the front-end against its documented constants.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.signal import get_window

from mtmusicldm.evaluation.vggish import (
    VGGISH_WEIGHTS_URL,
    VGGishEmbedder,
    VGGishNet,
    load_vggish_state_dict,
    prepare_vggish_input,
    vggish_examples,
    vggish_log_mel,
    vggish_mel_matrix,
)

# torchvggish's VGG state dict (vggish-10086976.pth), written out by hand
TORCHVGGISH_KEYS = [
    "features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias",
    "features.6.weight", "features.6.bias", "features.8.weight", "features.8.bias",
    "features.11.weight", "features.11.bias", "features.13.weight", "features.13.bias",
    "embeddings.0.weight", "embeddings.0.bias", "embeddings.2.weight", "embeddings.2.bias",
    "embeddings.4.weight", "embeddings.4.bias",
]  # fmt: skip
SR = 16000


@pytest.fixture(scope="module")
def embedder() -> VGGishEmbedder:
    return VGGishEmbedder(seed=0)


def test_state_dict_layout_matches_torchvggish() -> None:
    with torch.device("meta"):
        state = VGGishNet().state_dict()
    assert list(state) == TORCHVGGISH_KEYS
    assert state["features.0.weight"].shape == (64, 1, 3, 3)
    assert state["features.13.weight"].shape == (512, 512, 3, 3)
    assert state["embeddings.0.weight"].shape == (4096, 12288)
    assert state["embeddings.4.weight"].shape == (128, 4096)


def test_shapes_and_last_relu_removed(embedder: VGGishEmbedder) -> None:
    wav = (0.1 * np.random.default_rng(0).normal(size=163840)).astype(np.float32)  # 10.24 s
    emb = embedder.embed(wav)
    assert emb.shape == (10, 128) and emb.dtype == np.float32
    assert (emb < 0).any(), "final ReLU must be removed (audioldm_eval use_activation=False)"
    assert isinstance(embedder.net.embeddings[-1], torch.nn.Linear) and len(embedder.net.embeddings) == 5
    with torch.device("meta"):
        assert isinstance(VGGishNet(last_relu=True).embeddings[-1], torch.nn.ReLU)


def test_seeded_init_uses_its_own_generator(embedder: VGGishEmbedder) -> None:
    gen = torch.Generator().manual_seed(0)
    expected = torch.empty(64, 1, 3, 3).uniform_(-1 / 3, 1 / 3, generator=gen)  # fan_in = 9
    torch.testing.assert_close(embedder.net.features[0].weight, expected)


def test_flatten_order_is_torchvggish_transpose_sequence(embedder: VGGishEmbedder) -> None:
    x = torch.randn(3, 1, 96, 64, generator=torch.Generator().manual_seed(1))
    net = embedder.net
    with torch.inference_mode():
        h = net.features(x)
        h = torch.transpose(h, 1, 3)
        h = torch.transpose(h, 1, 2).contiguous().view(3, -1)  # torchvggish VGG.forward
        torch.testing.assert_close(net(x), net.embeddings(h))


def test_preprocessing_pads_short_files_to_two_seconds(embedder: VGGishEmbedder) -> None:
    wav = np.full(8000, 0.5, dtype=np.float32)  # 0.5 s of pure DC
    prepared = prepare_vggish_input(wav)
    assert prepared.shape == (32000,)
    np.testing.assert_allclose(prepared, 0.0, atol=1e-7)  # DC removed before zero padding
    assert embedder.embed(wav).shape == (2, 128)
    assert embedder.embed(np.ones(40000, np.float32)).shape == (2, 128)  # 2.5 s -> 2 frames


def test_frame_counts() -> None:
    for seconds, frames in ((10.24, 10), (2.56, 2), (0.975, 1), (5.0, 5)):
        assert vggish_examples(np.zeros(round(seconds * SR), np.float32)).shape == (frames, 96, 64)
    with pytest.raises(ValueError, match="no 0.96 s example"):
        vggish_examples(np.zeros(15000, np.float32))


def test_log_mel_frame_matches_manual_stft() -> None:
    rng = np.random.default_rng(2)
    wav = rng.normal(size=4000).astype(np.float32)
    log_mel = vggish_log_mel(wav)
    assert log_mel.shape == (1 + (4000 - 400) // 160, 64)
    k = 7
    frame = wav[k * 160 : k * 160 + 400] * get_window("hann", 400, fftbins=True)  # periodic Hann
    spectrum = np.abs(np.fft.rfft(frame, 512))
    np.testing.assert_allclose(log_mel[k], np.log(spectrum @ vggish_mel_matrix() + 0.01), rtol=1e-10)


def test_mel_matrix_properties() -> None:
    mel = vggish_mel_matrix()
    assert mel.shape == (257, 64)
    assert (mel[0] == 0).all() and (mel >= 0).all() and mel.max() <= 1.0
    freqs = np.arange(257) * 16000 / 512
    assert (mel[freqs < 125.0 - 31.25] == 0).all() and (mel[freqs > 7500.0 + 31.25] == 0).all()
    peaks = freqs[mel.argmax(axis=0)]
    assert (np.diff(peaks) >= 0).all() and peaks[0] < 200 and peaks[-1] > 7000


@pytest.mark.parametrize("hz", [250.0, 1000.0, 4000.0])
def test_tone_lands_in_matching_band(hz: float) -> None:
    t = np.arange(SR) / SR
    log_mel = vggish_log_mel(np.sin(2 * np.pi * hz * t).astype(np.float32))
    band = int(log_mel.mean(axis=0).argmax())
    mel = 1127.0 * np.log1p(np.array([125.0, 7500.0, hz]) / 700.0)
    expected = (mel[2] - mel[0]) / (mel[1] - mel[0]) * 65 - 1  # band centres sit at edges[1:-1]
    assert abs(band - expected) <= 1.0


def test_fingerprint_tracks_weights(embedder: VGGishEmbedder) -> None:
    before = embedder.fingerprint()
    bias = embedder.net.embeddings[4].bias
    with torch.no_grad():
        bias[0] += 1e-3
    embedder._fingerprint = None  # the digest is cached per instance; recompute after the in-place edit
    try:
        assert embedder.fingerprint() != before
    finally:
        with torch.no_grad():
            bias[0] -= 1e-3
        embedder._fingerprint = None
    assert embedder.fingerprint() == before
    assert embedder.comparable_to_paper is False


def test_load_weights_from_local_path(tmp_path: Path, embedder: VGGishEmbedder) -> None:
    state = dict(embedder.net.state_dict())
    state["pproc.pca_eigen_vectors"] = torch.eye(128)  # full torchvggish dicts carry PCA tensors: ignored
    state["pproc.pca_means"] = torch.zeros(128, 1)
    plain = tmp_path / "weights.pth"
    torch.save(state, plain)
    digest = hashlib.sha256(plain.read_bytes()).hexdigest()
    named = plain.rename(tmp_path / f"vggish-{digest[:8]}.pth")
    loaded = VGGishEmbedder(named)
    assert loaded.comparable_to_paper is True
    assert loaded.fingerprint() == embedder.fingerprint()  # same tensors, same fingerprint
    wrong = tmp_path / "vggish-00000000.pth"
    wrong.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="sha256"):
        load_vggish_state_dict(wrong)


def test_missing_weights_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="releases/download/v0.1/vggish-10086976.pth"):
        VGGishEmbedder(tmp_path / "vggish.pth")
    with pytest.raises(ValueError, match="exactly one"):
        VGGishEmbedder()
    bad = tmp_path / "partial.pth"
    torch.save({"features.0.weight": torch.zeros(64, 1, 3, 3)}, bad)
    with pytest.raises(ValueError, match="not a torchvggish VGG state dict"):
        VGGishEmbedder(bad)
    assert VGGISH_WEIGHTS_URL.startswith("https://github.com/harritaylor/torchvggish/")
