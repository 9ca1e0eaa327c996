"""Read, classify and split official MT-MusicLDM / MusicLDM checkpoints (no Lightning, no original code needed).

An MT-MusicLDM Lightning checkpoint (PL 1.9.4, spec §10) holds `{"state_dict": ..., "epoch", "global_step",
"pytorch-lightning_version", "optimizer_states", "loops", "callbacks", ...}`. Its state dict splits into

* top level: `logvar`, the 12 schedule buffers (`betas`, `alphas_cumprod`, ...) and `scale_factor`,
* `model.diffusion_model.*` (raw UNet) and `model_ema.*` (EMA UNet, dots removed, + `decay` / `num_updates`),
* `first_stage_model.{encoder,decoder,quant_conv,post_quant_conv}.*` (VAE), `first_stage_model.vocoder.*`
  (HiFi-GAN, plain form), `first_stage_model.loss.*` (LPIPS + discriminator, unused at inference),
* `cond_stage_model.model.*` (CLAP, conditional model only).

Files are memory-mapped (`torch.load(mmap=True)`), so a 7-12 GB checkpoint costs address space, not RAM. Loading
tries torch's safe `weights_only` unpickler first; if the file holds other Python objects (e.g. Lightning callback
state), a restricted unpickler rebuilds tensors and containers and replaces every other object by an inert
placeholder (nothing is imported or executed). Only `trust=True` (`--trust-checkpoint`) allows a full unpickle.
`check_schedule` / `read_scale_factor` validate the top-level entries. The config inference helpers (`infer_ddconfig`,
`infer_hifigan_config`, `infer_clap_amodel`) work on key -> tensor mappings whose tensors may be on the meta device.
"""
from __future__ import annotations

import math
import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mtmusicldm.diffusion.schedules import DiffusionSchedule
from mtmusicldm.official.unet import EMA_EXTRA_KEYS, EMA_PREFIX, UNET_PREFIX

VAE_PREFIX = "first_stage_model."
VOCODER_PREFIX = "first_stage_model.vocoder."
LOSS_PREFIX = "first_stage_model.loss."
CLAP_PREFIX = "cond_stage_model.model."
SCHEDULE_KEYS: tuple[str, ...] = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
    "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)  # fmt: skip
"""The float32 schedule buffers `DDPM.register_schedule` stores at the top level of the state dict."""
REQUIRED_TOP_KEYS: tuple[str, ...] = (*SCHEDULE_KEYS, "scale_factor")
OPTIONAL_TOP_KEYS: tuple[str, ...] = ("logvar",)
LIGHTNING_META_KEYS: tuple[str, ...] = ("epoch", "global_step", "pytorch-lightning_version")
MAX_LISTED = 20
SCHEDULE_TOLERANCE = 1e-6
TWO_D_HINT = (
    "this is a MusicLDM (2D) checkpoint; use it as a codec source via --vae-ckpt / --hifigan-ckpt (or "
    "`mtmusicldm import-codec`), or import the MT-MusicLDM checkpoint (Zenodo record 13947715)"
)


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not have the expected layout (the message says what and where)."""


def list_keys(keys: list[str] | set[str], limit: int = MAX_LISTED) -> str:
    """`N [first, ..., (+M more)]` for error messages."""
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{len(keys)} {keys[:limit]}{more}"


# ---------------------------------------------------------------------------------------------------------------
# Reading files


class _Inert:
    """Placeholder for a pickled object of a non-allowed class: accepts any arguments and state, does nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"), ("collections", "defaultdict"), ("builtins", "set"), ("builtins", "frozenset"),
    ("builtins", "slice"), ("builtins", "complex"), ("builtins", "bytearray"), ("_codecs", "encode"),
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch", "Size"), ("torch", "device"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype"),
}  # fmt: skip
_INERT_CLASSES: dict[tuple[str, str], type] = {}


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds tensors, containers and torch dtypes; any other global becomes an inert `_Inert` subclass."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        key = (module, name)
        if key not in _INERT_CLASSES:
            _INERT_CLASSES[key] = type(f"Inert_{name}", (_Inert,), {"origin": f"{module}.{name}"})
        return _INERT_CLASSES[key]


