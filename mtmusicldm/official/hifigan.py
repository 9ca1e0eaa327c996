"""Load official HiFi-GAN generator weights (`src/hifigan/models.py::Generator`) into transformers `SpeechT5HifiGan`.

`SpeechT5HifiGan` computes the same function as the official generator with resblock type "1" (checked against
the golden `hifigan.pt`): `conv_pre` (k=7) -> per stage [LeakyReLU(0.1) -> ConvTranspose1d(k, stride u,
padding (k-u)//2) -> mean of the resblocks] -> LeakyReLU (default slope 0.01) -> `conv_post` (k=7) -> tanh.
Its `mean`/`scale` buffers only act with `normalize_before=True`; we set them to 0/1 and the flag to False.

Accepted weights:

* weight-norm form (`hifigan-ckpt.ckpt["generator"]`, or the whole ckpt dict with its `generator` key):
  `*.weight_g` / `*.weight_v` (also torch's newer `*.parametrizations.weight.original0/1`). Weight norm is
  folded here: `weight = g * v / ||v||`, the norm taken over every dim but 0 (torch `weight_norm(dim=0)`, the
  default the official code uses, also for ConvTranspose1d whose dim 0 is the *input* channel).
* plain form (`first_stage_model.vocoder.*` in the LDM checkpoint, after `remove_weight_norm`): `*.weight`.
  The `first_stage_model.vocoder.` / `vocoder.` prefixes are stripped, other keys of such a checkpoint ignored.

Name map: `ups.{i}` -> `upsampler.{i}`; `conv_pre`, `resblocks.{j}.convs{1,2}.{k}`, `conv_post` keep their names.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from mtmusicldm.official.vae import assign_state_dict, check_tensors, raise_on_key_errors, select_prefix

LDM_PREFIX: str = "first_stage_model.vocoder."
MUSICLDM_HIFIGAN_CONFIG: dict[str, Any] = {
    "resblock": "1", "upsample_rates": [5, 4, 2, 2, 2], "upsample_kernel_sizes": [16, 16, 8, 4, 4],
    "upsample_initial_channel": 1024, "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "num_mels": 64, "sampling_rate": 16000,
}  # fmt: skip
"""Architecture keys of MusicLDM's `src/hifigan/config_16k_64.json` (spec §3, manifests/hifigan.json)."""
"""Prefix of the (plain-form) vocoder inside the LDM Lightning checkpoint."""

_REQUIRED_CONFIG = ("resblock", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel",
                    "resblock_kernel_sizes", "resblock_dilation_sizes", "num_mels", "sampling_rate")
_WN_SUFFIXES = {".weight_g": "g", ".weight_v": "v", ".parametrizations.weight.original0": "g",
                ".parametrizations.weight.original1": "v"}


# ---------------------------------------------------------------------------------------------------------------
# Config and key map


def hifigan_config(config: Mapping[str, Any]) -> SpeechT5HifiGanConfig:
    """Translate an official HiFi-GAN config (`config_16k_64.json`) to `SpeechT5HifiGanConfig`.

    Only the architecture keys are read; training keys (`learning_rate`, `segment_size`, ...) are ignored.

    Args:
        config: official config dict (see `manifests/hifigan.json` `config`).

    Returns:
        The transformers config (`normalize_before=False`, `leaky_relu_slope=0.1`).

    Raises:
        ValueError: a required key is missing.
        NotImplementedError: `resblock != "1"` (type "2" has a different block layout).
    """
    missing = [k for k in _REQUIRED_CONFIG if k not in config]
    if missing:
        raise ValueError(f"HiFi-GAN config: missing keys {missing}")
    if str(config["resblock"]) != "1":
        raise NotImplementedError(f"HiFi-GAN config: resblock={config['resblock']!r}; only type '1' is supported")
    return SpeechT5HifiGanConfig(
        model_in_dim=int(config["num_mels"]),
        sampling_rate=int(config["sampling_rate"]),
        upsample_initial_channel=int(config["upsample_initial_channel"]),
        upsample_rates=[int(u) for u in config["upsample_rates"]],
        upsample_kernel_sizes=[int(k) for k in config["upsample_kernel_sizes"]],
        resblock_kernel_sizes=[int(k) for k in config["resblock_kernel_sizes"]],
        resblock_dilation_sizes=[[int(d) for d in ds] for ds in config["resblock_dilation_sizes"]],
        normalize_before=False,
        leaky_relu_slope=0.1,
    )


def official_hifigan_key_map(config: Mapping[str, Any]) -> dict[str, str]:
    """Official plain-form generator key -> `SpeechT5HifiGan` key (buffers `mean`/`scale` excluded).

    Args:
        config: official config (`upsample_rates`, `resblock_kernel_sizes`, `resblock_dilation_sizes` are read).

    Returns:
        Ordered dict official key (`*.weight` / `*.bias`) -> transformers key.
    """
    n_up = len(config["upsample_rates"])
    n_kernels = len(config["resblock_kernel_sizes"])
    modules = {"conv_pre": "conv_pre"}
    modules |= {f"ups.{i}": f"upsampler.{i}" for i in range(n_up)}
    for j in range(n_up * n_kernels):
        n_dil = len(config["resblock_dilation_sizes"][j % n_kernels])
        for part in ("convs1", "convs2"):
            modules |= {f"resblocks.{j}.{part}.{k}": f"resblocks.{j}.{part}.{k}" for k in range(n_dil)}
    modules["conv_post"] = "conv_post"
    return {f"{src}.{w}": f"{dst}.{w}" for src, dst in modules.items() for w in ("weight", "bias")}


