"""Load official MT-MusicLDM / MusicLDM VAE weights into diffusers `AutoencoderKL`.

The official module is `latent_encoder/autoencoder.py::AutoencoderKL` with `diffusionmodules/model.py`
`Encoder`/`Decoder` (spec §3). Its checkpoints come as

* MusicLDM's `vae-ckpt.ckpt`: `{"state_dict": {"encoder.*", "decoder.*", "quant_conv.*", "post_quant_conv.*",
  "loss.*", ...}}`,
* the LDM checkpoint: the same keys under `first_stage_model.` (plus `first_stage_model.vocoder.*`),
* a bare state dict (golden `vae.pt["state_dict"]`, float16).

`official_vae_key_map` is the explicit name map; `load_vae` converts, validates (missing / unknown / wrong shape
-> ValueError naming the keys) and loads in float32. `loss.*` (LPIPS + discriminator) and `vocoder.*` (HiFi-GAN,
see `mtmusicldm.official.hifigan`) are ignored.

Name correspondence (official -> diffusers):

* `encoder.down.{i}.block.{j}` -> `encoder.down_blocks.{i}.resnets.{j}`; `.downsample.conv` -> `.downsamplers.0.conv`
* `decoder.up.{i}` -> `decoder.up_blocks.{n-1-i}` (the official list is indexed by resolution level, diffusers by
  execution order); `.upsample.conv` -> `.upsamplers.0.conv`
* `{enc,dec}.mid.block_1/attn_1/block_2` -> `mid_block.resnets.0/attentions.0/resnets.1`
* attention `norm, q, k, v, proj_out` -> `group_norm, to_q, to_k, to_v, to_out.0` (1x1 conv [C,C,1,1] -> Linear [C,C])
* resnet `nin_shortcut` -> `conv_shortcut`; `norm_out` -> `conv_norm_out`
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from diffusers import AutoencoderKL
from torch import Tensor

from mtmusicldm.codec.vae import vae_config

LDM_PREFIX: str = "first_stage_model."
MUSICLDM_DDCONFIG: dict[str, Any] = {
    "double_z": True, "z_channels": 8, "resolution": 256, "in_channels": 1, "out_ch": 1, "ch": 128,
    "ch_mult": [1, 2, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
}  # fmt: skip
"""MusicLDM's VAE `ddconfig` (official spec §3); `embed_dim` = 8."""
"""Prefix of the VAE inside the LDM Lightning checkpoint."""
IGNORED_PREFIXES: tuple[str, ...] = ("loss.", "vocoder.")
"""Sub-modules of the official VAE that are not part of the codec (training loss, vocoder)."""

_REQUIRED_DDCONFIG = ("double_z", "z_channels", "in_channels", "out_ch", "ch", "ch_mult", "num_res_blocks",
                      "attn_resolutions")
_OPTIONAL_DDCONFIG = ("resolution", "dropout", "hifigan_ckpt", "downsample_time")
_RESNET_PARTS = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
                 "nin_shortcut": "conv_shortcut"}
_ATTN_PARTS = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_ATTN_LINEAR = ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")


# ---------------------------------------------------------------------------------------------------------------
# Config


def vae_kwargs_from_ddconfig(ddconfig: Mapping[str, Any], embed_dim: int) -> dict[str, Any]:
    """Validate an official `ddconfig` and translate it to `vae_config` keyword arguments.

    Args:
        ddconfig: official Encoder/Decoder config (keys as in `manifests/vae.json` `params.ddconfig`).
        embed_dim: official `embed_dim` (must equal `z_channels`: diffusers has one latent width).

    Returns:
        kwargs for `mtmusicldm.codec.vae.vae_config`.

    Raises:
        ValueError: missing/unknown keys, `double_z` false, or `embed_dim != z_channels`.
        NotImplementedError: non-empty `attn_resolutions` (attention inside levels is not mapped).
    """
    missing = [k for k in _REQUIRED_DDCONFIG if k not in ddconfig]
    unknown = [k for k in ddconfig if k not in _REQUIRED_DDCONFIG + _OPTIONAL_DDCONFIG]
    if missing or unknown:
        raise ValueError(f"ddconfig: missing keys {missing}, unknown keys {unknown}")
    if not ddconfig["double_z"]:
        raise ValueError("ddconfig.double_z must be true (the encoder outputs mean and logvar)")
    if list(ddconfig["attn_resolutions"]):
        raise NotImplementedError(
            f"ddconfig.attn_resolutions={list(ddconfig['attn_resolutions'])}: attention inside resolution levels is "
            "not supported (MusicLDM uses [])"
        )
    if int(embed_dim) != int(ddconfig["z_channels"]):
        raise ValueError(f"embed_dim={embed_dim} must equal ddconfig.z_channels={ddconfig['z_channels']}")
    return {
        "ch": int(ddconfig["ch"]),
        "ch_mult": tuple(int(m) for m in ddconfig["ch_mult"]),
        "num_res_blocks": int(ddconfig["num_res_blocks"]),
        "z_channels": int(ddconfig["z_channels"]),
        "in_channels": int(ddconfig["in_channels"]),
        "out_channels": int(ddconfig["out_ch"]),
        "sample_size": int(ddconfig["resolution"]) if "resolution" in ddconfig else 256,
    }