class _RestrictedPickleModule:
    """The `pickle_module` handed to `torch.load` for the restricted fallback."""

    __name__ = "mtmusicldm_restricted_pickle"
    Unpickler = _RestrictedUnpickler

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()


def _torch_load(path: Path, **kwargs: Any) -> Any:
    return torch.load(path, map_location="cpu", mmap=zipfile.is_zipfile(path), **kwargs)


def read_checkpoint_file(path: Path, *, trust: bool = False, what: str = "checkpoint") -> tuple[Any, str]:
    """Load a PyTorch checkpoint on the CPU, memory-mapped when it is a zip file.

    Args:
        path: the file.
        trust: allow a full (code-executing) unpickle when the safe loaders fail; only for trusted files.
        what: what the file is, for messages (e.g. "MT-MusicLDM checkpoint").

    Returns:
        (the loaded object, the loader used: "weights_only", "restricted" or "trusted").

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: truncated / not a checkpoint (size given), or not loadable safely (names --trust-checkpoint).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} not found")
    size = path.stat().st_size
    broken = f"{what} {path} is truncated or not a PyTorch checkpoint (size {size} bytes)"
    try:
        return _torch_load(path, weights_only=True), "weights_only"
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise CheckpointError(f"{broken}: {_first_line(err)}") from err
        safe_error = err
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{broken}: {_first_line(err)}") from err
    try:
        return _torch_load(path, weights_only=False, pickle_module=_RestrictedPickleModule), "restricted"
    except Exception as err:  # noqa: BLE001 - any failure of the restricted path ends here
        if not _refused_a_global(safe_error):  # not even a valid pickle: no loader can help
            raise CheckpointError(f"{broken}: {_first_line(err)}") from err
        if not trust:
            raise CheckpointError(
                f"{what} {path} holds Python objects that the safe loaders cannot rebuild "
                f"({_wo_reason(safe_error)}; restricted unpickler: {_first_line(err)}). If the file comes from a "
                "trusted source (e.g. the Zenodo original), re-run with --trust-checkpoint to unpickle it fully"
            ) from err
    try:
        return _torch_load(path, weights_only=False), "trusted"
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"{broken}: {_first_line(err)}") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _refused_a_global(err: BaseException) -> bool:
    """Did torch's weights_only unpickler stop at a class or function it does not allow (so the file is a pickle
    that references Python objects), rather than at bytes that are not a pickle at all?"""
    return bool(re.search(r"Unsupported global|was not an allowed global", str(err)))


def _wo_reason(err: BaseException) -> str:
    match = re.search(r"GLOBAL (\S+) was not an allowed global", str(err))
    return f"it contains {match.group(1)}" if match else "torch's weights_only unpickler refused it"


# ---------------------------------------------------------------------------------------------------------------
# Containers and classification


def lightning_state_dict(obj: Any, where: str = "checkpoint") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The state dict of a Lightning checkpoint (or a bare state dict) and its Lightning metadata.

    Returns:
        (state dict, {epoch, global_step, pytorch-lightning_version} as far as present).

    Raises:
        CheckpointError: not a dict, or non-tensor values in the state dict.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where}: expected a checkpoint dict, got {type(obj).__name__}")
    sd: Mapping[str, Any] = obj
    for container in ("state_dict", "generator"):  # Lightning / MusicLDM's HiFi-GAN checkpoint
        if isinstance(sd.get(container), Mapping):
            sd = sd[container]
            break
    meta = {k: obj[k] for k in LIGHTNING_META_KEYS if k in obj and isinstance(obj[k], (int, str, float))}
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{where}: non-tensor entries in the state dict: {list_keys(bad)}")
    return dict(sd), meta


def is_2d_musicldm(sd: Mapping[str, Tensor]) -> bool:
    """MusicLDM's 2-D UNet: a 4-D `input_blocks.0.0` kernel or spatial-transformer blocks under the UNet prefix."""
    conv_in = sd.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if conv_in is not None and conv_in.ndim == 4:
        return True
    return any(k.startswith(UNET_PREFIX) and (".transformer_blocks." in k or ".proj_in." in k) for k in sd)


