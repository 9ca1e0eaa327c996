"""`MTMusicLDM`: a trained (or imported) model in one object, and its self-contained directory (docs/formats.md).

A model directory holds `config.json` (`mtmusicldm.model_config`), `unet_ema.safetensors` (the weights sampling
uses: EMA, or the raw ones of an import with `--no-ema`), `unet.safetensors` (the raw weights, when known),
`codec/` (the VAE and vocoder: a codec directory) and, for a `pretrained` CLAP conditioning, `clap.safetensors`.
Everything is safetensors or JSON (no pickle), and nothing points outside the directory, so a copy loads anywhere
(older directories may point at their codec and CLAP weights elsewhere: they still load). `from_pretrained`
loads the UNet at once and the codec and CLAP on first use; `save_pretrained` writes the directory atomically;
`load_model` is the one loading path of the CLI, the studio and the sample stage.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mtmusicldm.audio import load_audio
from mtmusicldm.codec.codec_dir import Codec, load_codec, write_codec
from mtmusicldm.codec.latents import LatentScale
from mtmusicldm.conditioning import ClapConditioner, extract_clap_state_dict, read_checkpoint
from mtmusicldm.diffusion.denoiser import as_eps_model
from mtmusicldm.diffusion.schedules import DiffusionSchedule
from mtmusicldm.geometry import FrameGeometry
from mtmusicldm.model_config import (
    config_prediction,
    CLAP_FILE,
    CODEC_SUBDIR,
    RecommendedSampler,
    config_geometry,
    config_sampler,
    validate_model_config,
)
from mtmusicldm.models.unet3d import UNet3D, UNet3DConfig
from mtmusicldm.utils.fs import atomic_dir

WEIGHT_FILES = {True: "unet_ema.safetensors", False: "unet.safetensors"}
"""Weight file of the sampling (EMA) and of the raw UNet."""


def _state(x: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    sd = x.state_dict() if isinstance(x, nn.Module) else x
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}


def _reference_shapes(config: UNet3DConfig) -> dict[str, torch.Size]:
    """Parameter shapes of a UNet of `config` (built on the meta device: no memory)."""
    with torch.device("meta"):
        return {k: v.shape for k, v in UNet3D(config).state_dict().items()}


def _check_weights(sd: Mapping[str, Tensor], reference: Mapping[str, torch.Size], where: str) -> None:
    """Raise ValueError naming missing, unexpected and wrongly shaped keys."""
    missing = sorted(reference.keys() - sd.keys())
    unexpected = sorted(sd.keys() - reference.keys())
    shapes = [f"{k}: {list(sd[k].shape)} vs config {list(reference[k])}"
              for k in sorted(sd.keys() & reference.keys()) if sd[k].shape != reference[k]]
    if missing or unexpected or shapes:
        raise ValueError(f"{where} does not match the UNet in config.json: missing {missing[:10]}"
                         f"{' ...' if len(missing) > 10 else ''}, unexpected {unexpected[:10]}"
                         f"{' ...' if len(unexpected) > 10 else ''}, shape mismatches {shapes[:10]}")


class MTMusicLDM:
    """A trained (or imported) MT-MusicLDM: UNet + schedule + latent scale, with a lazy codec and CLAP.

    Attributes:
        unet: the UNet3D (eval mode, EMA weights by default).
        config: the parsed config.json.
        path: the model directory (None for a model built in memory).
    """

    def __init__(self, unet: UNet3D, config: Mapping[str, Any], path: Path | None = None, *,
                 codec: Codec | None = None) -> None:
        self.unet = unet.eval()
        self.config = dict(config)
        self.path = path
        self._codec = codec
        self._clap: Any = None

    @classmethod
    def from_pretrained(cls, path: Path | str, *, ema: bool = True, device: str | torch.device = "cpu",
                        lazy: bool = True) -> MTMusicLDM:
        """Load a model directory.

        Args:
            path: the directory (config.json + weights).
            ema: load the sampling weights (EMA) rather than the raw ones.
            device: where the model goes.
            lazy: load the codec on first use; False loads it now (a broken codec fails here).

        Raises:
            FileNotFoundError: missing directory, config.json or weight file.
            ValueError: wrong format/version, inconsistent config, a frame geometry this code does not support,
                weights not matching the config (keys named).
        """
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"model directory {path} does not exist (train one, or import the official "
                                    "checkpoint with `mtmusicldm import-official`)")
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{cfg_path} not found: {path} is not an MT-MusicLDM model directory")
        config = json.loads(cfg_path.read_text())
        unet_config = validate_model_config(config, str(cfg_path))
        config_geometry(config, str(cfg_path)).check_supported(str(cfg_path))
        weights = path / WEIGHT_FILES[ema]
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} not found")
        unet = UNet3D(unet_config)
        sd = load_file(str(weights))
        _check_weights(sd, _reference_shapes(unet_config), str(weights))
        unet.load_state_dict(sd)
        model = cls(unet.to(device), config, path)
        if not lazy:
            _ = model.codec  # loaded now, onto `device`
        return model

    # ---- model facts

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def scale_factor(self) -> float:
        return float(self.config["scale_factor"])

    @property
    def latent_scale(self) -> LatentScale:
        """`z_model = z_vae * scale_factor` (official `scale_factor`)."""
        return LatentScale(self.scale_factor)

    @property
    def stems(self) -> tuple[str, ...]:
        return tuple(self.config["stems"])

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """[S, C, T', F'] of one item."""
        return tuple(int(v) for v in self.config["latent_shape"])  # type: ignore[return-value]

    @property
    def sample_rate(self) -> int:
        return int(self.config["sample_rate"])

    @property
    def geometry(self) -> FrameGeometry:
        return config_geometry(self.config)

    @property
    def recommended_sampler(self) -> RecommendedSampler:
        """What the CLI and the studio sample with by default (DDIM-200 for models that recommend none)."""
        return config_sampler(self.config)

    @property
    def prediction(self) -> str:
        """What the UNet predicts: "eps" (official) or "v"."""
        return config_prediction(self.config)

    @property
    def eps_model(self) -> Any:
        """The UNet as an eps model (`unet(x_vp, t, film) -> eps`), whatever it predicts: what samplers run."""
        return as_eps_model(self.unet, self.prediction, self.schedule)

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
        """Move every part (UNet, the codec's VAE and a HiFi-GAN vocoder, CLAP) in place; returns self.

        Parts not loaded yet are loaded onto the UNet's device when first used.
        """
        self.unet.to(device)
        if self._codec is not None:
            self._codec.to(device)
        if self._clap is not None:
            self._clap.to(device)
        return self

    def with_unet(self, unet: UNet3D) -> MTMusicLDM:
        """The same model (config, codec, CLAP: shared, not reloaded) with another UNet of the same config."""
        other = MTMusicLDM(unet.to(self.device), self.config, self.path, codec=self._codec)
        other._clap = self._clap
        return other

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

    @property
    def codec(self) -> Codec:
        """The codec (VAE + vocoder), loaded on first access."""
        if self._codec is None:
            self._codec = load_codec(self.codec_dir, device=self.device)
        return self._codec

    @property
    def vae(self) -> Any:
        """The codec's VAE (loaded on first access)."""
        return self.codec.vae

    @property
    def vocoder(self) -> Any:
        """The codec's vocoder (loaded on first access)."""
        return self.codec.vocoder

    @property
    def clap(self) -> Any:
        """The CLAP conditioner (`mtmusicldm.conditioning.ClapConditioner`), or None for an unconditional model."""
        cond = self.config["conditioning"]
        if cond is None:
            return None
        if self._clap is None:
            self._clap = _load_clap(cond, self.device, self.path)
        return self._clap

    # ---- conditioning

    def embed_condition(self, *, prompt: str | None = None,
                        reference: str | Path | Tensor | np.ndarray | None = None) -> Tensor | None:
        """The CLAP embedding ``[D]`` of a text prompt or of a reference clip, or None when neither is given.

        Args:
            prompt: text.
            reference: an audio file (any format, rate, channels, length) or a mono waveform ``[n]`` at the
                model's rate; long clips are embedded in 10 s windows and averaged (`embed_audio_long`).

        Raises:
            ValueError: both given, or a prompt / reference for an unconditional model.
            mtmusicldm.audio.AudioError: an unreadable reference file (a ValueError naming it).
        """
        if prompt is not None and reference is not None:
            raise ValueError("give a text prompt or a reference clip, not both")
        if prompt is None and reference is None:
            return None
        if self.film_dim is None:
            raise ValueError("the model is unconditional: it takes no text prompt or reference clip")
        if prompt is not None:
            return self.clap.embed_text([prompt])[0]
        if isinstance(reference, (str, Path)):
            reference = load_audio(reference, self.sample_rate)
        wav = torch.as_tensor(np.asarray(reference), dtype=torch.float32)
        return self.clap.embed_audio_long(wav[None])[0]

    # ---- saving

    def save_pretrained(self, out: Path | str, *, raw_unet: nn.Module | Mapping[str, Tensor] | None = None,
                        clap_weights: Mapping[str, Tensor] | None = None,
                        extra_files: Mapping[str, Path | str | bytes] | None = None) -> Path:
        """Write a self-contained model directory atomically (see the module docstring).

        Args:
            out: the model directory (replaced as a whole).
            raw_unet: the raw (non-EMA) UNet, module or state dict, written as `unet.safetensors`.
            clap_weights: the CLAP tensors of a `pretrained` conditioning (default: read from the checkpoint its
                `conditioning.checkpoint` names).
            extra_files: file name -> source path, text or bytes (params.yaml, loss.csv, import.json, ...).

        Raises:
            ValueError: weights not matching the config, or a reserved / nested extra file name.
        """
        config = self.config | {"codec": CODEC_SUBDIR}
        cond = config["conditioning"]
        clap = None
        if cond is not None and cond["clap"] == "pretrained":
            clap = _state(clap_weights if clap_weights is not None else _read_clap(_clap_path(cond, self.path)))
            config["conditioning"] = cond | {"checkpoint": CLAP_FILE}
        reference = _reference_shapes(validate_model_config(config))
        weights = {WEIGHT_FILES[True]: _state(self.unet)}
        if raw_unet is not None:
            weights[WEIGHT_FILES[False]] = _state(raw_unet)
        for name, sd in weights.items():
            _check_weights(sd, reference, name)
        reserved = {"config.json", *WEIGHT_FILES.values(), CODEC_SUBDIR, CLAP_FILE}
        bad = [n for n in (extra_files or {}) if n in reserved or "/" in n]
        if bad:
            raise ValueError(f"extra file names {bad} are reserved or not plain file names")
        codec = self.codec
        with atomic_dir(Path(out)) as tmp:
            (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            for name, sd in weights.items():
                save_file(sd, str(tmp / name))
            (tmp / CODEC_SUBDIR).mkdir()
            write_codec(tmp / CODEC_SUBDIR, codec.vae, codec.vocoder, kind=codec.info["kind"],
                        source=codec.info["source"])
            if clap is not None:
                save_file(clap, str(tmp / CLAP_FILE))
            for name, content in (extra_files or {}).items():
                if isinstance(content, Path):
                    content = content.read_bytes()
                (tmp / name).write_bytes(content.encode() if isinstance(content, str) else content)
        return Path(out)


def load_model(path: Path | str, device: str | None = None) -> MTMusicLDM:
    """The one loading path of the CLI, the studio and the sample stage.

    `from_pretrained` on `device` (None: cuda if available, else cpu) with the codec loaded now, so a broken model
    directory fails at start rather than at the first generation.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return MTMusicLDM.from_pretrained(path, device=device, lazy=False)


# ----------------------------------------------------------------------------------------------------------------
# CLAP weights


def _clap_path(cond: Mapping[str, Any], base: Path | None) -> Path:
    """The checkpoint of a `pretrained` conditioning: relative to the model directory if it is there, else as given."""
    ckpt = Path(cond["checkpoint"])
    if not ckpt.is_absolute() and base is not None and (base / ckpt).is_file():
        ckpt = base / ckpt
    if not ckpt.is_file():
        raise FileNotFoundError(f"CLAP checkpoint {ckpt} (config.json conditioning.checkpoint) not found")
    return ckpt


def _read_clap(path: Path) -> dict[str, Tensor]:
    """CLAP tensors of a safetensors file or of a `torch.load` checkpoint (safe unpickler only)."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return extract_clap_state_dict(read_checkpoint(path))


def _load_clap(cond: Mapping[str, Any], device: torch.device, base: Path | None) -> Any:
    """Build the CLAP conditioner described by config.json's conditioning section."""
    text_dir = Path(cond["text_model"]) if cond["text_model"] is not None else None
    if cond["clap"] == "pretrained":
        return ClapConditioner.from_state_dict(_read_clap(_clap_path(cond, base)), amodel=cond["amodel"],
                                               text_model_dir=text_dir, device=device)
    if cond["clap"] == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(cond["seed"]))
            return ClapConditioner.build(cond["amodel"], text_model_dir=text_dir, device=device)
    raise ValueError(f"unknown conditioning.clap {cond['clap']!r} in config.json")
