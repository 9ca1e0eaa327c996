"""Building the codec a params file describes: `codec_from_params` and its two registries.

`VAE_SOURCES` (keyed by `codec.kind`): an unfitted patch-PCA codec (`pca`, fitted by train_codec), a freshly
initialised small VAE (`trained`), a diffusers directory or hub
id (`diffusers`), or MusicLDM's original Lightning checkpoint (`official`: `vae-ckpt.ckpt`, Zenodo record
10643148, converted by `mtmusicldm.official`). `VOCODERS` (keyed by `codec.vocoder`): Griffin-Lim, or HiFi-GAN
from an official `hifigan-ckpt.ckpt` or a transformers directory / hub id.

This module sits above both `mtmusicldm.codec.codec_dir` (the codec object and its directory) and
`mtmusicldm.official` (which converts official checkpoints into that codec), so neither imports the other's user.
"""
from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL

from mtmusicldm.codec.codec_dir import MEL_SPEC, Codec, vocoder_spec
from mtmusicldm.codec.pca import PatchPCAAutoencoder
from mtmusicldm.codec.vae import WEIGHTS_HINT, build_vae, load_vae_pretrained
from mtmusicldm.codec.vocoder import GriffinLimVocoder, HifiGanVocoder, Vocoder, load_vocoder_pretrained
from mtmusicldm.config import CodecParams
from mtmusicldm.geometry import LATENT_DOWNSAMPLE
from mtmusicldm.official.hifigan import MUSICLDM_HIFIGAN_CONFIG, load_hifigan
from mtmusicldm.official.vae import MUSICLDM_DDCONFIG, load_vae

__all__ = ["VAE_SOURCES", "VOCODERS", "codec_from_params", "read_official_checkpoint"]


def read_official_checkpoint(path: Path, what: str) -> Any:
    """`torch.load` an official Lightning/HiFi-GAN checkpoint on the CPU.

    Tries the safe `weights_only=True` unpickler first; Lightning checkpoints often hold other Python objects
    (hyper-parameters, callbacks), and then the file is loaded with `weights_only=False` after a warning: only
    do this for trusted files (the Zenodo originals).

    Raises:
        FileNotFoundError: no file at `path` (the message says where to get the weights).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what}: checkpoint {str(path)!r} not found. {WEIGHTS_HINT}")
    mmap = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        warnings.warn(f"{what}: {path} holds non-tensor Python objects ({str(err).splitlines()[0]}); loading it "
                      "with weights_only=False. Only do this for trusted files (MusicLDM's Zenodo checkpoints).",
                      stacklevel=2)
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)


def _pretrained_subfolder(path_or_id: str, subfolder: str) -> str | None:
    """`subfolder` unless `path_or_id` is a local directory that holds config.json itself."""
    local = Path(path_or_id).expanduser()
    return None if (local / "config.json").is_file() else subfolder


# ---------------------------------------------------------------------------------------------------------------
# VAE sources (codec.kind)


def _pca_vae(codec: CodecParams, seed: int) -> PatchPCAAutoencoder:
    """An unfitted patch-PCA codec of `latent_channels` components (the train_codec stage fits it)."""
    return PatchPCAAutoencoder(latent_channels=codec.latent_channels, whiten=codec.whiten)


def _trained_vae(codec: CodecParams, seed: int) -> AutoencoderKL:
    """A new VAE from channels / channel_mult / num_res_blocks / latent_channels, initialised from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_vae(ch=codec.channels, ch_mult=tuple(codec.channel_mult), num_res_blocks=codec.num_res_blocks,
                         z_channels=codec.latent_channels)


def _diffusers_vae(codec: CodecParams, seed: int) -> AutoencoderKL:
    assert codec.path is not None  # CodecParams._rules
    return load_vae_pretrained(codec.path, subfolder=_pretrained_subfolder(codec.path, "vae"))


def _official_vae(codec: CodecParams, seed: int) -> AutoencoderKL:
    assert codec.path is not None  # CodecParams._rules
    checkpoint = read_official_checkpoint(Path(codec.path), "MusicLDM VAE (codec.path)")
    return load_vae(checkpoint, MUSICLDM_DDCONFIG, MUSICLDM_DDCONFIG["z_channels"])


VAE_SOURCES: dict[str, Callable[[CodecParams, int], AutoencoderKL | PatchPCAAutoencoder]] = {
    "pca": _pca_vae, "trained": _trained_vae, "diffusers": _diffusers_vae, "official": _official_vae}
"""VAE builder per `codec.kind` (`(codec params, init seed) -> AutoencoderKL | PatchPCAAutoencoder`)."""


# ---------------------------------------------------------------------------------------------------------------
# Vocoders (codec.vocoder)


def _griffin_lim(codec: CodecParams) -> GriffinLimVocoder:
    return GriffinLimVocoder(n_iter=codec.griffin_lim_iters, seed=0)


def _hifigan(codec: CodecParams) -> HifiGanVocoder:
    source = codec.vocoder_path if codec.vocoder_path is not None else codec.path
    if source is None:  # CodecParams._rules: vocoder_path is required unless kind is diffusers
        raise ValueError("codec.vocoder_path: required for the hifigan vocoder")
    local = Path(source).expanduser()
    if local.is_file() or local.suffix in (".ckpt", ".pt", ".pth"):
        checkpoint = read_official_checkpoint(local, "MusicLDM HiFi-GAN (codec.vocoder_path)")
        return HifiGanVocoder(load_hifigan(checkpoint, MUSICLDM_HIFIGAN_CONFIG))
    return HifiGanVocoder(load_vocoder_pretrained(source, subfolder=_pretrained_subfolder(source, "vocoder")))


VOCODERS: dict[str, Callable[[CodecParams], Vocoder]] = {"griffin_lim": _griffin_lim, "hifigan": _hifigan}
"""Vocoder builder per `codec.vocoder`."""


def codec_from_params(codec: CodecParams, *, seed: int = 0) -> Codec:
    """Build the codec described by the `codec` params section (eval mode, CPU).

    Args:
        codec: params; `kind` picks the VAE source (`VAE_SOURCES`), `vocoder` the vocoder (`VOCODERS`; for
            `diffusers` a HiFi-GAN defaults to the `vocoder/` subfolder of `path`).
        seed: weight-initialisation seed of a `trained` VAE.

    Returns:
        The codec (info holds the codec.json fields it would be saved with, minus `format`/`version`).

    Raises:
        FileNotFoundError: pretrained weights not found (the message says where to get them).
        ValueError: `codec.latent_channels` disagrees with the pretrained VAE.
    """
    vae = VAE_SOURCES[codec.kind](codec, seed)
    if int(vae.config.latent_channels) != codec.latent_channels:
        raise ValueError(f"codec.latent_channels={codec.latent_channels} but the {codec.kind} VAE from "
                         f"{codec.path!r} has {vae.config.latent_channels} latent channels")
    vocoder = VOCODERS[codec.vocoder](codec)
    info = {"kind": codec.kind, "latent_channels": codec.latent_channels, "downsample": LATENT_DOWNSAMPLE,
            "mel": dict(MEL_SPEC), "vocoder": vocoder_spec(vocoder),
            "source": {"path": codec.path, "vocoder_path": codec.vocoder_path}}
    return Codec(vae=vae.eval(), vocoder=vocoder, latent_channels=codec.latent_channels, info=info)
