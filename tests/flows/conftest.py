"""One Prefect test harness per session (its start costs ~30 s)."""
from __future__ import annotations

import os

import pytest

from tests.project_copy import make_project  # noqa: F401  (re-exported for the flow tests)


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from flows import _env  # noqa: F401
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):
        yield
