"""`mtmusicldm download`: the download stage without DVC (fetch the corpus, or generate the synthetic one)."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import download


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("download", help="fetch or generate the corpus (the download stage)")
    p.add_argument("--out", type=Path, default=Path("data/raw"))
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    download.main(["--params", str(args.params), "--out", str(args.out)])
