"""`mtmusicldm generate`: total generation (all stems) from a model directory; long-form beyond one segment."""
from __future__ import annotations

import argparse
from pathlib import Path

from cli._common import add_sampling_args, check_outputs, conditioning, resolve_sampler, sampling_record
from mtmusicldm.generation import generate, segment_samples, write_stems
from mtmusicldm.ldm import load_model
from mtmusicldm.utils.fs import write_json

RECORD = "generation.json"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("generate", help="generate all stems (total generation); long-form beyond one segment",
                       description="Writes <stem>.wav + mix.wav (16 kHz) into --out when --count is 1, else into "
                                   "--out/sample_<k>/, and --out/generation.json with every setting.")
    add_sampling_args(p)
    p.add_argument("--count", type=int, default=1, help="number of samples (item k uses seed (seed, k))")
    p.add_argument("--seconds", type=float, default=None, help="length (default: one model segment)")
    p.add_argument("--batch-size", type=int, default=4)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    if args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    if args.seconds is not None and args.seconds <= 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds}")
    model = load_model(args.model, args.device)
    subdirs = [Path()] if args.count == 1 else [Path(f"sample_{k}") for k in range(args.count)]
    targets = [args.out / d / f"{name}.wav" for d in subdirs for name in (*model.stems, "mix")]
    check_outputs(args.out, [*targets, args.out / RECORD], [args.reference] if args.reference else [], RECORD)
    sampler = resolve_sampler(args, model)
    film, guidance, described = conditioning(args, model)
    if model.film_dim is not None and film is None and guidance != 1.0:
        raise ValueError("--guidance needs --prompt or --reference (nothing to guide towards)")
    audio = generate(model, args.count, seed=args.seed, seconds=args.seconds, sampler=sampler.name,
                     steps=sampler.steps, eta=args.eta, guidance_scale=guidance, film=film,
                     batch_size=args.batch_size, overlap=args.overlap, progress=True)
    sr, files = model.sample_rate, {}
    for k, sub in enumerate(subdirs):  # count 1: directly in --out
        written = write_stems(args.out / sub, audio[k], model.stems, sr, args.subtype)
        files[f"sample_{k}"] = {name: str(sub / f) for name, f in written.items()}
    record = sampling_record(args, model, sampler, guidance, described or "unconditional (the CLAP '' token)")
    record |= {"command": "generate", "count": args.count, "seconds": args.seconds,
               "samples": int(audio.shape[-1]), "long_form": int(audio.shape[-1]) > segment_samples(model),
               "item_seed": "sequence_seed(seed, k)", "files": files}
    write_json(args.out / RECORD, record)
    print(f"generate: wrote {args.count} sample(s) of {audio.shape[-1] / sr:.2f} s to {args.out}")
