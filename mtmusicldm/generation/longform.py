"""Long-form generation and arrangement (whole songs) by windowed latent continuation.

The model sees one segment (``T'`` latent frames) at a time. A song of ``n`` samples is covered by ``K`` windows
of ``T'`` frames with hop ``H = T' - O`` (``O`` overlap frames, e.g. 25-50 % of a window); the input is padded
with silence to ``T' + (K - 1) H`` frames and the output cropped back to exactly ``n`` samples.

Choice: **continuation in latent space, stitching in mel space, one vocoder pass.** Window ``k`` is inpainted
with a stem x time known mask ``[B, S, T']``:

* the given stems over the whole window (their window latents: posterior sample of that window's audio), and
* for the stems being generated, the first ``O`` frames = the latents window ``k - 1`` produced for its last
  ``O`` frames (exactly: the final latents of the known entries are imposed), so window ``k`` continues what
  is already there instead of generating an independent segment (no seams in content, tempo or key).

Each window's generated stems are decoded separately (the VAE sees segment-sized inputs as in training); the
log-mels agree on the overlaps up to decoder context effects and are cross-faded linearly over the ``4 O``
overlapping mel frames; the full-length log-mel of every generated stem is then vocoded **once**, so the audio
has no boundary at all (no phase mismatch between separately vocoded windows). Given stems are the input audio,
bit-identical. Long total generation is the same with no given stem (window 0 unconstrained).

Input policy: stems are loaded with ``load_audio`` (any rate / channels -> 16 kHz mono); stems of different
lengths are padded with silence to the longest (with a warning).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mtmusicldm.audio import load_audio
from mtmusicldm.diffusion.inpainting import NoiseMode
from mtmusicldm.generation.codec_io import decode_mel, encode_audio, mel_to_audio
from mtmusicldm.generation.conditioning import embed_mixture, rows_of, uncond_embedding
from mtmusicldm.generation.model import GenerationModel
from mtmusicldm.generation.seeds import item_seeds
from mtmusicldm.generation.segment import batches, sample_segment_latents
from mtmusicldm.geometry import FRAME_SAMPLES, LATENT_DOWNSAMPLE, SAMPLE_RATE

MEL_PER_FRAME = LATENT_DOWNSAMPLE
"""Mel frames per latent frame."""


@dataclass(frozen=True)
class WindowPlan:
    """Windows over a sequence of ``n_samples`` (all sizes in latent frames of 640 samples unless named).

    Attributes:
        n_samples: the input (and output) length.
        window_frames: ``T'``, one model segment.
        overlap_frames: ``O``, frames shared by consecutive windows.
        n_windows: ``K``.
    """

    n_samples: int
    window_frames: int
    overlap_frames: int
    n_windows: int

    @property
    def hop_frames(self) -> int:
        return self.window_frames - self.overlap_frames

    @property
    def padded_frames(self) -> int:
        return self.window_frames + (self.n_windows - 1) * self.hop_frames

    @property
    def padded_samples(self) -> int:
        return self.padded_frames * FRAME_SAMPLES

    def start_frame(self, k: int) -> int:
        return k * self.hop_frames


def plan_windows(n_samples: int, window_frames: int, overlap: float) -> WindowPlan:
    """Plan ``K = 1 + ceil((n - W) / hop)`` windows (1 when ``n <= W``).

    Args:
        overlap: fraction of a window shared with the previous one, in ``[0, 1)``; rounded to whole frames and
            kept below the window.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be a fraction in [0, 1), got {overlap}")
    o = min(int(round(overlap * window_frames)), window_frames - 1)
    hop = window_frames - o
    w = window_frames * FRAME_SAMPLES
    k = 1 if n_samples <= w else 1 + math.ceil((n_samples - w) / (hop * FRAME_SAMPLES))
    return WindowPlan(n_samples, window_frames, o, k)


def stitch_mels(mels: Sequence[Tensor], plan: WindowPlan) -> Tensor:
    """Cross-fade per-window log-mels ``K x [N, 4T', F]`` into ``[N, 4 * padded_frames, F]`` (linear ramps)."""
    n, t, f = mels[0].shape
    out = mels[0].new_zeros(n, plan.padded_frames * MEL_PER_FRAME, f)
    out[:, :t] = mels[0]
    ov = plan.overlap_frames * MEL_PER_FRAME
    ramp = ((torch.arange(ov, dtype=out.dtype, device=out.device) + 0.5) / max(ov, 1))[None, :, None]
    for k, mel in enumerate(mels[1:], start=1):
        a = plan.start_frame(k) * MEL_PER_FRAME
        out[:, a:a + ov] = (1 - ramp) * out[:, a:a + ov] + ramp * mel[:, :ov]
        out[:, a + ov:a + t] = mel[:, ov:]
    return out


