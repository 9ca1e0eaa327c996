"""Long-form arrangement and generation: windows, latent continuation, stitching, exact lengths and given stems."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import Tensor

from mtmusicldm import STEMS
from mtmusicldm import generation as G
from mtmusicldm.audio import AudioError, load_audio
from mtmusicldm.generation import codec_io
from mtmusicldm.generation import longform as L
from mtmusicldm.generation.seeds import item_seeds
from tiny_generation import SEG, TinyModel, make_tiny_model, song  # tests/mtmusicldm/generation is on sys.path

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SR = 16000
KNOWN = torch.tensor([[True, True, False, False]])  # bass + drums given, guitar + piano generated


@pytest.fixture(scope="module")
def model() -> TinyModel:
    return make_tiny_model()


def test_plan_windows() -> None:
    p = L.plan_windows(SEG - 5, 16, 0.5)
    assert (p.n_windows, p.padded_samples) == (1, SEG)
    p = L.plan_windows(10 * SR, 16, 0.5)
    assert (p.overlap_frames, p.hop_frames) == (8, 8)
    assert p.padded_samples >= 10 * SR > p.padded_samples - p.hop_frames * 640
    assert p.n_windows == 31
    q = L.plan_windows(10 * SR, 16, 0.25)
    assert (q.overlap_frames, q.hop_frames) == (4, 12)
    assert L.plan_windows(SEG + 1, 16, 0.0).n_windows == 2
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="overlap"):
            L.plan_windows(SR, 16, bad)


def test_stitch_mels_crossfades_only_the_overlap() -> None:
    plan = L.plan_windows(3 * 8 * 640, 16, 0.5)  # 2 windows of 16 frames, hop 8 -> 24 frames
    a, b = torch.zeros(1, 64, 3), torch.ones(1, 64, 3)
    out = L.stitch_mels([a, b], plan)
    assert out.shape == (1, 96, 3)
    assert float(out[:, :32].abs().max()) == 0.0 and bool((out[:, 64:] == 1).all())
    ramp = out[0, 32:64, 0]
    assert bool((ramp[1:] > ramp[:-1]).all()) and 0 < float(ramp[0]) < 0.05 and 0.95 < float(ramp[-1]) < 1


@pytest.fixture(scope="module")
def long_run(model: TinyModel) -> dict[str, Any]:
    """A 10.3 s two-stem input (not a multiple of a frame), 31 windows at 50 % overlap."""
    n = 10 * SR + 123
    audio = song(n)
    plan = L.plan_windows(n, 16, 0.5)
    padded = torch.nn.functional.pad(audio, (0, plan.padded_samples - n))
    seeds = item_seeds(7, 1)
    with torch.inference_mode():
        windows = L.window_latents(model, padded, KNOWN, plan, seeds, steps=2)
        mels = [codec_io.decode_mel(model, z[~KNOWN][:, None])[:, 0] for z in windows]
        out = L.render(model, windows, padded, KNOWN, plan)
    return {"n": n, "audio": audio, "plan": plan, "windows": windows, "mels": mels, "out": out}


def test_long_arrangement_length_and_given_stems(long_run: dict[str, Any]) -> None:
    out, audio = long_run["out"], long_run["audio"]
    assert out.shape == (1, 4, long_run["n"])
    assert torch.equal(out[0, :2], audio[0, :2])  # given stems bit-identical
    assert float(out[0, 2:].abs().max()) > 1e-3 and float(out[0, 2:].abs().max()) <= 1.0
    tail = out[0, 2:, -SR:]  # the last second is generated too (padding was cropped, not left silent)
    assert float(tail.abs().max()) > 1e-3


def test_long_arrangement_latent_continuity(long_run: dict[str, Any]) -> None:
    plan, windows = long_run["plan"], long_run["windows"]
    o, hop = plan.overlap_frames, plan.hop_frames
    for k in range(1, plan.n_windows):
        prev, cur = windows[k - 1], windows[k]
        assert torch.equal(cur[:, 2:, :, :o], prev[:, 2:, :, hop:]), f"window {k} does not continue window {k - 1}"
        assert not torch.equal(cur[:, 2:, :, o:], prev[:, 2:, :, :o])  # the rest is new


def test_long_arrangement_mel_has_no_seams(long_run: dict[str, Any]) -> None:
    """Over each overlap the stitched mel lies between the two windows' mels (a convex cross-fade)."""
    plan, mels = long_run["plan"], long_run["mels"]
    stitched = L.stitch_mels(mels, plan)
    ov, hop = plan.overlap_frames * 4, plan.hop_frames * 4
    for k in range(1, plan.n_windows):
        a = k * hop
        seg, prev, cur = stitched[:, a:a + ov], mels[k - 1][:, hop:hop + ov], mels[k][:, :ov]
        lo, hi = torch.minimum(prev, cur) - 1e-5, torch.maximum(prev, cur) + 1e-5
        assert bool(((seg >= lo) & (seg <= hi)).all())
    # windows decode their shared latents alike (up to decoder edge context): far closer than unrelated content
    shared = np.mean([float((mels[k - 1][:, hop:hop + ov] - mels[k][:, :ov]).abs().mean())
                      for k in range(1, plan.n_windows)])
    unrelated = np.mean([float((mels[k] - mels[0]).abs().mean()) for k in range(2, plan.n_windows)])
    assert shared < 0.5 * unrelated