def classify_state_dict(sd: Mapping[str, Tensor]) -> str:
    """What a state dict is: "mt-musicldm", "musicldm-2d", "vae", "hifigan", "clap" or "unknown"."""
    keys = list(sd)
    if any(k.startswith(UNET_PREFIX) for k in keys):
        return "musicldm-2d" if is_2d_musicldm(sd) else "mt-musicldm"
    if any(k.startswith(("encoder.down.", "decoder.up.")) for k in keys):
        return "vae"
    if any(k.startswith(("conv_pre.", "ups.")) for k in keys):
        return "hifigan"
    if any(k.startswith(("audio_branch.", "module.audio_branch.", CLAP_PREFIX + "audio_branch.")) for k in keys):
        return "clap"
    return "unknown"


# ---------------------------------------------------------------------------------------------------------------
# Splitting an MT-MusicLDM state dict


@dataclass
class CheckpointParts:
    """An MT-MusicLDM state dict split by component (the caller's tensors, never copied; prefixes stripped).

    `unet`: `model.diffusion_model.*`; `ema`: `model_ema.*` UNet buffers under their own dot-less names (empty: no
    EMA); `ema_extra`: `model_ema.decay` / `num_updates`; `vae`: `first_stage_model.*` minus `loss.*` / `vocoder.*`;
    `vocoder`: `first_stage_model.vocoder.*` (plain form); `loss_keys`: the ignored `first_stage_model.loss.*` keys;
    `clap`: `cond_stage_model.model.*` (empty: unconditional); `top`: schedule buffers, `scale_factor`, `logvar`.
    """

    unet: dict[str, Tensor] = field(default_factory=dict)
    ema: dict[str, Tensor] = field(default_factory=dict)
    ema_extra: dict[str, Tensor] = field(default_factory=dict)
    vae: dict[str, Tensor] = field(default_factory=dict)
    vocoder: dict[str, Tensor] = field(default_factory=dict)
    loss_keys: list[str] = field(default_factory=list)
    clap: dict[str, Tensor] = field(default_factory=dict)
    top: dict[str, Tensor] = field(default_factory=dict)


def split_state_dict(sd: Mapping[str, Tensor], where: str = "checkpoint") -> CheckpointParts:
    """Split an MT-MusicLDM Lightning state dict by prefix.

    Raises:
        CheckpointError: a 2-D MusicLDM checkpoint, keys under no known prefix (first 20 listed), or missing
            top-level entries (schedule buffers, `scale_factor`).
    """
    kind = classify_state_dict(sd)
    if kind == "musicldm-2d":
        raise CheckpointError(f"{where}: {TWO_D_HINT}")
    if kind in ("vae", "hifigan", "clap"):
        raise CheckpointError(
            f"{where}: this is a MusicLDM {kind} component checkpoint, not an MT-MusicLDM LDM checkpoint; pass it as "
            f"--{'vae-ckpt' if kind == 'vae' else 'hifigan-ckpt' if kind == 'hifigan' else 'clap-ckpt'} "
            "(or use `mtmusicldm import-codec`)"
        )
    if kind == "unknown":
        raise CheckpointError(f"{where}: no '{UNET_PREFIX}*' keys; not an MT-MusicLDM checkpoint. "
                              f"First keys: {list_keys(list(sd))}")
    parts, unknown = CheckpointParts(), []
    for key, tensor in sd.items():
        if key.startswith(UNET_PREFIX):
            parts.unet[key[len(UNET_PREFIX):]] = tensor
        elif key in EMA_EXTRA_KEYS:
            parts.ema_extra[key] = tensor
        elif key.startswith(EMA_PREFIX):
            parts.ema[key] = tensor
        elif key.startswith(LOSS_PREFIX):
            parts.loss_keys.append(key)
        elif key.startswith(VOCODER_PREFIX):
            parts.vocoder[key[len(VOCODER_PREFIX):]] = tensor
        elif key.startswith(VAE_PREFIX):
            parts.vae[key[len(VAE_PREFIX):]] = tensor
        elif key.startswith(CLAP_PREFIX):
            parts.clap[key[len(CLAP_PREFIX):]] = tensor
        elif key in REQUIRED_TOP_KEYS or key in OPTIONAL_TOP_KEYS:
            parts.top[key] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{where}: unknown keys (no known prefix) {list_keys(unknown)}")
    missing = [k for k in REQUIRED_TOP_KEYS if k not in parts.top]
    if missing:
        raise CheckpointError(f"{where}: missing keys {list_keys(missing)}")
    return parts


