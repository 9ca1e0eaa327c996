"""Edit params.yaml in place (comments and layout kept), validating the result before it replaces the file."""
from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from mtmusicldm.config import Params, params_from_dict
from mtmusicldm.utils.fs import atomic_file


def _yaml() -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.width = 120
    return y


def get_param(params_path: Path, key: str) -> Any:
    """Value of a dotted key (e.g. `train.steps`)."""
    node: Any = _yaml().load(Path(params_path).read_text())
    for part in key.split("."):
        node = node[part]
    return node


def set_params(params_path: Path, overrides: Mapping[str, Any]) -> Params:
    """Apply dotted-key overrides (`{"train.steps": 400}`) to `params_path`; returns the validated params.

    The file is rewritten only if the result validates (an invalid override raises `ParamsError` and changes
    nothing). An unknown key raises KeyError naming it.
    """
    params_path = Path(params_path)
    y = _yaml()
    doc = y.load(params_path.read_text())
    for key, value in overrides.items():
        node = doc
        parts = key.split(".")
        for part in parts[:-1]:
            if part not in node:
                raise KeyError(f"params: {key}: no such key in {params_path}")
            node = node[part]
        if parts[-1] not in node:
            raise KeyError(f"params: {key}: no such key in {params_path}")
        node[parts[-1]] = value
    buf = io.StringIO()
    y.dump(doc, buf)
    import yaml as pyyaml  # the validated view uses the same loader as every stage

    params = params_from_dict(pyyaml.safe_load(buf.getvalue()))
    with atomic_file(params_path, "w") as f:
        f.write(buf.getvalue())
    return params
