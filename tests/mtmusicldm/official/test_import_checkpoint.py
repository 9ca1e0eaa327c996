"""Importing official MT-MusicLDM / MusicLDM checkpoints (`mtmusicldm.official.checkpoint` / `.convert`).

Full-size checkpoints are too big for CI, so the value checks use *scaled* checkpoints in the exact official layout:
a small UNet written under official names via `ours_to_official` / `ema_key`, a small VAE and HiFi-GAN under
official names, an HTSAT-tiny CLAP, the real schedule buffers, in the Lightning container. The full-size key layout
is checked separately on meta tensors built from the manifests (no memory).
"""
from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file
from torch import Tensor
from transformers import SpeechT5HifiGan

from mtmusicldm.codec.codec_dir import load_codec
from mtmusicldm.codec.vae import vae_config
from mtmusicldm.diffusion.schedules import DiffusionSchedule
from mtmusicldm.models.unet3d import UNet3D, UNet3DConfig
from mtmusicldm.official import ema_key, load_hifigan, load_vae, official_key_map, ours_to_official
from mtmusicldm.official import unet_config_from_official
from mtmusicldm.official.checkpoint import CheckpointError, read_checkpoint_file
from mtmusicldm.official.convert import ImportOptions, convert_state_dict, import_codec, import_official
from mtmusicldm.official.checkpoint import meta_state_dict
from mtmusicldm.official.hifigan import MUSICLDM_HIFIGAN_CONFIG, hifigan_config, official_hifigan_key_map
from mtmusicldm.official.vae import official_vae_key_map, vae_kwargs_from_ddconfig

SMALL_UNET: dict[str, Any] = {"model_channels": 32, "channel_mult": (1, 2, 2), "num_res_blocks": 2,
                              "attention_resolutions": (2, 4), "num_head_channels": 32}
SMALL_DDCONFIG: dict[str, Any] = {"double_z": True, "z_channels": 8, "resolution": 256, "in_channels": 1,
                                  "out_ch": 1, "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 1,
                                  "attn_resolutions": [], "dropout": 0.0}
SMALL_HIFIGAN: dict[str, Any] = {**MUSICLDM_HIFIGAN_CONFIG, "upsample_initial_channel": 64}
UNET, EMA = "model.diffusion_model.", "model_ema."
LOSS_KEYS = {"first_stage_model.loss.logvar": (), "first_stage_model.loss.discriminator.main.0.weight": (8, 1, 4, 4)}
_ATTN_LINEAR = ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")


# ---------------------------------------------------------------------------------------------------------------
# Scaled official checkpoints (shared with tests/pipeline/test_cli_import.py)


def small_unet_config(film: bool) -> UNet3DConfig:
    return UNet3DConfig(**SMALL_UNET, film_dim=512 if film else None)


def official_unet_shapes(film: bool) -> dict[str, tuple[int, ...]]:
    config = small_unet_config(film)
    with torch.device("meta"):
        sd = UNet3D(config).state_dict()
    return {k: tuple(v.shape) for k, v in ours_to_official(sd, config).items()}


def official_vae_shapes() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = AutoencoderKL(**vae_config(**vae_kwargs_from_ddconfig(SMALL_DDCONFIG, 8)))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return {o: expected[d] + ((1, 1) if d.endswith(_ATTN_LINEAR) else ())
            for o, d in official_vae_key_map(SMALL_DDCONFIG).items()}


def official_vocoder_shapes() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = SpeechT5HifiGan(hifigan_config(SMALL_HIFIGAN))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return {o: expected[d] for o, d in official_hifigan_key_map(SMALL_HIFIGAN).items()}


def _randn(shapes: dict[str, tuple[int, ...]], gen: torch.Generator, prefix: str = "") -> dict[str, Tensor]:
    return {prefix + k: torch.randn(shape, generator=gen) for k, shape in shapes.items()}


