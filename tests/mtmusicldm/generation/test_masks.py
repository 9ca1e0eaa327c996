"""Stem x time masks, given-stem stacking and the waveform-domain replacement (no model needed)."""
from __future__ import annotations

import pytest
import torch

from mtmusicldm import STEMS
from mtmusicldm.generation import masks

SEG = 10240


def test_stack_given_errors_and_silent_stems() -> None:
    x = torch.zeros(SEG)
    with pytest.raises(ValueError, match="unknown stem"):
        masks.stack_given({"flute": x}, STEMS)
    with pytest.raises(ValueError, match="both given and"):
        masks.stack_given({"bass": x}, STEMS, generate=["bass"])
    with pytest.raises(ValueError, match="every stem is given"):
        masks.stack_given(dict.fromkeys(STEMS, x), STEMS)
    with pytest.raises(ValueError, match="one length"):
        masks.stack_given({"bass": x, "drums": torch.zeros(SEG - 1)}, STEMS)
    audio, known = masks.stack_given({"bass": torch.ones(SEG)}, STEMS, generate=["piano"])
    assert known.tolist() == [[True, True, True, False]]  # drums and guitar: given silence
    assert float(audio[0, 1:].abs().max()) == 0.0


def test_time_mask_frames() -> None:
    m = masks.time_mask([(0.0, 0.1)], 16, stems_known=["bass", "drums"], stems=STEMS, batch=2)
    assert m.shape == (2, 4, 16)
    assert m[0, 0].tolist() == [True, True] + [False] * 14  # 0.1 s = 1600 samples: frames 0-1 fully inside
    assert not bool(m[:, 2:].any())
    infill = masks.time_mask([(0.0, 0.128), (0.512, None)], 16, stems_known=STEMS, stems=STEMS)
    assert infill[0, 3].tolist() == [True] * 3 + [False] * 10 + [True] * 3
    with pytest.raises(ValueError, match="unknown stems"):
        masks.time_mask([(0, 1)], 16, stems_known=["flute"], stems=STEMS)


def test_replace_given_crossfade() -> None:
    gen, giv = torch.zeros(1, 1, 20), torch.ones(1, 1, 20)
    known = torch.zeros(1, 1, 20, dtype=torch.bool)
    known[..., :5] = True
    out = masks.replace_given(gen, giv, known, fade_samples=4)
    assert out[0, 0, :5].tolist() == [1.0] * 5
    torch.testing.assert_close(out[0, 0, 5:10], torch.tensor([0.8, 0.6, 0.4, 0.2, 0.0]))
    assert float(out[0, 0, 10:].abs().max()) == 0.0
    whole = masks.replace_given(gen, giv, torch.ones_like(known), fade_samples=4)
    assert torch.equal(whole, giv)
