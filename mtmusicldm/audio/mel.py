"""MusicLDM log-mel front-end (official `TacotronSTFT(1024, 160, 1024, 64, 16000, 0, 8000)`).

wav [..., n] (16 kHz) -> reflect-pad 512 each side -> STFT (periodic Hann 1024, hop 160, no further centering)
-> |X| = sqrt(re^2 + im^2) -> Slaney mel filterbank (64 x 513) -> log(clamp(., 1e-5)) -> [..., frames, 64]
with `frames = n // 160 + 1` (163840 samples -> 1025 frames; the dataset then keeps 1024).

Unlike the official code there is no `-1 <= y <= 1` assertion: a sum of stems may exceed 1 and is still a
valid input (the official data loader would crash on it instead). No mean/std normalisation is applied.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from mtmusicldm.geometry import HOP, SAMPLE_RATE

__all__ = ["LOG_FLOOR", "MelFrontend", "fit_frames", "frames_for_samples", "log_mel", "mel_basis"]

N_FFT = 1024
N_MELS = 64
FMIN = 0.0
FMAX = 8000.0
CLAMP_MIN = 1e-5
LOG_FLOOR = math.log(CLAMP_MIN)
"""log(1e-5) = -11.5129: the value of a silent frame (not of mel padding, which is 0.0)."""


@lru_cache(maxsize=8)
def _mel_basis_np(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    import librosa  # heavy import, only when a filterbank is first needed

    basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                                htk=False, norm="slaney").astype(np.float32)
    basis.setflags(write=False)
    return basis


def mel_basis(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
              fmin: float = FMIN, fmax: float = FMAX) -> torch.Tensor:
    """Slaney-scale, Slaney-normalised mel filterbank (librosa), as the official `mel_basis` buffer.

    Returns:
        float32 tensor `[n_mels, n_fft // 2 + 1]` (a fresh copy of a cached array).
    """
    return torch.from_numpy(_mel_basis_np(int(sample_rate), int(n_fft), int(n_mels), float(fmin),
                                          float(fmax)).copy())


def frames_for_samples(n_samples: int, hop: int = HOP) -> int:
    """Mel frames produced for `n_samples` (centered STFT): `n_samples // hop + 1`."""
    if n_samples < 0 or hop <= 0:
        raise ValueError(f"frames_for_samples: need n_samples >= 0 and hop > 0, got {n_samples}, {hop}")
    return n_samples // hop + 1


def _check_wav(wav: torch.Tensor, n_fft: int) -> None:
    if not wav.is_floating_point():
        raise TypeError(f"log_mel: waveform must be a float tensor, got {wav.dtype}")
    if wav.ndim < 1:
        raise ValueError("log_mel: waveform must have at least 1 dimension [..., samples], got a scalar")
    if wav.shape[-1] <= n_fft // 2:
        raise ValueError(f"log_mel: need more than {n_fft // 2} samples for the reflect padding, "
                         f"got {wav.shape[-1]}")
    if not torch.isfinite(wav).all():
        raise ValueError("log_mel: waveform contains NaN or infinite samples")


def fit_frames(mel: torch.Tensor, target_frames: int) -> torch.Tensor:
    """Crop or zero-pad (value 0.0, as the official dataset) the frame axis of `[..., T, F]` to `target_frames`."""
    if target_frames <= 0:
        raise ValueError(f"fit_frames: target_frames must be positive, got {target_frames}")
    n = mel.shape[-2]
    if n >= target_frames:
        return mel[..., :target_frames, :]
    return F.pad(mel, (0, 0, 0, target_frames - n), value=0.0)


class MelFrontend(torch.nn.Module):
    """wav `[..., n]` -> log-mel `[..., n // hop + 1, n_mels]` with fixed (non-trainable) buffers.

    Args:
        sample_rate, n_fft, hop, n_mels, fmin, fmax: STFT / filterbank parameters (defaults: the official ones;
            win_length = n_fft).
    """

    window: torch.Tensor
    basis: torch.Tensor

    def __init__(self, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, hop: int = HOP, n_mels: int = N_MELS,
                 fmin: float = FMIN, fmax: float = FMAX) -> None:
        super().__init__()
        self.sample_rate, self.n_fft, self.hop, self.n_mels = sample_rate, n_fft, hop, n_mels
        # Periodic Hann == scipy.signal.get_window('hann', n_fft, fftbins=True).
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True, dtype=torch.float64).float(),
                             persistent=False)
        self.register_buffer("basis", mel_basis(sample_rate, n_fft, n_mels, fmin, fmax), persistent=False)

    def forward(self, wav: torch.Tensor, target_frames: int | None = None) -> torch.Tensor:
        """Compute the log-mel.

        Args:
            wav: float tensor `[..., n]` (any leading dims, e.g. `[B, S, n]`), finite, n > n_fft // 2. It is cast
                to the buffers' dtype/device (float32 by default). Values outside [-1, 1] are allowed.
            target_frames: if given, crop or zero-pad (0.0) the frame axis to this many frames.

        Returns:
            `[..., frames, n_mels]`, frames = `n // hop + 1` or `target_frames`.
        """
        _check_wav(wav, self.n_fft)
        lead = wav.shape[:-1]
        x = wav.to(device=self.basis.device, dtype=self.basis.dtype).reshape(-1, 1, wav.shape[-1])
        x = F.pad(x, (self.n_fft // 2, self.n_fft // 2), mode="reflect").squeeze(1)
        spec = torch.stft(x, self.n_fft, hop_length=self.hop, win_length=self.n_fft, window=self.window,
                          center=False, onesided=True, return_complex=True)  # [N, n_fft//2+1, frames]
        mag = torch.sqrt(spec.real.square() + spec.imag.square())
        mel = torch.log(torch.clamp(self.basis @ mag, min=CLAMP_MIN)).transpose(-1, -2)  # [N, frames, n_mels]
        mel = mel.reshape(*lead, mel.shape[-2], mel.shape[-1])
        return mel if target_frames is None else fit_frames(mel, target_frames)


@lru_cache(maxsize=4)
def _frontend_on(device: torch.device) -> MelFrontend:
    return MelFrontend().to(device)


def log_mel(wav_16k: torch.Tensor | np.ndarray, target_frames: int | None = None) -> torch.Tensor:
    """Official MusicLDM log-mel of 16 kHz audio (see the module docstring).

    Args:
        wav_16k: float `[..., n]` tensor or array (e.g. `[B, S, 163840]`). Computed in float32 on the input's
            device.
        target_frames: crop or zero-pad (value 0.0, not log 1e-5) the frame axis to this many frames, e.g. 1024.

    Returns:
        float32 tensor `[..., frames, 64]`; frames = `n // 160 + 1` (163840 -> 1025) or `target_frames`.

    Raises:
        TypeError: non-float input. ValueError: scalar, too short (<= 512 samples) or non-finite input.
    """
    wav = torch.from_numpy(np.asarray(wav_16k)) if isinstance(wav_16k, np.ndarray) else wav_16k
    if not isinstance(wav, torch.Tensor):
        raise TypeError(f"log_mel: expected a torch.Tensor or np.ndarray, got {type(wav_16k).__name__}")
    return _frontend_on(wav.device)(wav, target_frames)
