"""Inpainting: masks for the 14 arrangements, q-sample replacement semantics, exact known stems."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from torch import Tensor

from mtmusicldm import STEMS
from mtmusicldm.diffusion.denoiser import append_dims, vp_to_ve
from mtmusicldm.diffusion.inpainting import (
    arrangement_combinations,
    arrangement_mask,
    combination_name,
    expand_mask,
    init_known,
    inpaint,
    replace_known,
    stem_mask,
)
from mtmusicldm.diffusion.noise import make_generators
from mtmusicldm.diffusion.samplers import SamplerStep, sample_ddim
from mtmusicldm.diffusion.schedules import DiffusionSchedule, get_sigmas_ddim

SHAPE = (2, 4, 3, 8, 4)  # [B, S, C, T, F]
SCHEDULE = DiffusionSchedule()
PAPER_ORDER = ["B", "D", "G", "P", "BD", "BG", "BP", "DG", "DP", "GP", "BDG", "BDP", "BGP", "DGP"]


def _randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class RecordingDenoiser:
    """A nonlinear denoiser that records its inputs."""

    def __init__(self) -> None:
        self.inputs: list[tuple[Tensor, Tensor]] = []

    def __call__(self, x: Tensor, sigma: Tensor, **cond: object) -> Tensor:
        self.inputs.append((x.clone(), sigma.clone()))
        return torch.tanh(x.mean(dim=1, keepdim=True)).expand_as(x) * 0.8 + 0.1


def test_arrangement_combinations_paper_order() -> None:
    combos = arrangement_combinations()
    assert ["".join(s[0].upper() for s in c) for c in combos] == PAPER_ORDER
    for combo in combos:
        mask = arrangement_mask(combo, batch=3)
        assert mask.shape == (3, 4) and mask.dtype == torch.bool
        generated = [STEMS.index(s) for s in combo]
        assert (~mask[:, generated]).all() and mask.sum() == 3 * (4 - len(combo))
        given = [s for s in STEMS if s not in combo]
        assert torch.equal(stem_mask(given, batch=3), mask)
        assert torch.equal(stem_mask([STEMS.index(s) for s in given], batch=3), mask)


def test_combination_name() -> None:
    assert [combination_name(c) for c in arrangement_combinations()] == PAPER_ORDER
    stems = ("bass", "brass", "drums", "bassoon")
    names = {combination_name(c, stems) for k in (1, 2, 3) for c in itertools.combinations(stems, k)}
    assert len(names) == 14  # stems sharing an initial (or a whole prefix) never collide
    assert combination_name(("bass", "drums"), stems) == "BassD" and combination_name(("brass",), stems) == "Br"
    assert combination_name(("bassoon", "bass"), stems) == "BassBasso"  # in `stems` order
    with pytest.raises(ValueError, match="not among the stems"):
        combination_name(("flute",))
    with pytest.raises(ValueError, match="distinct"):
        combination_name(("bass",), ("bass", "bass"))


def test_stem_mask_errors() -> None:
    with pytest.raises(ValueError, match="unknown stem"):
        stem_mask(["vocals"])
    with pytest.raises(ValueError, match="out of range"):
        stem_mask([4])
    assert stem_mask([0, 5], n_stems=6).tolist() == [[True, False, False, False, False, True]]


def test_expand_mask_shapes() -> None:
    x = torch.zeros(SHAPE)
    assert expand_mask(torch.ones(2, 4, dtype=torch.bool), x).shape == (2, 4, 1, 1, 1)
    assert expand_mask(torch.ones(2, 4, 8, dtype=torch.bool), x).shape == (2, 4, 1, 8, 1)
    assert expand_mask(torch.ones(1, 4, dtype=torch.bool), x).shape == (1, 4, 1, 1, 1)
    assert expand_mask(torch.ones(SHAPE, dtype=torch.bool), x).shape == SHAPE
    with pytest.raises(ValueError):
        expand_mask(torch.ones(2, 4, 7, dtype=torch.bool), x)  # wrong T
    with pytest.raises(ValueError):
        expand_mask(torch.ones(2, 3, dtype=torch.bool), x)  # wrong S


def _run(mask: Tensor, *, noise_mode: str, final_sigma_zero: bool = False, eta: float = 0.0, steps: int = 10):
    x_known, noise = _randn(*SHAPE, seed=1), _randn(*SHAPE, seed=2)
    sigmas = get_sigmas_ddim(SCHEDULE, steps, final_sigma_zero=final_sigma_zero)
    inner = RecordingDenoiser()
    gens = make_generators([5, 6])
    denoiser = inpaint(inner, x_known, mask, noise_mode=noise_mode, generator=gens,
                       noise=noise if noise_mode == "fixed" else None)
    x = init_known(vp_to_ve(noise, sigmas[0]), x_known, mask, sigmas[0], noise)
    states: list[SamplerStep] = []
    out = sample_ddim(denoiser, x, sigmas, eta=eta, generator=gens, callback=states.append)
    return x_known, noise, sigmas, inner, states, out


def test_fixed_noise_known_stems_follow_q_sample_exactly() -> None:
    mask = arrangement_mask(["guitar", "piano"], batch=2)
    x_known, noise, sigmas, inner, states, out = _run(mask, noise_mode="fixed")
    m = expand_mask(mask, x_known).expand(SHAPE)
    for i, (x_in, sigma) in enumerate(inner.inputs):
        assert torch.equal(sigma, torch.full((2,), float(sigmas[i]), dtype=torch.float64))
        s = append_dims(sigma.to(x_in.dtype), 5)
        assert torch.equal(x_in[m], (x_known + s * noise)[m])  # the denoiser sees x_known + sigma_i eps
    for step in states:  # the sampler state itself stays at x_known + sigma_next eps (eta = 0)
        expected = x_known + step.sigma_next * noise
        torch.testing.assert_close(step.x[m], expected[m], rtol=0, atol=1e-5 * (1 + float(sigmas[0])))
    assert torch.equal(replace_known(out, x_known, mask)[m], x_known[m])
    # generated stems moved away from the start and carry the model's output
    assert not torch.allclose(out[~m], vp_to_ve(noise, sigmas[0])[~m])
    assert not torch.allclose(out[~m], x_known[~m], atol=1e-2)


def test_final_sigma_zero_known_stems_bit_exact() -> None:
    mask = arrangement_mask(["drums"], batch=2)
    for mode in ("fixed", "fresh"):
        x_known, _, _, _, _, out = _run(mask, noise_mode=mode, final_sigma_zero=True, eta=1.0)
        m = expand_mask(mask, x_known).expand(SHAPE)
        assert torch.equal(out[m], x_known[m]), mode


def test_fresh_noise_differs_per_step() -> None:
    mask = arrangement_mask(["bass"], batch=2)
    x_known, _, sigmas, inner, _, _ = _run(mask, noise_mode="fresh", steps=20)
    m = expand_mask(mask, x_known).expand(SHAPE)
    eps = [((x_in - x_known) / append_dims(s.float(), 5))[m] for x_in, s in inner.inputs]
    assert not torch.allclose(eps[0], eps[1], atol=1e-2)
    all_eps = torch.stack(eps)
    assert abs(all_eps.std().item() - 1) < 0.1 and abs(all_eps.mean().item()) < 0.1


def test_time_mask_infill() -> None:
    """[B, S, T] masks: keep the first half of every stem's latent frames, generate the rest."""
    mask = torch.zeros(2, 4, 8, dtype=torch.bool)
    mask[:, :, :4] = True
    x_known, noise, sigmas, inner, _, out = _run(mask, noise_mode="fixed", final_sigma_zero=True)
    assert torch.equal(out[:, :, :, :4], x_known[:, :, :, :4])
    assert not torch.allclose(out[:, :, :, 4:], x_known[:, :, :, 4:], atol=1e-2)
    x_in, sigma = inner.inputs[0]
    assert torch.equal(x_in[:, :, :, :4], (x_known + append_dims(sigma.float(), 5) * noise)[:, :, :, :4])


def test_inpaint_errors() -> None:
    x_known = _randn(*SHAPE, seed=0)
    mask = arrangement_mask(["bass"], batch=2)
    with pytest.raises(ValueError, match="generator"):
        inpaint(RecordingDenoiser(), x_known, mask, noise_mode="fresh")
    with pytest.raises(ValueError, match="noise"):
        inpaint(RecordingDenoiser(), x_known, mask, noise_mode="fixed")
    with pytest.raises(ValueError, match="noise_mode"):
        bad_mode: Any = "other"
        inpaint(RecordingDenoiser(), x_known, mask, noise_mode=bad_mode, generator=torch.Generator())
