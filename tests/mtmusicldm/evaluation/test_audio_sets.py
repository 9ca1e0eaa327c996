"""Folder loading, embedding and the content-addressed cache."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mtmusicldm.audio import AudioError, save_audio
from mtmusicldm.evaluation import (
    EmbeddingCache,
    OfflineEmbedder,
    embed_dir,
    embed_set,
    load_audio_dir,
    load_audio_set,
)

SR = 16000


class CountingEmbedder(OfflineEmbedder):
    """Offline backbone that counts `embed` calls (cache hits make none)."""

    def __init__(self, hop_s: float = 0.96) -> None:
        super().__init__(hop_s)
        self.calls = 0

    def embed(self, wav: np.ndarray) -> np.ndarray:
        self.calls += 1
        return super().embed(wav)


def _tone(seconds: float, hz: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    noise = np.random.default_rng(seed).normal(size=t.shape)
    return (0.3 * np.sin(2 * np.pi * hz * t) + 0.01 * noise).astype(np.float32)


def _make_dir(root: Path, n: int, seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        save_audio(root / f"clip_{i:02d}.wav", _tone(1.5, 200.0 + 40 * i + seed, seed=seed + i), SR)
    return root


def test_load_audio_dir_sorts_resamples_and_takes_first_channel(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "set"
    d.mkdir()
    save_audio(d / "b.wav", _tone(1.0, 300.0), SR)
    save_audio(d / "a.flac", _tone(1.0, 300.0, sr=44100), 44100)
    stereo = np.stack([_tone(1.0, 300.0), np.zeros(SR, np.float32)])
    save_audio(d / "c.wav", stereo, SR)
    (d / "notes.txt").write_text("ignored")
    (d / "sub").mkdir()
    save_audio(d / "sub" / "d.wav", _tone(0.5, 300.0), SR)

    with caplog.at_level("WARNING"):
        items = load_audio_dir(d)
    assert [name for name, _ in items] == ["a.flac", "b.wav", "c.wav"]
    assert "1 of 3 files resampled to 16000 Hz" in caplog.text
    assert all(w.dtype == np.float32 and w.ndim == 1 for _, w in items)
    assert abs(len(items[0][1]) - SR) <= 1  # 44.1 kHz second -> 16000 samples
    np.testing.assert_allclose(items[2][1], items[1][1], atol=1e-4)  # first channel, not the mix-down
    assert load_audio_set(d).source_rates == {16000: 2, 44100: 1}
    assert [n for n, _ in load_audio_dir(d, recursive=True)] == ["a.flac", "b.wav", "c.wav", "sub/d.wav"]
    mean = dict(load_audio_dir(d, channel="mean"))["c.wav"]
    np.testing.assert_allclose(mean, items[1][1] / 2, atol=1e-4)


def test_folder_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    with pytest.raises(ValueError, match="empty_folder: no audio files"):
        load_audio_dir(empty)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_audio_dir(tmp_path / "missing")
    bad = tmp_path / "nan_set"
    bad.mkdir()
    wav = _tone(1.0, 300.0)
    wav[100] = np.nan
    sf.write(bad / "broken.wav", wav, SR, subtype="FLOAT")  # save_audio refuses NaN; write it raw
    with pytest.raises(AudioError, match="broken.wav.*NaN"):
        load_audio_dir(bad)


def test_embed_set_pools_frames_and_names_bad_outputs() -> None:
    emb = OfflineEmbedder()
    wavs = [_tone(2.0, 200.0), _tone(1.0, 300.0)]
    out = embed_set(emb, wavs, progress=False)
    assert out.shape == (2 + 1, 80)

    class Broken(OfflineEmbedder):
        def embed(self, wav: np.ndarray) -> np.ndarray:
            return np.zeros((1, 3), np.float32)

    with pytest.raises(ValueError, match="x.wav: offline returned shape"):
        embed_set(Broken(), [("x.wav", wavs[0])], progress=False)
    with pytest.raises(ValueError, match="no waveforms"):
        embed_set(emb, [], progress=False)


def test_cache_hits_and_invalidation(tmp_path: Path) -> None:
    d = _make_dir(tmp_path / "gen", 3)
    cache = EmbeddingCache(tmp_path / "cache")
    emb = CountingEmbedder()

    first = embed_dir(d, emb, cache=cache)
    assert not first.cache_hit and emb.calls == 3
    again = embed_dir(d, emb, cache=cache)
    assert again.cache_hit and emb.calls == 3
    np.testing.assert_array_equal(again.embeddings, first.embeddings)
    assert again.names == first.names and again.frames == first.frames

    # touching a file (mtime only) recomputes
    target = d / "clip_01.wav"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert not embed_dir(d, emb, cache=cache).cache_hit and emb.calls == 6

    # same size, same mtime, different bytes: the content hash still catches it
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[-2] ^= 0x01
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size
    assert not embed_dir(d, emb, cache=cache).cache_hit and emb.calls == 9

    # a changed backbone (different fingerprint) recomputes; each configuration keeps one entry per folder
    other = CountingEmbedder(hop_s=0.48)
    assert not embed_dir(d, other, cache=cache).cache_hit and other.calls == 3
    assert embed_dir(d, other, cache=cache).cache_hit and other.calls == 3
    assert embed_dir(d, emb, cache=cache).cache_hit and emb.calls == 9
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2  # stale-content entries were deleted

    # adding a file recomputes
    save_audio(d / "clip_99.wav", _tone(1.0, 500.0), SR)
    again = embed_dir(d, emb, cache=cache)
    assert not again.cache_hit and len(again.names) == 4