# ---------------------------------------------------------------------------------------------------------------
# Key map


def _resnet(src: str, dst: str, shortcut: bool) -> dict[str, str]:
    parts = [p for p in _RESNET_PARTS if shortcut or p != "nin_shortcut"]
    return {f"{src}.{p}.{w}": f"{dst}.{_RESNET_PARTS[p]}.{w}" for p in parts for w in ("weight", "bias")}


def _conv(src: str, dst: str) -> dict[str, str]:
    return {f"{src}.{w}": f"{dst}.{w}" for w in ("weight", "bias")}


def _mid(side: str) -> dict[str, str]:
    out = _resnet(f"{side}.mid.block_1", f"{side}.mid_block.resnets.0", False)
    for p, q in _ATTN_PARTS.items():
        out |= _conv(f"{side}.mid.attn_1.{p}", f"{side}.mid_block.attentions.0.{q}")
    out |= _resnet(f"{side}.mid.block_2", f"{side}.mid_block.resnets.1", False)
    return out


def official_vae_key_map(ddconfig: Mapping[str, Any]) -> dict[str, str]:
    """Official VAE state-dict key -> diffusers `AutoencoderKL` key, for every codec tensor.

    Args:
        ddconfig: official config; only `ch_mult` and `num_res_blocks` shape the map.

    Returns:
        Ordered dict official key -> diffusers key (encoder, decoder, quant_conv, post_quant_conv).
    """
    ch_mult = [int(m) for m in ddconfig["ch_mult"]]
    n, nrb = len(ch_mult), int(ddconfig["num_res_blocks"])
    out = _conv("encoder.conv_in", "encoder.conv_in")
    block_in = 1  # multiplier of the previous level (official in_ch_mult = (1,) + ch_mult)
    for i, mult in enumerate(ch_mult):
        for j in range(nrb):
            out |= _resnet(f"encoder.down.{i}.block.{j}", f"encoder.down_blocks.{i}.resnets.{j}",
                           shortcut=j == 0 and block_in != mult)
        block_in = mult
        if i != n - 1:
            out |= _conv(f"encoder.down.{i}.downsample.conv", f"encoder.down_blocks.{i}.downsamplers.0.conv")
    out |= _mid("encoder")
    out |= _conv("encoder.norm_out", "encoder.conv_norm_out") | _conv("encoder.conv_out", "encoder.conv_out")

    out |= _conv("decoder.conv_in", "decoder.conv_in") | _mid("decoder")
    block_in = ch_mult[-1]
    for i in reversed(range(n)):  # official execution order: lowest resolution level first
        level = n - 1 - i
        for j in range(nrb + 1):
            out |= _resnet(f"decoder.up.{i}.block.{j}", f"decoder.up_blocks.{level}.resnets.{j}",
                           shortcut=j == 0 and block_in != ch_mult[i])
        block_in = ch_mult[i]
        if i != 0:
            out |= _conv(f"decoder.up.{i}.upsample.conv", f"decoder.up_blocks.{level}.upsamplers.0.conv")
    out |= _conv("decoder.norm_out", "decoder.conv_norm_out") | _conv("decoder.conv_out", "decoder.conv_out")
    return out | _conv("quant_conv", "quant_conv") | _conv("post_quant_conv", "post_quant_conv")


# ---------------------------------------------------------------------------------------------------------------
# State-dict plumbing (shared with mtmusicldm.official.hifigan)


