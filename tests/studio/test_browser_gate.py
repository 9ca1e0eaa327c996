"""Without a browser the studio's browser test is skipped loudly in `make test` and fails in CI (.ci/run)."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]


def _run_browser_test(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, require: bool):
    monkeypatch.setenv("MTMUSICLDM_CHROMIUM", str(pytester.path / "no-such-chromium"))
    if require:
        monkeypatch.setenv("MTMUSICLDM_REQUIRE_BROWSER", "1")
    else:
        monkeypatch.delenv("MTMUSICLDM_REQUIRE_BROWSER", raising=False)
    monkeypatch.chdir(ROOT)
    return pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "tests/studio/test_browser.py")


def test_missing_browser_is_loud_locally(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run_browser_test(pytester, monkeypatch, require=False)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*STUDIO BROWSER TEST SKIPPED*", "no Chromium binary found*NOT tested in a browser*"])


def test_missing_browser_fails_in_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run_browser_test(pytester, monkeypatch, require=True)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*MTMUSICLDM_REQUIRE_BROWSER=1 (CI) requires it*"])


def test_ci_requires_the_browser() -> None:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    export = lines.index("export MTMUSICLDM_REQUIRE_BROWSER=1")
    assert export < next(i for i, line in enumerate(lines) if line.startswith("make test"))
