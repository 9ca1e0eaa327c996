"""mtmusicldm: Multi-Track MusicLDM, a latent diffusion model over stacked stems [B, S, C, T, F]."""

STEMS: tuple[str, ...] = ("bass", "drums", "guitar", "piano")
"""Canonical stem order: the S axis of every tensor, every mask and every file listing."""

__version__ = "0.1.0"
