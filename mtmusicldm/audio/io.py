"""Audio file I/O: header info, windowed loading with resampling, atomic saving.

Conventions:
* Waveforms are float32 numpy arrays, `[T]` (mono) or `[C, T]` (channels first), in [-1, 1] nominal range.
* Resampling uses soxr 'HQ'; the output length for `T` input frames is `floor(T * sr_out / sr_in + 0.5)`.
* Every failure is an `AudioError` whose message starts with the offending path and says why.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from mtmusicldm.geometry import SAMPLE_RATE
from mtmusicldm.utils.fs import atomic_file

__all__ = ["AudioError", "AudioInfo", "audio_info", "load_audio", "resample", "save_audio"]

_SAVE_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}
# Subtypes that store floating-point samples (no implicit clipping) or a lossy float codec.
_FLOAT_SUBTYPES = {"FLOAT", "DOUBLE", "VORBIS", "OPUS"}
# Minimum context (seconds) read on each side of a window before resampling, so that a windowed read matches
# the same span of a full read instead of fading in from soxr's zero padding.
_RESAMPLE_MARGIN_S = 0.05
# Tolerance for float error when turning seconds into frame indices (e.g. 0.3 * 10 = 2.9999999999999996).
_FRAME_EPS = 1e-7


class AudioError(ValueError):
    """An audio file is missing, unreadable, truncated, empty or holds non-finite samples."""


@dataclass(frozen=True)
class AudioInfo:
    """Header information of an audio file.

    Attributes:
        path: the file.
        sample_rate: frames per second.
        channels: number of channels.
        frames: number of frames (samples per channel) that can actually be decoded.
        duration_s: `frames / sample_rate`.
        format: container name as libsndfile reports it ('WAV', 'FLAC', 'OGG', 'MP3', ...).
    """

    path: Path
    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    format: str


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: zero-length file (0 bytes)")


def _soundfile_can_read(path: Path) -> bool:
    """False only for .mp3 when the installed libsndfile lacks MPEG support."""
    return path.suffix.lower() != ".mp3" or "MP3" in sf.available_formats()


def _wav_declared_frames(path: Path) -> int | None:
    """Frames declared by a RIFF/WAVE `data` chunk header, or None when unknown.

    libsndfile silently shortens a truncated WAV to the bytes present, so the header is checked here.
    Returns None for non-RIFF files, streaming headers (size 0 or 0xFFFFFFFF) and unparsable headers.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(size + (size & 1))
                    if len(fmt) < 14:
                        return None
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                elif cid == b"data":
                    if block_align in (None, 0) or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    f.seek(size + (size & 1), 1)
    except OSError:
        return None


def audio_info(path: str | Path) -> AudioInfo:
    """Read an audio file's header.

    Args:
        path: wav/flac/ogg (and mp3 when libsndfile supports it, else via audioread).

    Returns:
        AudioInfo with the decodable frame count.

    Raises:
        AudioError: missing, unreadable, zero-length (no frames) or truncated WAV file.
    """
    path = Path(path)
    _check_exists(path)
    if not _soundfile_can_read(path):
        return _audio_info_fallback(path)
    try:
        info = sf.info(str(path))
    except Exception as e:  # libsndfile raises LibsndfileError / RuntimeError for bad files
        raise AudioError(f"{path}: unreadable audio file ({e})") from e
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(f"{path}: zero-length audio (0 frames)")
    declared = _wav_declared_frames(path) if info.format in ("WAV", "WAVEX") else None
    if declared is not None and declared > info.frames:
        raise AudioError(f"{path}: truncated WAV (header declares {declared} frames, file holds {info.frames})")
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames),
                     info.frames / info.samplerate, str(info.format))


def _audio_info_fallback(path: Path) -> AudioInfo:
    try:
        import audioread
    except ImportError as e:
        raise AudioError(f"{path}: mp3 is unsupported (libsndfile lacks MP3 and audioread is missing)") from e
    try:
        with audioread.audio_open(str(path)) as f:
            sr, ch, dur = int(f.samplerate), int(f.channels), float(f.duration)
    except Exception as e:
        raise AudioError(f"{path}: mp3 is unsupported or the file is unreadable ({e})") from e
    frames = int(round(dur * sr))
    if frames <= 0:
        raise AudioError(f"{path}: zero-length audio (0 frames)")
    return AudioInfo(path, sr, ch, frames, frames / sr, "MP3")


