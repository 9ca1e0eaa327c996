"""Segment-level generation and arrangement on a trained model: noise -> latents -> log-mel -> audio.

* :func:`generate` (total generation, paper Table 1/2): per-sample noise from ``(seed, k)`` ->
  ``sample_latents`` -> ``z / scale_factor`` -> VAE decoder -> vocoder -> ``nan_to_num`` + ``clip(-1, 1)`` per
  stem (official spec 7).
* :func:`arrange` (arrangement / inpainting, paper Table 3, official spec 8): the given stems are encoded
  (posterior **sample**, seeded per item), sampled with ``known = z * scale_factor`` and a known mask, all
  non-given stems are decoded, and in the waveform domain the given stems are **replaced** by the given audio,
  bit-identically. Conditioning of a conditional model: the CLAP embedding of the mixture of the given stems
  (an explicit ``film`` from a reference or a prompt overrides it); the official evaluation instead conditions on
  the full ground-truth mixture (pass it as ``film``, see ``pipeline/sample.py``).
* Masks over stem x time (beyond the paper): a known mask ``[B, S, T']`` at latent time resolution (one latent
  frame = 4 mel frames = :data:`FRAME_SAMPLES` = 640 samples) gives continuation (the first seconds known) and
  infill; :func:`time_mask` builds them. Known samples stay bit-identical; on the generated side of a boundary
  the given audio is cross-faded out over ``fade_samples`` (the generated audio fades in), so there is no click.
* The mix is ``clip(sum of stems, -1, 1)`` (official).

Randomness: every item ``k`` gets generators seeded by :func:`derive_seed` ``(seed, k, window, purpose)``, so
sample ``k`` does not depend on the batch size (up to float rounding of batched kernels). Sequences longer than
one segment go to :mod:`mtmusicldm.longform` (windowed latent continuation).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from mtmusicldm.diffusion.inpainting import NoiseMode, expand_mask
from mtmusicldm.diffusion.noise import make_generators, randn_like_per_sample
from mtmusicldm.diffusion.sampling import sample_latents
from mtmusicldm.diffusion.schedules import DiffusionSchedule

MEL_HOP = 160
LATENT_DOWNSAMPLE = 4
FRAME_SAMPLES = MEL_HOP * LATENT_DOWNSAMPLE
"""Audio samples per latent time frame (640 = 40 ms at 16 kHz)."""
NOISE, POSTERIOR, CLAP_CROP = 0, 1, 2
"""Purposes of the per-item random streams (:func:`derive_seed`)."""
DEFAULT_FADE_SAMPLES = 320
"""Cross-fade at time-mask boundaries (20 ms)."""
CHUNK = 16
"""Items per VAE-decoder / vocoder call (bounds memory; results agree up to float rounding)."""


class GenerationModel(Protocol):
    """What generation needs from a model (``mtmusicldm.ldm.MTMusicLDM`` satisfies it).

    ``unet(x [B, S, C, T', F'], t [B], film [B, D] | None) -> eps``; ``config`` holds ``segment_samples`` and
    ``sample_rate``; ``latent_shape`` is ``[S, C, T', F']``; ``vae`` / ``vocoder`` form the codec; ``clap`` is a
    conditioner (``embed_audio``, ``embed_text``, ``uncond_embedding``) or None.
    """

    unet: Any
    config: Mapping[str, Any]

    @property
    def scale_factor(self) -> float: ...
    @property
    def stems(self) -> tuple[str, ...]: ...
    @property
    def schedule(self) -> DiffusionSchedule: ...
    @property
    def latent_shape(self) -> tuple[int, int, int, int]: ...
    @property
    def film_dim(self) -> int | None: ...
    @property
    def uncond_clap(self) -> Tensor | None: ...
    @property
    def vae(self) -> Any: ...
    @property
    def vocoder(self) -> Any: ...
    @property
    def clap(self) -> Any: ...


# ---------------------------------------------------------------------------------------------------------------
# Seeds, model facts, conditioning


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed from ``(seed, *keys)`` (numpy ``SeedSequence``: stable across platforms and versions)."""
    if seed < 0 or any(k < 0 for k in keys):
        raise ValueError(f"seeds and keys must be >= 0, got {seed}, {keys}")
    hi, lo = np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(2, dtype=np.uint32)
    return ((int(hi) << 32) | int(lo)) & ((1 << 63) - 1)