def test_single_window_equals_segment_arrangement(model: TinyModel) -> None:
    audio = song(SEG - 300)
    seg = G.arrange(model, audio, mask=KNOWN, seed=4, steps=2)
    long = L.arrange_long(model, audio, KNOWN, seed=4, steps=2)
    assert seg.shape == long.shape == audio.shape
    torch.testing.assert_close(long, seg, atol=1e-6, rtol=0)


def test_arrange_dispatches_long_inputs(model: TinyModel) -> None:
    audio = song(2 * SEG + 10)
    via_arrange = G.arrange(model, audio, mask=KNOWN[0], seed=1, steps=2, overlap=0.25)
    direct = L.arrange_long(model, audio, KNOWN[0], seed=1, steps=2, overlap=0.25)
    assert torch.equal(via_arrange, direct) and via_arrange.shape == audio.shape
    with pytest.raises(ValueError, match="time masks"):
        G.arrange(model, audio, mask=torch.ones(1, 4, 16, dtype=torch.bool) & False, seed=1, steps=2)
    with pytest.raises(ValueError, match="at least one stem to generate"):
        L.arrange_long(model, audio, torch.ones(4, dtype=torch.bool), seed=1, steps=2)


def test_generate_long_length_determinism_and_batch_independence(model: TinyModel) -> None:
    n = 2 * SEG + 777
    a = L.generate_long(model, 2, n, seed=3, steps=2, overlap=0.5, batch_size=2)
    assert a.shape == (2, 4, n) and float(a.abs().max()) <= 1.0
    assert torch.equal(a, L.generate_long(model, 2, n, seed=3, steps=2, overlap=0.5, batch_size=2))
    b = L.generate_long(model, 2, n, seed=3, steps=2, overlap=0.5, batch_size=1)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert not torch.allclose(a[0], a[1])


def _write(path: Any, wav: np.ndarray, sr: int) -> None:
    sf.write(str(path), wav.T if wav.ndim == 2 else wav, sr, subtype="FLOAT")


def test_load_stems_resamples_mixes_down_and_pads(tmp_path: Any) -> None:
    rng = np.random.default_rng(0)
    _write(tmp_path / "bass.wav", (0.1 * rng.standard_normal((2, 44100))).astype(np.float32), 44100)
    _write(tmp_path / "drums.wav", (0.1 * rng.standard_normal(12000)).astype(np.float32), SR)
    paths = {"bass": tmp_path / "bass.wav", "drums": tmp_path / "drums.wav"}
    with pytest.warns(UserWarning, match="different lengths"):
        audio, known = L.load_stems(paths, STEMS)
    assert audio.shape == (4, SR) and known.tolist() == [True, True, False, False]
    assert torch.equal(audio[0], torch.from_numpy(load_audio(paths["bass"], SR, mono=True)))
    assert torch.equal(audio[1, :12000], torch.from_numpy(load_audio(paths["drums"], SR)))
    assert float(audio[1, 12000:].abs().max()) == 0.0 and float(audio[2:].abs().max()) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L.load_stems({"bass": paths["bass"]}, STEMS)  # one stem: no warning
    with pytest.raises(ValueError, match="unknown stem"):
        L.load_stems({"flute": paths["bass"]}, STEMS)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(AudioError, match="bad.wav"):
        L.load_stems({"bass": tmp_path / "bad.wav"}, STEMS)


def test_render_keeps_given_stems_exactly(model: TinyModel) -> None:
    audio: Tensor = song(SEG + 640)
    audio[0, 0, ::7] = 0.123456789  # arbitrary float32 values survive untouched
    out = L.arrange_long(model, audio, KNOWN, seed=0, steps=2)
    assert torch.equal(out[:, :2], audio[:, :2])
