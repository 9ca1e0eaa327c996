"""Media helpers of the studio: decoding uploads, waveform + spectrogram pictures, server-side remixes.

Pictures are drawn with matplotlib's object API (``Figure`` + Agg canvas, no pyplot state), so request threads can
draw concurrently.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".w64",
                            ".caf", ".m4a", ".opus"})
PICTURE_SIZE = (8.0, 2.2)
"""Inches at 100 dpi: 800 x 220 px."""
STEM_COLOURS = {"bass": "#f28e2b", "drums": "#e15759", "guitar": "#59a14f", "piano": "#4e79a7", "mix": "#b07aa1"}


class UploadError(ValueError):
    """An uploaded file is not usable audio (the message names the file as the user called it)."""


class UploadTooLong(UploadError):
    """An uploaded file decodes to more audio than the studio accepts."""


def safe_suffix(filename: str) -> str:
    """The (lower-case) suffix of an uploaded file name if it is a known audio suffix, else ``.bin``."""
    suffix = Path(filename).suffix.lower()
    return suffix if suffix in AUDIO_SUFFIXES else ".bin"


def decode_upload(path: Path, filename: str, sample_rate: int,
                  max_seconds: float = math.inf) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode any readable audio file to ``sample_rate`` mono float32 and describe the source.

    A file whose header declares more than ``max_seconds`` is refused before decoding; any other is decoded up to
    ``max_seconds`` plus one second at most, so a header that understates the length cannot make it decode more.

    Raises:
        UploadTooLong: longer than ``max_seconds``.
        UploadError: unreadable, empty, truncated or non-finite audio (the server path is replaced by
            ``filename`` in the message).
    """
    from mtmusicldm.audio import audio_info, load_audio

    too_long = f"{filename!r} is longer than the {max_seconds:g} s the studio accepts"
    try:
        info = audio_info(path)
        if info.duration_s > max_seconds:
            raise UploadTooLong(f"{too_long} ({info.duration_s:.1f} s)")
        wav = load_audio(path, sample_rate, mono=True,
                         duration_s=None if math.isinf(max_seconds) else max_seconds + 1.0)
    except UploadError:
        raise
    except Exception as e:  # noqa: BLE001 - AudioError, decoder errors: all mean "not usable audio"
        message = str(e).replace(str(path), "").lstrip(": ") or type(e).__name__
        raise UploadError(f"{filename!r} is not usable audio: {message}") from None
    if wav.shape[-1] > max_seconds * sample_rate:
        raise UploadTooLong(f"{too_long} (its header understates the length)")
    if wav.size == 0:
        raise UploadError(f"{filename!r} holds no audio samples")
    return wav, {"source_rate": int(info.sample_rate), "source_channels": int(info.channels),
                 "source_format": str(info.format)}


def _envelope(wav: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, min, max) per column: a waveform picture of any length in ``columns`` points."""
    n = wav.shape[-1]
    columns = max(1, min(columns, n))
    edges = np.linspace(0, n, columns + 1).astype(np.int64)
    lo = np.minimum.reduceat(wav, edges[:-1])
    hi = np.maximum.reduceat(wav, edges[:-1])
    return edges[:-1], lo, hi


def _spectrogram_db(wav: np.ndarray, sample_rate: int, n_fft: int = 1024, max_frames: int = 1200,
                    rows: int = 160, f_min: float = 30.0) -> np.ndarray:
    """Magnitude STFT in dB on a log-frequency axis ``[rows, frames]`` from ``f_min`` to Nyquist (Hann window;
    the hop grows with the length so a song of any length gives at most ``max_frames`` columns)."""
    if wav.shape[-1] < n_fft:
        wav = np.pad(wav, (0, n_fft - wav.shape[-1]))
    hop = max(n_fft // 4, (wav.shape[-1] - n_fft) // max_frames + 1)
    frames = np.lib.stride_tricks.sliding_window_view(wav, n_fft)[::hop]
    mag = np.abs(np.fft.rfft(frames * np.hanning(n_fft).astype(np.float32), axis=-1)).T
    bins = np.round(np.geomspace(f_min, sample_rate / 2, rows) * n_fft / sample_rate).astype(np.int64)
    return 20.0 * np.log10(np.maximum(mag[np.clip(bins, 0, n_fft // 2)], 1e-5))


def draw_picture(wav_path: Path, png_path: Path, *, label: str, colour: str | None = None) -> None:
    """Write a PNG with the waveform (top) and the spectrogram (bottom, log frequency 30 Hz to Nyquist) of a WAV."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    wav, sr = sf.read(str(wav_path), dtype="float32", always_2d=False)
    wav = wav.mean(axis=1) if wav.ndim == 2 else wav
    colour = colour or STEM_COLOURS.get(label, "#76b7b2")
    fig = Figure(figsize=PICTURE_SIZE, dpi=100, facecolor="#15181d")
    canvas = FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [1, 2], "hspace": 0.05})
    fig.subplots_adjust(left=0.005, right=0.995, top=0.99, bottom=0.01)
    x, lo, hi = _envelope(wav, 800)
    top.fill_between(x / sr, lo, hi, color=colour, linewidth=0.6)
    top.set_xlim(0, len(wav) / sr)
    top.set_ylim(-1.0, 1.0)
    spec = _spectrogram_db(wav, sr)
    peak = float(spec.max())
    bottom.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=peak - 80.0, vmax=peak,
                  extent=(0, len(wav) / sr, 0, 1), interpolation="nearest")
    for ax in (top, bottom):
        ax.set_facecolor("#15181d")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    top.text(0.005, 0.92, label, transform=top.transAxes, color="#e6e6e6", fontsize=9, va="top")
    tmp = png_path.with_name(f".{png_path.name}.part")
    canvas.print_png(str(tmp))
    tmp.replace(png_path)


def remix_wav(stem_paths: list[Path], sample_rate: int) -> bytes:
    """``clip(sum of the given stem WAVs, -1, 1)`` as FLOAT WAV bytes; ValueError for an empty list."""
    mix: np.ndarray | None = None
    for path in stem_paths:
        wav, _ = sf.read(str(path), dtype="float32")
        mix = wav if mix is None else mix + wav
    if mix is None:
        raise ValueError("no stems to mix")
    buf = io.BytesIO()
    sf.write(buf, np.clip(mix, -1.0, 1.0), sample_rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()
