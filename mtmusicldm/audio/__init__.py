"""Audio front-end: file I/O (load/save/resample) and the MusicLDM log-mel."""
from mtmusicldm.audio.io import AudioError, AudioInfo, audio_info, load_audio, resample, save_audio
from mtmusicldm.audio.mel import LOG_FLOOR, MelFrontend, fit_frames, frames_for_samples, log_mel, mel_basis

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
