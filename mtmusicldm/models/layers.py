"""Shared network blocks: sinusoidal timestep embedding, fp32 GroupNorm and multi-head self-attention.

The numerics follow the official MT-MusicLDM `openaimodel.py` (itself from guided-diffusion / LDM) so that released
weights load and reproduce the official outputs; the module names are our own (see `mtmusicldm.official.unet` for the
name mapping).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORM_GROUPS = 32
"""Number of GroupNorm groups in every normalisation layer (official `normalization()`)."""


# ---------------------------------------------------------------------------------------------------------------
# Timestep embedding


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding `[cos(t * f_i) | sin(t * f_i)]`, `f_i = max_period^(-i / (dim // 2))`.

    Same order (cosines first) and frequencies as the official `timestep_embedding`; an odd `dim` gets one zero
    column appended.

    Args:
        t: timesteps, [B], integer or float (cast to float32).
        dim: embedding width.
        max_period: controls the lowest frequency.

    Returns:
        [B, dim] float32 embedding.
    """
    if t.ndim != 1:
        raise ValueError(f"timesteps must be 1-D [B], got shape {tuple(t.shape)}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]  # [B, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepMLP(nn.Module):
    """`Linear(dim_in, dim_out) -> SiLU -> Linear(dim_out, dim_out)` applied to the sinusoidal embedding."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(dim_in, dim_out)
        self.linear_2 = nn.Linear(dim_out, dim_out)

    def forward(self, emb: Tensor) -> Tensor:
        """Args: emb [B, dim_in]. Returns: [B, dim_out]."""
        return self.linear_2(F.silu(self.linear_1(emb)))


# ---------------------------------------------------------------------------------------------------------------
# Normalisation


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back to the input dtype (official `GroupNorm32`)."""

    def forward(self, x: Tensor) -> Tensor:
        """Args: x [B, C, *spatial]. Returns: same shape and dtype as x."""
        return super().forward(x.float()).type(x.dtype)


def group_norm(channels: int) -> GroupNorm32:
    """The standard normalisation layer: 32 groups, eps 1e-5, affine."""
    if channels % NORM_GROUPS:
        raise ValueError(f"GroupNorm needs channels divisible by {NORM_GROUPS}, got {channels}")
    return GroupNorm32(NORM_GROUPS, channels)


# ---------------------------------------------------------------------------------------------------------------
# Attention


class AttentionBlock(nn.Module):
    """Residual multi-head self-attention over all spatial positions (official `AttentionBlock`, legacy QKV order).

    `x + proj_out(attn(qkv(norm(x))))`, with tokens = the flattened spatial positions (D*H*W for 3-D inputs).
    `to_qkv` produces features in the official *legacy* order `[head, (q | k | v), head_channel]`, so official
    `qkv` weights load after dropping their trailing kernel dimension. The official code scales q and k each by
    `ch^-1/4` before the dot product; here `scaled_dot_product_attention` applies `ch^-1/2` once, which is the same
    function, and lets flash / memory-efficient kernels run on GPU.

    Args:
        channels: feature width C (divisible by 32 and by `head_channels`).
        head_channels: width of one attention head; heads = C // head_channels.
    """

    def __init__(self, channels: int, head_channels: int) -> None:
        super().__init__()
        if head_channels <= 0 or channels % head_channels:
            raise ValueError(f"attention channels {channels} must be divisible by head_channels {head_channels}")
        self.channels = channels
        self.head_channels = head_channels
        self.num_heads = channels // head_channels
        self.norm = group_norm(channels)
        self.to_qkv = nn.Linear(channels, 3 * channels)
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x [B, C, *spatial]. Returns: [B, C, *spatial]."""
        b, c, *spatial = x.shape
        tokens = self.norm(x).reshape(b, c, -1).transpose(1, 2)  # [B, L, C]
        qkv = self.to_qkv(tokens)  # [B, L, 3C], legacy order (head, qkv, ch)
        qkv = qkv.unflatten(-1, (self.num_heads, 3, self.head_channels))  # [B, L, H, 3, ch]
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)  # each [B, H, L, ch]
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(ch)) v, [B, H, L, ch]
        out = self.proj_out(out.transpose(1, 2).flatten(2))  # [B, L, C]
        return x + out.transpose(1, 2).reshape(b, c, *spatial)
