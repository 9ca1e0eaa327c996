"""Prefect tasks that drive DVC: DVC owns the DAG and the cache, Prefect owns retries, logs and artifacts."""
from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from flows import _env  # noqa: F401  (environment before prefect)
from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

from pipeline._common import load_params

# Stages that touch the network or large files get retries; compute stages fail fast.
RETRIES = {"download": 2}


class StageFailed(RuntimeError):
    pass


def _env_with_venv() -> dict[str, str]:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")  # `python` in dvc.yaml cmds = this interpreter
    return env


_PROGRESS_LINE = re.compile(r"\|\s*\d+/\d*\s*\[")  # a tqdm bar: "desc:  50%|#####     | 30/60 [..."


def _pump_stderr(stream, tail: collections.deque) -> None:
    """Pass the stage's stderr (tqdm progress bars) through to ours live, keeping the tail for error messages."""
    for chunk in iter(lambda: stream.read(256), ""):
        sys.stderr.write(chunk)
        sys.stderr.flush()
        tail.append(chunk)


@task(cache_policy=NONE, task_run_name="dvc repro {stage}")
def dvc_repro(stage: str, repo: Path, force: bool = False) -> str:
    """Run `dvc repro <stage>` in `repo`; returns its stdout. Raises StageFailed with the stage's error.

    The stage's progress bars stream to this process's stderr as they happen; its stdout goes to the flow log.
    """
    logger = get_run_logger()
    cmd = [sys.executable, "-m", "dvc", "repro", *(["--force"] if force else []), stage]
    logger.info("running %s", " ".join(cmd[2:]))
    proc = subprocess.Popen(cmd, cwd=repo, env=_env_with_venv(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, bufsize=1)
    tail: collections.deque = collections.deque(maxlen=64)
    pump = threading.Thread(target=_pump_stderr, args=(proc.stderr, tail), daemon=True)
    pump.start()
    out_lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        out_lines.append(line)
        logger.info("%s | %s", stage, line.rstrip())
    returncode = proc.wait()
    pump.join(timeout=5)
    if returncode != 0:
        err = "".join(tail).replace("\r", "\n")
        lines = [ln for ln in err.splitlines() if ln.strip() and not _PROGRESS_LINE.search(ln)]
        msg = "\n".join((lines or [ln.rstrip() for ln in out_lines])[-25:])
        logger.error("%s failed:\n%s", stage, msg)
        raise StageFailed(f"stage {stage!r} failed (exit {returncode}):\n{msg}")
    return "".join(out_lines)


def check_params(repo: Path) -> None:
    """Validate `repo/params.yaml` before any `dvc repro`.

    DVC deletes a stage's outputs before it runs the stage's command, so a params error found by the stage itself
    comes after its outputs are gone (back only with `dvc checkout`). Raises ParamsError (one line, key and file).
    """
    load_params(repo / "params.yaml")


def repro_task(stage: str):
    """`dvc_repro` with the stage's retry policy."""
    return dvc_repro.with_options(retries=RETRIES.get(stage, 0), retry_delay_seconds=10)