def check_schedule(top: Mapping[str, Tensor], schedule: DiffusionSchedule, where: str) -> dict[str, float]:
    """Compare the checkpoint's schedule buffers with ours; returns the max abs difference per buffer.

    Raises:
        CheckpointError: naming the first buffer whose shape differs or whose values differ by more than
            1e-6 * (1 + |ours|), with the max difference.
    """
    ref = schedule.official_buffers()
    diffs: dict[str, float] = {}
    for name in SCHEDULE_KEYS:
        ours, theirs = ref[name], top[name]
        if tuple(theirs.shape) != tuple(ours.shape):
            raise CheckpointError(f"{where}: schedule buffer {name!r} has shape {tuple(theirs.shape)}, ours "
                                  f"{tuple(ours.shape)} (timesteps={schedule.num_timesteps}; pass its YAML: --config)")
        if theirs.is_meta:
            continue
        diff = (theirs.double() - ours.double()).abs()
        diffs[name] = float(diff.max())
        if bool((diff > SCHEDULE_TOLERANCE * (1.0 + ours.double().abs())).any()):
            raise CheckpointError(
                f"{where}: schedule buffer {name!r} differs from ours (timesteps={schedule.num_timesteps}, "
                f"linear_start={schedule.beta_start}, linear_end={schedule.beta_end}) by max {diffs[name]:.3g} > "
                f"{SCHEDULE_TOLERANCE:g}; the checkpoint uses another noise schedule (pass its YAML with --config)"
            )
    return diffs


def read_scale_factor(top: Mapping[str, Tensor], where: str) -> float | None:
    """The checkpoint's `scale_factor` (None for a meta tensor).

    Raises:
        CheckpointError: not a scalar, or not a positive finite number.
    """
    scale = top["scale_factor"]
    if scale.numel() != 1:
        raise CheckpointError(f"{where}: scale_factor has shape {tuple(scale.shape)}, expected a scalar")
    if scale.is_meta:
        return None
    value = float(scale.reshape(()).item())
    if not (math.isfinite(value) and value > 0):
        raise CheckpointError(f"{where}: scale_factor {value} is not a positive finite number")
    return value


# ---------------------------------------------------------------------------------------------------------------
# Component configs inferred from tensor shapes (meta tensors are fine)


def _levels(sd: Mapping[str, Tensor], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := regex.match(k))})


def _dim(sd: Mapping[str, Tensor], key: str, axis: int, what: str) -> int:
    if key not in sd:
        raise CheckpointError(f"{what}: cannot infer the architecture, missing key {key!r}")
    return int(sd[key].shape[axis])