def _to_frames(seconds: float, sample_rate: int) -> int:
    """floor(seconds * sample_rate), as the official `int(offset_s * sr)`, tolerant of float error."""
    return int(math.floor(seconds * sample_rate + _FRAME_EPS))


def _read_frames(path: Path, start: int, stop: int) -> np.ndarray:
    """Read frames [start, stop) as float32 `[C, n]`; raise AudioError if fewer than requested come back."""
    try:
        with sf.SoundFile(str(path)) as f:
            f.seek(start)
            data = f.read(stop - start, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"{path}: truncated or corrupt audio, decoding failed in frames "
                         f"[{start}, {stop}) ({e})") from e
    if data.shape[0] < stop - start:
        raise AudioError(f"{path}: truncated audio, got {start + data.shape[0]} frames but the header "
                         f"claims at least {stop}")
    return np.ascontiguousarray(data.T)


def _load_fallback(path: Path, offset_s: float, duration_s: float | None) -> tuple[np.ndarray, int]:
    """Decode mp3 with librosa/audioread when libsndfile cannot; returns ([C, T] float32, native rate)."""
    try:
        import librosa
    except ImportError as e:
        raise AudioError(f"{path}: mp3 is unsupported (libsndfile lacks MP3 and librosa is missing)") from e
    try:
        wav, sr = librosa.load(str(path), sr=None, mono=False, offset=offset_s, duration=duration_s)
    except Exception as e:
        raise AudioError(f"{path}: mp3 is unsupported or the file is unreadable ({e})") from e
    wav = np.atleast_2d(np.asarray(wav, dtype=np.float32))
    return wav, int(sr)


def _alignment_step(sr_in: int, sr_out: int) -> int:
    """Smallest input frame count whose resampled length is a whole number of output frames."""
    return sr_in // math.gcd(sr_in, sr_out)


