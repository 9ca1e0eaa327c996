"""Shared fixtures: the read-only reference folder (../shared) and tiny synthetic data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path | None:
    env = os.environ.get("MTMUSICLDM_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared")
    for c in candidates:
        if (c / "reference").is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` (or $MTMUSICLDM_SHARED); tests needing it skip with a reason when it is absent."""
    d = _shared_dir()
    if d is None:
        pytest.skip("../shared/reference not found (fresh user clone): golden/manifest checks skipped")
    return d


@pytest.fixture(scope="session")
def golden_dir(shared_dir: Path) -> Path:
    return shared_dir / "reference" / "golden" / "public"


@pytest.fixture(scope="session")
def manifests_dir(shared_dir: Path) -> Path:
    return shared_dir / "reference" / "manifests"


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny-model tests: 2 OpenMP threads on a shared 2-core machine run them
    several times slower. Opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
