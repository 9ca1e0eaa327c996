"""What several commands share: the --params flag, and the sampling arguments, conditioning and record of
`generate` / `arrange` (the model itself loads through `mtmusicldm.ldm.load_model`, as in the studio)."""
from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from mtmusicldm.diffusion.samplers import DEFAULT_ETA, SAMPLERS
from mtmusicldm.generation.conditioning import CONDITIONED_GUIDANCE
from mtmusicldm.ldm import MTMusicLDM
from mtmusicldm.model_config import RecommendedSampler

PARAMS_DEFAULT = Path("params.yaml")


def params_flag(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """`--params FILE`, accepted before and after the command: a sub-command's flag only overrides when given."""
    parser.add_argument("--params", type=Path, default=PARAMS_DEFAULT if top_level else argparse.SUPPRESS,
                        help=f"params file (default: {PARAMS_DEFAULT})")


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """The model, output, conditioning and sampler flags of `generate` and `arrange`."""
    p.add_argument("--model", type=Path, required=True, help="model directory (models/ldm or an imported one)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    cond = p.add_mutually_exclusive_group()
    cond.add_argument("--prompt", default=None, help="text prompt (conditional models)")
    cond.add_argument("--reference", type=Path, default=None, help="reference audio file (conditional models)")
    p.add_argument("--sampler", default=None, choices=sorted(SAMPLERS),
                   help="default: the model's recommended sampler (config.json; DDIM, the official one, if none)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's recommendation)")
    p.add_argument("--eta", type=float, default=None, help="stochasticity of ddim / dpmpp_2m_sde (default 1.0)")
    p.add_argument("--guidance", type=float, default=None,
                   help=f"classifier-free guidance scale (default: {CONDITIONED_GUIDANCE} with --prompt/--reference, "
                        "else 1.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overlap", type=float, default=0.5, help="window overlap for long inputs (fraction)")
    p.add_argument("--subtype", default="FLOAT", choices=["FLOAT", "PCM_16", "PCM_24"],
                   help="WAV sample format (FLOAT keeps given stems bit-identical)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def resolve_sampler(args: argparse.Namespace, model: MTMusicLDM) -> RecommendedSampler:
    """--sampler / --steps, each defaulting to the model's recommendation."""
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    rec = model.recommended_sampler
    return RecommendedSampler(args.sampler or rec.name, rec.steps if args.steps is None else args.steps)


def conditioning(args: argparse.Namespace, model: MTMusicLDM) -> tuple[Tensor | None, float, str]:
    """(film [D] | None, guidance scale, description) from --prompt / --reference / --guidance."""
    wants = [flag for flag, v in (("--prompt", args.prompt), ("--reference", args.reference),
                                  ("--guidance", args.guidance)) if v is not None and v != 1.0]
    if model.film_dim is None and wants:
        raise ValueError(f"{' and '.join(wants)} need a conditional model, but {args.model} is unconditional")
    film = model.embed_condition(prompt=args.prompt, reference=args.reference)
    guidance = args.guidance if args.guidance is not None else CONDITIONED_GUIDANCE if film is not None else 1.0
    if args.prompt is not None:
        described = f"text prompt {args.prompt!r}"
    elif args.reference is not None:
        described = f"CLAP embedding of the reference {args.reference}"
    else:
        described = "none (unconditional model)" if model.film_dim is None else ""
    return film, float(guidance), described


def sampling_record(args: argparse.Namespace, model: MTMusicLDM, sampler: RecommendedSampler, guidance: float,
                    conditioning: str) -> dict[str, Any]:
    """The settings part of generation.json / arrangement.json."""
    eta = args.eta if args.eta is not None else DEFAULT_ETA.get(sampler.name)
    return {"model": str(args.model), "model_source": model.config["source"],
            "trained_steps": model.config["trained_steps"], "stems": list(model.stems),
            "sample_rate": model.sample_rate, "segment_samples": int(model.config["segment_samples"]),
            "sampler": sampler.name, "steps": sampler.steps, "eta": eta, "guidance_scale": guidance,
            "seed": args.seed, "prompt": args.prompt,
            "reference": None if args.reference is None else str(args.reference), "conditioning": conditioning, "overlap": args.overlap, "subtype": args.subtype}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_outputs(out: Path, files: Sequence[Path], inputs: Sequence[Path], record: str) -> None:
    """Before any work: `out` can hold the `files` we will write, and writing them destroys nothing of the user's.

    Args:
        out: the --out directory (created later by the writer).
        files: every path the command will write (under `out`).
        inputs: the user's input files (--given, --reference): never overwritten.
        record: the command's record file in `out` (arrangement.json / generation.json); a directory holding it
            is an earlier output of ours, whose files may be replaced. Any other existing file is refused.

    Raises:
        ValueError: naming the path and the reason.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    for f in files:
        if not f.exists():
            continue
        overwritten = next((i for i in inputs if _same_file(f, i)), None)
        if overwritten is not None:
            raise ValueError(f"--out {out}: writing {f.name} would overwrite the input {overwritten}; "
                             "choose another --out")
        if not (out / record).is_file():
            raise ValueError(f"--out {out} already holds {f.relative_to(out)} (not an earlier output of this "
                             "command): choose another --out or move the file")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"--out {out}: {parent} is not a directory")
    try:
        tempfile.TemporaryFile(dir=parent).close()  # the one reliable test (permissions, read-only or virtual fs)
    except OSError as e:
        raise ValueError(f"--out {out}: {parent} does not accept new files ({e.strerror})") from None
