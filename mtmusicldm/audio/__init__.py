"""Audio front-end: file I/O (load/save/resample) and the MusicLDM log-mel.

The mel names are imported lazily so that audio I/O alone (e.g. the prepare stage's worker processes) does not pay
for importing torch.
"""
from typing import TYPE_CHECKING, Any

from mtmusicldm.audio.io import AudioError, AudioInfo, audio_info, load_audio, resample, save_audio

if TYPE_CHECKING:
    from mtmusicldm.audio.mel import LOG_FLOOR, MelFrontend, fit_frames, frames_for_samples, log_mel, mel_basis

_MEL_NAMES = ("LOG_FLOOR", "MelFrontend", "fit_frames", "frames_for_samples", "log_mel", "mel_basis")

__all__ = [
    "LOG_FLOOR",
    "AudioError",
    "AudioInfo",
    "MelFrontend",
    "audio_info",
    "fit_frames",
    "frames_for_samples",
    "load_audio",
    "log_mel",
    "mel_basis",
    "resample",
    "save_audio",
]


def __getattr__(name: str) -> Any:
    if name in _MEL_NAMES:
        from mtmusicldm.audio import mel

        return getattr(mel, name)
    raise AttributeError(f"module 'mtmusicldm.audio' has no attribute {name!r}")