def build_state_dict(*, film: bool, clap: dict[str, Tensor] | None = None, ema: bool = True,
                     seed: int = 0) -> dict[str, Tensor]:
    """A scaled MT-MusicLDM Lightning state dict in the official layout, random values."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, Tensor] = {"logvar": torch.zeros(1000), **DiffusionSchedule().official_buffers()}
    unet = official_unet_shapes(film)
    sd |= _randn(unet, gen, UNET)
    if ema:
        sd |= {"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(1234, dtype=torch.int32)}
        sd |= {ema_key(k): torch.randn(shape, generator=gen) for k, shape in unet.items()}
    sd |= _randn(official_vae_shapes(), gen, "first_stage_model.")
    sd |= _randn(LOSS_KEYS, gen)
    sd |= _randn(official_vocoder_shapes(), gen, "first_stage_model.vocoder.")
    if clap is not None:
        sd |= {"cond_stage_model.model." + k: v for k, v in clap.items()}
    sd["scale_factor"] = torch.tensor(0.8765)
    return sd


class CallbackState:
    """Stands in for a Lightning object that torch's weights_only unpickler refuses."""

    def __init__(self) -> None:
        self.monitor = "val/loss_simple_ema"


def lightning_container(sd: dict[str, Tensor], *, foreign_object: bool = False) -> dict[str, Any]:
    callbacks: dict[str, Any] = {"ModelCheckpoint{'monitor': 'val/loss_simple_ema'}": {
        "best_model_score": torch.tensor(0.1), "dirpath": "/tmp/ckpt"}}
    if foreign_object:
        callbacks["state"] = CallbackState()
    return {"state_dict": sd, "epoch": 3, "global_step": 1234, "pytorch-lightning_version": "1.9.4",
            "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}},
                                  "param_groups": [{"lr": 3e-5, "betas": (0.9, 0.999), "params": [0]}]}],
            "lr_schedulers": [], "loops": {}, "callbacks": callbacks}


@contextlib.contextmanager
def fast_clap_init() -> Iterator[None]:
    """laion-clap's python trunc_normal_ is slow; a clamped normal keeps the init finite and random."""
    from mtmusicldm.conditioning.clap import import_laion_clap

    import_laion_clap()
    import laion_clap.clap_module.htsat as htsat

    def quick(tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0) -> Tensor:
        with torch.no_grad():
            return tensor.normal_(mean, std).clamp_(a, b)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(htsat, "trunc_normal_", quick)
        yield


# ---------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def tiny_clap() -> dict[str, Tensor]:
    """HTSAT-tiny + 1-layer RoBERTa CLAP state dict with the transformers-4.26 `position_ids` buffer."""
    from mtmusicldm.conditioning import build_clap_model, roberta_base_config

    torch.manual_seed(0)
    with fast_clap_init():
        model, _ = build_clap_model("HTSAT-tiny", text_config=roberta_base_config(
            num_hidden_layers=1, intermediate_size=64, vocab_size=64))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["text_branch.embeddings.position_ids"] = torch.arange(514).unsqueeze(0)
    return sd


@pytest.fixture(scope="module")
def cond_sd(tiny_clap: dict[str, Tensor]) -> dict[str, Tensor]:
    return build_state_dict(film=True, clap=tiny_clap, seed=1)


@pytest.fixture(scope="module")
def uncond_sd() -> dict[str, Tensor]:
    return build_state_dict(film=False, seed=2)


def _unet_back_to_official(path: Path, film: bool) -> dict[str, Tensor]:
    return ours_to_official(load_file(str(path)), small_unet_config(film))


def _assert_same(got: dict[str, Tensor], want: dict[str, Tensor], what: str) -> None:
    assert set(got) == set(want), what
    for k in want:
        assert torch.equal(got[k], want[k]), f"{what}: {k}"


def _assert_codec_matches(codec_dir: Path, sd: dict[str, Tensor]) -> None:
    codec = load_codec(codec_dir)
    vae_sd = codec.vae.state_dict()
    for o, d in official_vae_key_map(SMALL_DDCONFIG).items():
        assert torch.equal(vae_sd[d], sd["first_stage_model." + o].reshape(vae_sd[d].shape)), o
    voc_sd = codec.vocoder.model.state_dict()
    for o, d in official_hifigan_key_map(SMALL_HIFIGAN).items():
        assert torch.equal(voc_sd[d], sd["first_stage_model.vocoder." + o]), o


# ---------------------------------------------------------------------------------------------------------------
# Happy paths: every tensor lands where it belongs


