"""The `mtmusicldm` command line: the stages without DVC, profile switching, and (later) generation tools.

    mtmusicldm profile {embedded,paper}          # copy profiles/<name>.yaml to params.yaml (validated)
    mtmusicldm params [--params FILE]            # validate and print the resolved params
    mtmusicldm download [--out data/raw]         # the download stage
    mtmusicldm prepare --source {synthetic,slakh,msdm,babyslakh} [--root PATH] --out PATH
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from mtmusicldm.config import ParamsError, params_to_dict


def _cmd_profile(args: argparse.Namespace) -> None:
    from pipeline._common import use_profile

    src = use_profile(args.name, args.params)
    print(f"params: {args.params} now holds the {args.name!r} profile ({src})")


def _cmd_params(args: argparse.Namespace) -> None:
    from pipeline._common import load_params

    print(json.dumps(params_to_dict(load_params(args.params)), indent=2))


def _cmd_download(args: argparse.Namespace) -> None:
    from pipeline import download

    download.main(["--params", str(args.params), "--out", str(args.out)])


def _cmd_prepare(args: argparse.Namespace) -> None:
    from pipeline import download, prepare
    from pipeline._common import load_params

    p = load_params(args.params)
    if args.source == "synthetic":
        if args.root is not None:
            print("prepare: --root is not used with --source synthetic", file=sys.stderr)
        data = replace(p.data, source="synthetic", local_root=None)
        info = download.run(data, p.synthetic, args.raw)
        source, root = download.resolve_root(args.raw)
        del info
    else:
        if args.root is None:
            raise SystemExit(f"prepare: --root PATH is required with --source {args.source}")
        if not args.root.is_dir():
            raise SystemExit(f"prepare: --root {args.root} is not a directory")
        data = replace(p.data, source=args.source)
        source, root = args.source, args.root.resolve()
    report = prepare.run(p.seed, p.stems, p.audio, data, p.prepare, args.raw, args.out, source=source, root=root)
    prepare.print_summary(report, args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtmusicldm", description="Multi-Track MusicLDM pipeline tools")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("profile", help="switch params.yaml to a named profile (embedded | paper)")
    p.add_argument("name")
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("params", help="validate params.yaml and print it resolved")
    p.set_defaults(func=_cmd_params)

    p = sub.add_parser("download", help="fetch or generate the corpus (the download stage)")
    p.add_argument("--out", type=Path, default=Path("data/raw"))
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("prepare", help="cut a corpus into 16 kHz 4-stem WebDataset shards (the prepare stage)")
    p.add_argument("--source", choices=["synthetic", "slakh", "msdm", "babyslakh"], required=True)
    p.add_argument("--root", type=Path, default=None, help="corpus root (not used for synthetic)")
    p.add_argument("--raw", type=Path, default=Path("data/raw"), help="where --source synthetic generates the corpus")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_cmd_prepare)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ParamsError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"mtmusicldm {args.command}: {e}") from None


if __name__ == "__main__":
    main()
