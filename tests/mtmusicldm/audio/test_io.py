"""Audio I/O: round trips, mixdown, resampling, windowed reads and every error path."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mtmusicldm.audio import io as audio_io
from mtmusicldm.audio.io import AudioError, audio_info, load_audio, resample, save_audio


def _sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    n = int(round(sr * seconds))
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)


def _noise(shape: tuple[int, ...], seed: int = 0, amp: float = 0.3) -> np.ndarray:
    x = amp * np.random.default_rng(seed).standard_normal(shape)
    return np.clip(x, -0.9, 0.9).astype(np.float32)  # stay inside [-1, 1]: no PCM clipping in round trips


# --- round trips ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix, subtype, atol", [(".wav", "PCM_16", 2 ** -15), (".flac", "PCM_24", 2 ** -23),
                                                    (".wav", "FLOAT", 0.0)])
def test_round_trip(tmp_path: Path, suffix: str, subtype: str, atol: float) -> None:
    wav = _noise((2, 4000))
    path = tmp_path / f"x{suffix}"
    save_audio(path, wav, 16000, subtype=subtype)
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.frames) == (16000, 2, 4000)
    assert info.duration_s == pytest.approx(0.25)
    back = load_audio(path, 16000, mono=False)
    assert back.dtype == np.float32 and back.shape == (2, 4000)
    np.testing.assert_allclose(back, wav, atol=atol + 1e-9, rtol=0)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary sibling left behind


def test_save_ogg_default_subtype(tmp_path: Path) -> None:
    path = tmp_path / "x.ogg"
    save_audio(path, _sine(440, 16000, 0.5), 16000)
    assert audio_info(path).format == "OGG" and load_audio(path).shape == (8000,)


def test_pcm_clips_float_does_not(tmp_path: Path) -> None:
    wav = np.array([0.0, 1.5, -2.0, 0.25] * 100, dtype=np.float32)
    save_audio(tmp_path / "p.wav", wav, 16000)
    pcm = load_audio(tmp_path / "p.wav")
    assert pcm.max() <= 1.0 and pcm.min() == -1.0 and pcm[1] == pytest.approx(1.0, abs=1e-4)
    save_audio(tmp_path / "f.wav", wav, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "f.wav"), wav)


def test_save_overwrites_atomically_and_rejects_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    save_audio(path, np.zeros(100, np.float32), 16000)
    save_audio(path, np.full(200, 0.5, np.float32), 16000)
    assert audio_info(path).frames == 200
    with pytest.raises(AudioError, match="x.wav"):
        save_audio(path, np.array([0.0, np.nan] * 10, np.float32), 16000)
    assert audio_info(path).frames == 200  # the failed write left the old file intact
    with pytest.raises(AudioError, match="suffix"):
        save_audio(tmp_path / "x.aiff", np.zeros(100, np.float32), 16000)
    with pytest.raises(AudioError, match="subtype"):
        save_audio(tmp_path / "x.flac", np.zeros(100, np.float32), 16000, subtype="FLOAT")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.wav"]


# --- mixdown, resampling -----------------------------------------------------------------------------------------

def test_stereo_mixdown_is_channel_mean(tmp_path: Path) -> None:
    wav = _noise((2, 3000), seed=1)
    save_audio(tmp_path / "s.wav", wav, 16000, subtype="FLOAT")
    mono = load_audio(tmp_path / "s.wav")
    assert mono.shape == (3000,)
    np.testing.assert_allclose(mono, wav.mean(axis=0), atol=1e-7, rtol=0)
    assert load_audio(tmp_path / "s.wav", mono=False).shape == (2, 3000)


@pytest.mark.parametrize("sr_in", [48000, 44100, 22050])
def test_resample_to_16k_keeps_length_and_frequency(tmp_path: Path, sr_in: int) -> None:
    freq = 1000.0
    save_audio(tmp_path / "a.flac", _sine(freq, sr_in, 1.0), sr_in, subtype="PCM_24")
    out = load_audio(tmp_path / "a.flac", 16000)
    assert out.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    assert abs(np.argmax(spectrum) * 16000 / len(out) - freq) <= 1.0
    assert 0.45 < np.abs(out[1000:-1000]).max() < 0.55  # amplitude preserved


def test_resample_function_shapes_and_identity() -> None:
    x = _noise((2, 1001))
    assert resample(x, 44100, 16000).shape == (2, 363)
    assert resample(x[0], 16000, 44100).shape == (math.floor(1001 * 44100 / 16000 + 0.5),)
    assert resample(np.zeros(400, np.float32), 16000, 44100).shape == (1103,)  # 1102.5 rounds half up
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)
    np.testing.assert_allclose(resample(x, 22050, 16000)[1], resample(x[1], 22050, 16000), atol=1e-6)
    with pytest.raises(ValueError):
        resample(x, 0, 16000)


# --- windowed reading --------------------------------------------------------------------------------------------

def test_window_equals_slice_of_full_read_native_rate(tmp_path: Path) -> None:
    wav = _noise((2, 22050 * 2), seed=2)
    save_audio(tmp_path / "w.flac", wav, 22050, subtype="PCM_24")
    full = load_audio(tmp_path / "w.flac", None, mono=False)
    win = load_audio(tmp_path / "w.flac", None, mono=False, offset_s=0.5, duration_s=0.25)
    start = int(0.5 * 22050)
    np.testing.assert_array_equal(win, full[:, start:start + int(0.25 * 22050)])
    tail = load_audio(tmp_path / "w.flac", None, mono=False, offset_s=1.9, duration_s=1.0)  # past the end: short
    np.testing.assert_array_equal(tail, full[:, int(1.9 * 22050 + 1e-7):])


def test_window_equals_slice_of_full_read_resampled(tmp_path: Path) -> None:
    save_audio(tmp_path / "r.flac", _noise((22050 * 3,), seed=3), 22050, subtype="PCM_24")
    full = load_audio(tmp_path / "r.flac", 16000)
    win = load_audio(tmp_path / "r.flac", 16000, offset_s=1.0, duration_s=1.0)
    assert win.shape == (16000,)
    np.testing.assert_allclose(win, full[16000:32000], atol=1e-5, rtol=0)


def test_window_reads_only_the_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_audio(tmp_path / "long.flac", _noise((16000 * 4,), seed=4), 16000)
    calls = []
    real = audio_io._read_frames
    monkeypatch.setattr(audio_io, "_read_frames", lambda p, a, b: calls.append((a, b)) or real(p, a, b))
    load_audio(tmp_path / "long.flac", 16000, offset_s=2.0, duration_s=0.5)
    assert calls == [(32000, 40000)]


def test_bad_window_arguments(tmp_path: Path) -> None:
    save_audio(tmp_path / "x.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(AudioError, match="past the end"):
        load_audio(tmp_path / "x.wav", offset_s=0.2)
    with pytest.raises(AudioError, match="offset_s"):
        load_audio(tmp_path / "x.wav", offset_s=-1.0)
    with pytest.raises(AudioError, match="duration_s"):
        load_audio(tmp_path / "x.wav", duration_s=0.0)


# --- corrupt, truncated, empty, missing ------------------------------------------------------------------------

def test_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    for fn in (audio_info, load_audio):
        with pytest.raises(AudioError, match="nope.wav.*not found"):
            fn(path)


def test_truncated_flac(tmp_path: Path) -> None:
    path = tmp_path / "t.flac"
    save_audio(path, _noise((16000 * 2,), seed=5), 16000, subtype="PCM_24")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"t\.flac.*truncated"):
        load_audio(path)


def test_truncated_wav(tmp_path: Path) -> None:
    path = tmp_path / "t.wav"
    save_audio(path, _noise((16000,), seed=6), 16000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"t\.wav.*truncated"):
        load_audio(path)


def test_garbage_bytes(tmp_path: Path) -> None:
    path = tmp_path / "g.flac"
    path.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match=r"g\.flac.*unreadable"):
        load_audio(path)


def test_zero_length(tmp_path: Path) -> None:
    empty = tmp_path / "e.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="zero-length"):
        load_audio(empty)
    no_frames = tmp_path / "z.wav"
    sf.write(no_frames, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match=r"z\.wav.*zero-length"):
        audio_info(no_frames)


def test_nan_samples(tmp_path: Path) -> None:
    path = tmp_path / "n.wav"
    wav = np.zeros(1000, np.float32)
    wav[500] = np.nan
    sf.write(path, wav, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"n\.wav.*NaN"):
        load_audio(path)


def test_mp3_without_decoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.mp3"
    path.write_bytes(b"\xff\xfb" + bytes(1000))
    monkeypatch.setattr(audio_io.sf, "available_formats", lambda: {"WAV": "", "FLAC": ""})
    monkeypatch.setattr(audio_io, "_load_fallback", lambda p, o, d: (_ for _ in ()).throw(
        AudioError(f"{p}: mp3 is unsupported")))
    with pytest.raises(AudioError, match=r"m\.mp3.*unsupported"):
        load_audio(path)
