"""Latent codec: mel VAE (diffusers `AutoencoderKL`), stacked-stem latents and vocoders."""
from mtmusicldm.codec.latents import (
    LatentScale,
    decode_stems,
    encode_stems,
    posterior_stems,
    scale_factor_from_latents,
)
from mtmusicldm.codec.vae import (
    build_vae,
    decode,
    encode_moments,
    encode_posterior,
    load_vae_pretrained,
    posterior_from_moments,
    vae_config,
)
from mtmusicldm.codec.vocoder import (
    GriffinLimVocoder,
    HifiGanVocoder,
    Vocoder,
    load_vocoder_pretrained,
    vocode_stems,
)

__all__ = [
    "GriffinLimVocoder",
    "HifiGanVocoder",
    "LatentScale",
    "Vocoder",
    "build_vae",
    "decode",
    "decode_stems",
    "encode_moments",
    "encode_posterior",
    "encode_stems",
    "load_vae_pretrained",
    "load_vocoder_pretrained",
    "posterior_from_moments",
    "posterior_stems",
    "scale_factor_from_latents",
    "vae_config",
    "vocode_stems",
]
