"""mtmusicldm: Multi-Track MusicLDM, a latent diffusion model over stacked stems [B, S, C, T, F]."""
from typing import TYPE_CHECKING, Any

STEMS: tuple[str, ...] = ("bass", "drums", "guitar", "piano")
"""Canonical stem order: the S axis of every tensor, every mask and every file listing."""

__version__ = "0.1.0"

if TYPE_CHECKING:
    from mtmusicldm.ldm import MTMusicLDM


def __getattr__(name: str) -> Any:
    # Lazy, so that `import mtmusicldm` (e.g. in data-preparation workers) does not import torch.
    if name == "MTMusicLDM":
        from mtmusicldm.ldm import MTMusicLDM

        return MTMusicLDM
    raise AttributeError(f"module 'mtmusicldm' has no attribute {name!r}")