def test_import_conditional_checkpoint(tmp_path: Path, cond_sd: dict[str, Tensor], tiny_clap: dict) -> None:
    from mtmusicldm.diffusion import sample_latents
    from mtmusicldm.ldm import MTMusicLDM

    ckpt = tmp_path / "mt-musicldm-clap.ckpt"
    torch.save(lightning_container(cond_sd), ckpt)
    with fast_clap_init():
        out = import_official(ckpt, tmp_path / "ldm", ImportOptions())
    unet_keys = official_unet_shapes(True)
    _assert_same(_unet_back_to_official(out / "unet_ema.safetensors", True),
                 {k: cond_sd[ema_key(k)] for k in unet_keys}, "EMA UNet")
    _assert_same(_unet_back_to_official(out / "unet.safetensors", True),
                 {k: cond_sd[UNET + k] for k in unet_keys}, "raw UNet")
    _assert_codec_matches(out / "codec", cond_sd)
    _assert_same(load_file(str(out / "clap.safetensors")), tiny_clap, "CLAP")
    assert not [f for f in out.rglob("*") if f.suffix in (".pt", ".pth", ".bin", ".ckpt")]  # no pickle

    config = json.loads((out / "config.json").read_text())
    assert config["scale_factor"] == pytest.approx(0.8765, abs=1e-7)
    assert config["codec"] == "codec" and config["trained_steps"] == 1234
    assert config["conditioning"]["amodel"] == "HTSAT-tiny"
    assert config["conditioning"]["checkpoint"] == "clap.safetensors"
    assert len(config["uncond_clap"]) == 512
    assert torch.tensor(config["uncond_clap"]).norm().item() == pytest.approx(1.0, abs=1e-4)
    info = json.loads((out / "import.json").read_text())
    assert info["weights"] == "ema" and info["ema"]["num_updates"] == 1234 and info["checkpoint"]["loader"]
    assert info["clap"]["text_config_overrides"]["num_hidden_layers"] == 1

    model = MTMusicLDM.from_pretrained(out)
    assert model.unet.config == small_unet_config(True) and model.scale_factor == config["scale_factor"]
    film = torch.nn.functional.normalize(torch.randn(1, 512), dim=-1)
    with torch.no_grad():
        z = sample_latents(model.unet, torch.randn(1, 4, 8, 8, 4), steps=2, film=film,
                           generator=torch.Generator().manual_seed(0))
    assert z.shape == (1, 4, 8, 8, 4) and torch.isfinite(z).all()
    assert config["recommended_sampler"] == {"name": "ddim", "steps": 200}  # the official sampler
    shutil.copytree(out, tmp_path / "elsewhere")
    shutil.rmtree(out)  # the copy holds everything it needs (its CLAP weights included)
    copy = MTMusicLDM.from_pretrained(tmp_path / "elsewhere", lazy=False)
    assert copy.codec_dir == tmp_path / "elsewhere" / "codec"
    assert (tmp_path / "elsewhere" / "clap.safetensors").is_file()


def test_import_unconditional_raw_weights_with_foreign_objects(tmp_path: Path, uncond_sd: dict) -> None:
    """--no-ema samples with model.diffusion_model.*; Lightning objects are read without unpickling code."""
    from mtmusicldm.ldm import MTMusicLDM

    ckpt = tmp_path / "uncond.ckpt"
    torch.save(lightning_container(uncond_sd, foreign_object=True), ckpt)
    out = import_official(ckpt, tmp_path / "ldm", ImportOptions(ema=False))
    raw = {k: uncond_sd[UNET + k] for k in official_unet_shapes(False)}
    _assert_same(_unet_back_to_official(out / "unet_ema.safetensors", False), raw, "sampling UNet")
    _assert_same(_unet_back_to_official(out / "unet.safetensors", False), raw, "raw UNet")
    info = json.loads((out / "import.json").read_text())
    assert info["weights"] == "raw" and info["checkpoint"]["loader"] == "restricted"
    config = json.loads((out / "config.json").read_text())
    assert config["conditioning"] is None and config["uncond_clap"] is None and not (out / "clap.safetensors").exists()
    model = MTMusicLDM.from_pretrained(out)
    with torch.no_grad():
        eps = model.unet(torch.randn(1, 4, 8, 8, 4), torch.tensor([10]))
    assert eps.shape == (1, 4, 8, 8, 4)