def window_latents(model: GenerationModel, audio: Tensor, known: Tensor, plan: WindowPlan, seeds: Sequence[int], *,
                   film: Tensor | None = None, condition_on_given: bool = True, guidance_scale: float = 1.0,
                   sampler: str = "ddim", steps: int = 200, eta: float | None = None,
                   noise_mode: NoiseMode = "fresh", progress: bool = False) -> list[Tensor]:
    """The scaled latents of every window, generated in order (window ``k`` continues window ``k - 1``).

    Args:
        audio: ``[B, S, padded_samples]`` given stems (zeros where generated).
        known: bool ``[B, S]``, True = given stem.
        seeds: one item seed per row; window ``k`` uses the ``window=k`` streams (:mod:`~mtmusicldm.generation.seeds`).
        film: fixed conditioning ``[B, D]`` / ``[D]``; None and ``condition_on_given``: a conditional model is
            conditioned per window on the CLAP embedding of the given mixture in that window.

    Returns:
        ``K`` tensors ``[B, S, C, T', F']``; for generated stems ``z[k][..., :O, :] == z[k-1][..., H:, :]``.
    """
    from tqdm.auto import tqdm  # optional dependency of the progress bar only

    b, s = known.shape
    t, o, hop = plan.window_frames, plan.overlap_frames, plan.hop_frames
    windows: list[Tensor] = []
    for k in tqdm(range(plan.n_windows), desc="windows", unit="window", disable=not progress, leave=False):
        a = plan.start_frame(k) * FRAME_SAMPLES
        wav = audio[..., a:a + t * FRAME_SAMPLES]
        z_known = encode_audio(model, wav, seeds, window=k, rows=known)
        mask = known[:, :, None].expand(b, s, t).clone()
        if k > 0 and o > 0:
            gen = ~known.to(z_known.device)
            z_known[..., :o, :] = torch.where(gen[:, :, None, None, None], windows[-1][..., hop:, :],
                                              z_known[..., :o, :])
            mask[:, :, :o] = True
        f = film
        if f is None and condition_on_given and model.film_dim is not None and bool(known.any()):
            f = embed_mixture(model, (wav * known[:, :, None]).sum(dim=1), seeds, window=k)
            f[~known.any(dim=1)] = uncond_embedding(model)
        windows.append(sample_segment_latents(model, seeds, window=k, film=f, guidance_scale=guidance_scale,
                                              known=z_known, mask=mask.to(z_known.device), sampler=sampler,
                                              steps=steps, eta=eta, noise_mode=noise_mode))
    return windows


def render(model: GenerationModel, windows: Sequence[Tensor], audio: Tensor, known: Tensor, plan: WindowPlan) -> Tensor:
    """Decode the generated stems per window, stitch the log-mels, vocode once, put the given stems back.

    Args:
        windows: ``K`` scaled latents ``[B, S, C, T', F']`` (:func:`window_latents`).
        audio: ``[B, S, padded_samples]`` given stems; known: bool ``[B, S]``.

    Returns:
        ``[B, S, n_samples]`` CPU float32.
    """
    rows = ~known
    out = audio[..., :plan.n_samples].clone()
    if bool(rows.any()):
        flat = torch.cat([z[rows.to(z.device)] for z in windows])  # [K N, C, T', F']
        mels = list(decode_mel(model, flat[:, None])[:, 0].split(int(rows.sum())))  # K x [N, 4T', 64]
        wav = mel_to_audio(model, stitch_mels(mels, plan)[:, None], plan.padded_samples)[:, 0]
        out[rows] = wav[..., :plan.n_samples]
    return out


def _run(model: GenerationModel, audio: Tensor, known: Tensor, *, seed: int | Sequence[int], overlap: float,
         batch_size: int, film: Tensor | None, **kwargs: object) -> Tensor:
    """Items in batches; each batch: window latents in order, then one render."""
    b, s, n = audio.shape
    seeds = item_seeds(seed, b)
    plan = plan_windows(n, model.latent_shape[2], overlap)
    padded = torch.nn.functional.pad(audio.float().cpu(), (0, plan.padded_samples - n))
    out = []
    with torch.inference_mode():
        for rows in batches(b, batch_size):
            kn = known[rows.start:rows.stop]
            windows = window_latents(model, padded[rows.start:rows.stop], kn, plan, seeds[rows.start:rows.stop],
                                     film=rows_of(film, rows), **kwargs)
            out.append(render(model, windows, padded[rows.start:rows.stop], kn, plan))
    return torch.cat(out)


