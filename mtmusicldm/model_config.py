"""`config.json` of a model directory (docs/formats.md): building it and checking it.

It describes everything needed to sample: the UNet, the noise schedule, the latent scale and shape, the frame
geometry, the codec directory (`codec/` inside the model directory; older directories may point elsewhere, relative
to the model directory), the CLAP conditioning and the sampler the model is best used with. `geometry`,
`recommended_sampler` and `diffusion.prediction` were added later: a file without them reads as the only geometry
there has been (`mtmusicldm.geometry.GEOMETRY`), the official sampler (DDIM with 200 steps) and an eps-prediction
UNet.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mtmusicldm.diffusion.denoiser import PREDICTIONS
from mtmusicldm.diffusion.samplers import SAMPLERS
from mtmusicldm.geometry import GEOMETRY, FrameGeometry
from mtmusicldm.models.unet3d import UNet3DConfig

LDM_FORMAT = "mtmusicldm-ldm"
LDM_VERSION = 1
CONFIG_KEYS = ("format", "version", "stems", "unet", "diffusion", "scale_factor", "latent_shape", "segment_samples",
               "sample_rate", "codec", "conditioning", "uncond_clap", "trained_steps", "source")
OPTIONAL_KEYS = ("geometry", "recommended_sampler")
"""Keys added after version 1 was first written (absent from older model directories)."""
CODEC_SUBDIR = "codec"
"""Where a model directory keeps its codec (`config.json` `codec`)."""
CLAP_FILE = "clap.safetensors"
"""Where a model directory keeps the weights of a `pretrained` CLAP conditioning (`conditioning.checkpoint`)."""


@dataclass(frozen=True)
class RecommendedSampler:
    """The sampler (a key of `SAMPLERS`) and step count a model is best used with (the CLI and studio default).

    Raises:
        ValueError: unknown sampler or steps < 1.
    """

    name: str
    steps: int

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"recommended_sampler: unknown sampler {self.name!r}; known: {sorted(SAMPLERS)}")
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ValueError(f"recommended_sampler: steps must be an integer >= 1, got {self.steps!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "recommended_sampler") -> RecommendedSampler:
        """Inverse of `to_dict`; None (an older model directory) is `OFFICIAL_SAMPLER`."""
        if d is None:
            return OFFICIAL_SAMPLER
        if not isinstance(d, Mapping) or set(d) != {"name", "steps"}:
            raise ValueError(f"{where}: expected {{name, steps}}, got {d!r}")
        return cls(name=d["name"], steps=d["steps"])


OFFICIAL_SAMPLER = RecommendedSampler("ddim", 200)
"""The paper's sampler (official spec 7): the default of models that recommend none."""


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
                      beta_end: float, prediction: str = "eps", scale_factor: float, latent_shape: Sequence[int], segment_samples: int,
                      sample_rate: int, conditioning: Mapping[str, Any] | None, uncond_clap: Sequence[float] | None,
                      trained_steps: int, source: str, recommended_sampler: RecommendedSampler,
                      geometry: FrameGeometry = GEOMETRY) -> dict[str, Any]:
    """Assemble a `config.json` mapping (docs/formats.md); the codec lives in `codec/` (`save_pretrained`).

    Args:
        latent_shape: [S, C, T', F'] of one item.
        conditioning: `{clap, amodel, checkpoint, text_model, seed}` or None for an unconditional model.
        uncond_clap: CLAP embedding of "" [512] or None.
        source: provenance, e.g. "train" or "official:<checkpoint name>".
        recommended_sampler: what the CLI and the studio sample with by default.
        geometry: the frame geometry of the latents.
    """
    config = {
        "format": LDM_FORMAT, "version": LDM_VERSION, "stems": list(stems), "unet": unet_config_to_dict(unet),
        "diffusion": {"timesteps": timesteps, "beta_start": beta_start, "beta_end": beta_end,
                      "prediction": prediction},
        "scale_factor": float(scale_factor), "latent_shape": [int(v) for v in latent_shape],
        "segment_samples": int(segment_samples), "sample_rate": int(sample_rate), "codec": CODEC_SUBDIR,
        "conditioning": None if conditioning is None else dict(conditioning),
        "uncond_clap": None if uncond_clap is None else [float(v) for v in uncond_clap],
        "trained_steps": int(trained_steps), "source": source, "geometry": geometry.to_dict(),
        "recommended_sampler": recommended_sampler.to_dict(),
    }  # fmt: skip
    validate_model_config(config)
    return config


def _optional(config: Mapping[str, Any], key: str) -> Any:
    """An `OPTIONAL_KEYS` entry of `config`, None when the file predates it."""
    return config[key] if key in config else None


def config_geometry(config: Mapping[str, Any], where: str = "config.json") -> FrameGeometry:
    """The frame geometry of a model config (`GEOMETRY` for files that predate the key)."""
    return FrameGeometry.from_dict(_optional(config, "geometry"), f"{where}: geometry")


def config_prediction(config: Mapping[str, Any], where: str = "config.json") -> str:
    """What the model's UNet predicts (`diffusion.prediction`; "eps" for files that predate the key)."""
    prediction = config["diffusion"].get("prediction", "eps")
    if prediction not in PREDICTIONS:
        raise ValueError(f"{where}: diffusion.prediction must be one of {list(PREDICTIONS)}, got {prediction!r}")
    return str(prediction)


def config_sampler(config: Mapping[str, Any], where: str = "config.json") -> RecommendedSampler:
    """The recommended sampler of a model config (`OFFICIAL_SAMPLER` for files that predate the key)."""
    return RecommendedSampler.from_dict(_optional(config, "recommended_sampler"), f"{where}: recommended_sampler")


def validate_model_config(config: Mapping[str, Any], where: str = "config.json") -> UNet3DConfig:
    """Check keys, format and version, and the consistency of stems / latent shape / FiLM / geometry; returns the
    UNet config.

    Raises:
        ValueError: naming the problem.
    """
    unknown = sorted(set(config) - set(CONFIG_KEYS) - set(OPTIONAL_KEYS))
    missing = [k for k in CONFIG_KEYS if k not in config]
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
    geometry = config_geometry(config, where)
    expected = (geometry.sample_rate, geometry.segment_samples(int(config["latent_shape"][2])))
    if (config["sample_rate"], config["segment_samples"]) != expected:
        raise ValueError(f"{where}: sample_rate {config['sample_rate']} / segment_samples {config['segment_samples']} "
                         f"disagree with the geometry {geometry.to_dict()} and latent_shape (expected {expected})")
    config_sampler(config, where)
    config_prediction(config, where)
    return unet
