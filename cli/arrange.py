"""`mtmusicldm arrange`: generate the missing stems given others, any length (windowed long-form beyond a segment)."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from cli._common import add_sampling_args, check_outputs, conditioning, resolve_sampler, sampling_record
from mtmusicldm import STEMS
from mtmusicldm.generation import arrange, load_stems, write_stems
from mtmusicldm.ldm import load_model
from mtmusicldm.utils.fs import write_json

RECORD = "arrangement.json"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("arrange", help="generate missing stems given others (any length: windowed long-form)",
                       description="Writes <stem>.wav + mix.wav (16 kHz, the input's length) and arrangement.json "
                                   "into --out. Given stems are copied bit-identically (after mono / 16 kHz "
                                   "conversion); stems neither given nor generated are silent.")
    add_sampling_args(p)
    p.add_argument("--given", action="append", default=[], metavar="STEM=FILE", help="a given stem (repeatable)")
    p.add_argument("--generate", action="append", default=None, metavar="STEM",
                   help="a stem to generate (repeatable; default: every stem not given)")
    p.set_defaults(func=run)
    return p


def parse_given(entries: Sequence[str], stems: Sequence[str]) -> dict[str, Path]:
    """`--given STEM=FILE` entries -> {stem: file}."""
    given: dict[str, Path] = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--given {entry!r}: expected STEM=FILE, e.g. bass=bass.wav")
        if name not in stems:
            raise ValueError(f"--given {entry!r}: unknown stem {name!r}; stems are {', '.join(stems)}")
        if name in given:
            raise ValueError(f"--given: stem {name!r} is given twice")
        given[name] = Path(path)
    return given


def _stems_to_generate(given: dict[str, Path], generate: Sequence[str] | None) -> list[str]:
    unknown = sorted(set(generate or ()) - set(STEMS))
    if unknown:
        raise ValueError(f"--generate: unknown stem(s) {unknown}; stems are {', '.join(STEMS)}")
    both = sorted(set(generate or ()) & set(given))
    if both:
        raise ValueError(f"stem(s) {both} are both --given and --generate")
    if not given:
        raise ValueError("nothing is given: pass --given STEM=FILE (use `mtmusicldm generate` for total generation)")
    to_generate = [s for s in STEMS if s not in given] if not generate else list(generate)
    if not to_generate:
        raise ValueError(f"every stem is given ({', '.join(given)}): nothing to generate")
    return to_generate


def run(args: argparse.Namespace) -> None:
    given = parse_given(args.given, STEMS)
    to_generate = _stems_to_generate(given, args.generate)
    targets = [args.out / f"{name}.wav" for name in (*STEMS, "mix")] + [args.out / RECORD]
    check_outputs(args.out, targets, [*given.values(), *([args.reference] if args.reference else [])], RECORD)
    model = load_model(args.model, args.device)
    if tuple(model.stems) != tuple(STEMS):
        raise ValueError(f"{args.model} has stems {list(model.stems)}, expected {list(STEMS)}")
    sampler = resolve_sampler(args, model)
    audio, _ = load_stems(given, model.stems, model.sample_rate)
    known = torch.tensor([s not in to_generate for s in model.stems])  # neither given nor generated: silence
    film, guidance, described = conditioning(args, model)
    out = arrange(model, audio[None], mask=known, seed=args.seed, sampler=sampler.name, steps=sampler.steps,
                  eta=args.eta, guidance_scale=guidance, film=film, batch_size=1, overlap=args.overlap,
                  progress=True)
    sr = model.sample_rate
    files = write_stems(args.out, out[0], model.stems, sr, args.subtype)
    silent = [s for s in model.stems if s not in given and s not in to_generate]
    record = sampling_record(args, model, sampler, guidance, described or "CLAP embedding of the given mixture")
    record |= {"command": "arrange", "given": {k: str(v) for k, v in given.items()}, "generated": to_generate,
               "silent": silent, "samples": int(out.shape[-1]), "files": files}
    write_json(args.out / RECORD, record)
    print(f"arrange: generated {', '.join(to_generate)} ({out.shape[-1] / sr:.2f} s) into {args.out}")