def load_audio(path: str | Path, sample_rate: int | None = SAMPLE_RATE, *, mono: bool = True,
               offset_s: float = 0.0, duration_s: float | None = None) -> np.ndarray:
    """Load (a window of) an audio file as float32, optionally mixed down and resampled.

    Only the requested window is decoded (plus up to ~50 ms of context on each side when resampling, so a window
    matches the same span of a full read; the context is cropped away). Frame indices use the file's own rate:
    `start = floor(offset_s * sr_file)`, `n = floor(duration_s * sr_file)` (as the official loader). A window
    that runs past the end of the file is returned short (no padding: that is the caller's choice).

    Args:
        path: wav/flac/ogg/mp3 file.
        sample_rate: output rate; None keeps the file's rate.
        mono: average the channels (mean mixdown) and return `[T]`; else return `[C, T]`.
        offset_s: window start in seconds (>= 0, before the end of the file).
        duration_s: window length in seconds (> 0), None for "to the end".

    Returns:
        float32 array `[T]` if mono else `[C, T]`, with `T = floor(n * sample_rate / sr_file + 0.5)`.

    Raises:
        AudioError: missing/unreadable/zero-length/truncated file, non-finite samples, empty window, bad
            arguments, or mp3 without any decoder.
    """
    path = Path(path)
    if sample_rate is not None and sample_rate <= 0:
        raise AudioError(f"{path}: sample_rate must be positive, got {sample_rate}")
    if offset_s < 0 or not math.isfinite(offset_s):
        raise AudioError(f"{path}: offset_s must be finite and >= 0, got {offset_s}")
    if duration_s is not None and not (duration_s > 0 and math.isfinite(duration_s)):
        raise AudioError(f"{path}: duration_s must be finite and > 0, got {duration_s}")

    if not _soundfile_can_read(path):
        _check_exists(path)
        wav, sr_file = _load_fallback(path, offset_s, duration_s)
        if wav.shape[-1] == 0:
            raise AudioError(f"{path}: empty window (offset_s={offset_s}, duration_s={duration_s})")
        lead = 0
        n = wav.shape[-1]
    else:
        info = audio_info(path)
        sr_file = info.sample_rate
        start = _to_frames(offset_s, sr_file)
        if start >= info.frames:
            raise AudioError(f"{path}: offset_s={offset_s} is at or past the end of the file "
                             f"({info.duration_s:.3f} s)")
        stop = info.frames if duration_s is None else min(info.frames, start + _to_frames(duration_s, sr_file))
        n = stop - start
        if n <= 0:
            raise AudioError(f"{path}: empty window (duration_s={duration_s} is under one frame)")
        lead = trail = 0
        if sample_rate is not None and sample_rate != sr_file:
            step = _alignment_step(sr_file, sample_rate)
            margin = max(step, _to_frames(_RESAMPLE_MARGIN_S, sr_file))
            lead = (min(margin, start) // step) * step
            trail = min(margin, info.frames - stop)
        wav = _read_frames(path, start - lead, stop + trail)

    if not np.isfinite(wav).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    if mono:
        wav = wav.mean(axis=0, dtype=np.float32)
    if sample_rate is not None and sample_rate != sr_file:
        wav = resample(wav, sr_file, sample_rate)
        out_start = lead * sample_rate // sr_file  # exact: lead is a multiple of the alignment step
        wav = wav[..., out_start:out_start + _resampled_length(n, sr_file, sample_rate)]
    return np.ascontiguousarray(wav, dtype=np.float32)


def _resampled_length(n: int, sr_in: int, sr_out: int) -> int:
    return (2 * n * sr_out + sr_in) // (2 * sr_in)  # floor(n * sr_out / sr_in + 0.5), exact integer math


def resample(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample with soxr 'HQ' along the last axis.

    Args:
        wav: `[T]` or `[C, T]` float array.
        sr_in: input rate (Hz).
        sr_out: output rate (Hz).

    Returns:
        float32 `[T']` or `[C, T']` with `T' = floor(T * sr_out / sr_in + 0.5)`; the input itself (as float32)
        when the rates are equal.

    Raises:
        ValueError: non-positive rates or an input that is not 1-D/2-D.
    """
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"resample: sample rates must be positive, got {sr_in} -> {sr_out}")
    wav = np.asarray(wav)
    if wav.ndim not in (1, 2):
        raise ValueError(f"resample: expected [T] or [C, T], got shape {wav.shape}")
    wav = wav.astype(np.float32, copy=False)
    if sr_in == sr_out:
        return wav
    out = soxr.resample(np.ascontiguousarray(wav.T), sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def save_audio(path: str | Path, wav: np.ndarray, sample_rate: int, subtype: str | None = None) -> None:
    """Write audio atomically (temporary sibling, then rename); the format follows the suffix.

    Clipping policy: for integer subtypes (PCM_*, ULAW, ALAW, ...) samples are clipped to [-1, 1] (libsndfile
    would otherwise wrap or saturate inconsistently). Float subtypes (FLOAT, DOUBLE) and lossy float codecs
    (VORBIS, OPUS) store the values as given, outside [-1, 1] included.

    Args:
        path: destination, suffix .wav, .flac or .ogg.
        wav: `[T]` or `[C, T]` float array, finite.
        sample_rate: Hz.
        subtype: libsndfile subtype; None = the format's default (PCM_16 for wav/flac, VORBIS for ogg).

    Raises:
        AudioError: unsupported suffix or subtype, bad shape, non-finite samples, or a write failure.
    """
    path = Path(path)
    fmt = _SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: unsupported suffix {path.suffix!r} (use one of {sorted(_SAVE_FORMATS)})")
    subtype = sf.default_subtype(fmt) if subtype is None else subtype.upper()
    if not sf.check_format(fmt, subtype):
        raise AudioError(f"{path}: subtype {subtype!r} is not valid for {fmt}")
    if sample_rate <= 0:
        raise AudioError(f"{path}: sample_rate must be positive, got {sample_rate}")
    wav = np.asarray(wav)
    if wav.ndim not in (1, 2) or wav.shape[-1] == 0:
        raise AudioError(f"{path}: expected a non-empty [T] or [C, T] array, got shape {wav.shape}")
    if not np.isfinite(wav).all():
        raise AudioError(f"{path}: refusing to write NaN or infinite samples")
    data = wav.T if wav.ndim == 2 else wav  # soundfile wants [T, C]
    if subtype not in _FLOAT_SUBTYPES:
        data = np.clip(data, -1.0, 1.0)
    try:
        with atomic_file(path, "wb") as f:
            sf.write(f, data, sample_rate, subtype=subtype, format=fmt)
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(f"{path}: write failed ({e})") from e
