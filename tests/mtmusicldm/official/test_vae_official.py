"""Official VAE -> diffusers AutoencoderKL: golden outputs, key map vs manifest, containers and key errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL

from mtmusicldm.codec.vae import build_vae, decode, encode_moments, encode_posterior, posterior_from_moments
from mtmusicldm.official.vae import IGNORED_PREFIXES, load_vae, official_vae_key_map


@pytest.fixture(scope="module")
def golden(golden_dir: Path) -> dict:
    return torch.load(golden_dir / "vae.pt", weights_only=True)


@pytest.fixture(scope="module")
def golden_vae(golden: dict) -> AutoencoderKL:
    return load_vae(golden["state_dict"], golden["ddconfig"], golden["embed_dim"])


@pytest.fixture(scope="module")
def manifest(manifests_dir: Path) -> dict:
    return json.loads((manifests_dir / "vae.json").read_text())


# --- golden: official code outputs -----------------------------------------------------------------------------

def test_golden_encode_decode(golden: dict, golden_vae: AutoencoderKL) -> None:
    with torch.no_grad():
        moments = encode_moments(golden_vae, golden["input"])
        mean, logvar = encode_posterior(golden_vae, golden["input"])
        decoded = decode(golden_vae, mean)
    for name, ours in [("moments", moments), ("mean", mean), ("logvar", logvar), ("decoded", decoded)]:
        torch.testing.assert_close(ours, golden[name], atol=1e-4, rtol=0, msg=name)


def test_golden_posterior_clamp(golden: dict) -> None:
    ref = golden["posterior_clamp_check"]
    post = posterior_from_moments(ref["moments"])
    torch.testing.assert_close(post.mean, ref["mean"], atol=0, rtol=0)
    torch.testing.assert_close(post.logvar, ref["logvar"], atol=0, rtol=0)
    torch.testing.assert_close(post.std, ref["std"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(post.var, ref["var"], atol=1e-6, rtol=1e-6)
    assert ref["logvar"].min() == -30.0 and ref["logvar"].max() == 20.0  # the clamp is active in the fixture


def test_loaded_weights_are_float32_copies(golden: dict, golden_vae: AutoencoderKL) -> None:
    assert all(p.dtype == torch.float32 for p in golden_vae.parameters())
    assert golden["state_dict"]["quant_conv.weight"].dtype == torch.float16
    assert not golden_vae.training


# --- containers --------------------------------------------------------------------------------------------------

def test_accepts_ckpt_and_ldm_prefixed_containers(golden: dict, golden_vae: AutoencoderKL) -> None:
    sd = golden["state_dict"]
    extra = {"loss.logvar": torch.zeros(()), "vocoder.conv_pre.weight": torch.zeros(1)}
    wrapped = {"state_dict": sd | extra, "epoch": 3}
    ldm = {f"first_stage_model.{k}": v for k, v in (sd | extra).items()}
    ldm |= {"model.diffusion_model.out.2.weight": torch.zeros(1), "scale_factor": torch.tensor(1.0)}
    x = golden["input"][:1]
    with torch.no_grad():
        ref = encode_moments(golden_vae, x)
        for container in (wrapped, {"state_dict": ldm}, ldm):
            model = load_vae(container, golden["ddconfig"], golden["embed_dim"])
            torch.testing.assert_close(encode_moments(model, x), ref, atol=0, rtol=0)


# --- key errors --------------------------------------------------------------------------------------------------

def test_missing_unknown_and_misshaped_keys_are_named(golden: dict) -> None:
    sd, cfg, dim = golden["state_dict"], golden["ddconfig"], golden["embed_dim"]
    missing = {k: v for k, v in sd.items() if k != "decoder.up.1.upsample.conv.bias"}
    with pytest.raises(ValueError, match=r"1 missing keys \['decoder.up.1.upsample.conv.bias'\]"):
        load_vae(missing, cfg, dim)
    with pytest.raises(ValueError, match=r"1 unknown keys \['encoder.mid.attn_2.q.weight'\]"):
        load_vae(sd | {"encoder.mid.attn_2.q.weight": torch.zeros(1)}, cfg, dim)
    mismatch = r"1 shape mismatches \[.quant_conv.weight: \(16, 15, 1, 1\) vs expected \(16, 16, 1, 1\)"
    with pytest.raises(ValueError, match=mismatch):
        load_vae(sd | {"quant_conv.weight": torch.zeros(16, 16, 1, 1)[:, :15]}, cfg, dim)


def test_non_vae_state_dict_is_rejected(golden_dir: Path, golden: dict) -> None:
    unet = torch.load(golden_dir / "unet_cond.pt", weights_only=True)["state_dict"]
    with pytest.raises(ValueError, match="missing keys .*unknown keys .*input_blocks"):
        load_vae(unet, golden["ddconfig"], golden["embed_dim"])


def test_bad_ddconfig_is_rejected(golden: dict) -> None:
    sd, cfg = golden["state_dict"], golden["ddconfig"]
    with pytest.raises(NotImplementedError, match="attn_resolutions"):
        load_vae(sd, cfg | {"attn_resolutions": [16]}, 8)
    with pytest.raises(ValueError, match="embed_dim=4"):
        load_vae(sd, cfg, 4)
    with pytest.raises(ValueError, match=r"unknown keys \['attn_type'\]"):
        load_vae(sd, cfg | {"attn_type": "linear"}, 8)
    with pytest.raises(ValueError, match=r"missing keys \['ch'\]"):
        load_vae(sd, {k: v for k, v in cfg.items() if k != "ch"}, 8)


# --- MusicLDM-size key map vs the official manifest --------------------------------------------------------------

def test_key_map_covers_manifest_and_diffusers_model(manifest: dict) -> None:
    ddconfig = manifest["params"]["ddconfig"]
    official = {k: v["shape"] for k, v in manifest["state_dict"].items() if not k.startswith(IGNORED_PREFIXES)}
    key_map = official_vae_key_map(ddconfig)
    assert set(key_map) == set(official)
    assert len(set(key_map.values())) == len(key_map)  # injective
    with torch.device("meta"):
        model = build_vae()
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert set(key_map.values()) == set(ours)
    for src, dst in key_map.items():
        shape = official[src]
        if dst.endswith(("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")):
            assert shape[2:] == [1, 1]
            shape = shape[:2]
        assert ours[dst] == shape, src
    assert sum(torch.Size(s).numel() for s in official.values()) == manifest["encoder_decoder_quant_numel"]


def test_decoder_levels_are_reversed(manifest: dict) -> None:
    key_map = official_vae_key_map(manifest["params"]["ddconfig"])
    assert key_map["decoder.up.2.upsample.conv.weight"] == "decoder.up_blocks.0.upsamplers.0.conv.weight"
    assert key_map["decoder.up.0.block.0.nin_shortcut.weight"] == "decoder.up_blocks.2.resnets.0.conv_shortcut.weight"
    assert key_map["encoder.mid.attn_1.proj_out.bias"] == "encoder.mid_block.attentions.0.to_out.0.bias"


def test_tiny_random_round_trip_through_official_names() -> None:
    """Rename a random diffusers VAE to official names and back: identical outputs (map is a bijection)."""
    ddconfig = {"double_z": True, "z_channels": 8, "resolution": 64, "in_channels": 1, "out_ch": 1, "ch": 32,
                "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    torch.manual_seed(1)
    ref = build_vae(ch=32, ch_mult=(1, 2), num_res_blocks=1, sample_size=64)
    ours = ref.state_dict()
    official = {}
    for src, dst in official_vae_key_map(ddconfig).items():
        t = ours[dst]
        official[src] = t[:, :, None, None] if "attentions" in dst and dst.endswith("weight") and t.ndim == 2 else t
    model = load_vae(official, ddconfig, 8)
    x = torch.randn(2, 1, 16, 8)
    with torch.no_grad():
        torch.testing.assert_close(encode_moments(model, x), encode_moments(ref, x), atol=0, rtol=0)