# ---------------------------------------------------------------------------------------------------------------
# Weight norm


def weight_norm_base(key: str) -> tuple[str, str] | None:
    """`("conv_pre", "g")` for `conv_pre.weight_g` (or the parametrization names); None for other keys."""
    for suffix, role in _WN_SUFFIXES.items():
        if key.endswith(suffix):
            return key[: -len(suffix)], role
    return None


def fold_weight_norm(g: Tensor, v: Tensor) -> Tensor:
    """weight = g * v / ||v||, the norm over all dims except 0 (torch `weight_norm(dim=0)`).

    Args:
        g: [O, 1, ..., 1] magnitudes (dim 0 of the weight).
        v: [O, ...] directions.

    Returns:
        The plain weight, shaped like `v`.
    """
    if g.shape[0] != v.shape[0] or g.numel() != v.shape[0]:
        raise ValueError(f"weight_g shape {tuple(g.shape)} does not match weight_v shape {tuple(v.shape)} on dim 0")
    norm = torch.linalg.vector_norm(v, dim=tuple(range(1, v.ndim)), keepdim=True)
    return v * (g.reshape(norm.shape) / norm)


def to_plain_form(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Fold every (g, v) pair into `.weight`; plain keys pass through.

    Returns:
        (plain state dict, problems) where problems lists halves of a pair found alone or duplicated weights.
    """
    pairs: dict[str, dict[str, Tensor]] = {}
    plain: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        split = weight_norm_base(key)
        if split is None:
            plain[key] = tensor
        else:
            pairs.setdefault(split[0], {})[split[1]] = tensor
    problems: list[str] = []
    for base, halves in pairs.items():
        if set(halves) != {"g", "v"}:
            problems.append(f"{base}: weight-norm pair incomplete (has {sorted(halves)})")
        elif f"{base}.weight" in plain:
            problems.append(f"{base}: both plain weight and weight-norm pair")
        else:
            plain[f"{base}.weight"] = fold_weight_norm(halves["g"], halves["v"])
    return plain, problems


# ---------------------------------------------------------------------------------------------------------------
# Loading


def unwrap_hifigan_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Accept `{"generator": ...}`, `{"state_dict": ...}`, `first_stage_model.vocoder.`/`vocoder.` prefixes."""
    sd: Mapping[str, Any] = state_dict
    for container in ("generator", "state_dict"):
        if isinstance(sd.get(container), Mapping):
            sd = sd[container]
    return select_prefix(select_prefix(sd, LDM_PREFIX), "vocoder.")


def convert_hifigan_state_dict(state_dict: Mapping[str, Any], config: Mapping[str, Any],
                               expected: Mapping[str, torch.Size]) -> dict[str, Tensor]:
    """Official generator weights (either form) -> `SpeechT5HifiGan` state dict incl. `mean`=0, `scale`=1.

    Raises:
        ValueError: missing, unknown, incomplete weight-norm or wrong-shape keys (all listed).
    """
    key_map = official_hifigan_key_map(config)
    plain, problems = to_plain_form(check_tensors(unwrap_hifigan_state_dict(state_dict), "HiFi-GAN"))
    out: dict[str, Tensor] = {}
    mismatched = list(problems)
    for src, tensor in plain.items():
        dst = key_map.get(src)
        if dst is None:
            continue
        if tuple(tensor.shape) != tuple(expected[dst]):
            mismatched.append(f"{src}: {tuple(tensor.shape)} vs expected {tuple(expected[dst])}")
        out[dst] = tensor.contiguous()
    missing = [k for k in key_map if k not in plain]
    unknown = [k for k in plain if k not in key_map]
    raise_on_key_errors("HiFi-GAN", missing, unknown, mismatched)
    n_mels = int(config["num_mels"])
    return out | {"mean": torch.zeros(n_mels), "scale": torch.ones(n_mels)}


def load_hifigan(state_dict: Mapping[str, Any], config: Mapping[str, Any]) -> SpeechT5HifiGan:
    """Build `SpeechT5HifiGan` from an official config and load official generator weights (float32, eval).

    Args:
        state_dict: weight-norm form (bare or `{"generator": ...}`) or plain form (bare or prefixed by
            `first_stage_model.vocoder.` inside an LDM state dict).
        config: official HiFi-GAN config dict.

    Returns:
        The vocoder; `model(log_mel [N, T, n_mels]) -> wav [N, T * prod(upsample_rates) + 32]` for MusicLDM.

    Raises:
        ValueError / NotImplementedError: see `hifigan_config` and `convert_hifigan_state_dict`.
    """
    hf_config = hifigan_config(config)
    with torch.device("meta"):
        model = SpeechT5HifiGan(hf_config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    targets = set(official_hifigan_key_map(config).values()) | {"mean", "scale"}
    if targets != set(expected):
        raise RuntimeError(f"HiFi-GAN key map out of sync with transformers: {sorted(targets ^ set(expected))}")
    assign_state_dict(model, convert_hifigan_state_dict(state_dict, config, expected), "HiFi-GAN")
    return model.eval()
