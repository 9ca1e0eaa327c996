"""Spectrogram figures with real axes: time in seconds, frequency in Hz at the mel bins' centres."""
from __future__ import annotations

from typing import Any

import numpy as np

from mtmusicldm.audio.mel import FMAX, FMIN, HOP, N_MELS, SAMPLE_RATE

__all__ = ["show_log_mel"]

_FREQ_TICKS_HZ = (200, 500, 1000, 2000, 4000, 7000)


def _mel_centres_hz(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    import librosa

    return librosa.mel_frequencies(n_mels=n_mels + 2, fmin=fmin, fmax=fmax, htk=False)[1:-1]


def show_log_mel(ax: Any, mel: np.ndarray, *, vmin: float | None = None, vmax: float | None = None,
                 title: str | None = None, hop: int = HOP, sample_rate: int = SAMPLE_RATE, fmin: float = FMIN,
                 fmax: float = FMAX, cmap: str = "magma", labels: bool = True) -> Any:
    """Draw a log-mel `[T, n_mels]` on a matplotlib axis: x = time (s), y = mel bins labelled in Hz.

    Returns:
        The `AxesImage` (for a colorbar).
    """
    mel = np.asarray(mel)
    n_frames, n_mels = mel.shape
    seconds = n_frames * hop / sample_rate
    im = ax.imshow(mel.T, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap=cmap,
                   extent=(0.0, seconds, -0.5, n_mels - 0.5), interpolation="nearest")
    centres = _mel_centres_hz(n_mels if n_mels else N_MELS, fmin, fmax)
    ticks = [(float(np.interp(f, centres, np.arange(n_mels))), f) for f in _FREQ_TICKS_HZ
             if centres[0] <= f <= centres[-1]]
    ax.set_yticks([t for t, _ in ticks], [f"{f / 1000:g}k" if f >= 1000 else f"{f}" for _, f in ticks])
    ax.tick_params(labelsize=6)
    if labels:
        ax.set_xlabel("time (s)", fontsize=7)
        ax.set_ylabel("frequency (Hz)", fontsize=7)
    if title:
        ax.set_title(title, fontsize=8)
    return im
