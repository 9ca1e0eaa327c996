"""`mtmusicldm params`: validate the params file and print it resolved (JSON)."""
from __future__ import annotations

import argparse
import json

from mtmusicldm.config import params_to_dict
from pipeline._common import load_params


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("params", help="validate params.yaml and print it resolved")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    print(json.dumps(params_to_dict(load_params(args.params)), indent=2))
