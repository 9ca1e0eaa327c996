"""The assembled `mtmusicldm` parser: every command registered, choices built from the registries."""
from __future__ import annotations

import argparse

import cli
from mtmusicldm.data.slakh import SCANNERS
from mtmusicldm.diffusion.samplers import SAMPLERS
from mtmusicldm.evaluation.embedders import EMBEDDERS
from pipeline._common import PROFILES_DIR


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _choices(parser: argparse.ArgumentParser, dest: str) -> list[str]:
    (action,) = [a for a in parser._actions if a.dest == dest]
    return list(action.choices)


def test_every_command_is_registered() -> None:
    assert list(_subparsers()) == ["profile", "params", "download", "prepare", "generate", "arrange",
                                   "import-official", "import-codec", "studio", "fad"]


def test_choices_come_from_the_registries() -> None:
    sub = _subparsers()
    assert _choices(sub["generate"], "sampler") == _choices(sub["arrange"], "sampler") == sorted(SAMPLERS)
    assert _choices(sub["fad"], "backbone") == sorted(EMBEDDERS)
    assert _choices(sub["prepare"], "source") == sorted(SCANNERS)
    assert _choices(sub["profile"], "name") == sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