def test_import_codec_from_musicldm_components(tmp_path: Path, uncond_sd: dict) -> None:
    vae = {k[len("first_stage_model."):]: v for k, v in uncond_sd.items()
           if k.startswith("first_stage_model.") and not k.startswith("first_stage_model.vocoder.")}
    plain = {k[len("first_stage_model.vocoder."):]: v for k, v in uncond_sd.items()
             if k.startswith("first_stage_model.vocoder.")}
    generator = {}
    for key, value in plain.items():  # weight-norm form, as in hifigan-ckpt.ckpt
        if key.endswith(".weight"):
            base = key[: -len(".weight")]
            generator[base + ".weight_g"] = torch.rand((value.shape[0],) + (1,) * (value.ndim - 1)) + 0.5
            generator[base + ".weight_v"] = value
        else:
            generator[key] = value
    torch.save({"state_dict": vae, "epoch": 1}, tmp_path / "vae-ckpt.ckpt")
    torch.save({"generator": generator, "steps": 10}, tmp_path / "hifigan-ckpt.ckpt")
    out = import_codec(tmp_path / "codec", tmp_path / "vae-ckpt.ckpt", tmp_path / "hifigan-ckpt.ckpt")
    codec = load_codec(out)
    _assert_same(codec.vae.state_dict(), load_vae({"state_dict": vae}, SMALL_DDCONFIG, 8).state_dict(), "VAE")
    _assert_same(codec.vocoder.model.state_dict(), load_hifigan({"generator": generator}, SMALL_HIFIGAN).state_dict(),
                 "HiFi-GAN")
    assert json.loads((out / "codec.json").read_text())["kind"] == "official"


# ---------------------------------------------------------------------------------------------------------------
# Full-size layout (meta tensors from the manifests)


@pytest.mark.parametrize("variant", ["clap", "uncond"])
def test_full_size_layout_matches_manifests(manifests_dir: Path, variant: str) -> None:
    manifest = json.loads((manifests_dir / f"full_ldm_{variant}.json").read_text())["state_dict"]
    unet_manifest = json.loads((manifests_dir / f"unet3d_{variant}.json").read_text())
    conv = convert_state_dict(meta_state_dict(manifest), ImportOptions())
    assert set(conv.dispositions) == set(manifest)  # every key accounted for
    config = unet_config_from_official(unet_manifest["unet_params"])
    assert conv.unet_config == config
    with torch.device("meta"):
        expected_unet = {k: tuple(v.shape) for k, v in UNet3D(config).state_dict().items()}
        expected_vae = {k: tuple(v.shape) for k, v in AutoencoderKL(**vae_config()).state_dict().items()}
        expected_voc = {k: tuple(v.shape) for k, v in
                        SpeechT5HifiGan(hifigan_config(MUSICLDM_HIFIGAN_CONFIG)).state_dict().items()}
    for name, got, want in (("unet", conv.unet, expected_unet), ("unet_ema", conv.unet_ema, expected_unet),
                            ("vae", conv.vae, expected_vae), ("vocoder", conv.vocoder, expected_voc)):
        assert {k: tuple(v.shape) for k, v in got.items()} == want, name
        targets = {d.split(":", 1)[1] for d in conv.dispositions.values() if d.startswith(name + ":")}
        assert targets == set(want) - {"mean", "scale"}, name
    assert len([k for k in manifest if k.startswith(UNET)]) == len(official_key_map(config)) == len(expected_unet)
    if variant == "clap":
        clap_manifest = json.loads((manifests_dir / "clap.json").read_text())["state_dict"]
        assert {k: tuple(v.shape) for k, v in conv.clap.items()} == {
            k: tuple(s["shape"]) for k, s in clap_manifest.items()}
        assert conv.clap_amodel == "HTSAT-base" and conv.clap_text_overrides == {}
    else:
        assert conv.clap is None


# ---------------------------------------------------------------------------------------------------------------
# Errors


def _convert_error(sd: dict[str, Tensor], **options: Any) -> str:
    with pytest.raises(CheckpointError) as info:
        convert_state_dict(sd, ImportOptions(**options))
    return str(info.value)


