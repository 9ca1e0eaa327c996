"""Log-mel -> waveform: HiFi-GAN (transformers `SpeechT5HifiGan`) and a Griffin-Lim fallback.

Both implement the `Vocoder` protocol: `vocoder(mel [N, T, n_mels]) -> wav [N, samples]`, where `mel` is the
project's log-mel (natural log of the Slaney-normalised mel filterbank applied to the STFT *magnitude*,
n_fft 1024, hop 160, 16 kHz; spec §2). Output length defaults to `T * hop`: 1024 frames -> 163840 samples
(10.24 s). The official HiFi-GAN returns `T * hop + 32` samples (its transposed convs add 1 sample at the first
stage: 1024 frames -> 163872); the official inpainting code truncates it, and so do we.
"""
from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import librosa
import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn
from transformers import SpeechT5HifiGan

from mtmusicldm.codec.vae import from_pretrained_checked
from mtmusicldm.geometry import HOP, SAMPLE_RATE


@runtime_checkable
class Vocoder(Protocol):
    """mel [N, T, n_mels] log-mel -> wav [N, samples] at `sample_rate`."""

    sample_rate: int

    def __call__(self, mel: Tensor) -> Tensor:
        """Invert a batch of log-mels to waveforms."""
        ...


def _trim_length(frames: int, hop: int, n_samples: int | None) -> int:
    return frames * hop if n_samples is None else n_samples


# ---------------------------------------------------------------------------------------------------------------
# HiFi-GAN


