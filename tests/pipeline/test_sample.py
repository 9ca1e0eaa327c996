"""The sample stage on tiny test shards and a tiny model: settings, files, targets, index.json, determinism."""
from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from mtmusicldm import STEMS
from mtmusicldm.config import AudioParams
from mtmusicldm.data.shards import ShardWriter, encode_sample
from pipeline import sample as stage
from tests.tiny_models import SEG, SR, make_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

PARAMS = stage.SampleParams(count=2, batch_size=2, sampler="ddim", steps=2, eta=None, noise_mode="fresh", total=True,
                            arrangement=True, guidance_scale=2.0, arrangement_guidance_scale=1.0,
                            arrangement_conditioning="target_mix", prompts=("soft music",), subtype="PCM_16",
                            untrained_reference=False, examples=0, examples_seconds=1.0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sample")
    model = make_model_dir(root, vocoder="hifigan")
    rng = np.random.default_rng(0)
    t = np.arange(SEG) / SR
    with ShardWriter(root / "shards" / "test", "test", samples_per_shard=2) as writer:
        for i in range(3):
            audio = np.stack([0.2 * np.sin(2 * np.pi * f * (i + 1) * t) for f in (55, 0, 220, 440)]).astype(np.float32)
            audio[1] = 0.1 * rng.standard_normal(SEG)
            meta = {"track": f"Track{i:05d}", "split": "test", "silent": [False] * 4}
            writer.write(encode_sample(f"Track{i:05d}_c0000_v00", audio, meta, STEMS, SR, "flac"))
    return {"model": model, "shards": root / "shards", "root": root}


def _hashes(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


def test_run_signature_takes_params_sections_and_paths() -> None:
    assert list(inspect.signature(stage.run).parameters) == ["seed", "stems", "audio", "sample", "model_dir",
                                                             "shards", "out"]


def test_sample_stage_writes_all_settings(setup: dict[str, Path]) -> None:
    out = setup["root"] / "samples"
    audio = AudioParams(sample_rate=SR, segment_samples=SEG)
    index = stage.run(7, STEMS, audio, PARAMS, setup["model"], setup["shards"], out)
    assert json.loads((out / "index.json").read_text()) == json.loads(json.dumps(index))
    names = [s["name"] for s in index["settings"]]
    arrangements = [n for n in names if n.startswith("arrange_")]
    assert names[0] == "total" and len(arrangements) == 14 and "text_soft_music" not in names  # unconditional
    assert arrangements[:4] == ["arrange_B", "arrange_D", "arrange_G", "arrange_P"] and "arrange_DGP" in names
    assert len(index["samples"]) == 15 * 2 and len(index["items"]) == 2
    assert index["settings"][0]["guidance_scale"] == 1.0  # unconditional model: no CFG
    for rec in index["samples"]:
        assert set(rec) >= {"setting", "kind", "generated", "given", "seed", "sampler", "steps", "guidance_scale",
                            "key", "files", "targets"}
        for path in [*rec["files"].values(), *rec["targets"].values()]:
            info = sf.info(str(out / path))
            assert (info.samplerate, info.frames) == (SR, SEG), path
        for s in rec["generated"]:
            assert np.abs(sf.read(str(out / rec["files"][s]))[0]).max() > 1e-4, (rec["setting"], s)
        if rec["kind"] == "arrangement":
            for s in rec["given"]:  # given stems are the ground truth itself
                assert rec["files"][s] == rec["targets"][s]
            assert rec["targets"]["sum"].startswith("target/sum_")
            gen = sum(sf.read(str(out / rec["files"][s]), dtype="float32")[0] for s in rec["generated"])
            total = sf.read(str(out / rec["files"]["sum"]), dtype="float32")[0]
            np.testing.assert_allclose(total, np.clip(gen, -1, 1), atol=3 / 32768)
            target_sum = sum(sf.read(str(out / rec["targets"][s]), dtype="float32")[0] for s in rec["generated"])
            np.testing.assert_allclose(sf.read(str(out / rec["targets"]["sum"]), dtype="float32")[0],
                                       np.clip(target_sum, -1, 1), atol=3 / 32768)
    bd = next(r for r in index["samples"] if r["setting"] == "arrange_BD")
    assert bd["generated"] == ["bass", "drums"] and bd["given"] == ["guitar", "piano"]
    seeds = {(r["setting"], r["item"]): r["seed"] for r in index["samples"]}
    assert len(set(seeds.values())) == len(seeds)  # one independent stream per (setting, item)


def test_sample_stage_is_deterministic(setup: dict[str, Path]) -> None:
    audio = AudioParams(sample_rate=SR, segment_samples=SEG)
    params = PARAMS.replace(arrangement=False, batch_size=1)  # the total setting, 2 items
    a, b = setup["root"] / "a", setup["root"] / "b"
    stage.run(3, STEMS, audio, params, setup["model"], setup["shards"], a)
    stage.run(3, STEMS, audio, params, setup["model"], setup["shards"], b)
    assert _hashes(a) == _hashes(b) and len(_hashes(a)) == 1 + 2 * 5 * 2  # index + 2 items x 5 files x 2
    assert not list(setup["root"].glob(".a.tmp-*"))  # atomic output left nothing behind


def test_sample_stage_errors(setup: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="segments are"):
        stage.run(0, STEMS, AudioParams(sample_rate=SR, segment_samples=2 * SEG), PARAMS, setup["model"],
                  setup["shards"], setup["root"] / "x")
    with pytest.raises(ValueError, match="nothing to sample"):
        PARAMS.replace(total=False, arrangement=False, prompts=())
    with pytest.raises(ValueError, match="sampler"):
        PARAMS.replace(sampler="nope")
    with pytest.raises(FileNotFoundError):
        stage.run(0, STEMS, AudioParams(sample_rate=SR, segment_samples=SEG), PARAMS, setup["model"],
                  setup["root"] / "noshards", setup["root"] / "x")


class FakeClap:
    """Stand-in for the CLAP conditioner (a real one takes ~10 s to build): records the mixtures it embeds."""

    def __init__(self, dim: int) -> None:
        self.dim, self.mixes, self.texts = dim, [], []

    def embed_audio(self, wav: torch.Tensor, *, generator: Any = None, crop: str = "random") -> torch.Tensor:
        self.mixes.append(wav.clone())
        return torch.nn.functional.normalize(wav[:, : self.dim] + 0.01, dim=-1)

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        self.texts += list(texts)
        return torch.nn.functional.normalize(torch.arange(1.0, self.dim + 1)[None].repeat(len(texts), 1), dim=-1)


@pytest.mark.parametrize("conditioning", ["target_mix", "given_mix"])
def test_sample_stage_conditional_model(setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                        conditioning: str) -> None:
    from mtmusicldm.ldm import MTMusicLDM

    model = make_model_dir(setup["root"] / f"cond_{conditioning}", vocoder="hifigan", film_dim=16)
    clap = FakeClap(16)
    monkeypatch.setattr(MTMusicLDM, "clap", property(lambda self: clap))
    params = PARAMS.replace(count=1, batch_size=1, arrangement_conditioning=conditioning)
    index = stage.run(5, STEMS, AudioParams(sample_rate=SR, segment_samples=SEG), params, model, setup["shards"],
                      setup["root"] / f"out_{conditioning}")
    settings = {s["name"]: s for s in index["settings"]}
    assert settings["total"]["guidance_scale"] == 2.0 and settings["total"]["conditioning"] == "audio_mix"
    assert settings["text_soft_music"]["prompt"] == "soft music" and clap.texts == ["soft music"]
    assert settings["arrange_BD"]["conditioning"] == conditioning and settings["arrange_BD"]["guidance_scale"] == 1.0
    assert len(clap.mixes) == 1 + 14  # the total setting and every arrangement
    key = index["items"][0]["item"]
    target_mix = torch.from_numpy(sf.read(str(setup["root"] / f"out_{conditioning}" / "target" / "mix" /
                                               f"{key}.wav"), dtype="float32")[0])
    bd_mix = clap.mixes[1 + [s for s in settings if s.startswith("arrange_")].index("arrange_BD")][0]
    if conditioning == "target_mix":  # official: the full ground-truth mixture, generated stems included
        torch.testing.assert_close(bd_mix, target_mix, atol=3 / 32768, rtol=0)
    else:  # only the given stems (guitar + piano) are heard
        given = sum(torch.from_numpy(sf.read(str(setup["root"] / f"out_{conditioning}" / "target" / s /
                                                 f"{key}.wav"), dtype="float32")[0]) for s in ("guitar", "piano"))
        torch.testing.assert_close(bd_mix, given, atol=3 / 32768, rtol=0)


def test_sample_stage_untrained_reference(setup: dict[str, Path]) -> None:
    from mtmusicldm.ldm import MTMusicLDM

    audio = AudioParams(sample_rate=SR, segment_samples=SEG)
    out = setup["root"] / "with_untrained"
    index = stage.run(7, STEMS, audio, PARAMS.replace(untrained_reference=True), setup["model"], setup["shards"], out)
    by_model = {m: [r for r in index["samples"] if r["model"] == m] for m in ("trained", "untrained")}
    assert len(by_model["trained"]) == len(by_model["untrained"]) == 15 * 2
    assert index["untrained"]["dir"] == "untrained" and isinstance(index["untrained"]["init_seed"], int)
    trained = {(r["setting"], r["item"]): r for r in by_model["trained"]}
    for rec in by_model["untrained"]:
        twin = trained[(rec["setting"], rec["item"])]
        assert rec["seed"] == twin["seed"] and rec["guidance_scale"] == twin["guidance_scale"]
        for name in [*rec["generated"], "mix"] + (["sum"] if rec["kind"] == "arrangement" else []):
            assert rec["files"][name] == f"untrained/{twin['files'][name]}"
            assert (out / rec["files"][name]).is_file()
        for name in rec["given"]:
            assert rec["files"][name] == rec["targets"][name] == twin["files"][name]
    item = index["items"][0]["item"]
    gen = sf.read(str(out / "untrained" / "total" / "bass" / f"{item}.wav"))[0]
    ref = sf.read(str(out / "total" / "bass" / f"{item}.wav"))[0]
    assert np.isfinite(gen).all() and not np.allclose(gen, ref)  # a different (untrained) model
    # the trained outputs are unchanged by the extra reference run
    plain_dir = setup["root"] / "samples"  # test_sample_stage_writes_all_settings: same seed and params
    if not (plain_dir / "index.json").is_file():
        stage.run(7, STEMS, audio, PARAMS, setup["model"], setup["shards"], plain_dir)
    plain = json.loads((plain_dir / "index.json").read_text())
    assert plain["untrained"] is None and {r["model"] for r in plain["samples"]} == {"trained"}
    ours = {k: v for k, v in _hashes(out).items() if not k.startswith("untrained/") and k != "index.json"}
    assert ours == {k: v for k, v in _hashes(plain_dir).items() if k != "index.json"}
    # the official init zeroes the output convs: the untrained UNet predicts eps = 0, seeded and deterministic
    model = MTMusicLDM.from_pretrained(setup["model"])
    a, b = stage.untrained_model(model, 3), stage.untrained_model(model, 3)
    x = torch.randn(1, *model.latent_shape)
    with torch.no_grad():
        assert torch.count_nonzero(a.unet(x, torch.tensor([500]))) == 0
    sa, sb = a.unet.state_dict(), b.unet.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], v) for k, v in model.unet.state_dict().items())
    # the zeros it returns without computing are what the network computes; with a nonzero conv_out it runs it
    from mtmusicldm.models.unet3d import UNet3D

    plain = UNet3D(model.unet.config).eval()
    plain.load_state_dict(sa)
    t = torch.tensor([500])
    with torch.no_grad():
        assert torch.equal(a.unet(x, t), plain(x, t))
        a.unet.conv_out.bias.fill_(0.5)
        plain.conv_out.bias.fill_(0.5)
        assert torch.equal(a.unet(x, t), plain(x, t)) and a.unet(x, t).abs().sum() > 0


