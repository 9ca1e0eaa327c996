"""Segment-level generation and arrangement on a tiny model (tiny UNet3D + tiny VAE + a cheap vocoder)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor

from mtmusicldm import STEMS
from mtmusicldm import generation as G
from mtmusicldm.codec.codec_dir import Codec
from mtmusicldm.codec.vae import build_vae
from mtmusicldm.diffusion.inpainting import arrangement_combinations, arrangement_mask
from mtmusicldm.diffusion.schedules import DiffusionSchedule
from mtmusicldm.models.unet3d import UNet3D, UNet3DConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

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
    def vae(self) -> Any:
        return self.codec.vae

    @property
    def vocoder(self) -> Any:
        return self.codec.vocoder


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


@pytest.fixture(scope="module")
def model() -> TinyModel:
    return make_tiny_model()


@pytest.fixture(scope="module")
def cond_model() -> TinyModel:
    return make_tiny_model(conditional=True)


def song(n: int = SEG, batch: int = 1, seed: int = 0) -> Tensor:
    """[B, S, n] distinct non-silent stems."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    tones = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (55.0, 0.0, 330.0, 523.0)])
    tones[1] = torch.randn(n, generator=g) * (torch.sin(2 * torch.pi * 4 * t) > 0.9)
    return (0.3 * tones)[None].repeat(batch, 1, 1) * (1 + 0.1 * torch.rand(batch, 4, 1, generator=g))


# ---------------------------------------------------------------------------------------------------------------


def test_derive_seed_is_stable_and_distinct() -> None:
    assert G.derive_seed(1, 2, 3) == G.derive_seed(1, 2, 3)
    seeds = {G.derive_seed(s, k, w) for s in range(3) for k in range(3) for w in range(3)}
    assert len(seeds) == 27 and all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(ValueError):
        G.derive_seed(-1)


def test_generate_shape_determinism_and_batch_independence(model: TinyModel) -> None:
    a = G.generate(model, 3, seed=5, steps=4, batch_size=3)
    assert a.shape == (3, 4, SEG) and a.dtype == torch.float32
    assert bool(a.isfinite().all()) and float(a.abs().max()) <= 1.0 and float(a.abs().max()) > 0
    assert torch.equal(a, G.generate(model, 3, seed=5, steps=4, batch_size=3))
    one_by_one = G.generate(model, 3, seed=5, steps=4, batch_size=1)
    torch.testing.assert_close(one_by_one, a, atol=1e-5, rtol=0)
    assert not torch.allclose(a[0], a[1])  # items differ
    assert not torch.allclose(G.generate(model, 1, seed=6, steps=4)[0], a[0])


def test_generate_seconds_crops_and_extends(model: TinyModel) -> None:
    short = G.generate(model, 1, seed=0, steps=2, seconds=0.5)
    assert short.shape == (1, 4, 8000)
    full = G.generate(model, 1, seed=0, steps=2)
    assert torch.equal(short, full[..., :8000])
    long = G.generate(model, 1, seed=0, steps=2, seconds=1.5, overlap=0.5)
    assert long.shape == (1, 4, 24000)


def test_generate_sampler_knobs(model: TinyModel) -> None:
    out = G.generate(model, 1, seed=0, sampler="dpmpp_2m", steps=4)
    assert out.shape == (1, 4, SEG)
    with pytest.raises(ValueError, match="deterministic"):
        G.generate(model, 1, seed=0, sampler="dpmpp_2m", steps=4, eta=0.5)
    with pytest.raises(ValueError, match="unknown sampler"):
        G.generate(model, 1, seed=0, sampler="nope", steps=4)


def test_unconditional_model_rejects_conditioning(model: TinyModel) -> None:
    with pytest.raises(ValueError, match="unconditional"):
        G.generate(model, 1, seed=0, steps=2, film=torch.ones(FILM))
    with pytest.raises(ValueError, match="guidance"):
        G.generate(model, 1, seed=0, steps=2, guidance_scale=2.0)


def test_conditional_generation_with_guidance(cond_model: TinyModel) -> None:
    film = cond_model.clap.embed_text(["soft music"])
    guided = G.generate(cond_model, 1, seed=0, steps=4, film=film, guidance_scale=2.0)
    plain = G.generate(cond_model, 1, seed=0, steps=4, film=film, guidance_scale=1.0)
    uncond = G.generate(cond_model, 1, seed=0, steps=4)
    assert guided.shape == (1, 4, SEG)
    assert not torch.allclose(guided, plain) and not torch.allclose(plain, uncond)


# ---------------------------------------------------------------------------------------------------------------
# Arrangement: all 14 combinations in one batch (one item per combination)

COMBOS = arrangement_combinations(STEMS)


@pytest.fixture(scope="module")
def arranged(model: TinyModel) -> tuple[Tensor, Tensor, Tensor]:
    given = song(batch=len(COMBOS))
    mask = torch.cat([arrangement_mask(c) for c in COMBOS])  # [14, S], True = given
    out = G.arrange(model, given, mask=mask, seed=3, steps=2, batch_size=len(COMBOS))
    return given, mask, out


@pytest.mark.parametrize("i", range(len(COMBOS)), ids=["".join(s[0].upper() for s in c) for c in COMBOS])
def test_arrange_all_combinations(arranged: tuple[Tensor, Tensor, Tensor], i: int) -> None:
    given, mask, out = arranged
    assert out.shape == given.shape
    for s in range(4):
        if mask[i, s]:
            assert torch.equal(out[i, s], given[i, s]), f"given stem {STEMS[s]} changed"
        else:
            assert float(out[i, s].abs().max()) > 1e-3, f"generated stem {STEMS[s]} is silent"
            assert not torch.allclose(out[i, s], given[i, s])