class HifiGanVocoder(nn.Module):
    """`SpeechT5HifiGan` behind the `Vocoder` protocol, trimming to the segment length.

    Args:
        model: the HiFi-GAN (e.g. from `load_vocoder_pretrained` or `mtmusicldm.official.load_hifigan`).
        n_samples: output length; None -> `frames * hop` with hop = prod(upsample_rates) (160 for MusicLDM).
    """

    def __init__(self, model: SpeechT5HifiGan, n_samples: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.n_samples = n_samples
        self.hop = math.prod(model.config.upsample_rates)
        self.sample_rate = int(model.config.sampling_rate)
        self.n_mels = int(model.config.model_in_dim)

    def forward(self, mel: Tensor) -> Tensor:
        """Vocode log-mels.

        Args:
            mel: [N, T, n_mels] log-mel.

        Returns:
            [N, n_samples or T * hop] waveform in [-1, 1] (tanh output).
        """
        if mel.ndim != 3 or mel.shape[-1] != self.n_mels:
            raise ValueError(f"mel must be [N, T, {self.n_mels}], got shape {tuple(mel.shape)}")
        wav = self.model(mel)  # [N, T * hop + extra]
        length = _trim_length(mel.shape[1], self.hop, self.n_samples)
        if wav.shape[-1] < length:
            raise ValueError(f"HiFi-GAN produced {wav.shape[-1]} samples, fewer than the requested {length}")
        return wav[..., :length]


def load_vocoder_pretrained(path_or_hub_id: str, subfolder: str | None = "vocoder") -> SpeechT5HifiGan:
    """Load a transformers-format HiFi-GAN, e.g. `load_vocoder_pretrained("ucsd-reach/musicldm")`.

    Args:
        path_or_hub_id: local directory (as written by `save_pretrained`) or hub id.
        subfolder: folder holding `config.json` + weights; None for the directory itself.

    Returns:
        The `SpeechT5HifiGan` in eval mode; wrap it in `HifiGanVocoder` for trimming.

    Raises:
        FileNotFoundError: the weights are not there (the message says where to get them).
    """
    return from_pretrained_checked(SpeechT5HifiGan, path_or_hub_id, subfolder, "HiFi-GAN vocoder")


# ---------------------------------------------------------------------------------------------------------------
# Griffin-Lim


class GriffinLimVocoder:
    """Deterministic Griffin-Lim inversion of the project's log-mel (librosa; CPU, float64 internally).

    mel -> exp -> mel-to-magnitude (`mel_inverse`: "pinv", the filterbank's pseudo-inverse clamped at 0, ~100x
    faster; or "nnls", librosa's non-negative least squares `mel_to_stft`, slightly more faithful) -> fast
    Griffin-Lim (Perraudin et al. 2013, momentum 0.99: librosa's `griffinlim` algorithm, batched in torch float32)
    from a random initial phase drawn from a generator seeded with `seed` for every item, so an item's output
    depends only on its own mel and the seed. Our own loop rather than a library call: librosa's runs one item at a
    time in float64 (~10x slower for a batch) and torchaudio's cannot take a seeded initial phase; tests check it
    against `librosa.griffinlim` from the same initial phase.

    Args:
        sample_rate: audio rate in Hz.
        n_fft: FFT size (= window length).
        hop: hop length in samples.
        n_mels: mel bins.
        fmin: lowest filterbank frequency in Hz.
        fmax: highest filterbank frequency in Hz.
        n_iter: Griffin-Lim iterations.
        seed: phase-initialisation seed.
        n_samples: output length; None -> `frames * hop`.
        mel_inverse: "pinv" (default) or "nnls".
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, n_fft: int = 1024, hop: int = HOP, n_mels: int = 64,
                 fmin: float = 0.0, fmax: float = 8000.0, n_iter: int = 32, seed: int = 0,
                 n_samples: int | None = None, mel_inverse: str = "pinv") -> None:
        if mel_inverse not in ("pinv", "nnls"):
            raise ValueError(f"mel_inverse must be 'pinv' or 'nnls', got {mel_inverse!r}")
        self.mel_inverse = mel_inverse
        self._pinv: Tensor | None = None
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop = hop
        self.n_mels = n_mels
        self.fmin = fmin
        self.fmax = fmax
        self.n_iter = n_iter
        self.seed = seed
        self.n_samples = n_samples

    def magnitude(self, mel: np.ndarray) -> np.ndarray:
        """Non-negative STFT magnitude [n_fft//2+1, T] from one log-mel [T, n_mels] (see `mel_inverse`)."""
        if self.mel_inverse == "pinv":
            return np.maximum(self._pinv_matrix().numpy().astype(np.float64) @ np.exp(mel.T.astype(np.float64)), 0.0)
        return librosa.feature.inverse.mel_to_stft(
            np.exp(mel.T.astype(np.float64)), sr=self.sample_rate, n_fft=self.n_fft, power=1.0,
            fmin=self.fmin, fmax=self.fmax, htk=False, norm="slaney",
        )

    def _pinv_matrix(self) -> Tensor:
        if self._pinv is None:
            basis = librosa.filters.mel(sr=self.sample_rate, n_fft=self.n_fft, n_mels=self.n_mels, fmin=self.fmin,
                                        fmax=self.fmax, htk=False, norm="slaney")
            self._pinv = torch.from_numpy(np.linalg.pinv(basis.astype(np.float64)).astype(np.float32))
        return self._pinv

    def initial_phase(self, bins: int, frames: int) -> Tensor:
        """The random initial phase of every item, [bins, frames] unit complex numbers drawn from `seed`."""
        gen = torch.Generator().manual_seed(self.seed)
        return torch.polar(torch.ones(bins, frames), 2 * math.pi * torch.rand(bins, frames, generator=gen))

    def __call__(self, mel: Tensor) -> Tensor:
        """Invert log-mels.

        Args:
            mel: [N, T, n_mels] log-mel.

        Returns:
            [N, n_samples or T * hop] float32 waveform on `mel.device`.
        """
        if mel.ndim != 3 or mel.shape[-1] != self.n_mels:
            raise ValueError(f"mel must be [N, T, {self.n_mels}], got shape {tuple(mel.shape)}")
        length = _trim_length(mel.shape[1], self.hop, self.n_samples)
        # A centred STFT of `length` samples has length // hop + 1 frames; our mels drop the last one (1024 frames
        # for 163840 samples), so the magnitude is edge-padded (or cropped) to the frame count of the STFT.
        frames = length // self.hop + 1
        x = mel.detach().cpu().float()
        if self.mel_inverse == "pinv":
            mag = (self._pinv_matrix() @ x.exp().transpose(1, 2)).clamp_min(0.0)  # [N, bins, T]
        else:
            mag = torch.from_numpy(np.stack([self.magnitude(m) for m in x.double().numpy()])).float()
        mag = torch.from_numpy(librosa.util.fix_length(mag.numpy(), size=frames, axis=-1, mode="edge"))
        phase = self.initial_phase(mag.shape[1], frames).expand(mag.shape[0], -1, -1)
        return griffin_lim(mag, phase, n_fft=self.n_fft, hop=self.hop, n_iter=self.n_iter, length=length).to(mel.device)


def griffin_lim(magnitude: Tensor, phase: Tensor, *, n_fft: int, hop: int, n_iter: int, length: int,
                momentum: float = 0.99) -> Tensor:
    """Fast Griffin-Lim, batched: librosa's `griffinlim` algorithm (centred STFT, Hann window = n_fft, reflect
    padding) in torch.

    Args:
        magnitude: [N, n_fft // 2 + 1, frames] target magnitudes.
        phase: [N, bins, frames] initial unit-modulus complex phases.
        n_fft, hop: STFT size and hop.
        n_iter: iterations.
        length: output samples.
        momentum: Perraudin et al.'s acceleration (librosa's default 0.99).

    Returns:
        [N, length] waveforms (float32, or float64 for a float64 magnitude).
    """
    window = torch.hann_window(n_fft, dtype=magnitude.dtype)

    def istft(spec: Tensor) -> Tensor:
        return torch.istft(spec, n_fft, hop_length=hop, win_length=n_fft, window=window, center=True, length=length)

    def stft(wav: Tensor) -> Tensor:
        return torch.stft(wav, n_fft, hop_length=hop, win_length=n_fft, window=window, center=True,
                          pad_mode="reflect", return_complex=True)

    angles = phase.to(torch.complex128 if magnitude.dtype == torch.float64 else torch.complex64)
    rebuilt = torch.zeros_like(angles)
    for _ in range(n_iter):
        previous = rebuilt
        rebuilt = stft(istft(magnitude * angles))
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        angles = angles / (angles.abs() + torch.finfo(magnitude.dtype).tiny)
    return istft(magnitude * angles)


# ---------------------------------------------------------------------------------------------------------------
# Stems


def vocode_stems(vocoder: Vocoder, mel: Tensor) -> Tensor:
    """Vocode every stem of a stacked log-mel independently.

    Args:
        vocoder: any `Vocoder`.
        mel: [B, S, T, n_mels] stacked log-mels.

    Returns:
        [B, S, samples] stem waveforms (row order b*S + s inside the vocoder batch).
    """
    if mel.ndim != 4:
        raise ValueError(f"mel must be [B, S, T, F], got shape {tuple(mel.shape)}")
    wav = vocoder(rearrange(mel, "b s t f -> (b s) t f"))
    return rearrange(wav, "(b s) n -> b s n", b=mel.shape[0])
