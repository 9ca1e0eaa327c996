"""Helpers shared by the stage scripts: reading params.yaml, argument parsing, progress bars."""
from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mtmusicldm.config import Params, ParamsError, params_from_dict

T = TypeVar("T")
PROFILES_DIR = Path(__file__).resolve().parents[1] / "profiles"


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans (only true/false).

    `dvc exp run -S` rewrites the whole params file as YAML 1.2 and drops the quotes of strings such as "no" and
    "off" (treeverse/dvc#11018), which YAML 1.1 reads as booleans. Numbers stay YAML 1.1: `1e-4` (no dot) is a
    string, which validation rejects with a hint.
    """


_ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_ParamsLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))


def read_params_yaml(path: Path | str) -> Any:
    """The parsed params file, unvalidated (see `_ParamsLoader`); `load_params` validates it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    try:
        raw = yaml.load(path.read_text(), Loader=_ParamsLoader)  # noqa: S506  (a SafeLoader)
    except yaml.YAMLError as e:
        raise ParamsError("<file>", f"{path} is not valid YAML: {e}") from e
    return raw if raw is not None else {}


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate a params file; errors name the file and the dotted key."""
    raw = read_params_yaml(path)
    try:
        return params_from_dict(raw)
    except ParamsError as e:
        raise ParamsError(e.key, f"{e.reason} (in {path})") from None


def stage_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    return p


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
    """A tqdm bar on stderr (disabled when MTMUSICLDM_NO_PROGRESS=1, e.g. in tests)."""
    from tqdm.auto import tqdm

    disable = os.environ.get("MTMUSICLDM_NO_PROGRESS") == "1"
    yield from tqdm(items, total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True)


def use_profile(name: str, params_path: Path = Path("params.yaml")) -> Path:
    """Validate `profiles/<name>.yaml` and copy it over `params_path` (atomically)."""
    from mtmusicldm.utils.fs import atomic_file

    src = PROFILES_DIR / f"{name}.yaml"
    if not src.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise ValueError(f"unknown profile {name!r}; available: {', '.join(known)}")
    load_params(src)
    with atomic_file(params_path, "w") as f:
        f.write(src.read_text())
    return src


def parse_and_load(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> tuple[argparse.Namespace, Params]:
    args = parser.parse_args(argv)
    return args, load_params(args.params)


def resolve_device(name: str) -> str:
    """"auto" -> "cuda" when available, else "cpu"; other names pass through."""
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name
