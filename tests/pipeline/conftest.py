"""Tiny params for stage tests: the embedded profile shrunk to seconds of work."""
from __future__ import annotations

from pathlib import Path

import pytest

from mtmusicldm.config import Params
from pipeline._common import PROFILES_DIR, load_params


def tiny_params(**prepare_overrides) -> Params:
    p = load_params(PROFILES_DIR / "embedded.yaml")
    return p.replace(
        audio=p.audio.replace(segment_samples=10240),
        synthetic=p.synthetic.replace(tracks={"train": 2, "validation": 1, "test": 1}, min_seconds=2.0,
                                      max_seconds=3.0),
        prepare=p.prepare.replace(workers=0, samples_per_shard=4, **prepare_overrides),
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