def item_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """Per-item seeds: ``derive_seed(seed, k)`` for ``k < n``, or the ``n`` given seeds as they are."""
    if isinstance(seed, int):
        return [derive_seed(seed, k) for k in range(n)]
    seeds = [int(x) for x in seed]
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} item seeds for {n} items")
    return seeds


def item_generators(seeds: Sequence[int], purpose: int, window: int = 0) -> list[torch.Generator]:
    """CPU generators for one random stream (``purpose``) of each item of a batch, in ``window``."""
    return make_generators([derive_seed(s, window, purpose) for s in seeds])


def segment_samples(model: GenerationModel) -> int:
    """Audio samples of one model segment (``T' * 640``)."""
    n = int(model.config["segment_samples"])
    if n != model.latent_shape[2] * FRAME_SAMPLES:
        raise ValueError(f"segment_samples={n} does not match latent_shape {model.latent_shape} "
                         f"({model.latent_shape[2]} frames x {FRAME_SAMPLES} samples)")
    return n


def model_device(model: GenerationModel) -> torch.device:
    """Device of the UNet."""
    return next(model.unet.parameters()).device


def model_codec(model: GenerationModel) -> Any:
    """The model's ``Codec`` (its ``codec`` attribute if it has one, else one bundling ``vae`` and ``vocoder``)."""
    from mtmusicldm.codec.codec_dir import Codec

    codec = getattr(model, "codec", None)  # MTMusicLDM loads the codec lazily behind .vae / .vocoder
    return codec if codec is not None else Codec(vae=model.vae, vocoder=model.vocoder,
                                                 latent_channels=int(model.latent_shape[1]))


def uncond_embedding(model: GenerationModel) -> Tensor:
    """The classifier-free-guidance token (CLAP text embedding of ""), ``[D]``."""
    if model.film_dim is None:
        raise ValueError("the model is unconditional: it has no conditioning embedding")
    u = model.uncond_clap
    if u is None:
        u = model.clap.uncond_embedding(1)[0]
    return u.to(model_device(model), torch.float32)


def resolve_conditioning(model: GenerationModel, film: Tensor | None, batch: int,
                         guidance_scale: float) -> tuple[Tensor | None, Tensor | None]:
    """``(film [B, D], uncond_film [B, D] | None)`` for ``sample_latents``.

    A conditional model without ``film`` samples unconditionally (film = the "" token); ``uncond_film`` is only
    returned when ``guidance_scale != 1``.

    Raises:
        ValueError: conditioning or guidance on an unconditional model, or a wrongly shaped ``film``.
    """
    if model.film_dim is None:
        if film is not None:
            raise ValueError("the model is unconditional: it takes no prompt, reference or film embedding")
        if guidance_scale != 1.0:
            raise ValueError(f"guidance_scale={guidance_scale}: classifier-free guidance needs a conditional model")
        return None, None
    uncond = uncond_embedding(model).expand(batch, -1)
    if film is None:
        film = uncond
    film = film.to(uncond)
    if film.ndim == 1:
        film = film.expand(batch, -1)
    if film.shape != uncond.shape:
        raise ValueError(f"film must be [{batch}, {model.film_dim}] or [{model.film_dim}], got {tuple(film.shape)}")
    return film, (uncond if guidance_scale != 1.0 else None)


def embed_mixture(model: GenerationModel, mix: Tensor, seeds: Sequence[int], window: int = 0) -> Tensor:
    """CLAP audio embedding of mixtures ``[B, n]`` (16 kHz), official random 10 s crop seeded per item -> ``[B, D]``."""
    if model.clap is None:
        raise ValueError("the model is unconditional: it has no CLAP conditioner")
    gens = item_generators(seeds, CLAP_CROP, window)
    return model.clap.embed_audio(mix.float(), generator=gens, crop="random").to(model_device(model))


# ---------------------------------------------------------------------------------------------------------------
# Latents <-> audio


def postprocess(audio: Tensor) -> Tensor:
    """Official output policy: ``nan_to_num`` then ``clip(-1, 1)`` (elementwise, per stem)."""
    return torch.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0).clamp(-1.0, 1.0)


def mix_stems(stems: Tensor) -> Tensor:
    """Mixture ``[..., n]`` = ``clip(sum over S of [..., S, n], -1, 1)`` (official)."""
    return postprocess(stems.sum(dim=-2))


