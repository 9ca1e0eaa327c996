"""Networks: the 3-D UNet denoiser over stacked stem latents and its building blocks."""
from mtmusicldm.models.layers import AttentionBlock, GroupNorm32, TimestepMLP, timestep_embedding
from mtmusicldm.models.unet3d import UNet3D, UNet3DConfig, channel_plan

__all__ = [
    "AttentionBlock",
    "GroupNorm32",
    "TimestepMLP",
    "UNet3D",
    "UNet3DConfig",
    "channel_plan",
    "timestep_embedding",
]
