"""Between audio and scaled latents through the model's codec, and the official output policy.

Encoding: 16 kHz stems -> log-mel -> VAE posterior **sample** (official) -> ``LatentScale.encode``. Decoding:
``LatentScale.decode`` -> VAE decoder -> log-mel -> vocoder -> ``nan_to_num`` + ``clip(-1, 1)`` per stem (official
spec 7). The mix is ``clip(sum of stems, -1, 1)`` (official).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from mtmusicldm.audio import save_audio
from mtmusicldm.codec.latents import LatentScale
from mtmusicldm.generation.model import GenerationModel, model_device
from mtmusicldm.generation.seeds import posterior_generators
from mtmusicldm.geometry import FRAME_SAMPLES

CHUNK = 16
"""Items per VAE-decoder / vocoder call (bounds memory; results agree up to float rounding)."""


def postprocess(audio: Tensor) -> Tensor:
    """Official output policy: ``nan_to_num`` then ``clip(-1, 1)`` (elementwise, per stem)."""
    return torch.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0).clamp(-1.0, 1.0)


def mix_stems(stems: Tensor) -> Tensor:
    """Mixture ``[..., n]`` = ``clip(sum over S of [..., S, n], -1, 1)`` (official)."""
    return postprocess(stems.sum(dim=-2))


def encode_audio(model: GenerationModel, wav: Tensor, seeds: Sequence[int], window: int = 0,
                 rows: Tensor | None = None) -> Tensor:
    """Scaled latents of stem audio: log-mel -> VAE posterior **sample** (official) -> ``* scale_factor``.

    The posterior noise of stem ``j`` of item ``b`` comes from its own stream (:mod:`~mtmusicldm.generation.seeds`),
    so it does not depend on the batch or on which other stems are encoded.

    Args:
        wav: ``[B, S, n]`` 16 kHz stems, ``n`` a multiple of 640.
        seeds: one item seed per batch row.
        rows: optional bool ``[B, S]``: encode only these (item, stem) pairs; the others are zeros.

    Returns:
        ``[B, S, C, n / 640, 16]`` on the UNet's device.
    """
    b, s, n = wav.shape
    rows = torch.ones(b, s, dtype=torch.bool) if rows is None else rows.cpu()
    z = torch.zeros(b, s, model.latent_shape[1], n // FRAME_SAMPLES, model.latent_shape[3],
                    device=model_device(model))
    pairs = rows.nonzero().tolist()
    if pairs:
        mel = model.codec.audio_to_mel(wav[rows].float()[:, None])  # [N, 1, T, 64]
        flat = model.codec.encode_mel(mel, sample=True, generator=posterior_generators(seeds, pairs, window))[:, 0]
        z[rows.to(z.device)] = LatentScale(model.scale_factor).encode(flat).to(z)
    return z


def decode_mel(model: GenerationModel, z: Tensor, chunk: int = CHUNK) -> Tensor:
    """Scaled latents ``[B, S', C, T', F']`` -> log-mel ``[B, S', 4T', 64]`` (``z / scale_factor`` decoded).

    At most ``chunk`` items go through the decoder at once (memory only).
    """
    scale = LatentScale(model.scale_factor)
    device = next(model.codec.vae.parameters()).device
    return torch.cat([model.codec.decode_mel(scale.decode(c.to(device))) for c in z.split(chunk)])


def mel_to_audio(model: GenerationModel, mel: Tensor, n_samples: int, chunk: int = CHUNK) -> Tensor:
    """Vocode ``[B, S', T, 64]`` -> CPU ``[B, S', n_samples]`` (``chunk`` items at a time), then :func:`postprocess`."""
    return torch.cat([postprocess(model.codec.mel_to_audio(c, n_samples).float().cpu()) for c in mel.split(chunk)])


def decode_audio(model: GenerationModel, z: Tensor, n_samples: int, rows: Tensor | None = None) -> Tensor:
    """Scaled latents ``[B, S, C, T', F']`` -> audio ``[B, S, n_samples]`` (CPU, float32, clipped).

    Args:
        rows: optional bool ``[B, S]``: only these (item, stem) pairs are decoded and vocoded, the others are
            zeros (the given stems of an arrangement, replaced later anyway).
    """
    b, s = z.shape[:2]
    rows = torch.ones(b, s, dtype=torch.bool) if rows is None else rows.cpu()
    out = torch.zeros(b, s, n_samples)
    if bool(rows.any()):
        flat = z[rows.to(z.device)][:, None]  # [N, 1, C, T', F']: only the needed stems
        out[rows] = mel_to_audio(model, decode_mel(model, flat), n_samples)[:, 0]
    return out


def write_stems(directory: Path, audio: Tensor, stems: Sequence[str], sample_rate: int,
                subtype: str = "FLOAT") -> dict[str, str]:
    """Write ``<stem>.wav`` for each stem of ``audio [S, n]`` and ``mix.wav`` (:func:`mix_stems`), atomically.

    ``subtype="FLOAT"`` keeps the given stems of an arrangement bit-identical in the files; ``"PCM_16"`` is the
    official format (and clips).

    Returns:
        ``{name: file name}`` for the stems and ``"mix"``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tracks = dict(zip(stems, audio)) | {"mix": mix_stems(audio)}
    for name, wav in tracks.items():
        save_audio(directory / f"{name}.wav", wav.numpy(), sample_rate, subtype=subtype)
    return {name: f"{name}.wav" for name in tracks}
