"""`mtmusicldm profile NAME`: copy `profiles/NAME.yaml` over the params file (validated first)."""
from __future__ import annotations

import argparse

from pipeline._common import PROFILES_DIR, use_profile


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    names = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
    p = sub.add_parser("profile", help=f"switch params.yaml to a named profile ({' | '.join(names)})")
    p.add_argument("name", choices=names)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    src = use_profile(args.name, args.params)
    print(f"params: {args.params} now holds the {args.name!r} profile ({src})")
