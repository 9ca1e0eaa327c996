"""Helpers shared by the stage scripts: reading params.yaml, the stage entry wrapper, argument parsing, progress."""
from __future__ import annotations

import argparse
import functools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mtmusicldm.config import Params, ParamsError, params_from_dict

T = TypeVar("T")
PROFILES_DIR = Path(__file__).resolve().parents[1] / "profiles"
STAGE_ERRORS: tuple[type[BaseException], ...] = (ParamsError, ValueError, FileNotFoundError)
"""Bad input (params, data, files): a stage reports these in one line (`stage_main`)."""


def duplicate_key(node: yaml.Node | None, path: tuple[str, ...] = ()) -> tuple[str, int, int] | None:
    """The first mapping key written twice in a composed YAML document: (dotted key, first line, second line).

    Plain PyYAML keeps the last value silently; a params file must not.
    """
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else None
            if name is not None and name != "<<":
                line = key.start_mark.line + 1
                if name in lines:
                    return ".".join((*path, name)), lines[name], line
                lines[name] = line
            found = duplicate_key(value, (*path, name or "?"))
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = duplicate_key(item, (*path, str(i)))
            if found:
                return found
    return None


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
    """The parsed params file, unvalidated (see `_ParamsLoader`); `load_params` validates it.

    Raises:
        ParamsError: not YAML, or a key written twice (named, with both lines).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    with open(path) as f:
        loader = _ParamsLoader(f)  # parse once: check the node tree, then build the values from it
        try:
            node = loader.get_single_node()
            duplicate = duplicate_key(node)
            raw = None if node is None else loader.construct_document(node)
        except yaml.YAMLError as e:
            raise ParamsError("<file>", f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
        finally:
            loader.dispose()
    if duplicate is not None:
        key, first, second = duplicate
        raise ParamsError(key, f"written twice in {path} (lines {first} and {second}); keep one")
    return raw if raw is not None else {}


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate a params file; errors name the file and the dotted key."""
    raw = read_params_yaml(path)
    try:
        return params_from_dict(raw)
    except ParamsError as e:
        raise ParamsError(e.key, f"{e.reason} (in {path})") from None


def stage_main(main: Callable[[Sequence[str] | None], None]) -> Callable[[Sequence[str] | None], None]:
    """Wrap a stage's `main`: bad input (`STAGE_ERRORS`) ends the process with one line `<stage>: <reason>` and
    exit status 1, without a traceback (anything else is a bug and keeps its traceback)."""
    stage = Path(main.__code__.co_filename).stem  # also right under `python -m` (module "__main__")

    @functools.wraps(main)
    def wrapped(argv: Sequence[str] | None = None) -> None:
        try:
            main(argv)
        except STAGE_ERRORS as e:
            raise SystemExit(f"{stage}: {e}") from None

    return wrapped


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
