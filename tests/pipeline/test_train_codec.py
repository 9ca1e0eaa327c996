"""train_codec stage on tiny synthetic shards: training helps, report/plot/codec dir written, seeded weights."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mtmusicldm.codec.codec_dir import load_codec
from mtmusicldm.config import AudioParams, Params, params_to_dict
from mtmusicldm.data.shards import ShardWriter, encode_sample, list_shards
from pipeline import train_codec
from pipeline._common import PROFILES_DIR, load_params

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

os.environ["MTMUSICLDM_NO_PROGRESS"] = "1"

SR = 16000
SEGMENT = 10240  # 0.64 s -> 64 mel frames -> latent T' = 16
STEMS = ("bass", "drums", "guitar", "piano")


def tiny_params() -> Params:
    """The embedded profile with 0.64 s segments and a fast codec."""
    p = load_params(PROFILES_DIR / "embedded.yaml")
    codec = p.codec.replace(kind="trained", latent_channels=8, train_steps=10, batch_size=4, lr=2.0e-3,
                            griffin_lim_iters=2)
    encode = p.encode.replace(batch_size=2, scale_segments=3)
    return p.replace(audio=AudioParams(sample_rate=SR, segment_samples=SEGMENT), codec=codec, encode=encode)


def stem_audio(rng: np.random.Generator, silent: list[bool]) -> np.ndarray:
    """[4, SEGMENT] decaying sines (bass/guitar/piano) and noise bursts (drums); silent stems are zeros."""
    t = np.arange(SEGMENT) / SR
    out = np.zeros((len(STEMS), SEGMENT), np.float32)
    for s in range(len(STEMS)):
        if silent[s]:
            continue
        if STEMS[s] == "drums":
            env = np.exp(-12 * (t % 0.16))
            out[s] = 0.3 * env * rng.standard_normal(SEGMENT)
        else:
            f0 = {"bass": 80.0, "guitar": 330.0, "piano": 520.0}[STEMS[s]] * rng.uniform(0.8, 1.25)
            out[s] = rng.uniform(0.1, 0.4) * np.sin(2 * np.pi * f0 * t) * np.exp(-2 * t)
    return out


def write_tiny_shards(root: Path, *, per_split: dict[str, list[int]] | None = None, seed: int = 0,
                      audio_format: str = "npy") -> Path:
    """`root/<split>/<split>-NNNNNN.tar` with `per_split[split]` samples per shard (silent flags as prepare)."""
    per_split = per_split or {"train": [3, 3], "validation": [2], "test": [3]}
    rng = np.random.default_rng(seed)
    for split, sizes in per_split.items():
        with ShardWriter(root / split, split, max(sizes, default=1)) as writer:
            for shard, size in enumerate(sizes):
                for i in range(size):
                    silent = [False, False, i == 1, False]  # guitar silent in every 2nd sample
                    wav = stem_audio(rng, silent)
                    meta = {"track": f"Track{shard:02d}{i:03d}", "split": split, "view": 0, "chunk": i,
                            "silent": silent, "stems": list(STEMS), "sample_rate": SR}
                    key = f"Track{shard:02d}{i:03d}_c{i:04d}_v00"
                    writer.write(encode_sample(key, wav, meta, STEMS, SR, audio_format))
                writer.close()  # one shard per entry of `sizes`
    return root


@pytest.fixture(scope="module", autouse=True)
def few_eval_stems() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_codec, "EVAL_PER_STEM", 1)  # Griffin-Lim dominates the stage's run time
        yield


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="module")
def trained(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    p = tiny_params()
    out = tmp_path_factory.mktemp("models") / "codec"
    report = train_codec.run(p.seed, p.stems, p.audio, p.codec, shards, out)
    return out, report


def test_training_reduces_reconstruction_error(trained: tuple[Path, dict]) -> None:
    _, report = trained
    assert report["mel_l1"] < 0.8 * report["mel_l1_initial"], report
    history = report["train"]["history"]
    assert [h["step"] for h in history] == [0, 9]
    assert history[-1]["rec_l1"] < history[0]["rec_l1"]  # the steps themselves help, not only the bias init


def test_codec_dir_contents_and_report(trained: tuple[Path, dict]) -> None:
    out, report = trained
    assert {"codec.json", "vae", "report.json", "recon.png"} <= {p.name for p in out.iterdir()}
    assert not (out / "vocoder").exists()  # Griffin-Lim: settings only
    on_disk = json.loads((out / "report.json").read_text())
    for key in ("kind", "mel_l1", "mel_l1_initial", "lsd_db", "lsd_vocoder_floor_db", "latent_shape", "train",
                "eval", "vocoder"):
        assert key in on_disk, key
    assert on_disk["latent_shape"] == [4, 8, 16, 16]
    assert on_disk["eval"]["split"] == "test"
    assert on_disk["eval"]["items"] == [f"Track00000_c0000_v00/{s}" for s in STEMS]
    assert np.isfinite(on_disk["lsd_db"]) and on_disk["lsd_db"] > 0 and on_disk["lsd_vocoder_floor_db"] > 0
    assert (out / "recon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    codec = load_codec(out)
    assert codec.info["kind"] == "trained" and codec.latent_channels == 8


def test_same_seed_same_weights(shards: Path, tmp_path: Path) -> None:
    """Data order, posterior noise and initialisation all come from `seed` (init seeding: test_codec_dir)."""
    p = tiny_params()
    codec = p.codec.replace(train_steps=2)
    a = train_codec.run(p.seed, p.stems, p.audio, codec, shards, tmp_path / "a")
    b = train_codec.run(p.seed, p.stems, p.audio, codec, shards, tmp_path / "b")
    files = sorted(str(f.relative_to(tmp_path / "a")) for f in (tmp_path / "a").rglob("*") if f.is_file())
    assert "vae/diffusion_pytorch_model.safetensors" in files and "recon.png" in files
    for name in files:  # byte-identical codec dirs: weights, codec.json, report.json, recon.png
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert a["train"]["history"] == b["train"]["history"] and a["mel_l1"] == b["mel_l1"]


def test_zero_steps_keeps_initial_weights_and_missing_shards_error(shards: Path, tmp_path: Path) -> None:
    p = tiny_params()
    codec = p.codec.replace(train_steps=0)
    report = train_codec.run(p.seed, p.stems, p.audio, codec, shards, tmp_path / "codec")
    assert report["mel_l1"] == report["mel_l1_initial"] and report["train"]["history"] == []
    with pytest.raises(ValueError, match="no non-silent stem segments"):
        train_codec.run(p.seed, p.stems, p.audio, codec, tmp_path / "nothing", tmp_path / "codec2")
    assert not (tmp_path / "codec2").exists()


def test_segment_length_mismatch_is_reported(shards: Path, tmp_path: Path) -> None:
    p = tiny_params()
    audio = AudioParams(sample_rate=SR, segment_samples=2 * SEGMENT)
    with pytest.raises(ValueError, match="segment_samples"):
        train_codec.run(p.seed, p.stems, audio, p.codec.replace(train_steps=0), shards, tmp_path / "c")


def test_cli_main(shards: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    p = tiny_params()
    raw = params_to_dict(p.replace(codec=p.codec.replace(train_steps=0)))
    params.write_text(yaml.safe_dump(raw))
    train_codec.main(["--params", str(params), "--shards", str(shards), "--out", str(tmp_path / "codec"),
                      "--device", "cpu"])
    assert (tmp_path / "codec" / "codec.json").is_file()


def test_eval_set_and_training_stream_skip_silent_stems(shards: Path) -> None:
    split, wav, labels = train_codec.eval_set(shards, STEMS, 2)
    assert split == "test" and wav.shape == (8, SEGMENT)
    assert labels[4:] == ["Track00001_c0001_v00/bass", "Track00001_c0001_v00/drums", "Track00001_c0001_v00/piano",
                          "Track00002_c0002_v00/guitar"]  # silent guitar skipped, then taken from the next item
    stream = train_codec.stem_stream(list_shards(shards / "train"), STEMS, generator=torch.Generator().manual_seed(0))
    drawn = [next(stream) for _ in range(40)]  # > one epoch (6 samples, 21 non-silent stems)
    assert all(np.abs(w).max() > 0 for w in drawn)
    again = train_codec.stem_stream(list_shards(shards / "train"), STEMS, generator=torch.Generator().manual_seed(0))
    assert all(np.array_equal(a, next(again)) for a in drawn)


def test_mel_batches_random_crops_are_seeded_and_on_the_latent_grid():
    import numpy as np
    import torch

    from pipeline.train_codec import mel_batches

    def stream():
        rng = np.random.default_rng(0)
        while True:
            yield rng.standard_normal(160 * 64).astype(np.float32) * 0.1

    full = next(mel_batches(stream(), 3, 64))
    a = next(mel_batches(stream(), 3, 64, crop_frames=16, generator=torch.Generator().manual_seed(1)))
    b = next(mel_batches(stream(), 3, 64, crop_frames=16, generator=torch.Generator().manual_seed(1)))
    assert full.shape == (3, 1, 64, 64) and a.shape == (3, 1, 16, 64)
    assert torch.equal(a, b)
    for i in range(3):  # each crop is a 4-frame-aligned window of the full mel
        assert any(torch.equal(a[i], full[i, :, o:o + 16]) for o in range(0, 49, 4))


# ---------------------------------------------------------------------------------------------------------------- pca
def test_pca_codec_is_fitted_on_training_stems_and_reports_every_stem(shards: Path, tmp_path: Path) -> None:
    p = tiny_params()
    codec = p.codec.replace(kind="pca", latent_channels=8)
    report = train_codec.run(p.seed, p.stems, p.audio, codec, shards, tmp_path / "codec")
    assert report["train"]["pca"]["stems"] == 22  # 6 train samples x 4 stems, 2 silent guitars left out
    assert report["mel_l1_initial"] is None and report["latent_shape"] == [4, 8, 16, 16]
    assert set(report["per_stem"]) == set(STEMS)
    for stem, m in report["per_stem"].items():
        assert m["segments"] == 1 and m["mel_l1"] < 0.35, (stem, m)
        assert m["lsd_gap_db"] == pytest.approx(m["lsd_db"] - m["lsd_vocoder_floor_db"], abs=1e-3)
    on_disk = json.loads((tmp_path / "codec" / "report.json").read_text())
    assert on_disk["per_stem"] == report["per_stem"]
    loaded = load_codec(tmp_path / "codec")
    assert loaded.info["kind"] == "pca" and loaded.vae.fitted
    again = train_codec.run(p.seed, p.stems, p.audio, codec, shards, tmp_path / "again")
    assert again["per_stem"] == report["per_stem"]
    for f in ("vae/diffusion_pytorch_model.safetensors", "codec.json", "report.json"):
        assert (tmp_path / "codec" / f).read_bytes() == (tmp_path / "again" / f).read_bytes(), f
