"""A tiny model directory (tiny UNet3D + tiny VAE + Griffin-Lim or a tiny HiFi-GAN), written by `save_pretrained`."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from mtmusicldm import STEMS
from mtmusicldm.codec.codec_dir import load_codec, save_codec
from mtmusicldm.codec.vae import build_vae
from mtmusicldm.codec.vocoder import GriffinLimVocoder, HifiGanVocoder
from mtmusicldm.ldm import MTMusicLDM
from mtmusicldm.model_config import RecommendedSampler, make_model_config
from mtmusicldm.models.unet3d import UNet3D, UNet3DConfig

SEG = 10240  # 0.64 s segments: latent [4, 4, 16, 16]
SR = 16000
TINY_SAMPLER = RecommendedSampler("ddim", 4)
"""The tiny model's recommended sampler (the CLI / studio default for it)."""


def tiny_hifigan() -> HifiGanVocoder:
    """A randomly initialised HiFi-GAN with hop 160 (milliseconds per segment, unlike Griffin-Lim's NNLS)."""
    cfg = SpeechT5HifiGanConfig(model_in_dim=64, sampling_rate=SR, upsample_initial_channel=32,
                                upsample_rates=[5, 4, 2, 2, 2], upsample_kernel_sizes=[16, 16, 8, 4, 4],
                                resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], normalize_before=False)
    model = SpeechT5HifiGan(cfg).eval()
    with torch.no_grad():  # its default init is nearly silent (|wav| ~ 1e-9)
        for p in model.parameters():
            p.add_(0.15 * torch.randn_like(p))
    return HifiGanVocoder(model)


def make_model_dir(root: Path, seed: int = 0, vocoder: str = "griffin_lim", film_dim: int | None = None) -> Path:
    """A tiny self-contained model dir `root/ldm` (codec: Griffin-Lim with 1 iteration, or a tiny HiFi-GAN);
    unconditional unless `film_dim` is set (then conditioning "random" and a unit `uncond_clap`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        voc = GriffinLimVocoder(n_iter=1, seed=0) if vocoder == "griffin_lim" else tiny_hifigan()
        vae = build_vae(ch=16, ch_mult=(1, 1, 1), num_res_blocks=1, z_channels=4, norm_num_groups=8)
        unet_config = UNet3DConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                                   attention_resolutions=(2,), num_head_channels=16, film_dim=film_dim)
        unet = UNet3D(unet_config)
        with torch.no_grad():  # the official init zeroes the output convs: make eps non-trivial
            for p in unet.parameters():
                p.add_(0.05 * torch.randn_like(p))
    save_codec(root / "codec", vae, voc)
    config = make_model_config(stems=STEMS, unet=unet_config, timesteps=1000, beta_start=0.0015, beta_end=0.0195,
                               scale_factor=0.7, latent_shape=[4, 4, SEG // 640, 16], segment_samples=SEG,
                               sample_rate=SR,
                               conditioning=None if film_dim is None else {"clap": "random", "amodel": "HTSAT-tiny",
                                                                           "checkpoint": None, "text_model": None,
                                                                           "seed": 0},
                               uncond_clap=None if film_dim is None else [film_dim ** -0.5] * film_dim,
                               trained_steps=0, source="test", recommended_sampler=TINY_SAMPLER)
    model = MTMusicLDM(unet, config, codec=load_codec(root / "codec"))
    return model.save_pretrained(root / "ldm", raw_unet=unet)