def test_arrange_dict_api_matches_tensor_api_and_is_batch_independent(model: TinyModel,
                                                                      arranged: tuple[Tensor, Tensor, Tensor]) -> None:
    given, mask, out = arranged
    k = COMBOS.index(("guitar", "piano"))
    single = G.arrange(model, given[k:k + 1], mask=mask[k], seed=3, steps=2)
    # item k of the batched call used derive_seed(3, k); a single call uses derive_seed(3, 0)
    assert not torch.equal(single[0, 2], out[k, 2])
    d = G.arrange(model, {"bass": given[k, 0], "drums": given[k, 1]}, seed=3, steps=2)
    assert torch.equal(d, single)
    batched = G.arrange(model, given[:3], mask=mask[:3], seed=3, steps=2, batch_size=3)
    singles = torch.cat([G.arrange(model, given[:3], mask=mask[:3], seed=3, steps=2, batch_size=1)])
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched, out[:3], atol=1e-5, rtol=0)


def test_stack_given_errors_and_silent_stems() -> None:
    x = torch.zeros(SEG)
    with pytest.raises(ValueError, match="unknown stem"):
        G.stack_given({"flute": x}, STEMS)
    with pytest.raises(ValueError, match="both given and"):
        G.stack_given({"bass": x}, STEMS, generate=["bass"])
    with pytest.raises(ValueError, match="every stem is given"):
        G.stack_given(dict.fromkeys(STEMS, x), STEMS)
    with pytest.raises(ValueError, match="one length"):
        G.stack_given({"bass": x, "drums": torch.zeros(SEG - 1)}, STEMS)
    audio, known = G.stack_given({"bass": torch.ones(SEG)}, STEMS, generate=["piano"])
    assert known.tolist() == [[True, True, True, False]]  # drums and guitar: given silence
    assert float(audio[0, 1:].abs().max()) == 0.0


def test_arrange_mask_errors(model: TinyModel) -> None:
    with pytest.raises(ValueError, match="nothing to generate"):
        G.arrange(model, song(), mask=torch.ones(4, dtype=torch.bool), seed=0, steps=2)
    with pytest.raises(ValueError, match="mask must be"):
        G.arrange(model, song(), mask=torch.ones(1, 4, 7, dtype=torch.bool), seed=0, steps=2)
    with pytest.raises(ValueError, match="needs mask"):
        G.arrange(model, song(), seed=0, steps=2)


def test_conditional_arrangement_conditions_on_given_mixture(cond_model: TinyModel) -> None:
    given = song()
    cond_model.clap.audio_calls.clear()
    out = G.arrange(cond_model, given, mask=arrangement_mask(["guitar", "piano"]), seed=0, steps=2)
    assert torch.equal(out[0, :2], given[0, :2])
    (mix,) = cond_model.clap.audio_calls
    torch.testing.assert_close(mix, given[:, :2].sum(dim=1))
    explicit = G.arrange(cond_model, given, mask=arrangement_mask(["guitar", "piano"]), seed=0, steps=2,
                         film=cond_model.clap.embed_text(["energetic music"]), guidance_scale=2.0)
    assert not torch.equal(explicit, out)


# ---------------------------------------------------------------------------------------------------------------
# Time masks: continuation and infill


def test_time_mask_frames() -> None:
    m = G.time_mask([(0.0, 0.1)], 16, stems_known=["bass", "drums"], stems=STEMS, batch=2)
    assert m.shape == (2, 4, 16)
    assert m[0, 0].tolist() == [True, True] + [False] * 14  # 0.1 s = 1600 samples: frames 0-1 fully inside
    assert not bool(m[:, 2:].any())
    infill = G.time_mask([(0.0, 0.128), (0.512, None)], 16, stems_known=STEMS, stems=STEMS)
    assert infill[0, 3].tolist() == [True] * 3 + [False] * 10 + [True] * 3
    with pytest.raises(ValueError, match="unknown stems"):
        G.time_mask([(0, 1)], 16, stems_known=["flute"], stems=STEMS)


def test_continuation_keeps_known_latents_and_audio(model: TinyModel) -> None:
    given = song()
    mask = G.time_mask([(0.0, 0.32)], 16, stems_known=STEMS, stems=STEMS)  # first 8 of 16 frames, all stems
    seeds = [G.derive_seed(0, 0)]
    with torch.inference_mode():
        known = G.encode_audio(model, given, seeds)
        z = G.sample_segment_latents(model, seeds, known=known, mask=mask, steps=4)
    assert torch.equal(z[..., :8, :], known[..., :8, :])
    assert not torch.allclose(z[..., 8:, :], known[..., 8:, :])
    out = G.arrange(model, given, mask=mask, seed=0, steps=4)
    assert torch.equal(out[..., :8 * 640], given[..., :8 * 640])  # known span bit-identical
    assert not torch.allclose(out[..., 9 * 640:], given[..., 9 * 640:])


def test_replace_given_crossfade() -> None:
    gen, giv = torch.zeros(1, 1, 20), torch.ones(1, 1, 20)
    known = torch.zeros(1, 1, 20, dtype=torch.bool)
    known[..., :5] = True
    out = G.replace_given(gen, giv, known, fade_samples=4)
    assert out[0, 0, :5].tolist() == [1.0] * 5
    torch.testing.assert_close(out[0, 0, 5:10], torch.tensor([0.8, 0.6, 0.4, 0.2, 0.0]))
    assert float(out[0, 0, 10:].abs().max()) == 0.0
    whole = G.replace_given(gen, giv, torch.ones_like(known), fade_samples=4)
    assert torch.equal(whole, giv)
