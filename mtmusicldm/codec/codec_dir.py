"""The latent codec as one object (`Codec`: VAE + vocoder) and its on-disk form `models/codec/` (docs/formats.md).

* `Codec` bundles the mel VAE and a vocoder behind the stacked-stem API used by every stage:
  audio `[B, S, n]` -> log-mel `[B, S, T, 64]` -> latents `[B, S, C, T/4, 16]` -> log-mel -> audio.
* `save_codec` / `load_codec` write and read a codec directory: `codec.json`, `vae/` (diffusers
  `save_pretrained`), `vocoder/` (transformers `save_pretrained`, HiFi-GAN only), optional `report.json`.

`mtmusicldm.codec.build.codec_from_params` builds a codec from the `codec` params section.

No method here switches grad mode: callers choose `torch.inference_mode()` (stages) or keep gradients (guidance).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from mtmusicldm.audio.mel import FMAX, FMIN, N_FFT, N_MELS, log_mel
from mtmusicldm.codec.latents import decode_stems, posterior_stems
from mtmusicldm.codec.pca import PatchPCAAutoencoder
from mtmusicldm.codec.vae import load_vae_pretrained
from mtmusicldm.codec.vocoder import (
    GriffinLimVocoder,
    HifiGanVocoder,
    Vocoder,
    load_vocoder_pretrained,
    vocode_stems,
)
from mtmusicldm.geometry import HOP, LATENT_DOWNSAMPLE, SAMPLE_RATE, FrameGeometry
from mtmusicldm.utils.fs import atomic_dir, sha256_file, write_json

CODEC_FORMAT = "mtmusicldm-codec"
CODEC_VERSION = 1

MEL_SPEC: dict[str, Any] = {
    "sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "win_length": N_FFT, "hop": HOP, "n_mels": N_MELS,
    "fmin": FMIN, "fmax": FMAX, "scale": "slaney", "log": "ln(max(mel, 1e-5))", "frames": "samples // hop",
}  # fmt: skip
"""The log-mel front-end the codec was trained on (`mtmusicldm.audio.mel`), recorded in codec.json."""


# ---------------------------------------------------------------------------------------------------------------
# The codec object


@dataclass
class Codec:
    """Mel VAE + vocoder over stacked stems.

    Attributes:
        vae: diffusers `AutoencoderKL` (1-channel log-mel images).
        vocoder: `GriffinLimVocoder` or `HifiGanVocoder` (log-mel `[N, T, 64]` -> wav `[N, T * 160]`).
        latent_channels: C of the latents.
        downsample: mel frames (and mel bins) per latent cell.
        sample_rate: audio rate in Hz.
        info: codec.json content (plus `path` when loaded from disk).
    """

    vae: AutoencoderKL
    vocoder: Vocoder
    latent_channels: int
    downsample: int = LATENT_DOWNSAMPLE
    sample_rate: int = SAMPLE_RATE
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def geometry(self) -> FrameGeometry:
        """The frame geometry of this codec's latents."""
        return FrameGeometry(sample_rate=self.sample_rate, hop=HOP, downsample=self.downsample)

    def latent_shape(self, n_samples: int, n_stems: int) -> tuple[int, int, int, int]:
        """`[S, C, T', F']` of one segment of `n_samples` audio samples."""
        return (n_stems, self.latent_channels, n_samples // HOP // self.downsample, N_MELS // self.downsample)

    def to(self, device: str | torch.device) -> Codec:
        """Move the VAE (and a HiFi-GAN) in place; returns self."""
        self.vae.to(device)
        if isinstance(self.vocoder, torch.nn.Module):
            self.vocoder.to(device)
        return self

    def audio_to_mel(self, wav: Tensor) -> Tensor:
        """Official log-mel with the official crop to `n // 160` frames.

        Args:
            wav: [B, S, n] 16 kHz stem waveforms.

        Returns:
            [B, S, n // 160, 64] log-mel on the VAE's device.
        """
        if wav.ndim != 3:
            raise ValueError(f"wav must be [B, S, n], got shape {tuple(wav.shape)}")
        device = next(self.vae.parameters()).device
        return log_mel(wav.to(device), target_frames=wav.shape[-1] // HOP)

    def posterior(self, mel: Tensor) -> tuple[Tensor, Tensor]:
        """Per-stem posterior (unscaled).

        Args:
            mel: [B, S, T, 64] log-mel, T divisible by 4.

        Returns:
            (mean, std), each [B, S, C, T/4, 16].
        """
        return posterior_stems(self.vae, mel)

    def encode_mel(self, mel: Tensor, *, sample: bool,
                   generator: torch.Generator | Sequence[torch.Generator] | None = None) -> Tensor:
        """Unscaled latents: a posterior draw (`sample=True`, official) or the posterior mean.

        Args:
            mel: [B, S, T, 64] log-mel.
            sample: draw `mean + std * eps` instead of returning the mean.
            generator: eps source: one generator for the batch, or one per batch item (item b's draw then does
                not depend on the batch it is in).

        Returns:
            z: [B, S, C, T/4, 16].
        """
        mean, std = self.posterior(mel)
        return sample_posterior(mean, std, generator) if sample else mean

    def decode_mel(self, z: Tensor) -> Tensor:
        """Unscaled latents [B, S, C, T', F'] -> log-mel [B, S, 4T', 4F']."""
        return decode_stems(self.vae, z)

    def mel_to_audio(self, mel: Tensor, n_samples: int | None = None) -> Tensor:
        """Vocode every stem.

        Args:
            mel: [B, S, T, 64] log-mel.
            n_samples: output length (crop or zero-pad); None -> T * 160.

        Returns:
            [B, S, n_samples] waveforms on `mel.device`.
        """
        wav = vocode_stems(self.vocoder, mel)
        if n_samples is None:
            return wav
        if wav.shape[-1] >= n_samples:
            return wav[..., :n_samples]
        return torch.nn.functional.pad(wav, (0, n_samples - wav.shape[-1]))


def sample_posterior(mean: Tensor, std: Tensor,
                     generator: torch.Generator | Sequence[torch.Generator] | None) -> Tensor:
    """`mean + std * eps`, eps ~ N(0, 1) drawn in float32 on the CPU (device-independent values).

    Not diffusers' `DiagonalGaussianDistribution.sample`: that takes moments `[N, 2C, T', F']` (mean | logvar) and
    draws in their dtype, while this draws stacked `[B, S, C, T', F']` (mean, std), as the encode stage stores them,
    with one generator per item b for all its stems, in float32 whatever the model's dtype. The per-item draws are
    diffusers' `randn_tensor` (item b's noise comes from generator b alone, whatever the batch).

    Args:
        mean, std: [B, ...] posterior parameters.
        generator: one generator for the whole batch, one per item (a sequence of B), or None (global RNG).

    Returns:
        [B, ...] draw, dtype/device of `mean`.
    """
    if isinstance(generator, Sequence):
        if len(generator) != mean.shape[0]:  # randn_tensor would ignore extra generators
            raise ValueError(f"got {len(generator)} generators for a batch of {mean.shape[0]}")
        generator = list(generator)
    eps = randn_tensor(tuple(mean.shape), generator=generator, device=torch.device("cpu"), dtype=torch.float32)
    return mean + std * eps.to(device=mean.device, dtype=mean.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Saving and loading


def vocoder_spec(vocoder: Vocoder) -> dict[str, Any]:
    """The codec.json `vocoder` entry of a vocoder object."""
    if isinstance(vocoder, GriffinLimVocoder):
        return {"kind": "griffin_lim", "n_iter": vocoder.n_iter, "seed": vocoder.seed, "hop": vocoder.hop}
    if isinstance(vocoder, HifiGanVocoder):
        return {"kind": "hifigan", "hop": vocoder.hop, "sample_rate": vocoder.sample_rate}
    raise TypeError(f"cannot save a vocoder of type {type(vocoder).__name__} (GriffinLimVocoder or HifiGanVocoder)")


def write_codec(directory: Path, vae: AutoencoderKL, vocoder: Vocoder, *, kind: str,
                report: Mapping[str, Any] | None = None, source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write a codec into an existing (temporary) directory, non-atomically; see `save_codec`."""
    directory = Path(directory)
    spec = vocoder_spec(vocoder)
    vae.save_pretrained(directory / "vae", safe_serialization=True)
    if isinstance(vocoder, HifiGanVocoder):
        vocoder.model.save_pretrained(directory / "vocoder", safe_serialization=True)
    meta = {
        "format": CODEC_FORMAT, "version": CODEC_VERSION, "kind": kind,
        "latent_channels": int(vae.config.latent_channels), "downsample": LATENT_DOWNSAMPLE, "mel": dict(MEL_SPEC),
        "vocoder": spec, "source": dict(source or {}),
    }  # fmt: skip
    if report is not None:
        write_json(directory / "report.json", dict(report))
    write_json(directory / "codec.json", meta)
    return meta


def save_codec(out: Path, vae: AutoencoderKL, vocoder: Vocoder, report: Mapping[str, Any] | None = None, *,
               kind: str = "trained", source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write `out/` atomically: codec.json, vae/, vocoder/ (HiFi-GAN only), report.json (if given).

    Args:
        out: the codec directory (replaced as a whole).
        vae: the VAE.
        vocoder: `GriffinLimVocoder` (stored as its settings) or `HifiGanVocoder` (stored as weights).
        report: reconstruction metrics for report.json.
        kind: codec.json `kind` (the `codec.kind` param it was built from).
        source: provenance (e.g. the weights paths), stored under codec.json `source`.

    Returns:
        The codec.json content.
    """
    with atomic_dir(Path(out)) as tmp:
        meta = write_codec(tmp, vae, vocoder, kind=kind, report=report, source=source)
    return meta


def read_codec_json(path: Path) -> dict[str, Any]:
    """Read and check `<path>/codec.json`.

    Raises:
        FileNotFoundError: the directory or codec.json is missing.
        ValueError: not valid JSON, wrong format/version or a missing key (named).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"codec directory {path} not found: run the train_codec stage "
                                "(`dvc repro train_codec` or `python -m pipeline.train_codec`)")
    meta_path = path / "codec.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: {path} is not a codec directory (written by train_codec)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_path} is not valid JSON: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != CODEC_FORMAT or meta.get("version") != CODEC_VERSION:
        got = (meta.get("format"), meta.get("version")) if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{meta_path}: expected format {CODEC_FORMAT!r} version {CODEC_VERSION}, got {got}")
    missing = [k for k in ("kind", "latent_channels", "downsample", "mel", "vocoder") if k not in meta]
    if missing:
        raise ValueError(f"{meta_path}: missing keys {missing}")
    return meta


def _vocoder_from_spec(path: Path, spec: Mapping[str, Any]) -> Vocoder:
    kind = spec.get("kind")
    if kind == "griffin_lim":
        return GriffinLimVocoder(n_iter=int(spec["n_iter"]), seed=int(spec["seed"]))
    if kind == "hifigan":
        if not (path / "vocoder" / "config.json").is_file():
            raise FileNotFoundError(f"{path}/codec.json names a HiFi-GAN vocoder but {path}/vocoder/ has no weights")
        return HifiGanVocoder(load_vocoder_pretrained(str(path), subfolder="vocoder"))
    raise ValueError(f"{path}/codec.json: unknown vocoder kind {kind!r} (griffin_lim or hifigan)")


def load_codec(path: Path, *, device: str | torch.device = "cpu") -> Codec:
    """Load a codec directory written by `save_codec` (eval mode).

    Raises:
        FileNotFoundError: missing directory, codec.json, vae/ or vocoder/ weights.
        ValueError: wrong format/version, unknown vocoder kind, latent_channels not matching the VAE.
    """
    path = Path(path)
    meta = read_codec_json(path)
    if not (path / "vae" / "config.json").is_file():
        raise FileNotFoundError(f"{path}/vae/config.json not found: the codec directory has no VAE")
    vae_class = json.loads((path / "vae" / "config.json").read_text()).get("_class_name")
    if vae_class == PatchPCAAutoencoder.__name__:
        vae = PatchPCAAutoencoder.from_pretrained(str(path), subfolder="vae").eval().requires_grad_(False)
    else:
        vae = load_vae_pretrained(str(path), subfolder="vae").requires_grad_(False)
    if int(vae.config.latent_channels) != int(meta["latent_channels"]):
        raise ValueError(f"{path}/codec.json: latent_channels={meta['latent_channels']} but the VAE has "
                         f"{vae.config.latent_channels}")
    vocoder = _vocoder_from_spec(path, meta["vocoder"])
    codec = Codec(vae=vae, vocoder=vocoder, latent_channels=int(meta["latent_channels"]),
                  downsample=int(meta["downsample"]), sample_rate=int(meta["mel"]["sample_rate"]),
                  info=meta | {"path": str(path)})
    return codec.to(device)


def codec_sha256(path: Path) -> str:
    """Fingerprint of a codec directory: sha256 over the hashes of codec.json and the vae/ weight files."""
    path = Path(path)
    read_codec_json(path)
    weights = sorted((path / "vae").glob("*.safetensors")) + sorted((path / "vae").glob("*.bin"))
    if not weights:
        raise FileNotFoundError(f"{path}/vae has no weight file (*.safetensors or *.bin)")
    h = hashlib.sha256()
    for f in [path / "codec.json", *weights]:
        h.update(f"{f.relative_to(path)}:{sha256_file(f)}\n".encode())
    return h.hexdigest()

