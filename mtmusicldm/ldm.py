"""The trained model directory (`models/ldm/`, docs/formats.md) and `MTMusicLDM`, its one-call loader.

`config.json` describes everything needed to sample: the UNet, the noise schedule, the latent scale and shape,
the codec directory (VAE + vocoder, resolved relative to the model directory when relative) and the CLAP
conditioning. `unet_ema.safetensors` holds the EMA weights that sampling uses; `unet.safetensors` the raw ones.
The codec and CLAP are loaded lazily, on first access of `.vae` / `.vocoder` / `.clap`.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mtmusicldm.diffusion.schedules import DiffusionSchedule
from mtmusicldm.models.unet3d import UNet3D, UNet3DConfig
from mtmusicldm.utils.fs import atomic_dir

LDM_FORMAT = "mtmusicldm-ldm"
LDM_VERSION = 1
CONFIG_KEYS = ("format", "version", "stems", "unet", "diffusion", "scale_factor", "latent_shape", "segment_samples",
               "sample_rate", "codec", "conditioning", "uncond_clap", "trained_steps", "source")
WEIGHT_FILES = {True: "unet_ema.safetensors", False: "unet.safetensors"}


# ----------------------------------------------------------------------------------------------------------------
# config.json


def unet_config_to_dict(config: UNet3DConfig) -> dict[str, Any]:
    """JSON form of a UNet config (gradient checkpointing, a training-time switch, is stored off)."""
    d = dataclasses.asdict(config)
    d["use_checkpoint"] = False
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def unet_config_from_dict(d: Mapping[str, Any], where: str = "config.json") -> UNet3DConfig:
    """Strict inverse of `unet_config_to_dict` (unknown or missing fields raise ValueError)."""
    fields = {f.name for f in dataclasses.fields(UNet3DConfig)}
    unknown, missing = sorted(set(d) - fields), sorted(fields - set(d))
    if unknown or missing:
        raise ValueError(f"{where}: unet section has unknown fields {unknown} / missing fields {missing}")
    return UNet3DConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def make_model_config(*, stems: Sequence[str], unet: UNet3DConfig, timesteps: int, beta_start: float,
                      beta_end: float, scale_factor: float, latent_shape: Sequence[int], segment_samples: int,
                      sample_rate: int, codec: str | None, conditioning: Mapping[str, Any] | None,
                      uncond_clap: Sequence[float] | None, trained_steps: int, source: str) -> dict[str, Any]:
    """Assemble a `config.json` mapping (docs/formats.md).

    Args:
        latent_shape: [S, C, T', F'] of one item.
        codec: codec dir, relative to the model dir or absolute; None when unknown.
        conditioning: `{clap, amodel, checkpoint, text_model, seed}` or None for an unconditional model.
        uncond_clap: CLAP embedding of "" [512] or None.
        source: provenance, e.g. "train" or "official:<checkpoint name>".
    """
    config = {
        "format": LDM_FORMAT, "version": LDM_VERSION, "stems": list(stems), "unet": unet_config_to_dict(unet),
        "diffusion": {"timesteps": timesteps, "beta_start": beta_start, "beta_end": beta_end},
        "scale_factor": float(scale_factor), "latent_shape": [int(v) for v in latent_shape],
        "segment_samples": int(segment_samples), "sample_rate": int(sample_rate), "codec": codec,
        "conditioning": None if conditioning is None else dict(conditioning),
        "uncond_clap": None if uncond_clap is None else [float(v) for v in uncond_clap],
        "trained_steps": int(trained_steps), "source": source,
    }
    validate_model_config(config)
    return config


def validate_model_config(config: Mapping[str, Any], where: str = "config.json") -> UNet3DConfig:
    """Check keys, format and version, and the consistency of stems / latent shape / FiLM; returns the UNet config.

    Raises:
        ValueError: naming the problem.
    """
    unknown, missing = sorted(set(config) - set(CONFIG_KEYS)), [k for k in CONFIG_KEYS if k not in config]
    if missing or unknown:
        raise ValueError(f"{where}: missing keys {missing}, unknown keys {unknown}")
    if config["format"] != LDM_FORMAT or config["version"] != LDM_VERSION:
        raise ValueError(f"{where}: expected format {LDM_FORMAT!r} version {LDM_VERSION}, got "
                         f"{config['format']!r} version {config['version']!r}")
    unet = unet_config_from_dict(config["unet"], where)
    s = len(config["stems"])
    if len(config["latent_shape"]) != 4 or config["latent_shape"][0] != s or unet.in_stems != s:
        raise ValueError(f"{where}: stems ({s}), latent_shape {config['latent_shape']} and unet.in_stems "
                         f"({unet.in_stems}) disagree")
    if (config["conditioning"] is None) != (unet.film_dim is None):
        raise ValueError(f"{where}: conditioning is {config['conditioning']!r} but unet.film_dim is {unet.film_dim}")
    if config["uncond_clap"] is not None and unet.film_dim is not None and len(config["uncond_clap"]) != unet.film_dim:
        raise ValueError(f"{where}: uncond_clap has {len(config['uncond_clap'])} values, unet.film_dim is "
                         f"{unet.film_dim}")
    return unet


def _state(x: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    sd = x.state_dict() if isinstance(x, nn.Module) else x
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}


def save_model_dir(out: Path, unet: nn.Module | Mapping[str, Tensor], ema_unet: nn.Module | Mapping[str, Tensor],
                   config: Mapping[str, Any], extra_files: Mapping[str, Path | str | bytes] | None = None) -> Path:
    """Write a model directory atomically: config.json, unet.safetensors, unet_ema.safetensors, extra files.

    Args:
        out: the model directory (replaced as a whole).
        unet, ema_unet: raw and EMA UNets (modules or state dicts); both must match `config["unet"]`.
        config: a `make_model_config` mapping.
        extra_files: file name -> source path, text or bytes (params.yaml, loss.csv, loss.png, ...).
    """
    unet_config = validate_model_config(config)
    reference = UNet3D(unet_config).state_dict()
    weights = {"unet.safetensors": _state(unet), "unet_ema.safetensors": _state(ema_unet)}
    for name, sd in weights.items():
        _check_weights(sd, reference, name)
    with atomic_dir(Path(out)) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for name, sd in weights.items():
            save_file(sd, str(tmp / name))
        for name, content in (extra_files or {}).items():
            if name in ("config.json", *weights) or "/" in name:
                raise ValueError(f"extra file name {name!r} is reserved or not a plain file name")
            if isinstance(content, Path):
                content = content.read_bytes()
            (tmp / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return Path(out)


def _check_weights(sd: Mapping[str, Tensor], reference: Mapping[str, Tensor], where: str) -> None:
    """Raise ValueError naming missing, unexpected and wrongly shaped keys."""
    missing = sorted(reference.keys() - sd.keys())
    unexpected = sorted(sd.keys() - reference.keys())
    shapes = [f"{k}: {list(sd[k].shape)} vs config {list(reference[k].shape)}"
              for k in sorted(sd.keys() & reference.keys()) if sd[k].shape != reference[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{where} does not match the UNet in config.json: missing {missing[:10]}"
                         f"{' ...' if len(missing) > 10 else ''}, unexpected {unexpected[:10]}"
                         f"{' ...' if len(unexpected) > 10 else ''}, shape mismatches {shapes[:10]}")


# ----------------------------------------------------------------------------------------------------------------
# Loader


class MTMusicLDM:
    """A trained (or imported) MT-MusicLDM: UNet + schedule + latent scale, with lazy codec and CLAP.

    Attributes:
        unet: the UNet3D (eval mode, EMA weights by default).
        config: the parsed config.json.
        path: the model directory.
    """

    def __init__(self, unet: UNet3D, config: Mapping[str, Any], path: Path | None = None) -> None:
        self.unet = unet.eval()
        self.config = dict(config)
        self.path = path
        self._codec: Any = None
        self._clap: Any = None

    @classmethod
    def from_pretrained(cls, path: Path | str, *, ema: bool = True, device: str | torch.device = "cpu") -> MTMusicLDM:
        """Load a model directory.

        Args:
            path: the directory (config.json + weights).
            ema: load the EMA weights (sampling) rather than the raw ones.
            device: where the UNet goes.

        Raises:
            FileNotFoundError: missing directory, config.json or weight file.
            ValueError: wrong format/version, inconsistent config, weights not matching the config (keys named).
        """
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"model directory {path} does not exist (train or import a model first)")
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{cfg_path} not found: {path} is not an MT-MusicLDM model directory")
        config = json.loads(cfg_path.read_text())
        unet_config = validate_model_config(config, str(cfg_path))
        weights = path / WEIGHT_FILES[ema]
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} not found")
        unet = UNet3D(unet_config)
        sd = load_file(str(weights))
        _check_weights(sd, unet.state_dict(), str(weights))
        unet.load_state_dict(sd)
        return cls(unet.to(device), config, path)

    # ---- model facts

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def scale_factor(self) -> float:
        return float(self.config["scale_factor"])

    @property
    def stems(self) -> tuple[str, ...]:
        return tuple(self.config["stems"])

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """[S, C, T', F'] of one item."""
        return tuple(int(v) for v in self.config["latent_shape"])  # type: ignore[return-value]

    @property
    def film_dim(self) -> int | None:
        return self.unet.config.film_dim

    @property
    def schedule(self) -> DiffusionSchedule:
        d = self.config["diffusion"]
        return DiffusionSchedule(num_timesteps=int(d["timesteps"]), beta_start=float(d["beta_start"]),
                                 beta_end=float(d["beta_end"]))

    @property
    def uncond_clap(self) -> Tensor | None:
        """CLAP embedding of "" [512] on the UNet's device, or None."""
        u = self.config["uncond_clap"]
        return None if u is None else torch.tensor(u, dtype=torch.float32, device=self.device)

    def to(self, device: str | torch.device) -> MTMusicLDM:
        self.unet.to(device)
        return self

    # ---- lazy components

    @property
    def codec_dir(self) -> Path:
        """The codec directory (relative paths in config.json are relative to the model directory)."""
        codec = self.config["codec"]
        if codec is None:
            raise ValueError(f"{self.path}/config.json has codec: null; this model cannot decode latents "
                             "(set codec to the codec dir it was trained with)")
        p = Path(codec)
        if not p.is_absolute() and self.path is not None:
            p = self.path / p
        if not p.is_dir():
            raise FileNotFoundError(f"codec dir {p} (config.json codec: {codec!r}) does not exist")
        return p

    def _load_codec(self) -> Any:
        if self._codec is None:
            path = self.codec_dir
            try:
                module = importlib.import_module("mtmusicldm.codec.codec_dir")
            except ModuleNotFoundError as e:
                raise RuntimeError("mtmusicldm.codec.codec_dir.load_codec is not available in this install") from e
            self._codec = module.load_codec(path, device=self.device)
        return self._codec

    @property
    def vae(self) -> Any:
        """The codec's VAE (loaded on first access)."""
        return self._load_codec().vae

    @property
    def vocoder(self) -> Any:
        """The codec's vocoder (loaded on first access)."""
        return self._load_codec().vocoder

    @property
    def clap(self) -> Any:
        """The CLAP conditioner (`mtmusicldm.conditioning.ClapConditioner`), or None for an unconditional model."""
        cond = self.config["conditioning"]
        if cond is None:
            return None
        if self._clap is None:
            self._clap = _load_clap(cond, self.device, self.path)
        return self._clap


def _load_clap(cond: Mapping[str, Any], device: torch.device, base: Path | None) -> Any:
    """Build the CLAP conditioner described by config.json's conditioning section."""
    from mtmusicldm.conditioning import ClapConditioner

    text_dir = Path(cond["text_model"]) if cond["text_model"] is not None else None
    if cond["clap"] == "pretrained":
        ckpt = Path(cond["checkpoint"])
        if not ckpt.is_absolute() and base is not None and (base / ckpt).is_file():
            ckpt = base / ckpt
        if not ckpt.is_file():
            raise FileNotFoundError(f"CLAP checkpoint {ckpt} (config.json conditioning.checkpoint) not found")
        return ClapConditioner.from_checkpoint(ckpt, amodel=cond["amodel"], text_model_dir=text_dir, device=device)
    if cond["clap"] == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(cond["seed"]))
            return ClapConditioner.build(cond["amodel"], text_model_dir=text_dir, device=device)
    raise ValueError(f"unknown conditioning.clap {cond['clap']!r} in config.json")
