"""`mtmusicldm import-official`: an official MT-MusicLDM checkpoint -> a self-contained model directory."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mtmusicldm.official.convert import ImportOptions, import_official, options_from_official_config


def official_yaml(path: Path | None) -> tuple[dict[str, Any] | None, str | None]:
    """(parsed official YAML, its text) or (None, None)."""
    import yaml

    if path is None:
        return None, None
    text = path.read_text()
    config = yaml.safe_load(text)
    if not isinstance(config, dict):
        raise ValueError(f"--config {path}: expected a YAML mapping (an official MT-MusicLDM config)")
    return config, text


def hifigan_json(path: Path | None) -> dict[str, Any] | None:
    """The --hifigan-config JSON, or None."""
    return None if path is None else json.loads(path.read_text())


def add_import_args(p: argparse.ArgumentParser) -> None:
    """--config, --hifigan-config and --trust-checkpoint (shared with import-codec)."""
    p.add_argument("--config", type=Path, default=None,
                   help="official YAML (model.params.unet_config / first_stage_config ...); default: infer from shapes")
    p.add_argument("--hifigan-config", type=Path, default=None,
                   help="HiFi-GAN config JSON (default: MusicLDM's config_16k_64.json, widths read from the weights)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a full (code-executing) unpickle if the safe loaders fail; trusted files only")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("import-official", help="convert an official MT-MusicLDM checkpoint into a model directory",
                       description="Converts an MT-MusicLDM Lightning checkpoint (Zenodo 13947715, unconditional or "
                                   "CLAP) into a self-contained OUT_DIR: config.json (recommending the official "
                                   "DDIM-200), unet(_ema).safetensors, codec/ (VAE + HiFi-GAN), clap.safetensors "
                                   "(conditional), import.json. Loadable by MTMusicLDM.from_pretrained.")
    p.add_argument("checkpoint", type=Path, metavar="CKPT")
    p.add_argument("out", type=Path, metavar="OUT_DIR")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True,
                   help="sample with the EMA weights model_ema.* (default) or the raw model.diffusion_model.*")
    add_import_args(p)
    p.add_argument("--vae-ckpt", type=Path, default=None, help="MusicLDM vae-ckpt.ckpt replacing first_stage_model.*")
    p.add_argument("--hifigan-ckpt", type=Path, default=None,
                   help="MusicLDM hifigan-ckpt.ckpt replacing first_stage_model.vocoder.*")
    p.add_argument("--clap-ckpt", type=Path, default=None,
                   help="MusicLDM clap-ckpt.pt replacing / supplying cond_stage_model.model.*")
    p.add_argument("--stems", default=None, help="comma-separated stem names (default: bass,drums,guitar,piano)")
    p.add_argument("--text-model", default=None,
                   help="local roberta-base directory stored as conditioning.text_model (tokenizer for --prompt)")
    p.add_argument("--num-head-channels", type=int, default=32,
                   help="UNet attention head width when --config is not given (default 32, both released models)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    config, text = official_yaml(args.config)
    overrides: dict[str, Any] = {"ema": args.ema, "trust_checkpoint": args.trust_checkpoint,
                                 "num_head_channels": args.num_head_channels,
                                 "hifigan_config": hifigan_json(args.hifigan_config), "text_model": args.text_model}
    if args.stems is not None:
        overrides["stems"] = tuple(s.strip() for s in args.stems.split(",") if s.strip())
    options = options_from_official_config(config, **overrides) if config is not None else ImportOptions(**overrides)
    out = import_official(args.checkpoint, args.out, options, vae_ckpt=args.vae_ckpt, hifigan_ckpt=args.hifigan_ckpt,
                          clap_ckpt=args.clap_ckpt, extra_files={"official_config.yaml": text} if text else None,
                          log=lambda m: print(f"import-official: {m}", file=sys.stderr))
    print(f"import-official: wrote {out} (load it with MTMusicLDM.from_pretrained or `mtmusicldm generate --model`)")
