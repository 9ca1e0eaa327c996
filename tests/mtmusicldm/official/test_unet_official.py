"""`UNet3D` against the official MT-MusicLDM UNet: golden outputs, checkpoint key layout, EMA names, loader errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtmusicldm.models import UNet3D, UNet3DConfig
from mtmusicldm.official import (
    ema_key,
    ema_to_unet_state_dict,
    infer_unet_config,
    load_unet,
    official_key_map,
    official_to_ours,
    ours_to_official,
    unet_config_from_official,
)

GOLDEN_UNETS = ("unet_cond", "unet_uncond")
PAPER_MANIFESTS = {"unet3d_clap": (696_492_484, 370), "unet3d_uncond": (686_513_860, 368)}


@pytest.fixture(scope="module", params=GOLDEN_UNETS)
def golden(request: pytest.FixtureRequest, golden_dir: Path) -> dict:
    return torch.load(golden_dir / f"{request.param}.pt", weights_only=True)


@pytest.fixture(scope="module")
def golden_cond(golden_dir: Path) -> dict:
    return torch.load(golden_dir / "unet_cond.pt", weights_only=True)


def load_manifest(manifests_dir: Path, name: str) -> dict:
    return json.loads((manifests_dir / f"{name}.json").read_text())


# ---------------------------------------------------------------------------------------------------------------
# Golden outputs of the official code


def test_golden_eps_matches_official(golden: dict, record_property: pytest.RecordProperty) -> None:
    unet = load_unet(golden["state_dict"], golden["config"])
    assert not unet.training
    assert sum(p.numel() for p in unet.parameters()) == golden["num_parameters"]
    with torch.no_grad():
        eps = unet(golden["x"], golden["t"], golden.get("y"))
    max_abs_diff = (eps - golden["eps"]).abs().max().item()
    record_property("max_abs_diff", max_abs_diff)
    print(f"max |eps - official eps| = {max_abs_diff:.3e} (|eps| max {golden['eps'].abs().max():.3f})")
    torch.testing.assert_close(eps, golden["eps"], atol=1e-4, rtol=0)


def test_infer_config_round_trips_golden(golden: dict) -> None:
    inferred = infer_unet_config(golden["state_dict"], num_head_channels=golden["config"]["num_head_channels"])
    for key, value in inferred.items():
        assert golden["config"][key] == value, key
    assert unet_config_from_official(inferred) == unet_config_from_official(golden["config"])


def test_key_mapping_round_trips(golden: dict) -> None:
    sd = golden["state_dict"]
    config = unet_config_from_official(golden["config"])
    ours = official_to_ours(sd)  # layout inferred from the keys
    assert set(ours) == set(UNet3D(config).state_dict())
    back = ours_to_official(ours, config)
    assert list(back) == list(sd)  # official registration order
    for k, v in sd.items():
        assert torch.equal(back[k], v), k
    assert list(ours_to_official(ours)) == list(sd)  # layout inferred from our keys
    with pytest.raises(ValueError, match="unknown keys"):
        ours_to_official({**ours, "extra.weight": torch.zeros(1)}, config)


def test_loader_casts_and_copies(golden_cond: dict) -> None:
    sd = golden_cond["state_dict"]
    assert sd["out.2.weight"].dtype == torch.float16
    unet = load_unet(sd, unet_config_from_official(golden_cond["config"]))
    assert {p.dtype for p in unet.parameters()} == {torch.float32}
    before = sd["out.2.weight"].clone()
    with torch.no_grad():
        unet.conv_out.weight.add_(1.0)
    assert torch.equal(sd["out.2.weight"], before)


# ---------------------------------------------------------------------------------------------------------------
# Paper-size layout (meta device: no memory, no compute)


@pytest.mark.parametrize("name", sorted(PAPER_MANIFESTS))
def test_paper_model_matches_official_checkpoint_layout(manifests_dir: Path, name: str) -> None:
    manifest = load_manifest(manifests_dir, name)
    num_params, num_keys = PAPER_MANIFESTS[name]
    config = unet_config_from_official(manifest["unet_params"])
    with torch.device("meta"):
        unet = UNet3D(config)
    official = ours_to_official(unet.state_dict(), config)
    assert len(official) == num_keys == manifest["num_state_dict_keys"]
    assert {k: list(v.shape) for k, v in official.items()} == manifest["state_dict"]
    assert list(official) == list(manifest["state_dict"])
    assert sum(p.numel() for p in unet.parameters()) == num_params == manifest["total_parameters"]
    meta_checkpoint = {k: torch.empty(shape, device="meta") for k, shape in manifest["state_dict"].items()}
    assert unet_config_from_official(infer_unet_config(meta_checkpoint)) == config


def test_paper_defaults_are_the_clap_config(manifests_dir: Path) -> None:
    assert unet_config_from_official(load_manifest(manifests_dir, "unet3d_clap")["unet_params"]) == UNet3DConfig()


def test_ema_names_match_checkpoint(manifests_dir: Path) -> None:
    unet_keys = list(load_manifest(manifests_dir, "unet3d_clap")["state_dict"])
    full = load_manifest(manifests_dir, "full_ldm_clap")["state_dict"]
    ema_keys = {k for k in full if k.startswith("model_ema.")} - {"model_ema.decay", "model_ema.num_updates"}
    assert len(unet_keys) == 370
    assert {ema_key(k) for k in unet_keys} == ema_keys
    assert ema_key("input_blocks.0.0.weight") == "model_ema.diffusion_modelinput_blocks00weight"


def test_ema_state_dict_extraction_from_full_checkpoint_layout(manifests_dir: Path) -> None:
    full_manifest = load_manifest(manifests_dir, "full_ldm_clap")["state_dict"]
    full = {k: torch.empty(v["shape"], device="meta") for k, v in full_manifest.items()}
    ema = ema_to_unet_state_dict(full)
    unet_manifest = load_manifest(manifests_dir, "unet3d_clap")["state_dict"]
    assert {k: list(v.shape) for k, v in ema.items()} == unet_manifest


def test_ema_extraction_values_and_errors(golden_cond: dict) -> None:
    sd = golden_cond["state_dict"]
    full = {"model.diffusion_model." + k: v for k, v in sd.items()}
    full.update({ema_key(k): v.float() * 2 for k, v in sd.items()})
    full.update({"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(5, dtype=torch.int32)})
    ema = ema_to_unet_state_dict(full)
    assert list(ema) == list(sd)
    assert all(torch.equal(ema[k], sd[k].float() * 2) for k in sd)
    load_unet(ema, golden_cond["config"])  # usable as UNet weights
    dropped = dict(full)
    del dropped[ema_key("out.2.bias")]
    with pytest.raises(ValueError, match="out2bias"):
        ema_to_unet_state_dict(dropped)
    with pytest.raises(ValueError, match="same EMA name"):
        ema_to_unet_state_dict({}, unet_keys=["a.1.10.weight", "a.11.0.weight"])
    with pytest.raises(ValueError, match="no UNet keys"):
        ema_to_unet_state_dict({ema_key("x.weight"): torch.zeros(1)})


# ---------------------------------------------------------------------------------------------------------------
# Loader and config errors


def test_missing_unknown_and_misshaped_keys_are_named(golden_cond: dict) -> None:
    sd, params = golden_cond["state_dict"], golden_cond["config"]
    missing = {k: v for k, v in sd.items() if k != "middle_block.1.qkv.bias"}
    with pytest.raises(ValueError, match=r"missing keys \['middle_block.1.qkv.bias'\]"):
        load_unet(missing, params)
    with pytest.raises(ValueError, match=r"unknown keys \['label_emb.weight'\]"):
        load_unet({**sd, "label_emb.weight": torch.zeros(3)}, params)
    bad = {**sd, "film_emb.weight": torch.zeros(128, 256, dtype=torch.float16)}
    with pytest.raises(ValueError, match=r"film_emb.weight: checkpoint \(128, 256\) vs model \(128, 512\)"):
        load_unet(bad, params)
    with pytest.raises(ValueError, match="missing keys"):
        official_to_ours(missing, unet_config_from_official(params))
    with pytest.raises(ValueError, match="non-floating"):
        load_unet({**sd, "out.2.bias": torch.zeros(4, dtype=torch.int64)}, params)


def test_key_map_is_a_bijection() -> None:
    key_map = official_key_map(UNet3DConfig())
    assert len(set(key_map.values())) == len(key_map) == 370


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"dims": 2}, "dims"),
        ({"use_spatial_transformer": True}, "use_spatial_transformer"),
        ({"use_scale_shift_norm": True}, "use_scale_shift_norm"),
        ({"resblock_updown": True}, "resblock_updown"),
        ({"use_new_attention_order": True}, "use_new_attention_order"),
        ({"extra_film_use_concat": False}, "extra_film_use_concat"),
        ({"num_head_channels": -1, "num_heads": 4}, "num_heads"),
        ({"num_classes": 10}, "num_classes"),
        ({"bogus_option": 1}, "unknown"),
        ({"model_channels": 48}, "GroupNorm"),
    ],
)
def test_unsupported_official_settings_are_rejected(golden_cond: dict, changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        unet_config_from_official({**golden_cond["config"], **changes})


def test_missing_required_official_key(golden_cond: dict) -> None:
    params = {k: v for k, v in golden_cond["config"].items() if k != "model_channels"}
    with pytest.raises(ValueError, match="model_channels"):
        unet_config_from_official(params)
