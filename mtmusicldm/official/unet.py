"""Load official MT-MusicLDM UNet weights (`openaimodel.UNetModel(dims=3)`) into `UNet3D`.

Official names (as under `model.diffusion_model.` in the Lightning checkpoint) and ours differ; the mapping is
explicit and derived from the configuration:

==========================================  ==============================================
official                                    ours
==========================================  ==============================================
time_embed.0 / time_embed.2                 time_embed.linear_1 / time_embed.linear_2
film_emb                                    film_proj
input_blocks.0.0                            conv_in
input_blocks.N.0.{in_layers.0, in_layers.2, down_levels.l.res_blocks.j.{norm_in, conv_in,
  emb_layers.1, out_layers.0, out_layers.3,   emb_proj, norm_out, conv_out, skip}
  skip_connection}
input_blocks.N.1.{norm, qkv, proj_out}      down_levels.l.attn_blocks.j.{norm, to_qkv, proj_out}
input_blocks.N.0.op                         down_levels.l.resample.conv
middle_block.{0, 1, 2}                      mid.{res_1, attn, res_2}
output_blocks.N.{0, 1}                      up_levels.l.{res_blocks.j, attn_blocks.j}
output_blocks.N.{1 or 2}.conv               up_levels.l.resample.conv
out.0 / out.2                               norm_out / conv_out
==========================================  ==============================================

The official attention `qkv`/`proj_out` are Conv1d weights `[O, I, 1]`; ours are Linear `[O, I]` (same feature
order, the trailing kernel axis is dropped/added). Everything else is a pure rename.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from mtmusicldm.models.unet3d import UNet3D, UNet3DConfig, channel_plan

UNET_PREFIX = "model.diffusion_model."
"""Prefix of the UNet weights in an official Lightning checkpoint."""
EMA_PREFIX = "model_ema."
"""Prefix of the EMA buffers (`LitEma`) in an official Lightning checkpoint."""
EMA_EXTRA_KEYS = ("model_ema.decay", "model_ema.num_updates")
"""EMA entries that are not UNet weights."""

# Constructor defaults of the official `UNetModel`, used for keys an official config leaves out.
OFFICIAL_UNET_DEFAULTS: dict[str, Any] = {
    "dropout": 0.0,
    "channel_mult": (1, 2, 4, 8),
    "conv_resample": True,
    "dims": 2,
    "num_classes": None,
    "extra_film_condition_dim": None,
    "extra_film_use_concat": False,
    "use_checkpoint": False,
    "use_fp16": False,
    "num_heads": -1,
    "num_head_channels": -1,
    "num_heads_upsample": -1,
    "use_scale_shift_norm": False,
    "resblock_updown": False,
    "use_new_attention_order": False,
    "use_spatial_transformer": False,
    "transformer_depth": 1,
    "context_dim": None,
    "n_embed": None,
    "legacy": True,
    "no_condition": False,
    "extra_sa_layer": True,
}
_REQUIRED_KEYS = ("in_channels", "model_channels", "out_channels", "num_res_blocks", "attention_resolutions")
# Keys with no effect on this architecture (image_size is unused; the others only matter for the spatial
# transformer, which is rejected, or for a fixed head count, which num_head_channels overrides).
_IGNORED_KEYS = ("image_size", "transformer_depth", "context_dim", "legacy", "no_condition", "extra_sa_layer",
                 "num_heads", "num_heads_upsample")
# Settings we do not implement: key -> the only accepted value.
_FIXED_KEYS: dict[str, Any] = {
    "dims": 3,
    "conv_resample": True,
    "num_classes": None,
    "use_fp16": False,
    "use_scale_shift_norm": False,
    "resblock_updown": False,
    "use_new_attention_order": False,
    "use_spatial_transformer": False,
    "n_embed": None,
}

_RES_PARTS = (
    ("in_layers.0", "norm_in"),
    ("in_layers.2", "conv_in"),
    ("emb_layers.1", "emb_proj"),
    ("out_layers.0", "norm_out"),
    ("out_layers.3", "conv_out"),
)
_ATTN_PARTS = (("norm", "norm"), ("qkv", "to_qkv"), ("proj_out", "proj_out"))
_MAX_LISTED = 20


# ---------------------------------------------------------------------------------------------------------------
# Configuration


def unet_config_from_official(params: Mapping[str, Any], *, use_checkpoint: bool | None = None) -> UNet3DConfig:
    """Translate an official `unet_config.params` dict into a `UNet3DConfig`.

    Args:
        params: the kwargs of the official `UNetModel` (missing optional keys take the official defaults).
        use_checkpoint: override the gradient-checkpointing flag (default: the official `use_checkpoint`).

    Returns:
        The equivalent configuration.

    Raises:
        ValueError: unknown keys, missing required keys, or a setting this re-implementation does not support.
    """
    unknown = sorted(set(params) - set(OFFICIAL_UNET_DEFAULTS) - set(_REQUIRED_KEYS) - set(_IGNORED_KEYS))
    if unknown:
        raise ValueError(f"unknown official UNet parameters: {unknown}")
    missing = [k for k in _REQUIRED_KEYS if k not in params]
    if missing:
        raise ValueError(f"official UNet parameters lack required keys: {missing}")
    p = {**OFFICIAL_UNET_DEFAULTS, **params}
    for key, accepted in _FIXED_KEYS.items():
        if p[key] != accepted:
            raise ValueError(f"unsupported official UNet setting {key}={p[key]!r} (only {accepted!r} is implemented)")
    if p["num_head_channels"] in (None, -1):
        raise ValueError(
            "official UNet configs with a fixed num_heads (num_head_channels=-1) are not supported; "
            "set num_head_channels"
        )
    film_dim = p["extra_film_condition_dim"]
    if film_dim is not None and not p["extra_film_use_concat"]:
        raise ValueError("extra_film_use_concat=False (FiLM added to the time embedding) is not supported")
    return UNet3DConfig(
        in_stems=int(p["in_channels"]),
        out_stems=int(p["out_channels"]),
        model_channels=int(p["model_channels"]),
        channel_mult=tuple(int(m) for m in p["channel_mult"]),
        num_res_blocks=int(p["num_res_blocks"]),
        attention_resolutions=tuple(int(a) for a in p["attention_resolutions"]),
        num_head_channels=int(p["num_head_channels"]),
        film_dim=None if film_dim is None else int(film_dim),
        dropout=float(p["dropout"]),
        use_checkpoint=bool(p["use_checkpoint"]) if use_checkpoint is None else use_checkpoint,
    )


def _shape(state_dict: Mapping[str, Tensor], key: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise ValueError(
            f"cannot infer the UNet configuration: the state dict has no {key!r} "
            f"(official keys are expected without the {UNET_PREFIX!r} prefix)"
        )
    return tuple(state_dict[key].shape)


def infer_unet_config(state_dict: Mapping[str, Tensor], *, num_head_channels: int = 32) -> dict[str, Any]:
    """Official-style `unet_config.params` inferred from the tensor shapes of an official UNet state dict.

    The head width cannot be inferred (qkv weights look the same for any head split), so it is an argument;
    32 is the value of both released configs. `image_size` is unused by the model and not returned.

    Args:
        state_dict: official UNet keys (without the `model.diffusion_model.` prefix).
        num_head_channels: channels per attention head.

    Returns:
        Params accepted by `unet_config_from_official`.

    Raises:
        ValueError: if the key structure is not that of an official 3-D UNet.
    """
    conv_in = _shape(state_dict, "input_blocks.0.0.weight")
    if len(conv_in) != 5:
        raise ValueError(f"input_blocks.0.0.weight has shape {conv_in}; a 3-D UNet has a 5-D conv kernel")
    model_channels, in_channels = conv_in[0], conv_in[1]
    indices = sorted({int(k.split(".")[1]) for k in state_dict if k.startswith("input_blocks.")})
    if indices != list(range(len(indices))):
        raise ValueError(f"input_blocks indices are not contiguous: {indices}")
    down_idx = [i for i in indices if f"input_blocks.{i}.0.op.weight" in state_dict]
    num_levels = len(down_idx) + 1
    num_res_blocks = down_idx[0] - 1 if down_idx else len(indices) - 1
    if num_res_blocks < 1 or len(indices) != 1 + num_levels * num_res_blocks + num_levels - 1:
        raise ValueError(f"unexpected input_blocks layout: {len(indices)} blocks, downsamplers at {down_idx}")
    channel_mult, attention = [], []
    idx = 1
    for level in range(num_levels):
        width = _shape(state_dict, f"input_blocks.{idx}.0.in_layers.2.weight")[0]
        if width % model_channels:
            raise ValueError(f"level {level} width {width} is not a multiple of model_channels {model_channels}")
        channel_mult.append(width // model_channels)
        if f"input_blocks.{idx}.1.qkv.weight" in state_dict:
            attention.append(2**level)
        idx += num_res_blocks + 1
    time_embed_dim = _shape(state_dict, "time_embed.0.weight")[0]
    emb_dim = _shape(state_dict, "input_blocks.1.0.emb_layers.1.weight")[1]
    film_dim = _shape(state_dict, "film_emb.weight")[1] if "film_emb.weight" in state_dict else None
    return {
        "in_channels": in_channels,
        "out_channels": _shape(state_dict, "out.2.weight")[0],
        "model_channels": model_channels,
        "dims": 3,
        "channel_mult": channel_mult,
        "num_res_blocks": num_res_blocks,
        "attention_resolutions": attention,
        "num_head_channels": num_head_channels,
        "extra_film_condition_dim": film_dim,
        "extra_film_use_concat": film_dim is None or emb_dim == 2 * time_embed_dim,
        "use_spatial_transformer": False,
    }


# ---------------------------------------------------------------------------------------------------------------
# Key mapping


def _res_pairs(official: str, ours: str, has_skip: bool) -> list[tuple[str, str]]:
    pairs = [(f"{official}.{o}", f"{ours}.{n}") for o, n in _RES_PARTS]
    if has_skip:
        pairs.append((f"{official}.skip_connection", f"{ours}.skip"))
    return pairs


def _attn_pairs(official: str, ours: str) -> list[tuple[str, str]]:
    return [(f"{official}.{o}", f"{ours}.{n}") for o, n in _ATTN_PARTS]


def _module_pairs(config: UNet3DConfig) -> list[tuple[str, str]]:
    """(official module path, our module path) for every parameterised module, in official order."""
    plan, last = channel_plan(config), config.num_levels - 1
    pairs = [("time_embed.0", "time_embed.linear_1"), ("time_embed.2", "time_embed.linear_2")]
    if config.film_dim is not None:
        pairs.append(("film_emb", "film_proj"))
    pairs.append(("input_blocks.0.0", "conv_in"))
    idx = 1
    for level in range(config.num_levels):
        for j, (c_in, c_out) in enumerate(plan.down[level]):
            pairs += _res_pairs(f"input_blocks.{idx}.0", f"down_levels.{level}.res_blocks.{j}", c_in != c_out)
            if config.has_attention(level):
                pairs += _attn_pairs(f"input_blocks.{idx}.1", f"down_levels.{level}.attn_blocks.{j}")
            idx += 1
        if level != last:
            pairs.append((f"input_blocks.{idx}.0.op", f"down_levels.{level}.resample.conv"))
            idx += 1
    pairs += _res_pairs("middle_block.0", "mid.res_1", False)
    pairs += _attn_pairs("middle_block.1", "mid.attn")
    pairs += _res_pairs("middle_block.2", "mid.res_2", False)
    idx = 0
    for level in reversed(range(config.num_levels)):
        for j, (c_in, c_out) in enumerate(plan.up[level]):
            pairs += _res_pairs(f"output_blocks.{idx}.0", f"up_levels.{level}.res_blocks.{j}", c_in != c_out)
            sub = 1
            if config.has_attention(level):
                pairs += _attn_pairs(f"output_blocks.{idx}.1", f"up_levels.{level}.attn_blocks.{j}")
                sub = 2
            if level != 0 and j == config.num_res_blocks:
                pairs.append((f"output_blocks.{idx}.{sub}.conv", f"up_levels.{level}.resample.conv"))
            idx += 1
    pairs += [("out.0", "norm_out"), ("out.2", "conv_out")]
    return pairs


def official_key_map(config: UNet3DConfig) -> dict[str, str]:
    """Official state-dict key -> our key, for every tensor of the UNet described by `config`."""
    return {f"{o}.{p}": f"{n}.{p}" for o, n in _module_pairs(config) for p in ("weight", "bias")}


def _is_attn_projection(our_key: str) -> bool:
    """Attention qkv / output projection weights: Conv1d [O, I, 1] officially, Linear [O, I] here."""
    return our_key.endswith((".to_qkv.weight", ".proj_out.weight"))


def _check_keys(given: Iterable[str], expected: Iterable[str], what: str) -> None:
    given_set, expected_set = set(given), set(expected)
    missing, unknown = sorted(expected_set - given_set), sorted(given_set - expected_set)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys {missing[:_MAX_LISTED]}")
        if unknown:
            parts.append(f"{len(unknown)} unknown keys {unknown[:_MAX_LISTED]}")
        raise ValueError(f"{what} does not match the UNet layout: " + "; ".join(parts))


def official_to_ours(state_dict: Mapping[str, Tensor], config: UNet3DConfig | None = None) -> dict[str, Tensor]:
    """Rename an official UNet state dict to `UNet3D` names (and drop the Conv1d kernel axis of attention weights).

    Args:
        state_dict: official keys (no `model.diffusion_model.` prefix).
        config: the UNet layout; inferred from the keys and shapes when None.

    Returns:
        A new dict with our keys; tensors are views of the inputs (no dtype change).

    Raises:
        ValueError: missing or unknown keys (the first 20 of each are listed), or a malformed attention weight.
    """
    if config is None:
        config = unet_config_from_official(infer_unet_config(state_dict))
    key_map = official_key_map(config)
    _check_keys(state_dict, key_map, "official UNet state dict")
    out = {}
    for official, ours in key_map.items():
        tensor = state_dict[official]
        if _is_attn_projection(ours):
            if tensor.ndim != 3 or tensor.shape[-1] != 1:
                raise ValueError(f"{official}: expected a Conv1d weight [O, I, 1], got shape {tuple(tensor.shape)}")
            tensor = tensor[..., 0]
        out[ours] = tensor
    return out


def _config_from_ours(state_dict: Mapping[str, Tensor]) -> UNet3DConfig:
    """The `UNet3D` layout implied by our state-dict keys and shapes (heads: 32 channels, as in the paper)."""
    model_channels, in_stems = _shape(state_dict, "conv_in.weight")[:2]
    num_levels = len({k.split(".")[1] for k in state_dict if k.startswith("down_levels.")})
    num_res_blocks = len({k.split(".")[3] for k in state_dict if k.startswith("down_levels.0.res_blocks.")})
    widths = [_shape(state_dict, f"down_levels.{level}.res_blocks.0.conv_in.weight")[0] for level in range(num_levels)]
    return UNet3DConfig(
        in_stems=in_stems,
        out_stems=_shape(state_dict, "conv_out.weight")[0],
        model_channels=model_channels,
        channel_mult=tuple(w // model_channels for w in widths),
        num_res_blocks=num_res_blocks,
        attention_resolutions=tuple(
            2**level for level in range(num_levels) if f"down_levels.{level}.attn_blocks.0.norm.weight" in state_dict
        ),
        film_dim=_shape(state_dict, "film_proj.weight")[1] if "film_proj.weight" in state_dict else None,
    )


def ours_to_official(state_dict: Mapping[str, Tensor], config: UNet3DConfig | None = None) -> dict[str, Tensor]:
    """Inverse of `official_to_ours`: `UNet3D` state dict -> official keys (in official order) and shapes.

    Args:
        state_dict: `UNet3D` keys.
        config: the UNet layout; inferred from the keys and shapes when None.

    Returns:
        A new dict with official keys; tensors are views of the inputs.

    Raises:
        ValueError: missing or unknown keys.
    """
    if config is None:
        config = _config_from_ours(state_dict)
    key_map = official_key_map(config)
    _check_keys(state_dict, key_map.values(), "UNet3D state dict")
    return {
        official: state_dict[ours][..., None] if _is_attn_projection(ours) else state_dict[ours]
        for official, ours in key_map.items()
    }


# ---------------------------------------------------------------------------------------------------------------
# Loading


def load_unet(
    state_dict: Mapping[str, Tensor],
    unet_config: Mapping[str, Any] | UNet3DConfig,
    *,
    device: torch.device | str = "cpu",
) -> UNet3D:
    """Build a `UNet3D` from official weights, in eval mode, float32.

    Args:
        state_dict: official UNet keys (no prefix); any floating dtype (float16 is cast exactly to float32).
        unet_config: the official `unet_config.params` dict, or an already translated `UNet3DConfig`.
        device: where the parameters live.

    Returns:
        The loaded model (the caller's tensors are copied, never aliased).

    Raises:
        ValueError: unsupported config, missing/unknown keys, shape mismatches (naming key and both shapes), or
            non-floating tensors.
    """
    config = unet_config if isinstance(unet_config, UNet3DConfig) else unet_config_from_official(unet_config)
    with torch.device("meta"):
        model = UNet3D(config)  # no memory, no random init: every tensor is assigned below
    expected = {k: tuple(v.shape) for k, v in ours_to_official(model.state_dict(), config).items()}
    _check_keys(state_dict, expected, "official UNet state dict")
    bad_shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {shape}"
        for k, shape in expected.items()
        if tuple(state_dict[k].shape) != shape
    ]
    if bad_shapes:
        raise ValueError(f"{len(bad_shapes)} shape mismatches: " + "; ".join(bad_shapes[:_MAX_LISTED]))
    not_float = [k for k, v in state_dict.items() if not v.is_floating_point()]
    if not_float:
        raise ValueError(f"non-floating tensors in the UNet state dict: {not_float[:_MAX_LISTED]}")
    ours = {
        k: v.detach().to(device=device, dtype=torch.float32, copy=True).contiguous()
        for k, v in official_to_ours(state_dict, config).items()
    }
    model.load_state_dict(ours, strict=True, assign=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------
# EMA weights (LitEma naming)


def ema_key(unet_key: str) -> str:
    """EMA buffer name of an official UNet key: `model_ema.` + ('diffusion_model.' + key) without any '.'."""
    return EMA_PREFIX + ("diffusion_model." + unet_key).replace(".", "")


def ema_to_unet_state_dict(
    full_state_dict: Mapping[str, Tensor], unet_keys: Iterable[str] | None = None
) -> dict[str, Tensor]:
    """Extract the EMA UNet weights of an official Lightning state dict, under official UNet keys.

    The dots are gone from EMA names, so they are inverted through a lookup table built from the known UNet keys,
    never by parsing.

    Args:
        full_state_dict: the Lightning `state_dict` (with `model_ema.*` entries).
        unet_keys: official UNet keys; by default those under `model.diffusion_model.` in `full_state_dict`.

    Returns:
        {official UNet key: EMA tensor}.

    Raises:
        ValueError: no UNet keys to invert with, ambiguous names, or EMA entries missing / left unexplained.
    """
    if unet_keys is None:
        unet_keys = [k[len(UNET_PREFIX):] for k in full_state_dict if k.startswith(UNET_PREFIX)]
    unet_keys = list(unet_keys)
    if not unet_keys:
        raise ValueError(f"no UNet keys: pass unet_keys or include the '{UNET_PREFIX}*' entries")
    table: dict[str, str] = {}
    for key in unet_keys:
        name = ema_key(key)
        if name in table:
            raise ValueError(f"UNet keys {table[name]!r} and {key!r} have the same EMA name {name!r}")
        table[name] = key
    present = {k for k in full_state_dict if k.startswith(EMA_PREFIX) and k not in EMA_EXTRA_KEYS}
    _check_keys(present, table, "EMA entries of the checkpoint")
    return {table[name]: full_state_dict[name] for name in table}
