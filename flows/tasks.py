"""Prefect tasks that drive DVC: DVC owns the DAG and the cache, Prefect owns retries, logs and artifacts."""
from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def _run_dvc(args: list[str], repo: Path, label: str, what: str) -> str:
    """Run `dvc <args>` in `repo`; returns its stdout. Raises StageFailed (`what` failed) with the command's error.

    Progress bars stream to this process's stderr as they happen; stdout goes to the flow log.
    """
    logger = get_run_logger()
    cmd = [sys.executable, "-m", "dvc", *args]
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
        logger.info("%s | %s", label, line.rstrip())
    returncode = proc.wait()
    pump.join(timeout=5)
    if returncode != 0:
        err = "".join(tail).replace("\r", "\n")
        lines = [ln for ln in err.splitlines() if ln.strip() and not _PROGRESS_LINE.search(ln)]
        msg = "\n".join((lines or [ln.rstrip() for ln in out_lines])[-25:])
        logger.error("%s failed:\n%s", label, msg)
        raise StageFailed(f"{what} failed (exit {returncode}):\n{msg}")
    return "".join(out_lines)


def check_params(repo: Path) -> None:
    """Validate `repo/params.yaml` before any `dvc repro`.

    DVC deletes a stage's outputs before it runs the stage's command, so a params error found by the stage itself
    comes after its outputs are gone (back only with `dvc checkout`). Raises ParamsError (one line, key and file).
    """
    load_params(repo / "params.yaml")


@task(cache_policy=NONE, task_run_name="dvc repro {stage}")
def dvc_repro(stage: str, repo: Path, force: bool = False) -> str:
    """Run `dvc repro <stage>` in `repo`; returns its stdout. Raises StageFailed with the stage's error."""
    return _run_dvc(["repro", *(["--force"] if force else []), stage], repo, stage, f"stage {stage!r}")


@task(cache_policy=NONE, task_run_name="dvc exp run {name}")
def dvc_exp_run(name: str, repo: Path, params: Mapping[str, Any], targets: list[str] | None = None) -> str:
    """`dvc exp run --name <name> -S key=value ... [targets]` in the workspace; returns its stdout.

    DVC writes `params` (dotted keys of params.yaml) into the workspace's params.yaml, reruns what they invalidate
    and records the run as the experiment `name` (a git ref under refs/exps; the branch is left alone).
    """
    sets = [arg for key, value in params.items() for arg in ("-S", f"{key}={hydra_literal(value)}")]
    return _run_dvc(["exp", "run", "--name", name, *sets, *(targets or [])], repo, name, f"experiment {name!r}")


def dvc_exp_show(repo: Path) -> str:
    """`dvc exp show --md --only-changed`: the experiments of the current commit as a markdown table."""
    return _run_dvc(["exp", "show", "--md", "--only-changed"], repo, "exp show", "dvc exp show")


def hydra_literal(value: int | str) -> str:
    """`value` in the Hydra override grammar of `dvc exp run -S`, so that DVC writes exactly `value`."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"only integers and strings are passed to dvc exp run -S, got {value!r}")
    if isinstance(value, int):
        return str(value)
    if "${" in value:  # OmegaConf would resolve it as an interpolation
        raise ValueError(f"{value!r}: '${{' cannot be passed to dvc exp run -S")
    # Quoted: a quote is escaped by a backslash, and backslashes before a quote (or the closing one) are doubled.
    quoted = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, quoted) + "'"


def repro_task(stage: str):
    """`dvc_repro` with the stage's retry policy."""
    return dvc_repro.with_options(retries=RETRIES.get(stage, 0), retry_delay_seconds=10)