def test_2d_musicldm_checkpoint_is_rejected(uncond_sd: dict) -> None:
    sd = dict(uncond_sd)
    sd[UNET + "input_blocks.0.0.weight"] = torch.zeros(128, 8, 3, 3)
    assert "MusicLDM (2D) checkpoint" in _convert_error(sd) and "--vae-ckpt" in _convert_error(sd)
    sd = dict(uncond_sd) | {UNET + "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight": torch.zeros(2, 2)}
    assert "MusicLDM (2D) checkpoint" in _convert_error(sd)


def test_missing_and_unknown_keys_are_listed(uncond_sd: dict) -> None:
    sd = {k: v for k, v in uncond_sd.items() if k != UNET + "middle_block.1.qkv.weight"}
    message = _convert_error(sd)
    assert "missing" in message and "middle_block.1.qkv.weight" in message
    sd = dict(uncond_sd) | {UNET + "middle_block.9.weight": torch.zeros(1)}
    message = _convert_error(sd)
    assert "unknown" in message and "middle_block.9.weight" in message
    message = _convert_error(dict(uncond_sd) | {"optimizer_leftover.x": torch.zeros(1)})
    assert "unknown keys" in message and "optimizer_leftover.x" in message
    message = _convert_error({k: v for k, v in uncond_sd.items() if k != "betas"})
    assert "missing keys" in message and "betas" in message
    sd = {k: v for k, v in uncond_sd.items() if k != "first_stage_model.decoder.conv_out.bias"}
    assert "decoder.conv_out.bias" in _convert_error(sd)


def test_stem_count_mismatch(uncond_sd: dict) -> None:
    message = _convert_error(uncond_sd, stems=("bass", "drums", "guitar"))
    assert "4 stems" in message and "3 are expected" in message and "input_blocks.0.0.weight" in message


def test_ema_absent(uncond_sd: dict) -> None:
    sd = {k: v for k, v in uncond_sd.items() if not k.startswith(EMA)}
    assert "EMA weights requested" in _convert_error(sd) and "--no-ema" in _convert_error(sd)
    assert convert_state_dict(sd, ImportOptions(ema=False)).weights == "raw"


def test_schedule_mismatch_names_buffer(uncond_sd: dict) -> None:
    sd = dict(uncond_sd)
    sd["alphas_cumprod"] = sd["alphas_cumprod"].clone()
    sd["alphas_cumprod"][500] += 1e-3
    message = _convert_error(sd)
    assert "'alphas_cumprod'" in message and "0.001" in message
    assert convert_state_dict(uncond_sd).report["schedule_max_abs_diff"]["betas"] <= 1e-6


def test_conditional_unet_needs_clap(tmp_path: Path) -> None:
    assert "--clap-ckpt" in _convert_error(build_state_dict(film=True, ema=False), ema=False)


def test_unet_config_must_agree_with_tensors(uncond_sd: dict) -> None:
    params = {"in_channels": 4, "out_channels": 4, "model_channels": 32, "channel_mult": [1, 2, 4],
              "num_res_blocks": 2, "attention_resolutions": [2, 4], "num_head_channels": 8, "dims": 3}
    assert "channel_mult" in _convert_error(uncond_sd, unet_params=params)
    params["channel_mult"] = [1, 2, 2]
    assert convert_state_dict(uncond_sd, ImportOptions(unet_params=params)).unet_config.num_head_channels == 8


def test_truncated_file(tmp_path: Path, uncond_sd: dict) -> None:
    path = tmp_path / "cut.ckpt"
    torch.save(lightning_container(uncond_sd), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"truncated or not a PyTorch checkpoint \(size {len(data) // 2} bytes"):
        read_checkpoint_file(path)
    with pytest.raises(FileNotFoundError):
        read_checkpoint_file(tmp_path / "absent.ckpt")


def test_untrusted_objects_need_trust_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mtmusicldm.official import checkpoint

    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"x": torch.ones(2)}, "cb": CallbackState()}, path)

    def refuse(self: Any, module: str, name: str) -> Any:
        raise pickle_error(f"refused {module}.{name}")

    pickle_error = __import__("pickle").UnpicklingError
    monkeypatch.setattr(checkpoint._RestrictedUnpickler, "find_class", refuse)
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        read_checkpoint_file(path)
    obj, loader = read_checkpoint_file(path, trust=True)
    assert loader == "trusted" and isinstance(obj["cb"], CallbackState)
