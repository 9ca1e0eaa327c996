"""A tiny generation model without files (tiny UNet3D + tiny VAE + a cheap vocoder + a fake CLAP) and test audio."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mtmusicldm import STEMS
from mtmusicldm.codec.codec_dir import Codec
from mtmusicldm.codec.vae import build_vae
from mtmusicldm.diffusion.schedules import DiffusionSchedule
from mtmusicldm.models.unet3d import UNet3D, UNet3DConfig

SEG = 10240  # 0.64 s: mel 64 frames, latent T' = 16
FILM = 16


class CheapVocoder:
    """Deterministic log-mel -> audio stand-in (Griffin-Lim costs seconds): a mel contrast times a carrier."""

    def __call__(self, mel: Tensor) -> Tensor:
        contrast = torch.tanh(mel[..., :8].mean(-1) - mel[..., 8:].mean(-1))  # [N, T]
        env = contrast.repeat_interleave(160, dim=1)  # [N, T * 160]
        return 0.5 * env * torch.sin(torch.arange(env.shape[1]) * 0.3)


class FakeClap:
    """Conditioner stand-in: a fixed projection of simple audio statistics; records its inputs."""

    def __init__(self) -> None:
        self.audio_calls: list[Tensor] = []

    def embed_audio(self, wav: Tensor, *, generator: Any = None, crop: str = "random") -> Tensor:
        self.audio_calls.append(wav.clone())
        feats = torch.stack([wav.abs().mean(-1), wav.std(-1), wav.mean(-1)], dim=-1)  # [B, 3]
        return torch.nn.functional.normalize(feats.repeat(1, FILM // 3 + 1)[:, :FILM] + 0.1, dim=-1)

    def embed_text(self, texts: list[str]) -> Tensor:
        return torch.nn.functional.normalize(torch.tensor([[len(t) + i for i in range(FILM)] for t in texts],
                                                          dtype=torch.float32), dim=-1)

    def uncond_embedding(self, batch: int) -> Tensor:
        return self.embed_text([""] * batch)


@dataclass
class TinyModel:
    """Implements `generation.GenerationModel` without files (latent_shape [4, 4, 16, 16])."""

    unet: Any
    codec: Codec
    clap: Any = None
    config: dict = field(default_factory=lambda: {"segment_samples": SEG, "sample_rate": 16000})
    scale_factor: float = 0.7
    stems: tuple[str, ...] = STEMS
    schedule: DiffusionSchedule = field(default_factory=DiffusionSchedule)
    latent_shape: tuple[int, int, int, int] = (4, 4, SEG // 640, 16)
    uncond_clap: Tensor | None = None

    @property
    def film_dim(self) -> int | None:
        return self.unet.config.film_dim

    @property
    def eps_model(self) -> Any:
        return self.unet


class CopyStemUNet(torch.nn.Module):
    """An eps-model whose denoised estimate of stem ``target`` is the current (noisy) stem ``source``: arrangement
    with it must turn the given ``source`` into the generated ``target`` (a model that learned "play along")."""

    def __init__(self, schedule: DiffusionSchedule, source: int = 0, target: int = 3) -> None:
        super().__init__()
        self.config = UNet3DConfig(film_dim=None)
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # a device for model_device
        self.alphas_cumprod, self.source, self.target = schedule.alphas_cumprod, source, target

    def forward(self, x: Tensor, t: Tensor, film: Tensor | None) -> Tensor:
        abar = self.alphas_cumprod[t.long().cpu()].to(x.dtype).reshape(-1, 1, 1, 1)
        eps = torch.zeros_like(x)  # other stems: x0_hat = x
        eps[:, self.target] = (x[:, self.target] - x[:, self.source]) / (1 - abar).sqrt()
        return eps


def make_copy_model(source: int = 0, target: int = 3) -> TinyModel:
    """The tiny codec around :class:`CopyStemUNet`."""
    tiny = make_tiny_model()
    return TinyModel(CopyStemUNet(tiny.schedule, source, target), tiny.codec)


def make_tiny_model(conditional: bool = False, seed: int = 0) -> TinyModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet3D(UNet3DConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                                   attention_resolutions=(2,), num_head_channels=16,
                                   film_dim=FILM if conditional else None)).eval()
        with torch.no_grad():  # the official init zeroes the output convs (eps = 0): make the network non-trivial
            for p in unet.parameters():
                p.add_(0.05 * torch.randn_like(p))
        vae = build_vae(ch=16, ch_mult=(1, 1, 1), num_res_blocks=1, z_channels=4, norm_num_groups=8)
    return TinyModel(unet, Codec(vae=vae, vocoder=CheapVocoder(), latent_channels=4),
                     clap=FakeClap() if conditional else None)


def song(n: int = SEG, batch: int = 1, seed: int = 0) -> Tensor:
    """[B, S, n] distinct non-silent stems."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    tones = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (55.0, 0.0, 330.0, 523.0)])
    tones[1] = torch.randn(n, generator=g) * (torch.sin(2 * torch.pi * 4 * t) > 0.9)
    return (0.3 * tones)[None].repeat(batch, 1, 1) * (1 + 0.1 * torch.rand(batch, 4, 1, generator=g))
