"""Frame geometry: the recorded form, its checks, and agreement with the mel front-end and the codec."""
from __future__ import annotations

import pytest
import torch

from mtmusicldm.audio.mel import log_mel
from mtmusicldm.geometry import FRAME_SAMPLES, GEOMETRY, FrameGeometry


def test_constants_match_the_front_end() -> None:
    n = 10 * FRAME_SAMPLES
    mel = log_mel(torch.zeros(1, n), target_frames=n // GEOMETRY.hop)
    assert mel.shape[-2] == 10 * GEOMETRY.downsample and GEOMETRY.frame_samples == FRAME_SAMPLES == 640
    assert GEOMETRY.segment_samples(256) == 163840  # the paper's 10.24 s at 16 kHz


def test_round_trip_and_checks() -> None:
    assert FrameGeometry.from_dict(GEOMETRY.to_dict()) == GEOMETRY
    assert FrameGeometry.from_dict(None) is GEOMETRY  # files from before the geometry was recorded
    with pytest.raises(ValueError, match="expected the keys"):
        FrameGeometry.from_dict({"sample_rate": 16000, "hop": 160})
    with pytest.raises(ValueError, match="positive integers"):
        FrameGeometry.from_dict({"sample_rate": 16000, "hop": 160, "downsample": 0})
    GEOMETRY.check_supported("x")
    with pytest.raises(ValueError, match="x: frame geometry"):
        FrameGeometry(hop=256).check_supported("x")