def encode_audio(model: GenerationModel, wav: Tensor, seeds: Sequence[int], window: int = 0,
                 rows: Tensor | None = None) -> Tensor:
    """Scaled latents of stem audio: log-mel -> VAE posterior **sample** (official) -> ``* scale_factor``.

    The posterior noise of stem ``s`` of item ``b`` comes from ``derive_seed(seeds[b], window, POSTERIOR, s)``,
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
        codec = model_codec(model)
        mel = codec.audio_to_mel(wav[rows].float()[:, None])  # [N, 1, T, 64]
        gens = make_generators([derive_seed(seeds[i], window, POSTERIOR, j) for i, j in pairs])
        flat = codec.encode_mel(mel, sample=True, generator=gens)[:, 0]
        z[rows.to(z.device)] = (flat * model.scale_factor).to(z)
    return z


def decode_mel(model: GenerationModel, z: Tensor, chunk: int = CHUNK) -> Tensor:
    """Scaled latents ``[B, S', C, T', F']`` -> log-mel ``[B, S', 4T', 64]`` (``z / scale_factor`` decoded).

    At most ``chunk`` items go through the decoder at once (memory only).
    """
    codec = model_codec(model)
    device = next(codec.vae.parameters()).device
    return torch.cat([codec.decode_mel(c.to(device) / model.scale_factor) for c in z.split(chunk)])


def mel_to_audio(model: GenerationModel, mel: Tensor, n_samples: int, chunk: int = CHUNK) -> Tensor:
    """Vocode ``[B, S', T, 64]`` -> CPU ``[B, S', n_samples]`` (``chunk`` items at a time), then :func:`postprocess`."""
    codec = model_codec(model)
    return torch.cat([postprocess(codec.mel_to_audio(c, n_samples).float().cpu()) for c in mel.split(chunk)])


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


# ---------------------------------------------------------------------------------------------------------------
# Masks over stem x time


def time_mask(spans: Sequence[tuple[float, float | None]], n_frames: int, *, stems_known: Sequence[str],
              stems: Sequence[str], batch: int = 1, sample_rate: int = 16000) -> Tensor:
    """Known mask ``[B, S, T']`` from time spans in seconds (continuation: ``[(0, k)]``; infill: two spans).

    A latent frame ``f`` (samples ``[640 f, 640 (f + 1))``) is known iff it lies entirely inside a span
    ``[start, end)`` (``end=None``: to the end), and only for ``stems_known``. OR it with a stem mask
    (``stem_mask(...)[:, :, None]``) to keep whole stems as well.
    """
    unknown = sorted(set(stems_known) - set(stems))
    if unknown:
        raise ValueError(f"unknown stems {unknown}; stems are {list(stems)}")
    starts = torch.arange(n_frames, dtype=torch.float64) * FRAME_SAMPLES
    frames = torch.zeros(n_frames, dtype=torch.bool)
    for start, end in spans:
        lo = start * sample_rate
        hi = float("inf") if end is None else end * sample_rate
        if end is not None and end < start:
            raise ValueError(f"time span ({start}, {end}) ends before it starts")
        frames |= (starts >= lo - 1e-6) & (starts + FRAME_SAMPLES <= hi + 1e-6)
    mask = torch.zeros(batch, len(stems), n_frames, dtype=torch.bool)
    for name in stems_known:
        mask[:, list(stems).index(name)] = frames
    return mask


def known_samples(mask: Tensor, n_stems: int, n_samples: int) -> Tensor:
    """Known mask ``[B, S]`` / ``[B, S, T']`` -> per-sample bool ``[B, S, n_samples]``."""
    if mask.ndim == 2:
        return mask[:, :, None].expand(-1, n_stems, n_samples).clone()
    per_sample = mask.repeat_interleave(FRAME_SAMPLES, dim=-1)[..., :n_samples]
    return torch.nn.functional.pad(per_sample, (0, n_samples - per_sample.shape[-1]))


def _distance_to_known(known: np.ndarray) -> np.ndarray:
    """Samples to the nearest known sample along the last axis (inf when a row has none)."""
    n = known.shape[-1]
    idx = np.arange(n, dtype=np.float64)
    last = np.maximum.accumulate(np.where(known, idx, -np.inf), axis=-1)
    nxt = np.minimum.accumulate(np.where(known, idx, np.inf)[..., ::-1], axis=-1)[..., ::-1]
    return np.minimum(idx - last, nxt - idx)


def replace_given(generated: Tensor, given: Tensor, known: Tensor, fade_samples: int = DEFAULT_FADE_SAMPLES) -> Tensor:
    """Waveform-domain replacement (official spec 8): known samples are the given audio, bit-identically.

    Generated samples within ``fade_samples`` of a known sample mix the given audio out linearly
    (``w = 1 - d / (fade + 1)`` at distance ``d``) and the generated audio in; whole known stems are exact
    copies, whole generated stems untouched.

    Args:
        generated, given: ``[B, S, n]``.
        known: bool ``[B, S, n]``.
    """
    out = generated.clone()
    if fade_samples > 0 and bool(known.any()) and not bool(known.all()):
        d = torch.from_numpy(_distance_to_known(known.cpu().numpy()))
        w = (1.0 - d / (fade_samples + 1)).clamp(min=0.0).to(generated.dtype)
        out = w * given + (1.0 - w) * generated
    return torch.where(known, given, out)


# ---------------------------------------------------------------------------------------------------------------
# Sampling


def sample_segment_latents(model: GenerationModel, seeds: Sequence[int], *, window: int = 0,
                           film: Tensor | None = None, guidance_scale: float = 1.0, known: Tensor | None = None,
                           mask: Tensor | None = None, sampler: str = "ddim", steps: int = 200,
                           eta: float | None = None, noise_mode: NoiseMode = "fresh",
                           final_sigma_zero: bool | None = None, progress: bool = False) -> Tensor:
    """Scaled latents ``[B, S, C, T', F']`` of one segment per item (``B = len(seeds)``).

    Item ``k``'s initial noise and all later sampler / inpainting noise come from one generator seeded by
    ``derive_seed(seeds[k], window, NOISE)``. ``known`` (scaled latents) and ``mask`` (True = known, ``[B, S]``,
    ``[B, S, T']`` or full) select arrangement; the result equals ``known`` on the known entries.
    """
    b = len(seeds)
    device = model_device(model)
    film, uncond = resolve_conditioning(model, film, b, guidance_scale)
    gens = item_generators(seeds, NOISE, window)
    noise = randn_like_per_sample(torch.empty(b, *model.latent_shape, device=device), gens)
    if mask is not None and not bool(expand_mask(mask, noise).any()):
        known, mask = None, None  # nothing known: plain generation
    return sample_latents(model.unet, noise, sampler=sampler, steps=steps, eta=eta, film=film, uncond_film=uncond,
                          guidance_scale=guidance_scale, known=known, stem_mask=mask, noise_mode=noise_mode,
                          replace_known_at_end=True, final_sigma_zero=final_sigma_zero, generator=gens,
                          schedule=model.schedule, progress=progress)


def batches(n: int, batch_size: int) -> list[range]:
    """Consecutive index ranges of at most ``batch_size`` covering ``range(n)``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [range(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def generate(model: GenerationModel, n: int, *, seed: int | Sequence[int], seconds: float | None = None,
             sampler: str = "ddim", steps: int = 200, eta: float | None = None, guidance_scale: float = 1.0,
             film: Tensor | None = None, batch_size: int = 4, noise_mode: NoiseMode = "fresh",
             overlap: float = 0.5, progress: bool = False) -> Tensor:
    """Total generation of ``n`` items (all stems).

    Args:
        seed: item ``k`` uses ``derive_seed(seed, k)`` (or ``seed[k]`` for a sequence of item seeds).
        seconds: output length (None: one segment). Shorter: one segment cropped; longer: windowed latent
            continuation (:func:`mtmusicldm.longform.generate_long`, ``overlap`` = fraction of a window).
        film: conditioning ``[n, D]`` or ``[D]`` (CLAP audio/text embedding), None = unconditional.
        guidance_scale: CFG scale (official generation: 2.0 with conditioning).

    Returns:
        ``[n, S, samples]`` float32 CPU audio, each stem ``nan_to_num``-ed and clipped to [-1, 1].
    """
    seg = segment_samples(model)
    total = seg if seconds is None else int(round(seconds * int(model.config["sample_rate"])))
    if total < 1:
        raise ValueError(f"seconds={seconds} gives no samples")
    if total > seg:
        from mtmusicldm.longform import generate_long

        return generate_long(model, n, total, seed=seed, sampler=sampler, steps=steps, eta=eta,
                             guidance_scale=guidance_scale, film=film, batch_size=batch_size,
                             noise_mode=noise_mode, overlap=overlap, progress=progress)
    seeds, out = item_seeds(seed, n), []
    with torch.inference_mode():
        for rows in batches(n, batch_size):
            f = film[rows.start:rows.stop] if film is not None and film.ndim == 2 else film
            z = sample_segment_latents(model, seeds[rows.start:rows.stop], film=f,
                                       guidance_scale=guidance_scale, sampler=sampler, steps=steps, eta=eta,
                                       noise_mode=noise_mode, progress=progress)
            out.append(decode_audio(model, z, seg)[..., :total])
    return torch.cat(out)


def stack_given(given: Mapping[str, Tensor | np.ndarray], stems: Sequence[str],
                generate: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
    """``{stem: [n] | [B, n]}`` -> (audio ``[B, S, n]``, known mask ``[B, S]``).

    Stems to generate default to every stem not given; a stem neither given nor generated is given **silence**.

    Raises:
        ValueError: unknown stem, a stem both given and generated, nothing to generate, unequal lengths.
    """
    unknown = sorted(set(given) - set(stems)) + sorted(set(generate or ()) - set(stems))
    if unknown:
        raise ValueError(f"unknown stem(s) {unknown}; stems are {list(stems)}")
    to_generate = [s for s in stems if s not in given] if generate is None else list(generate)
    both = sorted(set(to_generate) & set(given))
    if both:
        raise ValueError(f"stem(s) {both} are both given and to be generated")
    if not to_generate:
        raise ValueError("every stem is given: nothing to generate")
    arrays = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in given.items()}
    arrays = {k: v[None] if v.ndim == 1 else v for k, v in arrays.items()}
    shapes = {tuple(v.shape) for v in arrays.values()}
    batch = max((v.shape[0] for v in arrays.values()), default=1)
    lengths = {v.shape[-1] for v in arrays.values()}
    if len(lengths) > 1 or any(v.ndim != 2 or v.shape[0] not in (1, batch) for v in arrays.values()):
        raise ValueError(f"given stems must be [n] or [B, n] with one length, got shapes {sorted(shapes)}")
    if not arrays:
        raise ValueError("no given stem: use generate() for total generation")
    n = lengths.pop()
    audio = torch.zeros(batch, len(stems), n)
    for k, v in arrays.items():
        audio[:, list(stems).index(k)] = v
    known = torch.tensor([s not in to_generate for s in stems]).expand(batch, -1).clone()
    return audio, known


def _check_mask(mask: Tensor, batch: int, n_stems: int, n_frames: int) -> Tensor:
    """Known mask as bool ``[B, S]`` or ``[B, S, T']`` (``[S]`` / ``[1, ...]`` are broadcast)."""
    mask = torch.as_tensor(mask, dtype=torch.bool).cpu()
    if mask.ndim == 1:
        mask = mask[None]
    if mask.ndim not in (2, 3) or mask.shape[1] != n_stems or (mask.ndim == 3 and mask.shape[2] != n_frames):
        raise ValueError(f"mask must be [S], [B, S] or [B, S, T'={n_frames}] with S={n_stems}, "
                         f"got {tuple(mask.shape)}")
    if mask.shape[0] not in (1, batch):
        raise ValueError(f"mask batch {mask.shape[0]} does not match the audio batch {batch}")
    mask = mask.expand(batch, *mask.shape[1:]).clone()
    if bool(mask.flatten(1).all(dim=1).any()):
        raise ValueError("every stem is known for some item: nothing to generate")
    return mask


def given_mixture(audio: Tensor, known: Tensor) -> Tensor:
    """Mixture of the known part of the given stems: ``sum_s audio * known`` ``[B, n]`` (CLAP conditioning)."""
    return (audio * known).sum(dim=1)


def arrange(model: GenerationModel, given: Mapping[str, Tensor | np.ndarray] | Tensor, *, seed: int | Sequence[int],
            mask: Tensor | None = None, generate: Sequence[str] | None = None, sampler: str = "ddim",
            steps: int = 200, eta: float | None = None, guidance_scale: float = 1.0, film: Tensor | None = None,
            condition_on_given: bool = True, batch_size: int = 4, noise_mode: NoiseMode = "fresh",
            fade_samples: int = DEFAULT_FADE_SAMPLES, overlap: float = 0.5, progress: bool = False) -> Tensor:
    """Arrangement: generate the missing stems (or time spans) given the others; official spec 8.

    Args:
        given: ``{stem: [n] | [B, n]}`` (known mask from the keys and ``generate``; see :func:`stack_given`) or
            audio ``[B, S, n]`` with ``mask``.
        seed: item ``k`` uses ``derive_seed(seed, k)`` (or ``seed[k]`` for a sequence of item seeds).
        mask: known mask (True = given) ``[S]``, ``[B, S]`` or ``[B, S, T']`` (:func:`time_mask`), only with
            a tensor ``given``.
        guidance_scale: CFG scale (official arrangement: 1.0).
        film: conditioning ``[B, D]`` / ``[D]`` (reference or prompt); None and ``condition_on_given``: a
            conditional model is conditioned on the CLAP embedding of the given mixture.
        fade_samples: cross-fade at time-mask boundaries (whole stems are exact copies regardless).
        overlap: window overlap (fraction) when ``n`` exceeds a segment (:func:`mtmusicldm.longform.arrange_long`).

    Returns:
        ``[B, S, n]`` CPU float32: given samples bit-identical to the input, generated ones clipped to [-1, 1].
    """
    if isinstance(given, Mapping):
        if mask is not None:
            raise ValueError("pass mask= only with a [B, S, n] tensor of given audio")
        audio, mask = stack_given(given, model.stems, generate)
    else:
        if mask is None or generate is not None:
            raise ValueError("a [B, S, n] audio tensor needs mask= (True = given) and no generate=")
        audio = torch.as_tensor(given, dtype=torch.float32).cpu()
    if audio.ndim != 3 or audio.shape[1] != len(model.stems):
        raise ValueError(f"given audio must be [B, S={len(model.stems)}, n], got {tuple(audio.shape)}")
    seg, (b, s, n) = segment_samples(model), audio.shape
    mask = _check_mask(mask, b, s, model.latent_shape[2])
    if n > seg:
        if mask.ndim == 3:
            raise ValueError("time masks are only supported within one segment; long inputs take whole stems")
        from mtmusicldm.longform import arrange_long

        return arrange_long(model, audio, mask, seed=seed, sampler=sampler, steps=steps, eta=eta,
                            guidance_scale=guidance_scale, film=film, condition_on_given=condition_on_given,
                            batch_size=batch_size, noise_mode=noise_mode, overlap=overlap, progress=progress)
    padded = torch.nn.functional.pad(audio, (0, seg - n))
    known = known_samples(mask, s, seg)
    all_seeds, out = item_seeds(seed, b), []
    with torch.inference_mode():
        for rows in batches(b, batch_size):
            seeds = all_seeds[rows.start:rows.stop]
            m, wav, kn = mask[rows.start:rows.stop], padded[rows.start:rows.stop], known[rows.start:rows.stop]
            has_known = m.flatten(2).any(dim=2) if m.ndim == 3 else m
            z_known = encode_audio(model, wav, seeds, rows=has_known)
            f = film[rows.start:rows.stop] if film is not None and film.ndim == 2 else film
            if f is None and condition_on_given and model.film_dim is not None:
                f = embed_mixture(model, given_mixture(wav, kn), seeds)
                f[~kn.flatten(1).any(dim=1)] = uncond_embedding(model)  # nothing given: unconditional
            z = sample_segment_latents(model, seeds, film=f, guidance_scale=guidance_scale, known=z_known, mask=m,
                                       sampler=sampler, steps=steps, eta=eta, noise_mode=noise_mode,
                                       progress=progress)
            generated = decode_audio(model, z, seg, rows=~kn.all(dim=2))
            out.append(replace_given(generated, wav, kn, fade_samples)[..., :n])
    return torch.cat(out)


def write_stems(directory: Path, audio: Tensor, stems: Sequence[str], sample_rate: int,
                subtype: str = "FLOAT") -> dict[str, str]:
    """Write ``<stem>.wav`` for each stem of ``audio [S, n]`` and ``mix.wav`` (:func:`mix_stems`), atomically.

    ``subtype="FLOAT"`` keeps the given stems of an arrangement bit-identical in the files; ``"PCM_16"`` is the
    official format (and clips).

    Returns:
        ``{name: file name}`` for the stems and ``"mix"``.
    """
    from mtmusicldm.audio import save_audio

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tracks = dict(zip(stems, audio)) | {"mix": mix_stems(audio)}
    for name, wav in tracks.items():
        save_audio(directory / f"{name}.wav", wav.numpy(), sample_rate, subtype=subtype)
    return {name: f"{name}.wav" for name in tracks}