def arrange_long(model: GenerationModel, audio: Tensor, known: Tensor, *, seed: int | Sequence[int],
                 overlap: float = 0.5, sampler: str = "ddim", steps: int = 200, eta: float | None = None,
                 guidance_scale: float = 1.0, film: Tensor | None = None, condition_on_given: bool = True,
                 batch_size: int = 1, noise_mode: NoiseMode = "fresh", progress: bool = False) -> Tensor:
    """Arrange songs of any length: generate the stems not in ``known`` given the others.

    Args:
        audio: ``[B, S, n]`` 16 kHz stems (the generated ones are ignored).
        known: bool ``[S]`` or ``[B, S]``, True = given.
        seed: item ``k`` uses ``sequence_seed(seed, k)`` or ``seed[k]`` (the segment-level
            :func:`~mtmusicldm.generation.arrange` gives the same result for ``n <= segment``).
        overlap: window overlap fraction.
        Others: as :func:`mtmusicldm.generation.arrange`.

    Returns:
        ``[B, S, n]``: given stems bit-identical to ``audio``, generated stems clipped to [-1, 1].
    """
    known = torch.as_tensor(known, dtype=torch.bool).cpu()
    known = (known[None] if known.ndim == 1 else known).expand(audio.shape[0], -1)
    if known.shape[1] != audio.shape[1] or bool(known.all(dim=1).any()):
        raise ValueError(f"known {tuple(known.shape)} must be [B, S] with at least one stem to generate per item")
    return _run(model, audio, known, seed=seed, overlap=overlap, batch_size=batch_size, film=film,
                condition_on_given=condition_on_given, guidance_scale=guidance_scale, sampler=sampler,
                steps=steps, eta=eta, noise_mode=noise_mode, progress=progress)


def generate_long(model: GenerationModel, n: int, n_samples: int, *, seed: int | Sequence[int],
                  overlap: float = 0.5, sampler: str = "ddim", steps: int = 200, eta: float | None = None,
                  guidance_scale: float = 1.0, film: Tensor | None = None, batch_size: int = 1,
                  noise_mode: NoiseMode = "fresh", progress: bool = False) -> Tensor:
    """Total generation of ``n`` items of ``n_samples`` samples (window ``k`` continues window ``k - 1``).

    Returns:
        ``[n, S, n_samples]`` CPU float32, clipped to [-1, 1].
    """
    s = len(model.stems)
    audio = torch.zeros(n, s, n_samples)
    known = torch.zeros(n, s, dtype=torch.bool)
    return _run(model, audio, known, seed=seed, overlap=overlap, batch_size=batch_size, film=film,
                condition_on_given=False, guidance_scale=guidance_scale, sampler=sampler, steps=steps, eta=eta,
                noise_mode=noise_mode, progress=progress)


def load_stems(paths: Mapping[str, str | Path], stems: Sequence[str],
               sample_rate: int = SAMPLE_RATE) -> tuple[Tensor, Tensor]:
    """Load given stem files (any rate / channels) as 16 kHz mono.

    Stems of different lengths are padded with silence to the longest (a ``UserWarning`` names them).

    Returns:
        (audio ``[S, n]`` with zeros for stems not given, known bool ``[S]``).

    Raises:
        ValueError: unknown stem name. ``mtmusicldm.audio.AudioError`` (a ``ValueError`` naming the file):
            unreadable audio.
    """
    unknown = sorted(set(paths) - set(stems))
    if unknown:
        raise ValueError(f"unknown stem(s) {unknown}; stems are {list(stems)}")
    loaded = {name: torch.from_numpy(load_audio(path, sample_rate, mono=True)) for name, path in paths.items()}
    n = max(w.shape[-1] for w in loaded.values())
    short = {name: w.shape[-1] for name, w in loaded.items() if w.shape[-1] < n}
    if short:
        warnings.warn(f"given stems have different lengths; padding {short} with silence to {n} samples",
                      UserWarning, stacklevel=2)
    audio = torch.zeros(len(stems), n)
    for name, w in loaded.items():
        audio[list(stems).index(name), :w.shape[-1]] = w
    return audio, torch.tensor([name in paths for name in stems])
