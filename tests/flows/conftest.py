"""One Prefect test harness per session (its start costs ~30 s)."""
from __future__ import annotations

import os
import random

import pytest

from tests.project_copy import make_project  # noqa: F401  (re-exported for the flow tests)


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """The harness; and once a flow has run, the Prefect client's events websocket pings every 20 s from a
    background thread with `random.getrandbits`: it gets its own `random.Random`, so the process-wide `random` of
    the tests that follow in this process (exact RNG resume of training) is left alone."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    import websockets.asyncio.connection as ws_connection

    from flows import _env  # noqa: F401
    from prefect.testing.utilities import prefect_test_harness

    with pytest.MonkeyPatch.context() as mp, prefect_test_harness(server_startup_timeout=None):
        mp.setattr(ws_connection, "random", random.Random())
        yield
