"""Properties of `UNet3D` and its blocks on tiny configurations (CPU, seconds)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mtmusicldm.models import AttentionBlock, UNet3D, UNet3DConfig, channel_plan, timestep_embedding

TINY = UNet3DConfig(
    in_stems=2,
    out_stems=3,
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(1, 2),
    num_head_channels=16,
    film_dim=8,
)
TINY_UNCOND = TINY.replace(film_dim=None, channel_mult=(1, 1, 2), attention_resolutions=(4,))


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Re-draw every parameter (also the zero-initialised ones) so that all paths carry signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in) * (1.0 if p.ndim > 1 else 0.1))
    return model


def inputs(cfg: UNet3DConfig, b: int, c: int, t: int, f: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, cfg.in_stems, c, t, f, generator=g)
    steps = torch.randint(0, 1000, (b,), generator=g)
    film = None if cfg.film_dim is None else F.normalize(torch.randn(b, cfg.film_dim, generator=g), dim=-1)
    return x, steps, film


# ---------------------------------------------------------------------------------------------------------------
# Shapes and initialisation


@pytest.mark.parametrize(
    ("cfg", "shape"),
    [(TINY, (2, 1, 2, 2)), (TINY, (1, 3, 4, 6)), (TINY, (3, 2, 8, 2)),
     (TINY_UNCOND, (2, 2, 4, 4)), (TINY_UNCOND, (1, 1, 12, 8))],
)
def test_output_shape_matches_input(cfg: UNet3DConfig, shape: tuple[int, int, int, int]) -> None:
    b, c, t, f = shape
    model = randomize(UNet3D(cfg), 0).eval()
    x, steps, film = inputs(cfg, b, c, t, f)
    with torch.no_grad():
        out = model(x, steps, film)
    assert out.shape == (b, cfg.out_stems, c, t, f)
    assert torch.isfinite(out).all() and out.abs().max() > 0


def test_output_is_exactly_zero_at_init() -> None:
    torch.manual_seed(0)
    model = UNet3D(TINY)
    x, steps, film = inputs(TINY, 2, 2, 4, 4)
    out = model(x, steps, film)
    assert torch.equal(out, torch.zeros_like(out))
    # the zero-init projections of the residual branches as in the official code
    for name, p in model.named_parameters():
        if name.endswith(("conv_out.weight", "conv_out.bias", "proj_out.weight", "proj_out.bias")):
            assert torch.count_nonzero(p) == 0, name


def test_channel_plan_of_paper_model() -> None:
    plan = channel_plan(UNet3DConfig())
    assert plan.down == (((192, 192), (192, 192)), ((192, 384), (384, 384)),
                         ((384, 576), (576, 576)), ((576, 960), (960, 960)))
    assert plan.up[3] == ((1920, 960), (1920, 960), (1536, 960))
    assert plan.up[0] == ((576, 192), (384, 192), (384, 192))


# ---------------------------------------------------------------------------------------------------------------
# Conditioning and input checks


def test_film_required_iff_configured() -> None:
    cond, uncond = UNet3D(TINY), UNet3D(TINY_UNCOND)
    x, steps, film = inputs(TINY, 2, 1, 4, 4)
    with pytest.raises(ValueError, match="film"):
        cond(x, steps)
    with pytest.raises(ValueError, match="film"):
        uncond(x, steps, film)
    with pytest.raises(ValueError, match="film"):
        cond(x, steps, film[:, :4])
    uncond(x, steps)  # no error


def test_film_changes_the_output() -> None:
    model = randomize(UNet3D(TINY), 1).eval()
    x, steps, film = inputs(TINY, 2, 1, 4, 4)
    with torch.no_grad():
        assert not torch.allclose(model(x, steps, film), model(x, steps, film.flip(0)))


@pytest.mark.parametrize(
    ("shape", "steps", "match"),
    [((2, 3, 1, 4, 4), [1, 2], r"\[B, 2, C, T, F\]"), ((2, 2, 1, 4, 4), [1], "t must be"),
     ((2, 2, 1, 3, 4), [1, 2], "divisible"), ((2, 2, 4, 4), [1, 2], r"\[B, 2, C, T, F\]")],
)
def test_bad_inputs_raise(shape: tuple[int, ...], steps: list[int], match: str) -> None:
    model = UNet3D(TINY)
    film = torch.zeros(shape[0], TINY.film_dim)
    with pytest.raises(ValueError, match=match):
        model(torch.zeros(shape), torch.tensor(steps), film)


def test_scalar_timestep_broadcasts() -> None:
    model = randomize(UNet3D(TINY), 2).eval()
    x, _, film = inputs(TINY, 3, 1, 2, 4)
    with torch.no_grad():
        torch.testing.assert_close(model(x, torch.tensor(17), film), model(x, torch.full((3,), 17), film))
        torch.testing.assert_close(model(x, torch.full((3,), 17.0), film), model(x, torch.full((3,), 17), film))


@pytest.mark.parametrize(
    ("changes", "match"),
    [({"model_channels": 48}, "GroupNorm"), ({"num_head_channels": 24}, "num_head_channels"),
     ({"attention_resolutions": (4,)}, "attention_resolutions"), ({"film_dim": 0}, "film_dim"),
     ({"dropout": 1.0}, "dropout"), ({"channel_mult": ()}, "channel_mult"), ({"num_res_blocks": 0}, "num_res_blocks")],
)
def test_config_validation(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TINY.replace(**changes)


def test_config_derived_widths_and_canonical_attention() -> None:
    paper = UNet3DConfig()
    assert (paper.time_embed_dim, paper.emb_dim, paper.downsampling_factor) == (768, 1536, 8)
    assert paper.replace(film_dim=None).emb_dim == 768
    assert paper == paper.replace(attention_resolutions=[8, 4, 2, 2])


# ---------------------------------------------------------------------------------------------------------------
# Blocks


def test_timestep_embedding_formula() -> None:
    t = torch.tensor([0, 3, 999])
    emb = timestep_embedding(t, 9)
    assert emb.shape == (3, 9)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[:, :4], torch.cos(t[:, None] * freqs))
    torch.testing.assert_close(emb[:, 4:8], torch.sin(t[:, None] * freqs))
    assert torch.equal(emb[:, 8], torch.zeros(3))  # odd width: zero column
    assert torch.equal(emb[0, :4], torch.ones(4))


def legacy_attention(block: AttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """The official QKVAttentionLegacy path, written naively (heads split before q/k/v, ch^-1/4 on q and k)."""
    b, c, *spatial = x.shape
    h = block.norm(x).reshape(b, c, -1)  # [B, C, L]
    qkv = torch.einsum("oc,bcl->bol", block.to_qkv.weight, h) + block.to_qkv.bias[None, :, None]  # [B, 3C, L]
    heads, ch = block.num_heads, c // block.num_heads
    q, k, v = qkv.reshape(b * heads, 3 * ch, -1).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale).float(), dim=-1)
    a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, -1)
    out = torch.einsum("oc,bcl->bol", block.proj_out.weight, a) + block.proj_out.bias[None, :, None]
    return (x.reshape(b, c, -1) + out).reshape(b, c, *spatial)


@pytest.mark.parametrize(("channels", "head_channels", "seed"), [(64, 16, 0), (96, 32, 1), (32, 8, 2)])
def test_sdpa_attention_equals_legacy_qkv_attention(channels: int, head_channels: int, seed: int) -> None:
    block = randomize(AttentionBlock(channels, head_channels), seed)
    x = torch.randn(2, channels, 2, 3, 4, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(block(x), legacy_attention(block, x), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Training-time behaviour


def test_gradient_checkpointing_gives_same_gradients() -> None:
    plain = randomize(UNet3D(TINY), 3).train()
    ckpt = UNet3D(TINY.replace(use_checkpoint=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    calls = []
    ckpt.mid.res_1.register_forward_pre_hook(lambda *_: calls.append(1))
    x, steps, film = inputs(TINY, 2, 2, 4, 4)
    for model in (plain, ckpt):
        model.zero_grad()
        (model(x, steps, film) ** 2).mean().backward()
    assert len(calls) == 2  # forward + recomputation in backward: checkpointing really ran
    grads = dict(ckpt.named_parameters())
    for name, p in plain.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name
        torch.testing.assert_close(grads[name].grad, p.grad, atol=1e-6, rtol=1e-5)


def test_batch_items_are_independent() -> None:
    model = randomize(UNet3D(TINY), 4).eval()
    x, steps, film = inputs(TINY, 3, 2, 4, 2)
    with torch.no_grad():
        full = model(x, steps, film)
        for k in range(3):
            single = model(x[k : k + 1], steps[k : k + 1], film[k : k + 1])
            torch.testing.assert_close(single[0], full[k], atol=1e-5, rtol=1e-5)
        x2, film2 = x.clone(), film.clone()
        x2[1:] = torch.randn_like(x2[1:])
        film2[1:] = film2[1:].flip(-1)
        torch.testing.assert_close(model(x2, steps, film2)[0], full[0], atol=1e-5, rtol=1e-5)
