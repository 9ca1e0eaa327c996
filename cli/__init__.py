"""The `mtmusicldm` command: one module per command, assembled here (`main` is the console entry point).

    mtmusicldm [--params FILE] [--version] COMMAND ...     (--params also works after COMMAND)
    mtmusicldm profile {embedded,paper}                    switch params.yaml to a profile (validated)
    mtmusicldm params                                      validate and print the resolved params
    mtmusicldm download [--out data/raw]                   the download stage
    mtmusicldm prepare --source SOURCE [--root PATH] --out PATH
    mtmusicldm generate --model DIR --out DIR [--count N] [--seconds S] [--prompt TEXT | --reference FILE] ...
    mtmusicldm arrange --model DIR --given bass=a.wav [--given drums=b.wav] [--generate piano] --out DIR ...
    mtmusicldm import-official CKPT OUT_DIR [--no-ema] [--config YAML] [--vae-ckpt F] [--hifigan-ckpt F] ...
    mtmusicldm import-codec OUT_CODEC_DIR --vae-ckpt vae-ckpt.ckpt --hifigan-ckpt hifigan-ckpt.ckpt
    mtmusicldm studio --model DIR [--host 127.0.0.1] [--port 7860]
    mtmusicldm fad DIR_A DIR_B [--backbone BACKBONE] [--json] [--cache DIR]

Each command module has `add_parser(subparsers)` (its flags, `func=run`) and `run(args)`. Layering: this package
may import `pipeline`, `studio` and `mtmusicldm`; nothing imports it.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from cli import arrange, download, fad, generate, import_codec, import_official, params, prepare, profile, studio
from cli._common import params_flag
from mtmusicldm import __version__
from pipeline._common import STAGE_ERRORS

COMMANDS = (profile, params, download, prepare, generate, arrange, import_official, import_codec, studio, fad)
"""The command modules, in `--help` order."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtmusicldm", description="Multi-Track MusicLDM pipeline tools")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    params_flag(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        params_flag(command.add_parser(sub), top_level=False)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run one command; bad input ends with one line `mtmusicldm COMMAND: reason` (exit status 1)."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except STAGE_ERRORS as e:  # the stages' notion of bad input, one home
        raise SystemExit(f"mtmusicldm {args.command}: {e}") from None
