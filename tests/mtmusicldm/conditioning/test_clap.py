"""Tests for the frozen CLAP conditioner: offline, random weights, HTSAT-tiny + a 1-layer RoBERTa for plumbing,
HTSAT-base + roberta-base only for the manifest check.

Cost control (2 shared CPU cores): HTSAT forwards (~1-3 s per 10 s clip) are shared through module fixtures and kept
to 5 clips; windowing logic is tested with a fake embedder; laion-clap's erfinv-based `trunc_normal_` init (60 % of a
model build) is skipped while building test models: the weights stay random (PyTorch default init), shapes unchanged.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import types
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch
from torch import Tensor, nn

from mtmusicldm.conditioning import (
    ClapCheckpointError,
    ClapConditioner,
    build_clap_model,
    check_tokenizer,
    draw_crop_offsets,
    empty_prompt_tokens,
    extract_clap_state_dict,
    load_clap_state_dict,
    roberta_base_config,
    tokenize,
)
from mtmusicldm.conditioning import clap as clap_module
from mtmusicldm.conditioning.clap import POSITION_IDS_KEY, import_laion_clap
from mtmusicldm.conditioning.text import roberta_text_tower

SR = 16000
SEGMENT = 163840  # 10.24 s at 16 kHz -> 491520 at 48 kHz, overflow 11520


def _tiny_text_config():
    return roberta_base_config(num_hidden_layers=1, intermediate_size=64, vocab_size=64)


def _write_tiny_bpe(directory: Path) -> Path:
    """A byte-level BPE vocabulary in roberta's id order (<s>=0, <pad>=1, </s>=2, <unk>=3) + 4 merges."""
    directory.mkdir(parents=True, exist_ok=True)
    tokens = ["<s>", "<pad>", "</s>", "<unk>", *"abcdefghijklmnopqrstuvwxyz", "\u0120", "\u0120a", "\u0120b", "mu",
              "\u0120mu", "<mask>"]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    merges = ["#version: 0.2", "\u0120 a", "\u0120 b", "m u", "\u0120 mu"]
    (directory / "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")
    return directory


