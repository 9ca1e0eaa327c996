"""Atomic file-system writes: a killed process never leaves a half-written output behind.

Work happens in a temporary sibling `.<name>.tmp-<pid>-<id>` that is renamed into place. A process killed with
SIGKILL cannot remove it, so the next write of the same output does (`clean_stale_tmp`: leftovers whose writing
process is gone), and a rerun leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_dir(out: Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces `out` only if the block succeeds.

    On error the temporary directory is removed and an existing `out` is left untouched.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(out.parent, out.name)
    tmp = _sibling(out, "tmp")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(f"{out} already exists")
        old = _sibling(out, "old")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of `path` for writing; rename it over `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as pretty, key-sorted JSON atomically (byte-stable for identical inputs)."""
    data = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    with atomic_file(path, "w") as f:
        f.write(data)


_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?:(?P<pid>\d+)-)?[0-9a-f]+$")


def _sibling(path: Path, kind: str) -> Path:
    """`.<name>.<kind>-<pid>-<id>` next to `path` (the pid tells `clean_stale_tmp` whether its writer lives)."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _alive(pid: str | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or an absurd number): never touch it
    return True


def clean_stale_tmp(parent: Path, name: str | None = None) -> list[Path]:
    """Remove leftovers of killed atomic writes (`.<name>.tmp-*` / `.<name>.old-*`) under `parent`.

    Args:
        name: only the leftovers of this output (default: of any output).

    Leftovers whose writing process is still alive (a concurrent writer) are kept.
    """
    removed: list[Path] = []
    if not Path(parent).is_dir():
        return removed
    for p in Path(parent).iterdir():
        m = _LEFTOVER.match(p.name)
        if m is None or (name is not None and m["name"] != name) or _alive(m["pid"]):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
