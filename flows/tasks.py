"""Prefect tasks that drive DVC: DVC owns the DAG and the cache, Prefect owns retries, logs and artifacts."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flows import _env  # noqa: F401  (environment before prefect)
from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

# Stages that touch the network or large files get retries; compute stages fail fast.
RETRIES = {"download": 2}


class StageFailed(RuntimeError):
    pass


def _env_with_venv() -> dict[str, str]:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")  # `python` in dvc.yaml cmds = this interpreter
    return env


@task(cache_policy=NONE, task_run_name="dvc repro {stage}")
def dvc_repro(stage: str, repo: Path, force: bool = False) -> str:
    """Run `dvc repro <stage>` in `repo`; returns its output. Raises StageFailed with the stage's error."""
    logger = get_run_logger()
    cmd = [sys.executable, "-m", "dvc", "repro", *(["--force"] if force else []), stage]
    logger.info("running %s", " ".join(cmd[2:]))
    proc = subprocess.run(cmd, cwd=repo, env=_env_with_venv(), capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        logger.info("%s | %s", stage, line)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
        logger.error("%s failed:\n%s", stage, tail)
        raise StageFailed(f"stage {stage!r} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def repro_task(stage: str):
    """`dvc_repro` with the stage's retry policy."""
    return dvc_repro.with_options(retries=RETRIES.get(stage, 0), retry_delay_seconds=10)
