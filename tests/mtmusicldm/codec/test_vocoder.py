"""Vocoders: HiFi-GAN wrapper trimming, pretrained loading, Griffin-Lim length/determinism/frequency, stem order."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from mtmusicldm.audio.mel import log_mel
from mtmusicldm.codec.vae import MUSICLDM_HUB_ID
from mtmusicldm.codec.vocoder import (
    GriffinLimVocoder,
    HifiGanVocoder,
    Vocoder,
    load_vocoder_pretrained,
    vocode_stems,
)


@pytest.fixture(scope="module")
def tiny_hifigan() -> SpeechT5HifiGan:
    torch.manual_seed(0)
    cfg = SpeechT5HifiGanConfig(
        model_in_dim=64, sampling_rate=16000, upsample_initial_channel=32, upsample_rates=[5, 4, 2, 2, 2],
        upsample_kernel_sizes=[16, 16, 8, 4, 4], resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5]] * 3, normalize_before=False, leaky_relu_slope=0.1,
    )
    return SpeechT5HifiGan(cfg).eval()


def test_hifigan_wrapper_trims_official_extra_samples(tiny_hifigan: SpeechT5HifiGan) -> None:
    mel = torch.randn(3, 12, 64)
    with torch.no_grad():
        raw = tiny_hifigan(mel)
        wav = HifiGanVocoder(tiny_hifigan)(mel)
        short = HifiGanVocoder(tiny_hifigan, n_samples=1000)(mel)
    assert raw.shape == (3, 12 * 160 + 32)  # the official generator's length
    assert wav.shape == (3, 12 * 160)
    assert torch.equal(wav, raw[:, : 12 * 160]) and torch.equal(short, raw[:, :1000])
    assert isinstance(HifiGanVocoder(tiny_hifigan), Vocoder)


def test_hifigan_wrapper_errors(tiny_hifigan: SpeechT5HifiGan) -> None:
    with pytest.raises(ValueError, match="mel must be"):
        HifiGanVocoder(tiny_hifigan)(torch.randn(2, 64, 12))
    with pytest.raises(ValueError, match="fewer than"):
        HifiGanVocoder(tiny_hifigan, n_samples=10_000)(torch.randn(1, 4, 64))


def test_load_vocoder_pretrained_round_trip(tiny_hifigan: SpeechT5HifiGan, tmp_path: Path) -> None:
    tiny_hifigan.save_pretrained(tmp_path / "vocoder")
    loaded = load_vocoder_pretrained(str(tmp_path))
    mel = torch.randn(1, 5, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(mel), tiny_hifigan(mel))


def test_load_vocoder_pretrained_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=MUSICLDM_HUB_ID):
        load_vocoder_pretrained(str(tmp_path / "nowhere"))


def _sine(freq: float, n: int, sr: int = 16000) -> np.ndarray:
    return (0.5 * np.sin(2 * math.pi * freq * np.arange(n) / sr)).astype(np.float32)


def test_griffin_lim_length_and_determinism() -> None:
    mel = log_mel(_sine(440.0, 4800))[:30][None]  # [1, 30, 64]
    gl = GriffinLimVocoder(n_iter=4)
    a, b = gl(mel), gl(mel)
    assert a.shape == (1, 30 * 160) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, GriffinLimVocoder(n_iter=4, seed=1)(mel))
    assert GriffinLimVocoder(n_iter=2, n_samples=5000)(mel).shape == (1, 5000)
    assert isinstance(gl, Vocoder)


@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0])
def test_griffin_lim_recovers_sine_frequency(freq: float) -> None:
    n = 8000
    mel = log_mel(_sine(freq, n))[: n // 160][None]
    wav = GriffinLimVocoder(n_iter=32)(mel)[0].numpy()
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    peak = np.fft.rfftfreq(len(wav), 1 / 16000)[spectrum.argmax()]
    assert abs(peak - freq) < 0.06 * freq  # within a mel bin (the vocoder only sees 64 bins)
    assert 0.05 < np.sqrt(np.mean(wav**2)) < 1.0  # energy is recovered, not silence


def test_griffin_lim_matches_librosa_and_items_are_independent() -> None:
    """Our batched loop is librosa's algorithm: in float64, from the same initial phase (librosa `init=None`:
    phase 1), the output is librosa's; in float32 (what the vocoder runs) the first iterations agree to float32
    precision and the chaotic later ones reach the same spectral convergence. An item's result does not depend on
    the batch it is in."""
    import librosa

    from mtmusicldm.codec.vocoder import griffin_lim

    n = 4800
    wav = np.stack([_sine(440.0, n), _sine(1500.0, n) + 0.5 * _sine(220.0, n)])
    gl = GriffinLimVocoder()
    mag = torch.from_numpy(np.stack([gl.magnitude(m) for m in log_mel(wav)[:, : n // 160].numpy()]))
    mag = torch.nn.functional.pad(mag, (0, 1), mode="replicate")  # float64, n // 160 + 1 frames
    ones = torch.ones(mag.shape, dtype=torch.complex128)
    exact = griffin_lim(mag, ones, n_fft=1024, hop=160, n_iter=32, length=n)
    single = griffin_lim(mag.float(), ones, n_fft=1024, hop=160, n_iter=32, length=n)
    for i in range(2):
        target = mag[i].numpy()
        ref = librosa.griffinlim(target, n_iter=32, hop_length=160, win_length=1024, n_fft=1024, window="hann",
                                 center=True, length=n, pad_mode="reflect", init=None)
        np.testing.assert_allclose(exact[i].numpy(), ref, atol=1e-5)

        def convergence(w: np.ndarray) -> float:
            s = np.abs(librosa.stft(w.astype(np.float64), n_fft=1024, hop_length=160))
            return float(np.linalg.norm(s - target) / np.linalg.norm(target))

        assert convergence(single[i].numpy()) < 1.1 * convergence(ref), i
    mel = log_mel(wav)[:, : n // 160]
    torch.testing.assert_close(gl(mel)[1], gl(mel[1:])[0])


def test_griffin_lim_rejects_wrong_mel_bins() -> None:
    with pytest.raises(ValueError, match="mel must be"):
        GriffinLimVocoder()(torch.zeros(1, 10, 80))


class _FirstBinVocoder:
    """Fake vocoder: each frame's first mel bin, repeated `hop` times."""

    sample_rate = 16000

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        return mel[:, :, 0].repeat_interleave(4, dim=1)


