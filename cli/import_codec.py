"""`mtmusicldm import-codec`: MusicLDM's VAE + HiFi-GAN checkpoints -> a codec directory."""
from __future__ import annotations

import argparse
from pathlib import Path

from cli.import_official import add_import_args, hifigan_json, official_yaml
from mtmusicldm.official.convert import import_codec, options_from_official_config


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("import-codec", help="build a codec directory from MusicLDM's vae/hifigan checkpoints",
                       description="MusicLDM's vae-ckpt.ckpt + hifigan-ckpt.ckpt (Zenodo 10643148) -> OUT_CODEC_DIR "
                                   "(codec.json, vae/, vocoder/), usable as codec.kind diffusers / a model's codec.")
    p.add_argument("out", type=Path, metavar="OUT_CODEC_DIR")
    p.add_argument("--vae-ckpt", type=Path, required=True)
    p.add_argument("--hifigan-ckpt", type=Path, required=True)
    add_import_args(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    config, _ = official_yaml(args.config)
    options = options_from_official_config(config) if config is not None else None
    out = import_codec(args.out, args.vae_ckpt, args.hifigan_ckpt,
                       ddconfig=options.ddconfig if options else None, embed_dim=options.embed_dim if options else None,
                       hifigan=hifigan_json(args.hifigan_config), trust_checkpoint=args.trust_checkpoint)
    print(f"import-codec: wrote {out}")
