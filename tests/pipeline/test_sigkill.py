"""Real `kill -9` of the prepare, encode and train stage processes at a random (seeded) point of their work: the
rerun gives the same bytes as an uninterrupted run (training: the same weights, optimizer, schedule and RNG
states), and nothing is left behind."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mtmusicldm.config import Params, params_to_dict

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: as the killed processes (OMP_NUM_THREADS=1)
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "MTMUSICLDM_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1",
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def write_params(path: Path, p: Params) -> Path:
    path.write_text(yaml.safe_dump(params_to_dict(p), sort_keys=False))
    return path


def kill_during(cmd: list[str], *, cwd: Path, ready: Callable[[], bool], seed: int, max_delay: float) -> list[int]:
    """Run a stage process; once `ready()` (it is inside its work), wait a seeded random delay below `max_delay`
    and SIGKILL it. Returns the pids of its children at that moment (workers)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not ready():
        assert proc.poll() is None, f"the stage ended before the kill point: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "the stage never reached the kill point"
        time.sleep(0.01)
    time.sleep(random.Random(seed).uniform(0.0, max_delay))
    children = _children(proc.pid)
    assert proc.poll() is None, "the stage finished before the kill: raise its work or lower max_delay"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    return children


def _children(pid: int) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(d.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has exited; only its parent, now init, has yet to reap it)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads worker processes from /proc (Linux)")
def test_prepare_killed_then_rerun(tiny_corpus: Path, tmp_path: Path) -> None:
    from pipeline import prepare
    from tests.pipeline.conftest import tiny_params

    p = tiny_params()
    reference = tmp_path / "ref" / "shards"
    prepare.run(p.seed, p.stems, p.audio, p.data, p.prepare, tiny_corpus, reference)

    params = write_params(tmp_path / "params.yaml",
                          p.replace(prepare=p.prepare.replace(workers=1)))
    data = tmp_path / "data"
    data.mkdir()
    workers = kill_during([sys.executable, "-m", "pipeline.prepare", "--params", str(params), "--raw",
                           str(tiny_corpus), "--out", str(data / "shards")], cwd=tmp_path,
                          ready=lambda: any(p.name.startswith(".shards.tmp-") for p in data.iterdir()),
                          seed=11, max_delay=0.5)
    assert hidden(data) and not (data / "shards").exists()  # the killed run's temporary folder, no output
    deadline = time.monotonic() + 5
    while any(map(_running, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_running, workers)), "a worker outlived the killed stage"

    prepare.run(p.seed, p.stems, p.audio, p.data, p.prepare, tiny_corpus, data / "shards")
    assert tree_bytes(data / "shards") == tree_bytes(reference)
    assert hidden(data) == []


@pytest.mark.slow
def test_encode_killed_then_resumed(tmp_path: Path) -> None:
    from mtmusicldm.codec.build import codec_from_params
    from mtmusicldm.codec.codec_dir import save_codec
    from pipeline import encode
    from tests.pipeline.test_encode import run_encode
    from tests.pipeline.test_train_codec import tiny_params, write_tiny_shards

    shards = write_tiny_shards(tmp_path / "shards", per_split={"train": [2] * 8, "validation": [2], "test": [2]})
    p = tiny_params()
    codec = codec_from_params(p.codec, seed=0)
    save_codec(tmp_path / "codec", codec.vae, codec.vocoder)
    reference = run_encode(shards, tmp_path / "codec", tmp_path / "ref" / "latents")
    assert reference["encoded_shards"] == 10

    params = write_params(tmp_path / "params.yaml",
                          p.replace(conditioning=p.conditioning.replace(clap="none")))
    data = tmp_path / "data"
    data.mkdir()
    kill_during([sys.executable, "-m", "pipeline.encode", "--params", str(params), "--shards", str(shards),
                 "--codec", str(tmp_path / "codec"), "--out", str(data / "latents"), "--device", "cpu"],
                cwd=tmp_path, ready=lambda: any(data.glob(f".latents{encode.PARTIAL_INFIX}*/train/*.tar")),
                seed=12, max_delay=0.4)
    assert not (data / "latents").exists()

    meta = run_encode(shards, tmp_path / "codec", data / "latents")
    assert meta["resumed_shards"] >= 1 and meta["resumed_shards"] + meta["encoded_shards"] == 10
    assert tree_bytes(data / "latents") == tree_bytes(tmp_path / "ref" / "latents")
    assert hidden(data) == []


@pytest.mark.slow
def test_train_killed_then_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import train as stage
    from pipeline._common import load_params
    from tests.pipeline.test_train import _codec, _latents, _params

    monkeypatch.chdir(tmp_path)  # latents.json names the codec relative to the working directory
    monkeypatch.setenv("MTMUSICLDM_NO_PROGRESS", "1")
    _codec(tmp_path / "models" / "codec")
    latents = _latents(tmp_path / "lat")
    params = _params(tmp_path, steps=6, checkpoint_every=1)
    p = load_params(params)

    def run(checkpoints: str, out: str) -> dict:
        return stage.run(p.seed, p.stems, p.model, p.diffusion, p.conditioning, p.train, latents,
                         tmp_path / checkpoints, tmp_path / out)

    reference = run("ck_ref", "ldm_ref")
    kill_during([sys.executable, "-m", "pipeline.train", "--params", str(params), "--latents", str(latents),
                 "--checkpoints", str(tmp_path / "ck"), "--out", str(tmp_path / "ldm")], cwd=tmp_path,
                ready=lambda: (tmp_path / "ck" / "step-2" / "state.json").is_file(), seed=13, max_delay=1.0)
    resumed = run("ck", "ldm")
    assert resumed["start_step"] >= 2 and resumed["weights_sha256"] == reference["weights_sha256"]
    for name in ("model.safetensors", "ema.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
        assert (tmp_path / "ck" / "step-6" / name).read_bytes() == (tmp_path / "ck_ref" / "step-6" / name).read_bytes()
    assert hidden(tmp_path / "ck") == [] and hidden(tmp_path) == []
    for name in ("unet.safetensors", "unet_ema.safetensors", "config.json"):
        assert (tmp_path / "ldm" / name).read_bytes() == (tmp_path / "ldm_ref" / name).read_bytes()