def _signal(seconds: float, seed: int) -> Tensor:
    """[samples] noise with a 3 Hz-modulated envelope and a chirp, so that crop offsets change the content."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * SR)
    t = torch.arange(n) / SR
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 0.7 * t + seed) * torch.sin(2 * math.pi * 3.0 * t)
    chirp = torch.sin(2 * math.pi * (200 + 150 * t) * t)
    return 0.3 * envelope * (torch.randn(n, generator=g) + chirp)


def _gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@contextlib.contextmanager
def _fast_init() -> Iterator[None]:
    import_laion_clap()
    import laion_clap.clap_module.htsat as htsat

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(htsat, "trunc_normal_", lambda tensor, *args, **kwargs: tensor)
        yield


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_tiny_bpe(tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="module")
def tiny_tokenizer(bpe_dir: Path):
    from transformers import RobertaTokenizer

    tok = RobertaTokenizer(vocab=str(bpe_dir / "vocab.json"), merges=str(bpe_dir / "merges.txt"))
    assert len(tok) == 36 and tok("a mu")["input_ids"][0] == 0  # the real class with our tiny vocabulary
    return tok


@pytest.fixture(scope="module")
def cond(tiny_tokenizer) -> ClapConditioner:
    torch.manual_seed(0)
    with _fast_init():
        return ClapConditioner.build("HTSAT-tiny", text_config=_tiny_text_config(), tokenizer=tiny_tokenizer)


@pytest.fixture(scope="module")
def inputs() -> dict[str, Tensor]:
    return {"long_a": _signal(SEGMENT / SR, 1), "long_b": _signal(SEGMENT / SR, 2), "short": _signal(2.0, 3)}


@pytest.fixture(scope="module")
def batch_emb(cond: ClapConditioner, inputs: dict[str, Tensor]) -> Tensor:
    """[3, 512] random crops, one generator per item: long_a (seed 0), long_a (seed 5), long_b (seed 1)."""
    wav = torch.stack([inputs["long_a"], inputs["long_a"], inputs["long_b"]])
    return cond.embed_audio(wav, generator=_gens(0, 5, 1))


# ------------------------------------------------------------------------------------------------- frozen module


def test_conditioner_is_frozen_and_outside_state_dicts(cond: ClapConditioner) -> None:
    assert not isinstance(cond, nn.Module)
    assert not cond.model.training
    assert all(not p.requires_grad for p in cond.model.parameters())
    holder = nn.Module()
    holder.clap = cond  # a trained module holding the conditioner registers nothing
    assert holder.state_dict() == {} and list(holder.parameters()) == []


# ------------------------------------------------------------------------------------------------- audio


def test_audio_embedding_shape_norm_and_autograd_use(batch_emb: Tensor) -> None:
    assert batch_emb.shape == (3, 512) and batch_emb.dtype == torch.float32
    torch.testing.assert_close(batch_emb.norm(dim=-1), torch.ones(3))
    assert not batch_emb.is_inference()
    head = nn.Linear(512, 2)
    head(batch_emb).sum().backward()  # usable as FiLM input of a trained network
    assert head.weight.grad is not None


def test_audio_deterministic_per_generator_and_batch_consistent(
    cond: ClapConditioner, inputs: dict[str, Tensor], batch_emb: Tensor
) -> None:
    alone = cond.embed_audio(inputs["long_a"][None], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(alone[0], batch_emb[0], atol=1e-5, rtol=0)  # same seed: same crop, alone or batched
    assert (batch_emb[0] - batch_emb[1]).abs().max() > 1e-5, "another seed must give another crop and embedding"
    assert (batch_emb[0] - batch_emb[2]).abs().max() > 1e-5


def test_crop_offsets() -> None:
    a = draw_crop_offsets(4, 11520, "random", torch.Generator().manual_seed(0))
    assert a == draw_crop_offsets(4, 11520, "random", torch.Generator().manual_seed(0))
    assert a != draw_crop_offsets(4, 11520, "random", torch.Generator().manual_seed(1))
    assert all(0 <= o <= 11520 for o in a)
    assert draw_crop_offsets(2, 11520, "center") == [5760, 5760]
    assert draw_crop_offsets(2, 11520, "start") == [0, 0]
    assert draw_crop_offsets(2, -5, "random") == [0, 0]
    per_item = draw_crop_offsets(2, 11520, "random", _gens(7, 8))  # item k only depends on generator k
    assert per_item == [draw_crop_offsets(1, 11520, "random", g)[0] for g in _gens(7, 8)]
    with pytest.raises(ValueError, match="crop"):
        draw_crop_offsets(1, 10, "end")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="generators"):
        draw_crop_offsets(3, 10, "random", _gens(1, 2))


def test_prepare_audio_random_crop_is_a_48k_slice(cond: ClapConditioner, inputs: dict[str, Tensor]) -> None:
    import torchaudio.functional as AF

    wav = inputs["long_a"][None]
    full = AF.resample(wav, SR, 48000)
    assert full.shape[1] == 491520
    clips = [cond.prepare_audio(wav, generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert clips[0].shape == (1, 480000)
    torch.testing.assert_close(clips[0], clips[1], atol=0, rtol=0)
    assert not torch.equal(clips[0], clips[2])
    offset = draw_crop_offsets(1, 11520, "random", torch.Generator().manual_seed(0))[0]
    torch.testing.assert_close(clips[0][0], full[0, offset : offset + 480000], atol=1e-6, rtol=0)


def test_repeat_pad_for_short_input(cond: ClapConditioner, inputs: dict[str, Tensor]) -> None:
    clip = cond.prepare_audio(inputs["short"][None])[0]  # 2 s -> 96000 at 48 kHz, repeated 5x = 480000
    period = 96000
    for k in range(1, 5):
        torch.testing.assert_close(clip[k * period : (k + 1) * period], clip[:period], atol=0, rtol=0)
    odd = cond.prepare_audio(_signal(1.5, 4)[None])[0]  # 72000 -> 6 repeats = 432000, then zeros
    torch.testing.assert_close(odd[72000:144000], odd[:72000], atol=0, rtol=0)
    assert odd[432000:].abs().max() == 0 and odd[:432000].abs().max() > 0


def test_embed_audio_rejects_bad_shapes(cond: ClapConditioner) -> None:
    with pytest.raises(ValueError, match=r"\[B, samples\]"):
        cond.embed_audio(torch.zeros(SEGMENT))
    with pytest.raises(ValueError, match="empty"):
        cond.embed_audio(torch.zeros(2, 0))


@pytest.fixture
def fake_clips(cond: ClapConditioner, monkeypatch: pytest.MonkeyPatch) -> list[Tensor]:
    """Replace the HTSAT forward by a cheap embedder (unit vector of the first 512 samples); record the clips."""
    seen: list[Tensor] = []

    def fake_embed(items: list[dict[str, Tensor]]) -> Tensor:
        clips = torch.stack([item["waveform"] for item in items])
        seen.append(clips)
        return torch.nn.functional.normalize(clips[:, :512], dim=-1)

    monkeypatch.setattr(cond, "_embed_clips", fake_embed)
    return seen


def test_embed_audio_long_windows_and_mean(cond: ClapConditioner, fake_clips: list[Tensor]) -> None:
    seen = fake_clips
    ramp = (torch.arange(int(25.5 * SR), dtype=torch.float32) / SR)[None]  # 25.5 s
    out = cond.embed_audio_long(ramp, hop_s=10)
    clips = seen[-1]
    starts_s = clips[:, 0].tolist()  # ramp value = time in s of each window's first sample (sinc gain ~1 + 4e-5)
    assert starts_s == pytest.approx([0.0, 10.0, 15.5], abs=2e-3), starts_s  # 0 s, 10 s, tail window ending at 25.5 s
    expected = torch.nn.functional.normalize(torch.nn.functional.normalize(clips[:, :512], dim=-1).mean(0), dim=0)
    torch.testing.assert_close(out[0], expected)
    with pytest.raises(ValueError, match="hop_s"):
        cond.embed_audio_long(ramp, hop_s=0)


def test_embed_audio_long_equals_embed_audio_up_to_10s(
    cond: ClapConditioner, inputs: dict[str, Tensor], fake_clips: list[Tensor]
) -> None:
    wav = torch.stack([inputs["short"], _signal(2.0, 9)])
    torch.testing.assert_close(cond.embed_audio_long(wav), cond.embed_audio(wav), atol=1e-6, rtol=0)
    torch.testing.assert_close(fake_clips[0], fake_clips[1], atol=0, rtol=0)  # one repeat-padded window each
    assert fake_clips[0].shape == (2, 480000)


# ------------------------------------------------------------------------------------------------- text


def test_text_embedding_and_unconditional_token(cond: ClapConditioner) -> None:
    emb = cond.embed_text(["a mu", "", "b"])
    assert emb.shape == (3, 512)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    uncond = cond.uncond_embedding(4)
    assert uncond.shape == (4, 512)
    torch.testing.assert_close(uncond, cond.embed_text([""]).expand(4, -1), atol=0, rtol=0)
    torch.testing.assert_close(emb[1], uncond[0], atol=1e-5, rtol=0)  # batch consistency
    torch.testing.assert_close(emb[0], cond.embed_text(["a mu"])[0], atol=1e-5, rtol=0)
    assert not torch.allclose(emb[0], emb[1], atol=1e-4)
    uncond[0].zero_()  # callers get a copy, never the cache
    torch.testing.assert_close(cond.uncond_embedding(1)[0].norm(), torch.tensor(1.0))


def test_tokenize_matches_official_call(tiny_tokenizer) -> None:
    tokens = tokenize(tiny_tokenizer, ["", "a mu"])
    assert tokens["input_ids"].shape == (2, 512) and tokens["attention_mask"].shape == (2, 512)
    assert tokens["input_ids"][0, :3].tolist() == [0, 2, 1]  # <s> </s> <pad>
    assert tokens["attention_mask"][0].sum() == 2
    empty = empty_prompt_tokens(_tiny_text_config())
    assert all(torch.equal(empty[k][0], tokens[k][0]) for k in ("input_ids", "attention_mask"))
    with pytest.raises(TypeError):
        tokenize(tiny_tokenizer, "a mu")  # type: ignore[arg-type]


def test_tokenizer_guard_rejects_empty_offline_tokenizer() -> None:
    from transformers import RobertaTokenizer

    empty = RobertaTokenizer()  # what transformers 5 silently gives offline: <pad>=0, <s>=2
    with pytest.raises(ValueError, match="special ids"):
        check_tokenizer(empty)


def test_text_tower_from_local_directory(tmp_path: Path, bpe_dir: Path) -> None:
    from transformers import RobertaModel

    torch.manual_seed(1)
    saved = RobertaModel(roberta_base_config(num_hidden_layers=1, intermediate_size=32, vocab_size=40))
    saved.save_pretrained(tmp_path / "roberta")
    fake_clap_module = types.SimpleNamespace(RobertaModel=RobertaModel)
    with roberta_text_tower(fake_clap_module, text_model_dir=tmp_path / "roberta"):
        tower = fake_clap_module.RobertaModel.from_pretrained("roberta-base")
    assert fake_clap_module.RobertaModel is RobertaModel  # restored
    torch.testing.assert_close(tower.embeddings.word_embeddings.weight, saved.embeddings.word_embeddings.weight)
    with roberta_text_tower(fake_clap_module, text_model_dir=bpe_dir):  # tokenizer-only dir: roberta-base config
        with pytest.raises(RuntimeError, match="unexpected"):
            fake_clap_module.RobertaModel.from_pretrained("bert-base-uncased")


def test_tokenizer_loaded_lazily_from_directory(cond: ClapConditioner, bpe_dir: Path) -> None:
    lazy = ClapConditioner(cond.model, {"audio_cfg": cond.audio_cfg, "enable_fusion": False}, text_model_dir=bpe_dir)
    torch.testing.assert_close(lazy.embed_text(["a mu"]), cond.embed_text(["a mu"]), atol=1e-6, rtol=0)
    no_tok = ClapConditioner(cond.model, {"audio_cfg": cond.audio_cfg, "enable_fusion": False})
    torch.testing.assert_close(no_tok.uncond_embedding(2), cond.uncond_embedding(2), atol=0, rtol=0)  # no tokenizer
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        no_tok.embed_text(["a mu"])


# ------------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(
    cond: ClapConditioner, tiny_tokenizer, inputs, batch_emb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrapped = {"state_dict": {"module." + k: v for k, v in cond.model.state_dict().items()}, "epoch": 15}
    torch.save(wrapped, tmp_path / "clap-ckpt.pt")
    built: list[tuple[str, object]] = []

    def rebuild(amodel: str, **kwargs: object):
        """A fresh model of the same architecture with other weights (a copy: a second build costs ~5-10 s)."""
        built.append((amodel, kwargs["text_config"]))
        model = copy.deepcopy(cond.model)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.5)
        return model, {"audio_cfg": dict(cond.audio_cfg), "enable_fusion": False}

    monkeypatch.setattr(clap_module, "build_clap_model", rebuild)
    loaded = ClapConditioner.from_checkpoint(
        tmp_path / "clap-ckpt.pt", amodel="HTSAT-tiny", text_config=_tiny_text_config(), tokenizer=tiny_tokenizer
    )
    assert built and built[0][0] == "HTSAT-tiny"
    assert loaded.model is not cond.model
    for k, v in cond.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    emb = loaded.embed_audio(inputs["long_a"][None], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(emb[0], batch_emb[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(loaded.uncond_embedding(1), cond.uncond_embedding(1), atol=0, rtol=0)


def test_extract_from_ldm_checkpoint(cond: ClapConditioner) -> None:
    sd = cond.model.state_dict()
    ldm_sd = {"cond_stage_model.model." + k: v for k, v in sd.items()}
    ldm = {"state_dict": {**ldm_sd, "model.diffusion_model.w": torch.zeros(1)}, "global_step": 3}
    out = extract_clap_state_dict(ldm)
    assert list(out) == list(sd)
    assert list(extract_clap_state_dict(sd)) == list(sd)  # bare state dict unchanged
    with pytest.raises(ClapCheckpointError, match="module"):
        extract_clap_state_dict({"module.a": torch.zeros(1), "b": torch.zeros(1)})


def test_strict_loading_lists_missing_and_unexpected_keys(cond: ClapConditioner) -> None:
    sd = dict(cond.model.state_dict())
    dropped = "audio_branch.bn0.running_mean"
    del sd[dropped]
    sd["audio_branch.not_a_layer.weight"] = torch.zeros(1)
    with pytest.raises(ClapCheckpointError) as info:
        load_clap_state_dict(cond.model, sd)
    assert dropped in str(info.value) and "audio_branch.not_a_layer.weight" in str(info.value)
    assert "missing keys 1" in str(info.value) and "unexpected keys 1" in str(info.value)
    bad_shape = dict(cond.model.state_dict())
    bad_shape["logit_scale_a"] = torch.zeros(2)
    with pytest.raises(ClapCheckpointError, match="shape mismatches.*logit_scale_a"):
        load_clap_state_dict(cond.model, bad_shape)


def test_position_ids_reconciled_both_ways(cond: ClapConditioner) -> None:
    sd = dict(cond.model.state_dict())
    assert POSITION_IDS_KEY not in sd  # non-persistent in transformers 5.x
    load_clap_state_dict(cond.model, {**sd, POSITION_IDS_KEY: torch.arange(514)[None]})  # official checkpoint form
    with pytest.raises(ClapCheckpointError, match="arange"):
        load_clap_state_dict(cond.model, {**sd, POSITION_IDS_KEY: torch.arange(514).flip(0)[None]})
    # the other way: a transformers version where the buffer is persistent, checkpoint without it
    embeddings = cond.model.text_branch.embeddings
    original = embeddings.position_ids
    embeddings.register_buffer("position_ids", original, persistent=True)
    try:
        assert POSITION_IDS_KEY in cond.model.state_dict()
        load_clap_state_dict(cond.model, sd)
    finally:
        embeddings.register_buffer("position_ids", original, persistent=False)


# ------------------------------------------------------------------------------------------------- manifest


def test_htsat_base_roberta_matches_official_manifest(manifests_dir: Path) -> None:
    manifest = json.loads((manifests_dir / "clap.json").read_text())["state_dict"]
    with _fast_init():
        model, model_cfg = build_clap_model("HTSAT-base")  # roberta-base built from its config, offline
    assert model_cfg["audio_cfg"]["clip_samples"] == 480000 and model_cfg["audio_cfg"]["sample_rate"] == 48000
    ours = {
        k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in model.state_dict().items()
    }
    # position_ids: persistent in the manifest's transformers 4.26, non-persistent now (loading reconciles it)
    assert manifest.pop(POSITION_IDS_KEY) == {"shape": [1, 514], "dtype": "int64"}
    assert list(model.text_branch.embeddings.position_ids.shape) == [1, 514]
    assert sorted(set(manifest) - set(ours)) == [] and sorted(set(ours) - set(manifest)) == []
    assert {k: ours[k] for k in manifest} == manifest
    assert sum(v.numel() for v in model.state_dict().values()) + 514 == 200064988
