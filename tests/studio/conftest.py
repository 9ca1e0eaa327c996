"""Shared fixtures of the studio tests: a tiny model directory, test audio files, one torch thread."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.tiny_models import make_model_dir

SR = 16000


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny model is fastest on one thread (and other jobs share the machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny unconditional model (0.64 s segments, random HiFi-GAN vocoder)."""
    return make_model_dir(tmp_path_factory.mktemp("studio-model"), vocoder="hifigan")


def bass_line(seconds: float, sr: int = SR) -> np.ndarray:
    """A mono bass line: one sine note per half second (float32)."""
    t = np.arange(int(seconds * sr)) / sr
    freq = np.array([55.0, 73.4, 65.4, 82.4])[(t * 2).astype(int) % 4]
    return (0.4 * np.sin(2 * np.pi * np.cumsum(freq) / sr)).astype(np.float32)


def drum_loop(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A mono drum loop: decaying noise bursts every quarter second (float32)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    env = np.exp(-30.0 * (t % 0.25))
    return (0.5 * env * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="session")
def audio_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """bass: 1.5 s 16 kHz mono WAV FLOAT; drums: 1.2 s 44.1 kHz stereo FLAC; broken: not audio."""
    d = tmp_path_factory.mktemp("studio-audio")
    sf.write(str(d / "bass.wav"), bass_line(1.5), SR, subtype="FLOAT")
    drums = drum_loop(1.2, 44100)
    sf.write(str(d / "drums.flac"), np.stack([drums, 0.5 * drums], axis=1), 44100, subtype="PCM_24")
    (d / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    return {"bass": d / "bass.wav", "drums": d / "drums.flac", "broken": d / "broken.wav"}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A skipped browser test must not pass unnoticed in `make test`: end the run with a banner."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "test_browser.py" in r.nodeid]
    if skipped:
        terminalreporter.write_sep("!", "STUDIO BROWSER TEST SKIPPED", red=True, bold=True)
        reason = skipped[0].longrepr[2] if isinstance(skipped[0].longrepr, tuple) else str(skipped[0].longrepr)
        terminalreporter.write_line(f"{reason.removeprefix('Skipped: ')}. The studio page was NOT tested in a "
                                    "browser; CI (.ci/run, MTMUSICLDM_REQUIRE_BROWSER=1) counts this as a failure.",
                                    red=True, bold=True)