def select_prefix(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """If any key starts with `prefix`, keep only those keys, with the prefix stripped; else return a copy."""
    if any(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return dict(state_dict)


def check_tensors(state_dict: Mapping[str, Any], what: str) -> dict[str, Tensor]:
    """Ensure every value is a tensor and cast floating tensors to float32 (copy: the model owns its weights)."""
    bad = [k for k, v in state_dict.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{what}: non-tensor values under keys {_short(bad)}")
    return {k: v.detach().to(torch.float32 if v.is_floating_point() else v.dtype, copy=True)
            for k, v in state_dict.items()}


def raise_on_key_errors(what: str, missing: Iterable[str], unknown: Iterable[str],
                        mismatched: Iterable[str]) -> None:
    """Raise one ValueError listing missing, unknown and wrong-shape keys (no-op when all are empty)."""
    missing, unknown, mismatched = list(missing), list(unknown), list(mismatched)
    if missing or unknown or mismatched:
        raise ValueError(
            f"{what}: state dict does not match the expected layout: "
            f"{len(missing)} missing keys {_short(missing)}; {len(unknown)} unknown keys {_short(unknown)}; "
            f"{len(mismatched)} shape mismatches {_short(mismatched)}"
        )


def assign_state_dict(model: torch.nn.Module, state_dict: Mapping[str, Tensor], what: str) -> None:
    """Load a complete state dict into a (meta-device) skeleton by assignment, then check nothing stayed on meta."""
    model.load_state_dict(state_dict, strict=True, assign=True)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"{what}: tensors without values after loading: {_short(left)}")


def _short(keys: list[str], limit: int = 12) -> str:
    more = f" ... (+{len(keys) - limit})" if len(keys) > limit else ""
    return repr(keys[:limit]) + more


# ---------------------------------------------------------------------------------------------------------------
# Conversion and loading


def unwrap_vae_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Accept a bare VAE state dict, `{"state_dict": ...}` and/or `first_stage_model.`-prefixed keys.

    Returns:
        Official-named codec entries; `loss.*` and `vocoder.*` dropped.
    """
    inner = state_dict.get("state_dict") if isinstance(state_dict.get("state_dict"), Mapping) else state_dict
    sd = select_prefix(inner, LDM_PREFIX)
    return {k: v for k, v in sd.items() if not k.startswith(IGNORED_PREFIXES)}


def convert_vae_state_dict(state_dict: Mapping[str, Any], ddconfig: Mapping[str, Any],
                           expected: Mapping[str, torch.Size]) -> dict[str, Tensor]:
    """Rename (and reshape attention 1x1 convs) official VAE tensors to diffusers names, validating everything.

    Args:
        state_dict: official state dict in any accepted container (see `unwrap_vae_state_dict`).
        ddconfig: official config (shapes the key map).
        expected: diffusers key -> shape of the target model.

    Returns:
        diffusers-named float32 state dict.

    Raises:
        ValueError: missing, unknown or wrong-shape keys (all listed).
    """
    key_map = official_vae_key_map(ddconfig)
    sd = check_tensors(unwrap_vae_state_dict(state_dict), "VAE")
    out: dict[str, Tensor] = {}
    mismatched: list[str] = []
    for src, tensor in sd.items():
        if src not in key_map:
            continue
        dst = key_map[src]
        if dst.endswith(_ATTN_LINEAR) and tensor.ndim == 4 and tuple(tensor.shape[2:]) == (1, 1):
            tensor = tensor[:, :, 0, 0]  # 1x1 conv == linear over channels
        if tuple(tensor.shape) != tuple(expected[dst]):
            mismatched.append(f"{src}: {tuple(sd[src].shape)} vs expected {tuple(expected[dst])}")
            continue
        out[dst] = tensor.contiguous()
    missing = [k for k in key_map if k not in sd]
    unknown = [k for k in sd if k not in key_map]
    raise_on_key_errors("VAE", missing, unknown, mismatched)
    return out


def load_vae(state_dict: Mapping[str, Any], ddconfig: Mapping[str, Any], embed_dim: int) -> AutoencoderKL:
    """Build a diffusers `AutoencoderKL` from an official `ddconfig` and load official weights (float32, eval).

    Args:
        state_dict: bare, `{"state_dict": ...}` or `first_stage_model.`-prefixed official VAE weights; float16 is
            cast to float32.
        ddconfig: official config, e.g. `{"double_z": True, "z_channels": 8, "resolution": 256, "in_channels": 1,
            "out_ch": 1, "ch": 128, "ch_mult": [1, 2, 4], "num_res_blocks": 2, "attn_resolutions": [],
            "dropout": 0.0}`.
        embed_dim: official `embed_dim` (8).

    Returns:
        The loaded model; `encode_posterior` / `decode` in `mtmusicldm.codec.vae` reproduce the official outputs.

    Raises:
        ValueError: bad config, or missing / unknown / wrong-shape keys.
        NotImplementedError: `attn_resolutions` non-empty.
    """
    kwargs = vae_kwargs_from_ddconfig(ddconfig, embed_dim)
    with torch.device("meta"):
        model = AutoencoderKL(**vae_config(**kwargs))
    expected = {k: v.shape for k, v in model.state_dict().items()}
    targets = set(official_vae_key_map(ddconfig).values())
    if targets != set(expected):
        raise RuntimeError(f"VAE key map out of sync with diffusers: {_short(sorted(targets ^ set(expected)))}")
    assign_state_dict(model, convert_vae_state_dict(state_dict, ddconfig, expected), "VAE")
    return model.eval()
