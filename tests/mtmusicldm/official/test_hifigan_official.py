"""Official HiFi-GAN -> SpeechT5HifiGan: golden wav from both weight forms, weight-norm folding, manifest keys."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import SpeechT5HifiGan

from mtmusicldm.official.hifigan import (
    fold_weight_norm,
    hifigan_config,
    load_hifigan,
    official_hifigan_key_map,
    weight_norm_base,
)


@pytest.fixture(scope="module")
def golden(golden_dir: Path) -> dict:
    return torch.load(golden_dir / "hifigan.pt", weights_only=True)


@pytest.fixture(scope="module")
def manifest(manifests_dir: Path) -> dict:
    return json.loads((manifests_dir / "hifigan.json").read_text())


def _wav(model: SpeechT5HifiGan, mel_official: torch.Tensor) -> torch.Tensor:
    """Official layout in and out: mel [N, n_mels, T] -> wav [N, 1, samples]."""
    with torch.no_grad():
        return model(mel_official.transpose(1, 2))[:, None]


# --- golden: official code outputs -----------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["state_dict_weight_norm", "state_dict_plain"])
def test_golden_wav(golden: dict, form: str) -> None:
    model = load_hifigan(golden[form], golden["config"])
    wav = _wav(model, golden["mel"])
    assert wav.shape == golden["wav"].shape == (1, 1, 20 * 160 + 32)
    torch.testing.assert_close(wav, golden["wav"], atol=1e-4, rtol=0)
    assert torch.equal(model.mean, torch.zeros(64)) and torch.equal(model.scale, torch.ones(64))
    assert not model.config.normalize_before and not model.training


def test_golden_containers(golden: dict) -> None:
    ref = _wav(load_hifigan(golden["state_dict_plain"], golden["config"]), golden["mel"])
    ckpt = {"generator": golden["state_dict_weight_norm"], "steps": 10}
    ldm = {f"first_stage_model.vocoder.{k}": v for k, v in golden["state_dict_plain"].items()}
    ldm |= {"first_stage_model.encoder.conv_in.weight": torch.zeros(1), "scale_factor": torch.tensor(1.0)}
    for container in (ckpt, ldm, {"state_dict": ldm}):
        torch.testing.assert_close(_wav(load_hifigan(container, golden["config"]), golden["mel"]), ref,
                                   atol=1e-5, rtol=0)


def test_weight_norm_dim_is_zero_for_transposed_convs(golden: dict) -> None:
    """Folding our way reproduces the stored plain weights (official remove_weight_norm), incl. ConvTranspose1d."""
    wn, plain = golden["state_dict_weight_norm"], golden["state_dict_plain"]
    for base in ("conv_pre", "ups.0", "ups.4", "resblocks.7.convs2.1", "conv_post"):
        folded = fold_weight_norm(wn[f"{base}.weight_g"], wn[f"{base}.weight_v"])
        torch.testing.assert_close(folded, plain[f"{base}.weight"], atol=1e-6, rtol=1e-6)


# --- weight-norm folding vs torch --------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [nn.Conv1d(5, 7, 3), nn.ConvTranspose1d(6, 4, 4, stride=2)])
def test_fold_weight_norm_matches_torch(layer: nn.Module) -> None:
    torch.manual_seed(0)
    wn = nn.utils.parametrizations.weight_norm(layer)
    with torch.no_grad():
        wn.parametrizations.weight.original0.uniform_(0.5, 1.5)
    g, v = wn.parametrizations.weight.original0, wn.parametrizations.weight.original1
    torch.testing.assert_close(fold_weight_norm(g.detach(), v.detach()), wn.weight.detach())
    assert weight_norm_base("ups.1.parametrizations.weight.original0") == ("ups.1", "g")
    assert weight_norm_base("ups.1.weight_v") == ("ups.1", "v") and weight_norm_base("ups.1.bias") is None


def test_fold_weight_norm_rejects_mismatched_pair() -> None:
    with pytest.raises(ValueError, match="weight_g shape"):
        fold_weight_norm(torch.ones(3, 1, 1), torch.ones(4, 2, 3))


# --- key errors --------------------------------------------------------------------------------------------------

def test_missing_unknown_incomplete_and_misshaped_keys_are_named(golden: dict) -> None:
    wn, plain, cfg = golden["state_dict_weight_norm"], golden["state_dict_plain"], golden["config"]
    with pytest.raises(ValueError, match=r"missing keys \['conv_post.bias'\]"):
        load_hifigan({k: v for k, v in plain.items() if k != "conv_post.bias"}, cfg)
    with pytest.raises(ValueError, match=r"unknown keys \['ups.5.weight'\]"):
        load_hifigan(plain | {"ups.5.weight": torch.zeros(1)}, cfg)
    with pytest.raises(ValueError, match=r"ups.2: weight-norm pair incomplete \(has \['v'\]\)"):
        load_hifigan({k: v for k, v in wn.items() if k != "ups.2.weight_g"}, cfg)
    with pytest.raises(ValueError, match=r"conv_pre.weight: \(32, 64, 7\) vs expected \(64, 64, 7\)"):
        load_hifigan(plain | {"conv_pre.weight": plain["conv_pre.weight"][:32]}, cfg)


def test_bad_config_is_rejected(golden: dict) -> None:
    cfg = golden["config"]
    with pytest.raises(NotImplementedError, match="resblock"):
        hifigan_config(cfg | {"resblock": "2"})
    with pytest.raises(ValueError, match=r"missing keys \['num_mels'\]"):
        hifigan_config({k: v for k, v in cfg.items() if k != "num_mels"})


# --- MusicLDM-size key map vs the official manifest --------------------------------------------------------------

def test_manifest_keys_both_forms_map(manifest: dict) -> None:
    cfg = manifest["config"]
    key_map = official_hifigan_key_map(cfg)
    plain = manifest["state_dict_plain_form"]
    assert set(key_map) == set(plain)
    folded: dict[str, list[int]] = {}
    for key, entry in manifest["state_dict_weightnorm_form"].items():
        split = weight_norm_base(key)
        if split is None:
            folded[key] = entry["shape"]
        elif split[1] == "v":
            folded[f"{split[0]}.weight"] = entry["shape"]
        else:
            assert entry["shape"][1:] == [1] * (len(entry["shape"]) - 1)  # g: one magnitude per dim-0 slice
    assert folded == {k: v["shape"] for k, v in plain.items()}

    with torch.device("meta"):
        model = SpeechT5HifiGan(hifigan_config(cfg))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert set(ours) == set(key_map.values()) | {"mean", "scale"}
    for src, dst in key_map.items():
        assert ours[dst] == plain[src]["shape"], src
    assert sum(p.numel() for p in model.parameters()) == manifest["numel_plain_form"]
