"""`mtmusicldm prepare`: the prepare stage without DVC (the synthetic corpus, or a local Slakh/MSDM/BabySlakh)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtmusicldm.data.slakh import SCANNERS
from pipeline import download, prepare
from pipeline._common import load_params


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("prepare", help="cut a corpus into 16 kHz 4-stem WebDataset shards (the prepare stage)")
    p.add_argument("--source", choices=sorted(SCANNERS), required=True)
    p.add_argument("--root", type=Path, default=None, help="corpus root (not used for synthetic)")
    p.add_argument("--raw", type=Path, default=Path("data/raw"), help="where --source synthetic generates the corpus")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    p = load_params(args.params)
    if args.source == "synthetic":
        if args.root is not None:
            print("prepare: --root is not used with --source synthetic", file=sys.stderr)
        data = p.data.replace(source="synthetic", local_root=None)
        download.run(data, p.synthetic, args.raw)
        source, root = download.resolve_root(args.raw)
    else:
        if args.root is None:
            raise SystemExit(f"prepare: --root PATH is required with --source {args.source}")
        if not args.root.is_dir():
            raise SystemExit(f"prepare: --root {args.root} is not a directory")
        data = p.data.replace(source=args.source)
        source, root = args.source, args.root.resolve()
    report = prepare.run(p.seed, p.stems, p.audio, data, p.prepare, args.raw, args.out, source=source, root=root)
    prepare.print_summary(report, args.out)
