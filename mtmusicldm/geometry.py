"""Frame geometry: how audio samples, mel frames and latent frames line up (one home for these constants).

MusicLDM's front-end is fixed: 16 kHz audio, a mel frame every ``HOP = 160`` samples (10 ms), and a VAE that
downsamples mel frames (and mel bins) by ``LATENT_DOWNSAMPLE = 4``, so one latent time frame covers
``FRAME_SAMPLES = 640`` samples (40 ms). :class:`FrameGeometry` is the recorded form (``latents.json`` and a
model directory's ``config.json`` carry it under ``geometry``); files written before it was recorded read as
:data:`GEOMETRY`, the only geometry there has been.

Torch-free: the params validation and data-preparation workers import it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["FRAME_SAMPLES", "GEOMETRY", "HOP", "LATENT_DOWNSAMPLE", "SAMPLE_RATE", "FrameGeometry"]

SAMPLE_RATE = 16000
"""Audio rate of the mel front-end, the VAE, the vocoders and every generated file (Hz)."""
HOP = 160
"""Audio samples per mel frame."""
LATENT_DOWNSAMPLE = 4
"""Mel frames (and mel bins) per latent cell: the VAE's three levels, ``[T, 64] -> [T/4, 16]``."""
FRAME_SAMPLES = HOP * LATENT_DOWNSAMPLE
"""Audio samples per latent time frame (640 = 40 ms at 16 kHz)."""


@dataclass(frozen=True)
class FrameGeometry:
    """The recorded frame geometry of latents and models.

    Attributes:
        sample_rate: audio rate (Hz).
        hop: audio samples per mel frame.
        downsample: mel frames per latent frame.
    """

    sample_rate: int = SAMPLE_RATE
    hop: int = HOP
    downsample: int = LATENT_DOWNSAMPLE

    @property
    def frame_samples(self) -> int:
        """Audio samples per latent time frame."""
        return self.hop * self.downsample

    def segment_samples(self, latent_frames: int) -> int:
        """Audio samples of ``latent_frames`` latent time frames (``T' * 640``)."""
        return latent_frames * self.frame_samples

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "geometry") -> FrameGeometry:
        """Inverse of :meth:`to_dict`; ``None`` (a file from before geometry was recorded) is :data:`GEOMETRY`.

        Raises:
            ValueError: unknown or missing fields, or non-positive values (named with ``where``).
        """
        if d is None:
            return GEOMETRY
        fields = set(asdict(GEOMETRY))
        if not isinstance(d, Mapping) or set(d) != fields:
            got = sorted(d) if isinstance(d, Mapping) else type(d).__name__
            raise ValueError(f"{where}: expected the keys {sorted(fields)}, got {got}")
        values = {k: d[k] for k in fields}
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values.values()):
            raise ValueError(f"{where}: values must be positive integers, got {dict(d)}")
        return cls(**values)

    def check_supported(self, where: str) -> None:
        """Raise ValueError unless this is the geometry of this code's front-end (:data:`GEOMETRY`)."""
        if self != GEOMETRY:
            raise ValueError(f"{where}: frame geometry {self.to_dict()} differs from this code's front-end "
                             f"{GEOMETRY.to_dict()} (16 kHz, hop 160, VAE downsampling 4)")


GEOMETRY = FrameGeometry()
"""The geometry of this code's front-end (and of every file written before geometry was recorded)."""
