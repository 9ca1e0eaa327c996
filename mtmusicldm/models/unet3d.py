"""3-D UNet denoiser over stacked stem latents `[B, S, C, T, F]` (MT-MusicLDM, official `UNetModel(dims=3)`).

Axis semantics, as in the official model: the stem axis S is the Conv3d *channel* axis (4 in, 4 out), and the
latent channels C, time T and frequency F are the three "spatial" axes (D, H, W). Down/upsampling acts on T and F
only; C is never resampled and is mixed by the 3x3x3 kernels and attended over by attention.

Layout (`channel_mult = (1, 2, 3, 5)`, `num_res_blocks = 2`, attention where the downsampling factor is in
`attention_resolutions`)::

    conv_in -> down_levels[0..L-1] (res [+ attn]) x num_res_blocks [+ downsample]
            -> mid (res, attn, res)
            -> up_levels[L-1..0] (concat skip, res [+ attn]) x (num_res_blocks + 1) [+ upsample]
            -> norm_out, SiLU, conv_out (zero-initialised)

The conditioning vector is `emb = time_mlp(sinusoid(t))`, concatenated with `film_proj(film)` when FiLM is configured
(the official `extra_film_use_concat`), and reaches every ResBlock through `SiLU -> Linear`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mtmusicldm.models.layers import NORM_GROUPS, AttentionBlock, TimestepMLP, group_norm, timestep_embedding

# ---------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class UNet3DConfig:
    """Hyper-parameters of `UNet3D`; defaults are the paper model (official CLAP config, 696,492,484 parameters).

    Attributes:
        in_stems: number of input stems S (Conv3d input channels).
        out_stems: number of output stems (Conv3d output channels).
        model_channels: base width; level `l` has `model_channels * channel_mult[l]` channels.
        channel_mult: width multiplier per resolution level (its length is the number of levels L).
        num_res_blocks: ResBlocks per level on the way down (the way up has one more per level).
        attention_resolutions: downsampling factors `2**level` whose levels get an attention block after each
            ResBlock (stored sorted and unique). The middle block always has attention.
        num_head_channels: channels per attention head (heads = channels // num_head_channels).
        film_dim: width of the FiLM conditioning vector (CLAP: 512), or None for an unconditional model.
        dropout: dropout probability inside ResBlocks.
        use_checkpoint: recompute each block in the backward pass (gradient checkpointing) when training.
    """

    in_stems: int = 4
    out_stems: int = 4
    model_channels: int = 192
    channel_mult: tuple[int, ...] = (1, 2, 3, 5)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (2, 4, 8)
    num_head_channels: int = 32
    film_dim: int | None = 512
    dropout: float = 0.0
    use_checkpoint: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        # canonical form (a set in the official code): sorted, unique, so equal configs compare equal
        object.__setattr__(self, "attention_resolutions", tuple(sorted(set(self.attention_resolutions))))
        self._validate()

    def _validate(self) -> None:
        for name in ("in_stems", "out_stems", "model_channels", "num_res_blocks", "num_head_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"UNet3DConfig.{name} must be a positive int, got {value!r}")
        if not self.channel_mult or any(not isinstance(m, int) or m < 1 for m in self.channel_mult):
            raise ValueError(f"UNet3DConfig.channel_mult must be non-empty positive ints, got {self.channel_mult}")
        reachable = {2**level for level in range(self.num_levels)}
        unreachable = sorted(set(self.attention_resolutions) - reachable)
        if unreachable:
            raise ValueError(
                f"UNet3DConfig.attention_resolutions {unreachable} are not downsampling factors of this UNet "
                f"(possible: {sorted(reachable)})"
            )
        for level in range(self.num_levels):
            ch = self.level_channels(level)
            if ch % NORM_GROUPS:
                raise ValueError(f"level {level} has {ch} channels, not divisible by {NORM_GROUPS} GroupNorm groups")
            needs_heads = self.has_attention(level) or level == self.num_levels - 1  # last level feeds the middle
            if needs_heads and ch % self.num_head_channels:
                raise ValueError(
                    f"level {level} has {ch} channels, not divisible by num_head_channels {self.num_head_channels}"
                )
        if self.film_dim is not None and (not isinstance(self.film_dim, int) or self.film_dim < 1):
            raise ValueError(f"UNet3DConfig.film_dim must be None or a positive int, got {self.film_dim!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UNet3DConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def num_levels(self) -> int:
        """Number of resolution levels L."""
        return len(self.channel_mult)

    @property
    def time_embed_dim(self) -> int:
        """Width of the timestep MLP output (and of the FiLM projection): 4 * model_channels."""
        return 4 * self.model_channels

    @property
    def emb_dim(self) -> int:
        """Width of the embedding fed to ResBlocks: time (+ FiLM, concatenated)."""
        return 2 * self.time_embed_dim if self.film_dim is not None else self.time_embed_dim

    @property
    def downsampling_factor(self) -> int:
        """T and F must be divisible by this: 2 ** (L - 1)."""
        return 2 ** (self.num_levels - 1)

    def level_channels(self, level: int) -> int:
        """Feature width of resolution level `level`."""
        return self.model_channels * self.channel_mult[level]

    def has_attention(self, level: int) -> bool:
        """Whether the ResBlocks of `level` are followed by attention blocks."""
        return 2**level in self.attention_resolutions

    def replace(self, **changes: object) -> UNet3DConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ChannelPlan:
    """(in, out) channels of every ResBlock, indexed `[level][block]`; `up` includes the concatenated skip."""

    down: tuple[tuple[tuple[int, int], ...], ...]
    up: tuple[tuple[tuple[int, int], ...], ...]


def channel_plan(config: UNet3DConfig) -> ChannelPlan:
    """Channel bookkeeping of the UNet (shared by the model and the official-weight mapping)."""
    skips = [config.model_channels]  # widths of the tensors pushed on the skip stack, in order
    ch = config.model_channels
    down: list[tuple[tuple[int, int], ...]] = []
    for level in range(config.num_levels):
        blocks = []
        for _ in range(config.num_res_blocks):
            out = config.level_channels(level)
            blocks.append((ch, out))
            ch = out
            skips.append(ch)
        down.append(tuple(blocks))
        if level != config.num_levels - 1:
            skips.append(ch)  # the downsampled tensor
    up: list[tuple[tuple[int, int], ...]] = [()] * config.num_levels
    for level in reversed(range(config.num_levels)):
        blocks = []
        for _ in range(config.num_res_blocks + 1):
            out = config.level_channels(level)
            blocks.append((ch + skips.pop(), out))
            ch = out
        up[level] = tuple(blocks)
    return ChannelPlan(down=tuple(down), up=tuple(up))


# ---------------------------------------------------------------------------------------------------------------
# Blocks


class ResBlock(nn.Module):
    """`skip(x) + conv_out(drop(SiLU(norm_out(conv_in(SiLU(norm_in(x))) + emb_proj(SiLU(emb))))))`.

    Args:
        in_channels: input width.
        out_channels: output width (a 1x1x1 `skip` conv is used when it differs from `in_channels`).
        emb_dim: width of the conditioning embedding.
        dropout: dropout probability before the last conv.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_in = group_norm(in_channels)
        self.conv_in = nn.Conv3d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_channels)
        self.norm_out = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv_out = nn.Conv3d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.skip: nn.Module = (
            nn.Identity() if in_channels == out_channels else nn.Conv3d(in_channels, out_channels, 1)
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """Args: x [B, in, D, H, W], emb [B, emb_dim]. Returns: [B, out, D, H, W]."""
        h = self.conv_in(F.silu(self.norm_in(x)))
        h = h + self.emb_proj(F.silu(emb)).type(h.dtype)[:, :, None, None, None]  # broadcast over D, H, W
        h = self.conv_out(self.dropout(F.silu(self.norm_out(h))))
        return self.skip(x) + h


class Downsample(nn.Module):
    """3x3x3 conv with stride (1, 2, 2): halves H and W (time, frequency), keeps D (latent channels)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, 3, stride=(1, 2, 2), padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x [B, C, D, H, W]. Returns: [B, C, D, ceil(H/2), ceil(W/2)]."""
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to (D, 2H, 2W) followed by a 3x3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x [B, C, D, H, W]. Returns: [B, C, D, 2H, 2W]."""
        d, h, w = x.shape[2:]
        return self.conv(F.interpolate(x, size=(d, 2 * h, 2 * w), mode="nearest"))


class UNetLevel(nn.Module):
    """One resolution level: ResBlocks, optional attention after each, optional resampling at the end.

    Args:
        channels: (in, out) widths of the ResBlocks.
        emb_dim: conditioning embedding width.
        dropout: ResBlock dropout.
        head_channels: attention head width, or None for no attention at this level.
        resample: `Downsample`/`Upsample` applied after the blocks, or None.
    """

    def __init__(
        self,
        channels: tuple[tuple[int, int], ...],
        emb_dim: int,
        dropout: float,
        head_channels: int | None,
        resample: nn.Module | None,
    ) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(ResBlock(i, o, emb_dim, dropout) for i, o in channels)
        self.attn_blocks = nn.ModuleList(
            [] if head_channels is None else [AttentionBlock(o, head_channels) for _, o in channels]
        )
        self.resample = resample


class MidBlock(nn.Module):
    """ResBlock, AttentionBlock, ResBlock at the lowest resolution."""

    def __init__(self, channels: int, emb_dim: int, dropout: float, head_channels: int) -> None:
        super().__init__()
        self.res_1 = ResBlock(channels, channels, emb_dim, dropout)
        self.attn = AttentionBlock(channels, head_channels)
        self.res_2 = ResBlock(channels, channels, emb_dim, dropout)


# ---------------------------------------------------------------------------------------------------------------
# Model


class UNet3D(nn.Module):
    """Epsilon-prediction 3-D UNet over stacked stem latents (numerically equal to the official `UNetModel(dims=3)`).

    Args:
        config: hyper-parameters; `UNet3DConfig()` is the paper's conditional model.
    """

    def __init__(self, config: UNet3DConfig) -> None:
        super().__init__()
        self.config = config
        self.use_checkpoint = config.use_checkpoint
        mc, emb_dim, last = config.model_channels, config.emb_dim, config.num_levels - 1
        plan = channel_plan(config)
        self.time_embed = TimestepMLP(mc, config.time_embed_dim)
        self.film_proj = nn.Linear(config.film_dim, config.time_embed_dim) if config.film_dim is not None else None
        self.conv_in = nn.Conv3d(config.in_stems, mc, 3, padding=1)

        def heads(level: int) -> int | None:
            return config.num_head_channels if config.has_attention(level) else None

        self.down_levels = nn.ModuleList(
            UNetLevel(
                plan.down[level], emb_dim, config.dropout, heads(level),
                Downsample(config.level_channels(level)) if level != last else None,
            )
            for level in range(config.num_levels)
        )
        self.mid = MidBlock(config.level_channels(last), emb_dim, config.dropout, config.num_head_channels)
        # up_levels[l] works at the resolution of down_levels[l]; they run in reverse order (deepest first).
        self.up_levels = nn.ModuleList(
            UNetLevel(
                plan.up[level], emb_dim, config.dropout, heads(level),
                Upsample(config.level_channels(level)) if level != 0 else None,
            )
            for level in range(config.num_levels)
        )
        self.norm_out = group_norm(mc)
        self.conv_out = nn.Conv3d(mc, config.out_stems, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor, film: Tensor | None = None) -> Tensor:
        """Predict the noise.

        Args:
            x: noisy latents [B, S_in, C, T, F]; T and F divisible by `config.downsampling_factor`.
            t: diffusion timesteps [B] (integer or float), or a scalar shared by the batch.
            film: conditioning vectors [B, film_dim] (e.g. L2-normalised CLAP embeddings). Required iff
                `config.film_dim` is set.

        Returns:
            eps prediction [B, S_out, C, T, F].
        """
        t = self._check_inputs(x, t, film)
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels))  # [B, 4 mc]
        if self.film_proj is not None:
            emb = torch.cat([emb, self.film_proj(film)], dim=-1)  # [B, 8 mc]

        h = self.conv_in(x)  # [B, mc, C, T, F]
        skips = [h]
        for level in self.down_levels:
            for i, res in enumerate(level.res_blocks):
                h = self._block(res, h, emb)
                if level.attn_blocks:
                    h = self._block(level.attn_blocks[i], h)
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)

        h = self._block(self.mid.res_1, h, emb)
        h = self._block(self.mid.attn, h)
        h = self._block(self.mid.res_2, h, emb)

        for level in reversed(self.up_levels):
            for i, res in enumerate(level.res_blocks):
                h = self._block(res, torch.cat([h, skips.pop()], dim=1), emb)
                if level.attn_blocks:
                    h = self._block(level.attn_blocks[i], h)
            if level.resample is not None:
                h = level.resample(h)
        return self.conv_out(F.silu(self.norm_out(h)))

    def _block(self, block: nn.Module, *args: Tensor) -> Tensor:
        """Run a block, recomputing it in the backward pass when gradient checkpointing is on."""
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def _check_inputs(self, x: Tensor, t: Tensor, film: Tensor | None) -> Tensor:
        """Validate shapes; returns `t` as a [B] tensor."""
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_stems:
            raise ValueError(f"x must be [B, {cfg.in_stems}, C, T, F], got shape {tuple(x.shape)}")
        factor = cfg.downsampling_factor
        if x.shape[3] % factor or x.shape[4] % factor:
            raise ValueError(f"T and F must be divisible by {factor}, got x shape {tuple(x.shape)}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be [B] = [{x.shape[0]}] or a scalar, got shape {tuple(t.shape)}")
        if (film is not None) != (cfg.film_dim is not None):
            raise ValueError(
                "film must be given if and only if the UNet has FiLM conditioning "
                f"(config.film_dim = {cfg.film_dim}, film given: {film is not None})"
            )
        if film is not None and film.shape != (x.shape[0], cfg.film_dim):
            raise ValueError(
                f"film must be [B, {cfg.film_dim}] = [{x.shape[0]}, {cfg.film_dim}], got {tuple(film.shape)}"
            )
        return t
