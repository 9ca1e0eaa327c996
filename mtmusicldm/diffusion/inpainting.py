"""Arrangement generation (and time infill) by latent inpainting, as a denoiser wrapper.

Mask convention (official, spec 8): **True / 1 = known (kept), False / 0 = generated.** A mask is
``[B, S]`` (whole stems: arrangement), ``[B, S, T]`` (stem x latent-time frames: continuation / infill; one
latent frame is 4 mel frames = 40 ms) or the full ``[B, S, C, T, F]``; it is broadcast over ``C`` and ``F``.

Semantics of :func:`inpaint` (paper eq. 8, official ``p_sample_ddim`` with ``mask``/``x0``):

* Before **every** denoiser call at noise level ``sigma``, the known entries of the input are replaced by
  the clean known latent noised to that level, ``x_known + sigma * eps`` (the VE form of the official
  ``q_sample(x0, t) = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``). ``noise_mode="fresh"`` draws a new ``eps``
  at every call (official); ``noise_mode="fixed"`` reuses one ``eps`` (the deterministic forward pass the
  official code leaves as a TODO).
* The wrapper returns ``x_known`` on the known entries and the inner denoiser's ``x0_hat`` elsewhere
  (replacement in x0-space). The generated entries therefore follow exactly the official trajectory, and
  the sampler's own state on the known entries stays a valid noisy version of ``x_known``: if it starts at
  ``x_known + sigma_0 eps`` (:func:`init_known`), DDIM with eta = 0 keeps it at ``x_known + sigma_i eps``.
* The official code does not replace the final latent of the known stems (they are replaced by the
  ground-truth waveforms after decoding). Use :func:`replace_known` on the final latent to get them
  bit-exact; with a final sigma of 0 every sampler already returns ``x_known`` there.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from mtmusicldm import STEMS
from mtmusicldm.diffusion.denoiser import Denoiser, append_dims
from mtmusicldm.diffusion.noise import Generators, randn_like_per_sample

NoiseMode = Literal["fresh", "fixed"]


def _stem_indices(stems_given: Sequence[str] | Sequence[int], stems: Sequence[str]) -> list[int]:
    indices = []
    for s in stems_given:
        if isinstance(s, str):
            if s not in stems:
                raise ValueError(f"unknown stem {s!r}; stems are {list(stems)}")
            indices.append(list(stems).index(s))
        else:
            i = int(s)
            if not 0 <= i < len(stems):
                raise ValueError(f"stem index {i} out of range for {len(stems)} stems")
            indices.append(i)
    return indices


def stem_mask(stems_given: Sequence[str] | Sequence[int], n_stems: int = len(STEMS), batch: int = 1, *,
              stems: Sequence[str] = STEMS, device: torch.device | str | None = None) -> Tensor:
    """Per-stem known mask for arrangement.

    Args:
        stems_given: the KNOWN stems, by name (in ``stems``) or by index.
        n_stems: ``S``; must equal ``len(stems)`` when names are used.
        batch: ``B`` (the same mask is repeated).
        stems: stem vocabulary in ``S`` order.
        device: device of the result.

    Returns:
        bool ``[B, S]``, True where the stem is known (kept).
    """
    if any(isinstance(s, str) for s in stems_given) and len(stems) != n_stems:
        raise ValueError(f"n_stems={n_stems} but the stem vocabulary has {len(stems)} names")
    vocabulary = stems if len(stems) == n_stems else [str(i) for i in range(n_stems)]
    mask = torch.zeros(batch, n_stems, dtype=torch.bool, device=device)
    mask[:, _stem_indices(stems_given, vocabulary)] = True
    return mask


def arrangement_combinations(stems: Sequence[str] = STEMS) -> list[tuple[str, ...]]:
    """All non-empty proper subsets of stems to GENERATE, in the paper's order.

    For ``(bass, drums, guitar, piano)``: B, D, G, P, BD, BG, BP, DG, DP, GP, BDG, BDP, BGP, DGP (14).
    """
    return [combo for k in range(1, len(stems)) for combo in itertools.combinations(stems, k)]


def combination_name(generated: Sequence[str], stems: Sequence[str] = STEMS) -> str:
    """Short name of a stem subset (the paper's column names): each stem's shortest prefix that no other stem of
    ``stems`` shares, capitalised, in ``stems`` order.

    ``("bass", "drums") -> "BD"`` for the default stems; stems sharing an initial stay apart
    (``("bass", "brass")`` of ``(bass, brass, drums)`` -> ``"BaBr"``).

    Raises:
        ValueError: a name not in ``stems``, or two identical stems.
    """
    if len(set(stems)) != len(stems):
        raise ValueError(f"combination_name: stems must be distinct, got {list(stems)}")
    unknown = [g for g in generated if g not in stems]
    if unknown:
        raise ValueError(f"combination_name: {unknown} not among the stems {list(stems)}")

    def prefix(stem: str) -> str:
        others = [o for o in stems if o != stem]
        k = next((k for k in range(1, len(stem) + 1) if not any(o.startswith(stem[:k]) for o in others)),
                 len(stem))
        return stem[:k].capitalize()

    return "".join(prefix(s) for s in stems if s in generated)


def arrangement_mask(stems_to_generate: Sequence[str] | Sequence[int], batch: int = 1, *,
                     stems: Sequence[str] = STEMS, device: torch.device | str | None = None) -> Tensor:
    """Known mask ``[B, S]`` that generates ``stems_to_generate`` and keeps every other stem."""
    generated = set(_stem_indices(stems_to_generate, stems))
    return stem_mask([i for i in range(len(stems)) if i not in generated], len(stems), batch,
                     stems=stems, device=device)


def expand_mask(mask: Tensor, x: Tensor) -> Tensor:
    """Broadcast a known mask to ``x`` ``[B, S, C, T, F]``.

    Args:
        mask: bool ``[B, S]``, ``[B, S, T]`` or ``[B, S, C, T, F]`` (``B`` may be 1).
        x: reference tensor ``[B, S, C, T, F]``.

    Returns:
        bool mask broadcastable to ``x``: ``[B, S, 1, 1, 1]``, ``[B, S, 1, T, 1]`` or ``[B, S, C, T, F]``.
    """
    if x.ndim != 5:
        raise ValueError(f"expected x [B, S, C, T, F], got shape {tuple(x.shape)}")
    mask = mask.to(device=x.device, dtype=torch.bool)
    if mask.ndim == 2:
        mask = mask[:, :, None, None, None]
    elif mask.ndim == 3:
        mask = mask[:, :, None, :, None]
    elif mask.ndim != 5:
        raise ValueError(f"mask must be [B, S], [B, S, T] or [B, S, C, T, F], got shape {tuple(mask.shape)}")
    try:
        torch.broadcast_shapes(mask.shape, x.shape)
    except RuntimeError as err:
        raise ValueError(f"mask {tuple(mask.shape)} does not broadcast to x {tuple(x.shape)}") from err
    if mask.shape[1] != x.shape[1]:
        raise ValueError(f"mask has {mask.shape[1]} stems, x has {x.shape[1]}")
    return mask


def inpaint(denoiser: Denoiser, x_known: Tensor, mask: Tensor, *, noise_mode: NoiseMode = "fresh",
            generator: Generators | None = None, noise: Tensor | None = None) -> Denoiser:
    """Wrap a denoiser so that the known part of the latent is imposed (see the module docstring).

    Args:
        denoiser: inner denoiser (e.g. ``cfg(EpsDenoiser(unet), s)``).
        x_known: clean latents ``[B, S, C, T, F]``; only the masked entries are used.
        mask: known mask (True = keep), ``[B, S]``, ``[B, S, T]`` or ``[B, S, C, T, F]``.
        noise_mode: ``"fresh"`` (new eps per call, official) or ``"fixed"`` (one eps for all calls).
        generator: one generator or one per item; draws the fresh noise, or the fixed noise once (now)
            when ``noise`` is None.
        noise: the fixed eps ``[B, S, C, T, F]`` for ``noise_mode="fixed"``.

    Returns:
        a denoiser with the same signature as ``denoiser``.
    """
    m = expand_mask(mask, x_known)
    if noise_mode == "fixed":
        if noise is None:
            if generator is None:
                raise ValueError("noise_mode='fixed' needs noise= or generator=")
            noise = randn_like_per_sample(x_known, generator)
        if noise.shape != x_known.shape:
            raise ValueError(f"noise {tuple(noise.shape)} must match x_known {tuple(x_known.shape)}")
        fixed_noise = noise.to(x_known)
    elif noise_mode == "fresh":
        if generator is None:
            raise ValueError("noise_mode='fresh' needs generator= (fresh noise at every step)")
        fixed_noise = None
    else:
        raise ValueError(f"noise_mode must be 'fresh' or 'fixed', got {noise_mode!r}")

    def inpainted(x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        if x.shape != x_known.shape:
            raise ValueError(f"x {tuple(x.shape)} and x_known {tuple(x_known.shape)} differ")
        eps = fixed_noise if fixed_noise is not None else randn_like_per_sample(x, generator)
        sigma_b = torch.as_tensor(sigma, device=x.device)
        sigma_b = append_dims(sigma_b.expand(x.shape[0]).to(x.dtype), x.ndim)
        x_in = torch.where(m, x_known + sigma_b * eps, x)
        denoised = denoiser(x_in, sigma, **cond)
        return torch.where(m, x_known, denoised)

    return inpainted


def init_known(x: Tensor, x_known: Tensor, mask: Tensor, sigma: float | Tensor, noise: Tensor) -> Tensor:
    """Set the known entries of an initial VE sample to ``x_known + sigma * noise``.

    Args:
        x: initial VE sample ``[B, S, C, T, F]``.
        x_known: clean latents ``[B, S, C, T, F]``.
        mask: known mask (see :func:`expand_mask`).
        sigma: the initial noise level (scalar).
        noise: standard normal ``[B, S, C, T, F]``.

    Returns:
        ``[B, S, C, T, F]``.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64).to(x.dtype)
    return torch.where(expand_mask(mask, x), x_known + sigma.to(x.device) * noise, x)


def replace_known(x: Tensor, x_known: Tensor, mask: Tensor) -> Tensor:
    """``where(mask, x_known, x)``: impose the known latents bit-exactly (e.g. on the final sample)."""
    return torch.where(expand_mask(mask, x), x_known, x)