# ---------------------------------------------------------------------------------------------------- examples
def test_excerpts_pick_consecutive_chunks_with_the_given_stems_playing() -> None:
    from pipeline.sample_examples import excerpts

    keys = ["A_c0000_v00", "A_c0001_v00", "A_c0003_v00", "B_c0000_v00", "B_c0001_v00", "B_c0002_v00",
            "C_c0004_v00", "C_c0005_v00"]
    silent = {k: [False] * 4 for k in keys} | {"B_c0001_v00": [True, False, False, False]}  # B's bass drops out
    assert excerpts(keys, silent, STEMS, 2, 5) == [["A_c0000_v00", "A_c0001_v00"], ["C_c0004_v00", "C_c0005_v00"]]
    assert excerpts(keys, silent, STEMS, 2, 1) == [["A_c0000_v00", "A_c0001_v00"]]
    assert excerpts(keys, silent, STEMS, 3, 5) == []


def test_sample_stage_writes_long_form_examples(setup: dict[str, Path]) -> None:
    root = setup["root"] / "examples"
    rng = np.random.default_rng(1)
    chunks = [rng.uniform(-0.3, 0.3, (4, SEG)).astype(np.float32) for _ in range(2)]
    with ShardWriter(root / "shards" / "test", "test", samples_per_shard=8) as writer:
        for c, audio in enumerate(chunks):
            meta = {"track": "Track00009", "split": "test", "silent": [False] * 4}
            writer.write(encode_sample(f"Track00009_c{c:04d}_v00", audio, meta, STEMS, SR, "npy"))
    params = PARAMS.replace(count=1, total=True, arrangement=False, prompts=(), examples=1,
                            examples_seconds=2 * SEG / SR)
    index = stage.run(7, STEMS, AudioParams(sample_rate=SR, segment_samples=SEG), params, setup["model"],
                      root / "shards", root / "samples")
    assert [e["folder"] for e in index["examples"]] == ["generate_0", "arrange_0"]
    ex = root / "samples" / "examples"
    assert json.loads((ex / "examples.json").read_text())["examples"] == index["examples"]
    for folder in ("generate_0", "arrange_0"):
        for name in (*STEMS, "mix"):
            wav, sr = sf.read(str(ex / folder / f"{name}.wav"), dtype="float32")
            assert sr == SR and wav.shape == (2 * SEG,), (folder, name)
    real = np.concatenate(chunks, axis=1)
    for s in ("bass", "drums"):  # given: the real consecutive chunks (16-bit WAV)
        wav = sf.read(str(ex / "arrange_0" / f"{s}.wav"), dtype="float32")[0]
        np.testing.assert_allclose(wav, real[STEMS.index(s)], atol=1.0 / 32768)
    guitar = sf.read(str(ex / "arrange_0" / "guitar.wav"), dtype="float32")[0]
    assert np.abs(guitar - real[STEMS.index("guitar")]).max() > 0.01  # generated, not copied
