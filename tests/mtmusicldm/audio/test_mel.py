"""Log-mel front-end: golden outputs of the official TacotronSTFT, an independent numpy oracle, shapes."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch

from mtmusicldm.audio.mel import LOG_FLOOR, MelFrontend, fit_frames, frames_for_samples, log_mel, mel_basis


def _numpy_log_mel(wav: np.ndarray) -> np.ndarray:
    """Oracle: framing + np.fft.rfft in float64, scipy window, librosa filterbank. wav [n] -> [frames, 64]."""
    import librosa

    window = scipy.signal.get_window("hann", 1024, fftbins=True)
    padded = np.pad(wav.astype(np.float64), 512, mode="reflect")
    n_frames = (len(padded) - 1024) // 160 + 1
    frames = np.stack([padded[i * 160:i * 160 + 1024] for i in range(n_frames)])  # [frames, 1024]
    mag = np.abs(np.fft.rfft(frames * window, axis=-1))  # [frames, 513]
    basis = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=64, fmin=0.0, fmax=8000.0)
    return np.log(np.maximum(mag @ basis.T.astype(np.float64), 1e-5))


# --- golden: official code outputs -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def golden_mel(golden_dir: Path) -> dict:
    return torch.load(golden_dir / "mel.pt", weights_only=True)


def test_mel_basis_matches_official_buffer(golden_mel: dict) -> None:
    assert torch.equal(mel_basis(), golden_mel["mel_basis"])


def test_log_mel_matches_official_mel_raw(golden_mel: dict) -> None:
    ours = log_mel(golden_mel["wav"])
    ref = golden_mel["mel_raw"]
    assert ours.shape == ref.shape == (golden_mel["num_frames_raw"], 64)
    above = ref > -11.5
    assert above.any() and (~above).any()  # the fixture exercises both regimes
    torch.testing.assert_close(ours[above], ref[above], atol=1e-4, rtol=0)
    torch.testing.assert_close(ours[~above], torch.full_like(ref[~above], LOG_FLOOR), atol=1e-4, rtol=0)


def test_log_mel_padded_matches_official_dataset_mel(golden_mel: dict) -> None:
    ours = log_mel(golden_mel["wav"], target_frames=1024)
    assert ours.shape == golden_mel["mel"].shape == (1024, 64)
    torch.testing.assert_close(ours, golden_mel["mel"], atol=1e-4, rtol=0)
    assert torch.all(ours[golden_mel["num_frames_raw"]:] == 0.0)  # padding value is 0.0, not log(1e-5)


# --- independent oracle ----------------------------------------------------------------------------------------

def test_log_mel_matches_numpy_oracle() -> None:
    rng = np.random.default_rng(0)
    wav = (0.2 * rng.standard_normal(8000)).astype(np.float32)
    wav[3000:4000] = 0.0  # hit the clamp floor too
    wav[100] = 1.7  # > 1 is allowed (stem mixes)
    ref = _numpy_log_mel(wav)
    ours = log_mel(wav).double().numpy()
    assert ours.shape == ref.shape == (8000 // 160 + 1, 64)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_mel_basis_properties() -> None:
    b = mel_basis()
    assert b.shape == (64, 513) and b.dtype == torch.float32
    assert torch.all(b >= 0) and torch.all(b.sum(dim=1) > 0)
    assert torch.all(b[:, -1] == 0)  # fmax = 8000 = Nyquist: the last bin gets no weight from triangles ending there
    b.zero_()  # a returned copy must not poison the cache
    assert mel_basis().abs().sum() > 0


def test_sine_peaks_in_the_right_mel_band() -> None:
    sr, f0 = 16000, 1000.0
    wav = 0.5 * torch.sin(2 * math.pi * f0 * torch.arange(16000, dtype=torch.float64) / sr)
    mel = log_mel(wav.float())
    peak_band = int(mel[10:-10].mean(0).argmax())
    centre_bin = int(mel_basis()[peak_band].argmax())
    assert abs(centre_bin * sr / 1024 - f0) < 2 * sr / 1024


# --- shapes, padding, cropping, checks ------------------------------------------------------------------------

def test_frames_for_samples() -> None:
    assert frames_for_samples(163840) == 1025
    assert frames_for_samples(48000) == 301
    assert frames_for_samples(159) == 1
    with pytest.raises(ValueError):
        frames_for_samples(-1)


def test_batch_dims_equal_per_item_results() -> None:
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(2, 4, 3200, generator=g)
    mel = log_mel(wav)
    assert mel.shape == (2, 4, 21, 64)
    torch.testing.assert_close(mel[1, 2], log_mel(wav[1, 2]), atol=1e-5, rtol=0)


def test_full_segment_crop_to_1024() -> None:
    wav = 0.1 * torch.randn(1, 163840, generator=torch.Generator().manual_seed(1))
    full = log_mel(wav)
    cropped = log_mel(wav, target_frames=1024)
    assert full.shape == (1, 1025, 64) and cropped.shape == (1, 1024, 64)
    assert torch.equal(cropped, full[:, :1024])


def test_fit_frames_pads_with_zero() -> None:
    mel = torch.full((3, 5, 64), -4.0)
    out = fit_frames(mel, 8)
    assert out.shape == (3, 8, 64) and torch.all(out[:, 5:] == 0.0) and torch.equal(out[:, :5], mel)
    assert torch.equal(fit_frames(mel, 2), mel[:, :2])
    with pytest.raises(ValueError):
        fit_frames(mel, 0)


def test_silence_is_log_floor() -> None:
    mel = log_mel(torch.zeros(1600))
    assert torch.all(mel == torch.tensor(LOG_FLOOR, dtype=torch.float32))


def test_module_and_function_agree_and_buffers_are_not_state() -> None:
    frontend = MelFrontend()
    wav = 0.1 * torch.randn(2, 1600, generator=torch.Generator().manual_seed(2))
    assert torch.equal(frontend(wav), log_mel(wav))
    assert frontend.state_dict() == {} and not list(frontend.parameters())


@pytest.mark.parametrize(
    "bad, exc",
    [
        (torch.zeros(2000, dtype=torch.int16), TypeError),
        (torch.tensor(0.5), ValueError),
        (torch.zeros(512), ValueError),
        (torch.tensor([0.0, float("nan")] * 600), ValueError),
    ],
)
def test_invalid_input_raises(bad: torch.Tensor, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        log_mel(bad)
