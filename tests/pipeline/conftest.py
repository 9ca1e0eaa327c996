"""Tiny params for stage tests: the embedded profile shrunk to seconds of work."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from mtmusicldm.config import Params
from pipeline._common import PROFILES_DIR, load_params


def tiny_params(**prepare_overrides) -> Params:
    p = load_params(PROFILES_DIR / "embedded.yaml")
    return replace(
        p,
        audio=replace(p.audio, segment_samples=10240),
        synthetic=replace(p.synthetic, tracks={"train": 2, "validation": 1, "test": 1}, min_seconds=2.0,
                          max_seconds=3.0),
        prepare=replace(p.prepare, workers=0, samples_per_shard=4, **prepare_overrides),
    )


@pytest.fixture
def tiny() -> Params:
    return tiny_params()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A generated 4-track corpus (download stage output), shared read-only by the tests."""
    from pipeline import download

    p = tiny_params()
    raw = tmp_path_factory.mktemp("raw")
    download.run(p.data, p.synthetic, raw)
    return raw