def test_vocode_stems_keeps_stem_order() -> None:
    mel = torch.randn(2, 4, 6, 64)
    wav = vocode_stems(_FirstBinVocoder(), mel)
    assert wav.shape == (2, 4, 24)
    for b in range(2):
        for s in range(4):
            assert torch.equal(wav[b, s], _FirstBinVocoder()(mel[b, s][None])[0])
    with pytest.raises(ValueError, match=r"\[B, S, T, F\]"):
        vocode_stems(_FirstBinVocoder(), mel[0])


def test_pinv_mel_inverse_agrees_with_nnls():
    import numpy as np
    import pytest

    from mtmusicldm.audio import log_mel
    from mtmusicldm.codec.vocoder import GriffinLimVocoder

    t = np.arange(16000) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 2500 * t)).astype(np.float32)
    mel = log_mel(wav).numpy()
    fast = GriffinLimVocoder(mel_inverse="pinv").magnitude(mel)
    slow = GriffinLimVocoder(mel_inverse="nnls").magnitude(mel)
    assert fast.shape == slow.shape and (fast >= 0).all()
    assert np.argmax(fast.mean(1)) == np.argmax(slow.mean(1))  # same dominant bin (440 Hz)
    assert np.corrcoef(fast.ravel(), slow.ravel())[0, 1] > 0.9
    with pytest.raises(ValueError, match="mel_inverse"):
        GriffinLimVocoder(mel_inverse="svd")
