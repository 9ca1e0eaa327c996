"""`mtmusicldm fad DIR_A DIR_B`: Frechet audio distance between two folders of audio files."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mtmusicldm.evaluation.embedders import EMBEDDERS, make_embedder


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("fad", help="Frechet audio distance between two folders of audio files",
                       description="Embeds every audio file of DIR_A and DIR_B (first channel, resampled to the "
                                   "backbone's rate), pools the frames and prints the Frechet distance. offline "
                                   "(default) needs no weights but is not comparable with published VGGish FAD.")
    p.add_argument("dir_a", type=Path, metavar="DIR_A", help="e.g. the generated audio")
    p.add_argument("dir_b", type=Path, metavar="DIR_B", help="e.g. the reference audio")
    p.add_argument("--backbone", default="offline", choices=sorted(EMBEDDERS), help="embedding backbone")
    p.add_argument("--vggish-weights", type=Path, default=None, help="local vggish-10086976.pth (--backbone vggish)")
    p.add_argument("--clap-checkpoint", type=Path, default=None, help="local CLAP checkpoint (--backbone clap)")
    p.add_argument("--cache", type=Path, default=None, help="embedding cache folder (default: no cache)")
    p.add_argument("--recursive", action="store_true", help="include audio files in sub-folders")
    p.add_argument("--json", action="store_true", help="print a JSON record instead of the bare value")
    p.set_defaults(func=run)
    return p


def _backbone_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for flag, value, backbone, key in (("--vggish-weights", args.vggish_weights, "vggish", "weights"),
                                       ("--clap-checkpoint", args.clap_checkpoint, "clap", "checkpoint")):
        if args.backbone == backbone:
            if value is None:
                raise ValueError(f"--backbone {backbone} needs {flag} PATH (local weights; nothing is downloaded)")
            if not value.is_file():
                raise FileNotFoundError(f"{flag} {value} does not exist")
            kwargs[key] = value
        elif value is not None:
            raise ValueError(f"{flag} is only used with --backbone {backbone}")
    return kwargs


def run(args: argparse.Namespace) -> None:
    """The value on stdout (or a JSON record with --json), details on stderr."""
    from mtmusicldm.evaluation.fad_table import FadTable  # the one folder-to-folder FAD (imported when used)

    kwargs = _backbone_kwargs(args)
    for d in (args.dir_a, args.dir_b):
        if not d.is_dir():
            raise FileNotFoundError(f"{d} is not a folder of audio files")
    table = FadTable(make_embedder(args.backbone, **kwargs), args.cache)
    row = table.fad(args.dir_a, args.dir_b, "fad", recursive_a=args.recursive, recursive_b=args.recursive)
    value = round(row.value, 6)
    a, b = (table.embeddings(d, args.recursive) for d in (args.dir_a, args.dir_b))
    emb = table.embedder
    record = {"fad": value, "ci95": [round(row.low, 6), round(row.high, 6)], "dir_a": str(args.dir_a),
              "dir_b": str(args.dir_b), "files_a": len(a.names),
              "files_b": len(b.names), "embeddings_a": int(a.embeddings.shape[0]),
              "embeddings_b": int(b.embeddings.shape[0]), "backbone": emb.name, "embedding_dim": int(emb.dim),
              "fingerprint": emb.fingerprint(), "comparable_to_paper": bool(emb.comparable_to_paper),
              "rank_deficient": bool(table.rank_deficient)}
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(f"{value:.6f}")
    notes = [f"95 % interval [{row.low:.6f}, {row.high:.6f}] ({table.n_boot} bootstrap resamples of the files)",
             f"{emb.name} backbone, {record['files_a']} vs {record['files_b']} files "
             f"({record['embeddings_a']} vs {record['embeddings_b']} embeddings of {emb.dim} dims)"]
    if record["rank_deficient"]:
        notes.append(f"rank-deficient covariance: fewer than {emb.dim + 1} embeddings in a set (biased, noisy)")
    if not record["comparable_to_paper"]:
        notes.append(f"{emb.name} backbone: not comparable with published VGGish FAD")
    print("fad: " + "; ".join(notes), file=sys.stderr)
