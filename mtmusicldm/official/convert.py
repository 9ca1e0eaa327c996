"""Convert official checkpoints into this project's formats (docs/formats.md).

* `import_official`: an MT-MusicLDM Lightning checkpoint (Zenodo record 13947715, unconditional or CLAP) -> a model
  directory written by `MTMusicLDM.save_pretrained`: `config.json` (recommending the official DDIM-200 sampler),
  `unet.safetensors` (raw `model.diffusion_model.*`), `unet_ema.safetensors` (`model_ema.*`, or the raw weights
  with `ema=False`), `codec/` (VAE + HiFi-GAN from `first_stage_model.*`), `clap.safetensors` (bare CLAP state
  dict from `cond_stage_model.model.*`, conditional model only) and `import.json` (provenance and checks).
* `import_codec`: MusicLDM's component checkpoints (Zenodo record 10643148: `vae-ckpt.ckpt`, `hifigan-ckpt.ckpt`)
  -> a codec directory.

Official checkpoints carry no hyper-parameters: the UNet, VAE and HiFi-GAN layouts are inferred from tensor shapes
(heads: `num_head_channels`, 32 in both released configs), or taken from the official YAML given as a plain dict
(`options_from_official_config`; this module does not parse YAML). The checkpoint's schedule buffers must equal
`DiffusionSchedule(...).official_buffers()` within 1e-6 (absolute + relative). `convert_state_dict` does all the
mapping and checking without building models, so it also runs on meta tensors (full-size layout checks).
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from torch import Tensor
from transformers import SpeechT5HifiGan

from mtmusicldm import STEMS
from mtmusicldm.audio.mel import N_MELS
from mtmusicldm.codec.codec_dir import Codec, save_codec
from mtmusicldm.codec.vae import vae_config
from mtmusicldm.codec.vocoder import HifiGanVocoder
from mtmusicldm.diffusion.schedules import DiffusionSchedule
from mtmusicldm.geometry import HOP, LATENT_DOWNSAMPLE, SAMPLE_RATE
from mtmusicldm.ldm import MTMusicLDM
from mtmusicldm.model_config import CLAP_FILE, OFFICIAL_SAMPLER, make_model_config
from mtmusicldm.models.unet3d import UNet3D, UNet3DConfig
from mtmusicldm.official.checkpoint import (
    CLAP_PREFIX, SCHEDULE_KEYS, UNET_PREFIX, VAE_PREFIX, VOCODER_PREFIX, CheckpointError, infer_clap_amodel,
    infer_clap_text_overrides, infer_ddconfig, infer_hifigan_config, lightning_state_dict, list_keys,
    check_schedule, meta_state_dict, read_checkpoint_file, read_scale_factor, split_state_dict,
)  # fmt: skip
from mtmusicldm.official.hifigan import MUSICLDM_HIFIGAN_CONFIG, convert_hifigan_state_dict, hifigan_config
from mtmusicldm.official.hifigan import official_hifigan_key_map
from mtmusicldm.official.hifigan import to_plain_form, unwrap_hifigan_state_dict
from mtmusicldm.official.unet import ema_key, ema_to_unet_state_dict, infer_unet_config, official_key_map
from mtmusicldm.official.unet import official_to_ours, unet_config_from_official
from mtmusicldm.official.vae import assign_state_dict, convert_vae_state_dict, official_vae_key_map
from mtmusicldm.official.vae import unwrap_vae_state_dict, vae_kwargs_from_ddconfig

IMPORT_FILE = "import.json"
_CONFIG_ONLY_UNET_FIELDS = ("num_head_channels", "dropout", "use_checkpoint")  # not visible in tensor shapes


@dataclass(frozen=True)
class ImportOptions:
    """How to interpret an official checkpoint (defaults: the released MT-MusicLDM models).

    Attributes:
        ema: sample with the EMA weights (`model_ema.*`); False uses `model.diffusion_model.*`.
        stems: stem names; their count must equal the UNet's input and output channels.
        unet_params: official `unet_config.params` (overrides shape inference; must agree with the tensors).
        num_head_channels: attention head width when `unet_params` is not given.
        ddconfig / embed_dim: official VAE config (default: inferred from shapes).
        hifigan_config: official HiFi-GAN config (default: MusicLDM's, widths/kernels read from the weights).
        timesteps / linear_start / linear_end: the schedule the checkpoint's buffers are checked against.
        sample_rate / segment_samples: audio rate and segment length (official 16 kHz, 163840 = 10.24 s).
        clap_amodel: laion-clap audio model name (default: inferred from the CLAP tensors).
        text_model: roberta-base directory recorded as `conditioning.text_model` (tokenizer for text prompts).
        compute_uncond: build CLAP once to store the "" embedding (`uncond_clap`) and validate the CLAP tensors.
        trust_checkpoint: allow a full unpickle when the safe loaders fail.
    """

    ema: bool = True
    stems: tuple[str, ...] = STEMS
    unet_params: Mapping[str, Any] | None = None
    num_head_channels: int = 32
    ddconfig: Mapping[str, Any] | None = None
    embed_dim: int | None = None
    hifigan_config: Mapping[str, Any] | None = None
    timesteps: int = 1000
    linear_start: float = 0.0015
    linear_end: float = 0.0195
    sample_rate: int = SAMPLE_RATE
    segment_samples: int = 163840
    clap_amodel: str | None = None
    text_model: str | None = None
    compute_uncond: bool = True
    trust_checkpoint: bool = False


def _params(section: Any, *path: str) -> dict[str, Any]:
    for key in path:
        section = section.get(key) if isinstance(section, Mapping) else None
    return dict(section) if isinstance(section, Mapping) else {}


def options_from_official_config(config: Mapping[str, Any], **overrides: Any) -> ImportOptions:
    """`ImportOptions` from a parsed official YAML (`model.params.{unet_config,first_stage_config,...}`).

    Args:
        config: the YAML as a dict (e.g. `multichannel_musicldm_slakh_with_CLAP_3d.yaml`).
        **overrides: other `ImportOptions` fields (e.g. `ema=False`).

    Raises:
        CheckpointError: no `model.params`, or a schedule/parameterization this project does not implement.
    """
    model = _params(config, "model", "params")
    if not model:
        raise CheckpointError("official config: no model.params section")
    if model.get("beta_schedule", "linear") != "linear":
        raise CheckpointError(f"official config: beta_schedule={model['beta_schedule']!r} is not supported "
                              "(only the official 'linear', i.e. scaled-linear, schedule)")
    if model.get("parameterization", "eps") != "eps":
        raise CheckpointError(f"official config: parameterization={model['parameterization']!r} (only 'eps')")
    first_stage = _params(model, "first_stage_config", "params")
    audio = _params(config, "preprocessing", "audio")
    found: dict[str, Any] = {
        "unet_params": _params(model, "unet_config", "params") or None,
        "ddconfig": first_stage.get("ddconfig"), "embed_dim": first_stage.get("embed_dim"),
        "timesteps": model.get("timesteps"), "linear_start": model.get("linear_start"),
        "linear_end": model.get("linear_end"), "sample_rate": audio.get("sampling_rate"),
        "clap_amodel": _params(model, "cond_stage_config", "params").get("amodel"),
    }  # fmt: skip
    if "sampling_rate" in audio and "duration" in audio:
        found["segment_samples"] = round(float(audio["duration"]) * int(audio["sampling_rate"]))
    values = {k: v for k, v in found.items() if v is not None}
    return ImportOptions(**{**values, **overrides})


@dataclass
class ConvertedCheckpoint:
    """Everything a model directory needs, under our key names (tensors may be views of a memory-mapped file).

    `unet` holds the raw weights, `unet_ema` what sampling uses (`weights`: "ema" or "raw"); `vae` / `vocoder` are
    diffusers / `SpeechT5HifiGan` state dicts; `clap` the bare CLAP state dict (None: unconditional) with its audio
    model and the RoBERTa hyper-parameters that differ from roberta-base; `scale_factor` is None for meta tensors;
    `dispositions` maps every source key to where it went ("unet:<key>", "vae:<key>", ...) or why it was not used.
    """

    unet_config: UNet3DConfig
    unet: dict[str, Tensor]
    unet_ema: dict[str, Tensor]
    weights: str
    vae_kwargs: dict[str, Any]
    vae: dict[str, Tensor]
    hifigan_config: dict[str, Any]
    vocoder: dict[str, Tensor]
    clap: dict[str, Tensor] | None
    clap_amodel: str | None
    clap_text_overrides: dict[str, Any]
    scale_factor: float | None
    dispositions: dict[str, str] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# Conversion (no models built; meta tensors allowed)


def _unet_config(unet: Mapping[str, Tensor], options: ImportOptions, where: str) -> UNet3DConfig:
    stems = len(options.stems)
    for key, axis in (("input_blocks.0.0.weight", 1), ("out.2.weight", 0)):
        if key not in unet:
            raise CheckpointError(f"{where}: missing keys {list_keys([UNET_PREFIX + key])}")
        if unet[key].shape[axis] != stems:
            raise CheckpointError(
                f"{where}: the UNet has {unet[key].shape[axis]} stems ({UNET_PREFIX}{key} has shape "
                f"{tuple(unet[key].shape)}) but {stems} are expected ({', '.join(options.stems)}; --stems)"
            )
    try:
        inferred = unet_config_from_official(infer_unet_config(unet, num_head_channels=options.num_head_channels))
        if options.unet_params is None:
            return inferred
        configured = unet_config_from_official(options.unet_params, use_checkpoint=False)
    except ValueError as err:
        raise CheckpointError(f"{where}: {err}") from err
    diffs = [f"{f.name}: config {getattr(configured, f.name)!r} vs tensors {getattr(inferred, f.name)!r}"
             for f in dataclasses.fields(UNet3DConfig)
             if f.name not in _CONFIG_ONLY_UNET_FIELDS and getattr(configured, f.name) != getattr(inferred, f.name)]
    if diffs:
        raise CheckpointError(f"{where}: the UNet config disagrees with the checkpoint tensors: {'; '.join(diffs)}")
    return configured


def _unet_to_ours(official: Mapping[str, Tensor], config: UNet3DConfig, what: str) -> dict[str, Tensor]:
    try:
        ours = official_to_ours(official, config)
    except ValueError as err:
        raise CheckpointError(f"{what}: {err}") from err
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in UNet3D(config).state_dict().items()}
    bad = [f"{k}: {tuple(v.shape)} vs expected {expected[k]}" for k, v in ours.items() if tuple(v.shape) != expected[k]]
    if bad:
        raise CheckpointError(f"{what}: {len(bad)} shape mismatches {bad[:20]}")
    not_float = [k for k, v in official.items() if not v.is_floating_point()]
    if not_float:
        raise CheckpointError(f"{what}: non-floating tensors {list_keys(not_float)}")
    return {k: v if v.dtype == torch.float32 else v.float() for k, v in ours.items()}


def _vae_part(src: Mapping[str, Tensor], options: ImportOptions, what: str) -> tuple[dict, dict, dict, dict]:
    """(ddconfig, vae kwargs, diffusers state dict, official -> diffusers key map)."""
    try:
        if options.ddconfig is not None:
            ddconfig = dict(options.ddconfig)
            embed_dim = int(options.embed_dim if options.embed_dim is not None else ddconfig["z_channels"])
        else:
            ddconfig, embed_dim = infer_ddconfig(src)
        kwargs = vae_kwargs_from_ddconfig(ddconfig, embed_dim)
        if len(kwargs["ch_mult"]) - 1 != int(math.log2(LATENT_DOWNSAMPLE)):
            raise CheckpointError(f"{what}: ch_mult {list(kwargs['ch_mult'])} has {len(kwargs['ch_mult'])} levels; "
                                  f"codec directories hold 3-level VAEs (x{LATENT_DOWNSAMPLE} downsampling)")
        with torch.device("meta"):
            expected = {k: v.shape for k, v in AutoencoderKL(**vae_config(**kwargs)).state_dict().items()}
        return ddconfig, kwargs, convert_vae_state_dict(src, ddconfig, expected), official_vae_key_map(ddconfig)
    except CheckpointError:
        raise
    except (ValueError, NotImplementedError, KeyError) as err:
        raise CheckpointError(f"{what}: {err}") from err


def _vocoder_part(src: Mapping[str, Any], options: ImportOptions, what: str) -> tuple[dict, dict, dict]:
    """(official config, SpeechT5HifiGan state dict, official plain key -> transformers key map)."""
    try:
        plain, problems = to_plain_form(unwrap_hifigan_state_dict(src))
        if problems:
            raise CheckpointError(f"{what}: {problems[:20]}")
        config = dict(options.hifigan_config or infer_hifigan_config(plain, MUSICLDM_HIFIGAN_CONFIG))
        with torch.device("meta"):
            expected = {k: v.shape for k, v in SpeechT5HifiGan(hifigan_config(config)).state_dict().items()}
        return config, convert_hifigan_state_dict(plain, config, expected), official_hifigan_key_map(config)
    except CheckpointError:
        raise
    except (ValueError, NotImplementedError, KeyError) as err:
        raise CheckpointError(f"{what}: {err}") from err


def convert_state_dict(
    sd: Mapping[str, Tensor], options: ImportOptions = ImportOptions(), *, vae: Mapping[str, Any] | None = None,
    vocoder: Mapping[str, Any] | None = None, clap: Mapping[str, Any] | None = None, where: str = "checkpoint",
) -> ConvertedCheckpoint:
    """Map and check an MT-MusicLDM state dict (real or meta tensors); nothing is written.

    Args:
        sd: the Lightning `state_dict`.
        options: interpretation (see `ImportOptions`).
        vae / vocoder / clap: MusicLDM component checkpoints (loaded objects) replacing the embedded
            `first_stage_model.*` / `first_stage_model.vocoder.*` / `cond_stage_model.model.*` tensors.
        where: name of the source for messages.

    Raises:
        CheckpointError: 2-D checkpoint, unknown / missing keys (first 20), stem count, schedule mismatch, EMA
            requested but absent, CLAP / FiLM inconsistencies, shape mismatches.
    """
    from mtmusicldm.conditioning import ROBERTA_BASE_HPARAMS, extract_clap_state_dict

    parts = split_state_dict(sd, where)
    disp: dict[str, str] = {}
    config = _unet_config(parts.unet, options, where)
    unet = _unet_to_ours(parts.unet, config, f"{where}: raw UNet ({UNET_PREFIX}*)")
    disp |= {UNET_PREFIX + k: f"unet:{v}" for k, v in official_key_map(config).items()}
    report: dict[str, Any] = {"weights": "ema" if options.ema else "raw", "ema": None}
    if parts.ema:
        try:
            ema_official = ema_to_unet_state_dict(parts.ema, parts.unet)
        except ValueError as err:
            raise CheckpointError(f"{where}: {err}") from err
        ema = _unet_to_ours(ema_official, config, f"{where}: EMA UNet (model_ema.*)")
        target = "unet_ema:" if options.ema else "ignored:EMA weights (ema=False / --no-ema) "
        disp |= {ema_key(k): target + v for k, v in official_key_map(config).items()}
        report["ema"] = {k.split(".")[-1]: (None if v.is_meta else v.item()) for k, v in parts.ema_extra.items()}
    elif options.ema:
        raise CheckpointError(f"{where}: EMA weights requested but the checkpoint has no model_ema.* entries "
                              f"(trained without EMA?); pass --no-ema (ema=False) to import {UNET_PREFIX}*")
    disp |= {k: "info:EMA bookkeeping" for k in parts.ema_extra}
    schedule = DiffusionSchedule(num_timesteps=int(options.timesteps), beta_start=float(options.linear_start),
                                 beta_end=float(options.linear_end))
    report["schedule_max_abs_diff"] = check_schedule(parts.top, schedule, where)
    disp |= {k: "checked:schedule buffer" for k in SCHEDULE_KEYS} | {"logvar": "ignored:logvar (not learned)"}
    scale_factor = read_scale_factor(parts.top, where)
    disp["scale_factor"] = "config:scale_factor"
    disp |= {k: "ignored:VAE training loss (LPIPS, discriminator)" for k in parts.loss_keys}

    if vae is None and not parts.vae:
        raise CheckpointError(f"{where}: no {VAE_PREFIX}* VAE weights; pass --vae-ckpt vae-ckpt.ckpt")
    vae_src = parts.vae if vae is None else unwrap_vae_state_dict(vae)
    vae_what = f"{where}: VAE" if vae is None else "--vae-ckpt"
    ddconfig, vae_kwargs, vae_sd, vae_map = _vae_part(vae_src, options, vae_what)
    local = vae is None
    disp |= {VAE_PREFIX + k: (f"vae:{vae_map[k]}" if local and k in vae_map else "ignored:replaced by --vae-ckpt")
             for k in parts.vae}
    if vocoder is None and not parts.vocoder:
        raise CheckpointError(f"{where}: no {VOCODER_PREFIX}* vocoder weights; pass --hifigan-ckpt hifigan-ckpt.ckpt")
    voc_config, voc_sd, voc_map = _vocoder_part(parts.vocoder if vocoder is None else vocoder, options,
                                                f"{where}: HiFi-GAN" if vocoder is None else "--hifigan-ckpt")
    disp |= {VOCODER_PREFIX + k: (f"vocoder:{voc_map[k]}" if vocoder is None else "ignored:replaced by --hifigan-ckpt")
             for k in parts.vocoder}

    clap_sd = extract_clap_state_dict(clap) if clap is not None else (parts.clap or None)
    disp |= {CLAP_PREFIX + k: (f"clap:{k}" if clap is None else "ignored:replaced by --clap-ckpt") for k in parts.clap}
    if config.film_dim is None and clap_sd is not None:
        raise CheckpointError(f"{where}: CLAP weights ({'--clap-ckpt' if clap is not None else CLAP_PREFIX + '*'}) "
                              "but the UNet is unconditional (no film_emb)")
    if config.film_dim is not None and clap_sd is None:
        raise CheckpointError(f"{where}: the UNet is CLAP-conditioned (film_emb) but the checkpoint has no "
                              f"{CLAP_PREFIX}* weights; pass --clap-ckpt clap-ckpt.pt")
    amodel = overrides = None
    if clap_sd is not None:
        amodel = options.clap_amodel or infer_clap_amodel(clap_sd)
        overrides = infer_clap_text_overrides(clap_sd, ROBERTA_BASE_HPARAMS)
    report |= {"unet_config_from": "config" if options.unet_params is not None else "tensor shapes",
               "ddconfig": ddconfig, "loss_keys_ignored": len(parts.loss_keys)}
    return ConvertedCheckpoint(
        unet_config=config, unet=unet, unet_ema=ema if options.ema else unet, weights=report["weights"],
        vae_kwargs=vae_kwargs, vae=vae_sd, hifigan_config=voc_config, vocoder=voc_sd, clap=clap_sd,
        clap_amodel=amodel, clap_text_overrides=overrides or {}, scale_factor=scale_factor, dispositions=disp,
        report=report,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Building and writing


def build_codec(vae_kwargs: Mapping[str, Any], vae: Mapping[str, Tensor], hifigan: Mapping[str, Any],
                vocoder: Mapping[str, Tensor]) -> tuple[AutoencoderKL, HifiGanVocoder]:
    """Assemble the diffusers VAE and the HiFi-GAN vocoder from converted state dicts (eval mode, float32)."""
    with torch.device("meta"):
        vae_model = AutoencoderKL(**vae_config(**vae_kwargs))
        voc_model = SpeechT5HifiGan(hifigan_config(hifigan))
    assign_state_dict(vae_model, vae, "VAE")
    assign_state_dict(voc_model, vocoder, "HiFi-GAN")
    return vae_model.eval(), HifiGanVocoder(voc_model.eval()).eval()


def clap_uncond_embedding(clap: Mapping[str, Tensor], amodel: str, text_overrides: Mapping[str, Any]) -> list[float]:
    """Build CLAP from `clap` (strict load: validates every tensor) and return the embedding of "" (512 floats)."""
    from mtmusicldm.conditioning import ClapConditioner, roberta_base_config

    text_config = roberta_base_config(**text_overrides) if text_overrides else None
    conditioner = ClapConditioner.from_state_dict(clap, amodel=amodel, text_config=text_config)
    return [float(v) for v in conditioner.uncond_embedding(1)[0]]


def _read(path: Path, what: str, trust: bool) -> tuple[Any, dict[str, Any]]:
    obj, loader = read_checkpoint_file(Path(path), trust=trust, what=what)
    return obj, {"path": str(path), "size_bytes": Path(path).stat().st_size, "loader": loader}


def import_official(
    checkpoint: Path, out: Path, options: ImportOptions = ImportOptions(), *, vae_ckpt: Path | None = None,
    hifigan_ckpt: Path | None = None, clap_ckpt: Path | None = None,
    extra_files: Mapping[str, str | bytes] | None = None, log: Callable[[str], None] = lambda _: None,
) -> Path:
    """Convert an MT-MusicLDM Lightning checkpoint into a model directory (written atomically).

    Args:
        checkpoint: the `.ckpt` file (memory-mapped; the UNet tensors are streamed into the weight files).
        out: the model directory (replaced as a whole); loadable by `MTMusicLDM.from_pretrained(out)`.
        options: see `ImportOptions`.
        vae_ckpt / hifigan_ckpt / clap_ckpt: MusicLDM component checkpoints replacing the embedded tensors.
        extra_files: more files for the model directory (e.g. the official YAML), name -> content.
        log: progress messages.

    Raises:
        FileNotFoundError / CheckpointError: see `read_checkpoint_file` and `convert_state_dict`.
    """
    checkpoint = Path(checkpoint)
    obj, source = _read(checkpoint, "MT-MusicLDM checkpoint", options.trust_checkpoint)
    sd, lightning = lightning_state_dict(obj, str(checkpoint))
    components = {name: _read(p, f"--{name}", options.trust_checkpoint) if p is not None else (None, None)
                  for name, p in (("vae-ckpt", vae_ckpt), ("hifigan-ckpt", hifigan_ckpt), ("clap-ckpt", clap_ckpt))}
    log(f"read {checkpoint} ({source['size_bytes'] / 1e9:.2f} GB, {len(sd)} tensors, loader {source['loader']})")
    conv = convert_state_dict(sd, options, vae=components["vae-ckpt"][0], vocoder=components["hifigan-ckpt"][0],
                              clap=components["clap-ckpt"][0], where=str(checkpoint))
    vae, vocoder = build_codec(conv.vae_kwargs, conv.vae, conv.hifigan_config, conv.vocoder)
    uncond = None
    if conv.clap is not None and options.compute_uncond:
        log(f"building CLAP ({conv.clap_amodel}) to compute the unconditional embedding")
        uncond = clap_uncond_embedding(conv.clap, conv.clap_amodel or "HTSAT-base", conv.clap_text_overrides)
    stems = tuple(options.stems)
    latent_shape = [len(stems), int(conv.vae_kwargs["z_channels"]), options.segment_samples // HOP // LATENT_DOWNSAMPLE,
                    N_MELS // LATENT_DOWNSAMPLE]
    conditioning = None if conv.clap is None else {
        "clap": "pretrained", "amodel": conv.clap_amodel, "checkpoint": CLAP_FILE, "text_model": options.text_model,
        "seed": 0}
    config = make_model_config(
        stems=stems, unet=conv.unet_config, timesteps=int(options.timesteps), beta_start=float(options.linear_start),
        beta_end=float(options.linear_end), scale_factor=float(conv.scale_factor or 1.0), latent_shape=latent_shape,
        segment_samples=options.segment_samples, sample_rate=options.sample_rate, conditioning=conditioning,
        uncond_clap=uncond, trained_steps=int(lightning.get("global_step", 0)), source=f"official:{checkpoint.name}",
        recommended_sampler=OFFICIAL_SAMPLER,
    )  # fmt: skip
    info = {
        "format": "mtmusicldm-import", "version": 1, "checkpoint": source, "lightning": lightning,
        "components": {k: v[1] for k, v in components.items() if v[1] is not None},
        "scale_factor": conv.scale_factor, "clap": None if conv.clap is None else {
            "source": "--clap-ckpt" if clap_ckpt is not None else CLAP_PREFIX + "*", "amodel": conv.clap_amodel,
            "text_config_overrides": conv.clap_text_overrides, "tensors": len(conv.clap)},
        **conv.report,
    }  # fmt: skip
    files = {IMPORT_FILE: json.dumps(info, indent=2, sort_keys=True, default=str) + "\n", **(extra_files or {})}
    codec_source = {"vae": components["vae-ckpt"][1] or f"{checkpoint.name}:{VAE_PREFIX}*",
                    "vocoder": components["hifigan-ckpt"][1] or f"{checkpoint.name}:{VOCODER_PREFIX}*"}
    codec = Codec(vae=vae, vocoder=vocoder, latent_channels=int(conv.vae_kwargs["z_channels"]),
                  info={"kind": "official", "source": codec_source})
    with torch.device("meta"):  # the converted tensors are assigned, not copied
        unet = UNet3D(conv.unet_config)
    unet.load_state_dict(conv.unet_ema, assign=True)
    log(f"writing UNet weights ({conv.weights} for sampling) to {out}")
    MTMusicLDM(unet, config, codec=codec).save_pretrained(out, raw_unet=conv.unet, clap_weights=conv.clap,
                                                          extra_files=files)
    log(f"done: {out}")
    return Path(out)


def import_codec(
    out: Path, vae_ckpt: Path, hifigan_ckpt: Path, *, ddconfig: Mapping[str, Any] | None = None,
    embed_dim: int | None = None, hifigan: Mapping[str, Any] | None = None, trust_checkpoint: bool = False,
) -> Path:
    """MusicLDM's `vae-ckpt.ckpt` + `hifigan-ckpt.ckpt` (Zenodo 10643148) -> a codec directory `out` (atomic).

    The VAE file is a Lightning checkpoint (`state_dict` with encoder/decoder/quant keys, `loss.*` ignored), the
    HiFi-GAN file holds `generator` (weight-norm form) or plain weights. `ddconfig` / `embed_dim` / `hifigan` default
    to the tensor shapes / MusicLDM's config; `trust_checkpoint` allows a full unpickle.

    Raises:
        FileNotFoundError / CheckpointError: unreadable files or unexpected layouts (keys named).
    """
    options = ImportOptions(ddconfig=ddconfig, embed_dim=embed_dim, hifigan_config=hifigan)
    vae_obj, vae_src = _read(vae_ckpt, "--vae-ckpt", trust_checkpoint)
    voc_obj, voc_src = _read(hifigan_ckpt, "--hifigan-ckpt", trust_checkpoint)
    if not isinstance(vae_obj, Mapping) or not isinstance(voc_obj, Mapping):
        raise CheckpointError("--vae-ckpt / --hifigan-ckpt must hold a dict (Lightning checkpoint or state dict)")
    _, kwargs, vae_sd, _ = _vae_part(unwrap_vae_state_dict(vae_obj), options, f"--vae-ckpt {vae_ckpt}")
    voc_config, voc_sd, _ = _vocoder_part(voc_obj, options, f"--hifigan-ckpt {hifigan_ckpt}")
    vae, vocoder = build_codec(kwargs, vae_sd, voc_config, voc_sd)
    save_codec(Path(out), vae, vocoder, kind="official", source={"vae": vae_src, "vocoder": voc_src})
    return Path(out)