def infer_ddconfig(vae: Mapping[str, Tensor]) -> tuple[dict[str, Any], int]:
    """Official VAE `ddconfig` and `embed_dim` from official VAE keys (no prefix; `loss.*`/`vocoder.*` ignored).

    Returns:
        (ddconfig, embed_dim); `attn_resolutions` lists levels that carry attention (unsupported downstream).
    """
    what = "VAE"
    ch = _dim(vae, "encoder.conv_in.weight", 0, what)
    levels = _levels(vae, r"encoder\.down\.(\d+)\.")
    if not levels or levels != list(range(len(levels))):
        raise CheckpointError(f"{what}: encoder.down.* levels {levels} are missing or not contiguous")
    blocks = _levels(vae, r"encoder\.down\.0\.block\.(\d+)\.")
    ch_mult = [_dim(vae, f"encoder.down.{i}.block.0.conv1.weight", 0, what) // ch for i in levels]
    attn = [i for i in levels if any(k.startswith(f"encoder.down.{i}.attn.") for k in vae)]
    ddconfig = {
        "double_z": True, "z_channels": _dim(vae, "encoder.conv_out.weight", 0, what) // 2, "resolution": 256,
        "in_channels": _dim(vae, "encoder.conv_in.weight", 1, what),
        "out_ch": _dim(vae, "decoder.conv_out.weight", 0, what), "ch": ch, "ch_mult": ch_mult,
        "num_res_blocks": len(blocks), "attn_resolutions": [256 // 2**i for i in attn], "dropout": 0.0,
    }  # fmt: skip
    return ddconfig, _dim(vae, "quant_conv.weight", 0, what) // 2


def infer_hifigan_config(plain: Mapping[str, Tensor], base: Mapping[str, Any]) -> dict[str, Any]:
    """HiFi-GAN config: `base` with the widths and kernel sizes read from plain-form generator weights.

    Upsampling strides and dilations are not visible in the weights: they come from `base` (MusicLDM's
    `config_16k_64.json` by default), so the number of upsampling stages and resblock kernels must match it.

    Raises:
        CheckpointError: the stage or kernel count differs from `base` (pass a full HiFi-GAN config then).
    """
    what = "HiFi-GAN"
    n_up = len(_levels(plain, r"ups\.(\d+)\."))
    n_kernels = len(base["resblock_kernel_sizes"])
    if n_up != len(base["upsample_rates"]) or len(_levels(plain, r"resblocks\.(\d+)\.")) != n_up * n_kernels:
        raise CheckpointError(
            f"{what}: the weights have {n_up} upsampling stages, the base config {len(base['upsample_rates'])} "
            f"(x {n_kernels} resblock kernels); pass the generator's config explicitly"
        )
    config = dict(base)
    config["upsample_initial_channel"] = _dim(plain, "conv_pre.weight", 0, what)
    config["num_mels"] = _dim(plain, "conv_pre.weight", 1, what)
    config["upsample_kernel_sizes"] = [_dim(plain, f"ups.{i}.weight", 2, what) for i in range(n_up)]
    config["resblock_kernel_sizes"] = [_dim(plain, f"resblocks.{j}.convs1.0.weight", 2, what)
                                       for j in range(n_kernels)]
    return config


_HTSAT_WIDTHS = {96: "HTSAT-tiny", 128: "HTSAT-base", 256: "HTSAT-large"}


def infer_clap_amodel(clap: Mapping[str, Tensor]) -> str:
    """laion-clap audio model name from bare CLAP keys (patch-embedding width and STFT window)."""
    width = _dim(clap, "audio_branch.patch_embed.proj.weight", 0, "CLAP")
    window = _dim(clap, "audio_branch.spectrogram_extractor.stft.conv_real.weight", 2, "CLAP")
    if width == 96 and window == 1536:
        return "HTSAT-tiny-win-1536"
    if width not in _HTSAT_WIDTHS or window != 1024:
        raise CheckpointError(f"CLAP: unrecognised HTSAT variant (patch width {width}, window {window}); "
                              "pass the laion-clap amodel name explicitly")
    return _HTSAT_WIDTHS[width]


def infer_clap_text_overrides(clap: Mapping[str, Tensor], base: Mapping[str, Any]) -> dict[str, Any]:
    """RoBERTa hyper-parameters of the CLAP text tower that differ from `base` (roberta-base), read from shapes."""
    prefix = "text_branch."
    found = {
        "vocab_size": _dim(clap, prefix + "embeddings.word_embeddings.weight", 0, "CLAP"),
        "hidden_size": _dim(clap, prefix + "embeddings.word_embeddings.weight", 1, "CLAP"),
        "max_position_embeddings": _dim(clap, prefix + "embeddings.position_embeddings.weight", 0, "CLAP"),
        "type_vocab_size": _dim(clap, prefix + "embeddings.token_type_embeddings.weight", 0, "CLAP"),
        "num_hidden_layers": len(_levels(clap, r"text_branch\.encoder\.layer\.(\d+)\.")),
        "intermediate_size": _dim(clap, prefix + "encoder.layer.0.intermediate.dense.weight", 0, "CLAP"),
    }
    return {k: v for k, v in found.items() if base.get(k) != v}


def meta_state_dict(shapes: Mapping[str, Any]) -> dict[str, Tensor]:
    """Meta tensors (no memory, no values) from a manifest `{key: {"shape": [...], "dtype": ...}}` or `{key: shape}`."""
    out = {}
    for key, spec in shapes.items():
        shape: Sequence[int] = spec["shape"] if isinstance(spec, Mapping) else spec
        dtype = getattr(torch, spec.get("dtype", "float32")) if isinstance(spec, Mapping) else torch.float32
        out[key] = torch.empty(tuple(shape), dtype=dtype, device="meta")
    return out
