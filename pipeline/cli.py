"""The `mtmusicldm` command line: stages without DVC, profiles, generation, import, the studio and FAD.

    mtmusicldm profile {embedded,paper}          # copy profiles/<name>.yaml to params.yaml (validated)
    mtmusicldm params [--params FILE]            # validate and print the resolved params
    mtmusicldm download [--out data/raw]         # the download stage
    mtmusicldm prepare --source {synthetic,slakh,msdm,babyslakh} [--root PATH] --out PATH
    mtmusicldm generate --model DIR --out DIR [--count N] [--seconds S] [--prompt TEXT | --reference FILE] ...
    mtmusicldm arrange --model DIR --given bass=a.wav [--given drums=b.wav] [--generate piano] --out DIR ...
    mtmusicldm import-official CKPT OUT_DIR [--no-ema] [--config YAML] [--vae-ckpt F] [--hifigan-ckpt F] [--clap-ckpt F]
    mtmusicldm import-codec OUT_CODEC_DIR --vae-ckpt vae-ckpt.ckpt --hifigan-ckpt hifigan-ckpt.ckpt
    mtmusicldm studio --model DIR [--host 127.0.0.1] [--port 7860]   # the local web studio (studio/)
    mtmusicldm fad DIR_A DIR_B [--backbone offline|crepe|vggish|clap] [--vggish-weights PTH] [--json] [--cache DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

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
        download.run(data, p.synthetic, args.raw)
        source, root = download.resolve_root(args.raw)
    else:
        if args.root is None:
            raise SystemExit(f"prepare: --root PATH is required with --source {args.source}")
        if not args.root.is_dir():
            raise SystemExit(f"prepare: --root {args.root} is not a directory")
        data = replace(p.data, source=args.source)
        source, root = args.source, args.root.resolve()
    report = prepare.run(p.seed, p.stems, p.audio, data, p.prepare, args.raw, args.out, source=source, root=root)
    prepare.print_summary(report, args.out)


# ---------------------------------------------------------------------------------------------------------------
# generate / arrange


def _load_model(args: argparse.Namespace) -> Any:
    """The model of `--model` on `--device` (UNet, VAE and a HiFi-GAN vocoder moved there)."""
    import torch

    from mtmusicldm.ldm import MTMusicLDM

    if not args.model.is_dir():
        raise FileNotFoundError(f"model directory {args.model} does not exist (train one, or import the official "
                                "checkpoint with `mtmusicldm import-official`)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = MTMusicLDM.from_pretrained(args.model, device=device)
    if device != "cpu":
        model.vae.to(device)
        if isinstance(model.vocoder, torch.nn.Module):
            model.vocoder.to(device)
    return model


def _conditioning(args: argparse.Namespace, model: Any, default_guidance: float) -> tuple[Any, float, str]:
    """(film [D] | None, guidance scale, description) from --prompt / --reference / --guidance."""
    import torch

    from mtmusicldm.audio import load_audio

    wants = [flag for flag, v in (("--prompt", args.prompt), ("--reference", args.reference),
                                  ("--guidance", args.guidance)) if v is not None and v != 1.0]
    if model.film_dim is None:
        if wants:
            raise ValueError(f"{' and '.join(wants)} need a conditional model, but {args.model} is unconditional")
        return None, 1.0, "none (unconditional model)"
    if args.prompt is not None:
        return model.clap.embed_text([args.prompt])[0], _guidance(args, 2.0), f"text prompt {args.prompt!r}"
    if args.reference is not None:
        wav = torch.from_numpy(load_audio(args.reference, int(model.config["sample_rate"])))[None]
        return (model.clap.embed_audio_long(wav)[0], _guidance(args, 2.0),
                f"CLAP embedding of the reference {args.reference}")
    return None, _guidance(args, default_guidance), ""


def _check_sampler(args: argparse.Namespace) -> None:
    from mtmusicldm.diffusion.samplers import SAMPLERS

    if args.sampler not in SAMPLERS:
        raise ValueError(f"--sampler {args.sampler!r} is unknown; choose from {', '.join(sorted(SAMPLERS))}")
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")


def _guidance(args: argparse.Namespace, default: float) -> float:
    return default if args.guidance is None else float(args.guidance)


def _sampling_record(args: argparse.Namespace, model: Any, guidance: float, conditioning: str) -> dict[str, Any]:
    from mtmusicldm.diffusion.sampling import DEFAULT_ETA

    eta = args.eta if args.eta is not None else DEFAULT_ETA.get(args.sampler)
    return {"model": str(args.model), "model_source": model.config["source"],
            "trained_steps": model.config["trained_steps"], "stems": list(model.stems),
            "sample_rate": int(model.config["sample_rate"]), "segment_samples": int(model.config["segment_samples"]),
            "sampler": args.sampler, "steps": args.steps, "eta": eta, "guidance_scale": guidance, "seed": args.seed,
            "prompt": args.prompt, "reference": None if args.reference is None else str(args.reference),
            "conditioning": conditioning, "overlap": args.overlap, "subtype": args.subtype}


def _cmd_generate(args: argparse.Namespace) -> None:
    from mtmusicldm.generation import generate, segment_samples, write_stems
    from mtmusicldm.utils.fs import write_json

    _check_sampler(args)
    if args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    if args.seconds is not None and args.seconds <= 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds}")
    model = _load_model(args)
    film, guidance, described = _conditioning(args, model, 1.0)
    if model.film_dim is not None and film is None and guidance != 1.0:
        raise ValueError("--guidance needs --prompt or --reference (nothing to guide towards)")
    audio = generate(model, args.count, seed=args.seed, seconds=args.seconds, sampler=args.sampler,
                     steps=args.steps, eta=args.eta, guidance_scale=guidance, film=film, batch_size=args.batch_size,
                     overlap=args.overlap, progress=True)
    sr, files = int(model.config["sample_rate"]), {}
    for k in range(args.count):
        sub = Path() if args.count == 1 else Path(f"sample_{k}")  # count 1: directly in --out
        written = write_stems(args.out / sub, audio[k], model.stems, sr, args.subtype)
        files[f"sample_{k}"] = {name: str(sub / f) for name, f in written.items()}
    if not described:
        described = "unconditional (the CLAP '' token)"
    record = _sampling_record(args, model, guidance, described)
    record |= {"command": "generate", "count": args.count, "seconds": args.seconds,
               "samples": int(audio.shape[-1]), "long_form": int(audio.shape[-1]) > segment_samples(model),
               "item_seed": "derive_seed(seed, k)", "files": files}
    write_json(args.out / "generation.json", record)
    print(f"generate: wrote {args.count} sample(s) of {audio.shape[-1] / sr:.2f} s to {args.out}")


def _parse_given(entries: Sequence[str], stems: Sequence[str]) -> dict[str, Path]:
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


def _cmd_arrange(args: argparse.Namespace) -> None:
    import torch

    from mtmusicldm import STEMS
    from mtmusicldm.generation import arrange, write_stems
    from mtmusicldm.longform import load_stems
    from mtmusicldm.utils.fs import write_json

    _check_sampler(args)
    given = _parse_given(args.given, STEMS)
    unknown = sorted(set(args.generate or ()) - set(STEMS))
    if unknown:
        raise ValueError(f"--generate: unknown stem(s) {unknown}; stems are {', '.join(STEMS)}")
    both = sorted(set(args.generate or ()) & set(given))
    if both:
        raise ValueError(f"stem(s) {both} are both --given and --generate")
    if not given:
        raise ValueError("nothing is given: pass --given STEM=FILE (use `mtmusicldm generate` for total generation)")
    to_generate = [s for s in STEMS if s not in given] if not args.generate else list(args.generate)
    if not to_generate:
        raise ValueError(f"every stem is given ({', '.join(given)}): nothing to generate")
    model = _load_model(args)
    if tuple(model.stems) != tuple(STEMS):
        raise ValueError(f"{args.model} has stems {list(model.stems)}, expected {list(STEMS)}")
    audio, _ = load_stems(given, model.stems, int(model.config["sample_rate"]))
    known = torch.tensor([s not in to_generate for s in model.stems])  # neither given nor generated: silence
    film, guidance, described = _conditioning(args, model, 1.0)
    out = arrange(model, audio[None], mask=known, seed=args.seed, sampler=args.sampler, steps=args.steps,
                  eta=args.eta, guidance_scale=guidance, film=film, batch_size=1, overlap=args.overlap,
                  progress=True)
    sr = int(model.config["sample_rate"])
    files = write_stems(args.out, out[0], model.stems, sr, args.subtype)
    silent = [s for s in model.stems if s not in given and s not in to_generate]
    record = _sampling_record(args, model, guidance, described or (
        "CLAP embedding of the given mixture" if model.film_dim is not None else "none (unconditional model)"))
    record |= {"command": "arrange", "given": {k: str(v) for k, v in given.items()}, "generated": to_generate,
               "silent": silent, "samples": int(out.shape[-1]), "files": files}
    write_json(args.out / "arrangement.json", record)
    print(f"arrange: generated {', '.join(to_generate)} ({out.shape[-1] / sr:.2f} s) into {args.out}")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="model directory (models/ldm or an imported one)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    cond = p.add_mutually_exclusive_group()
    cond.add_argument("--prompt", default=None, help="text prompt (conditional models)")
    cond.add_argument("--reference", type=Path, default=None, help="reference audio file (conditional models)")
    p.add_argument("--sampler", default="ddim",
                   help="a key of mtmusicldm.diffusion.SAMPLERS: ddim (default, official), euler, dpmpp_2m, ...")
    p.add_argument("--steps", type=int, default=200, help="sampling steps (default: 200, official)")
    p.add_argument("--eta", type=float, default=None, help="stochasticity of ddim / dpmpp_2m_sde (default 1.0)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: 2.0 with --prompt/--reference, else 1.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overlap", type=float, default=0.5, help="window overlap for long inputs (fraction)")
    p.add_argument("--subtype", default="FLOAT", choices=["FLOAT", "PCM_16", "PCM_24"],
                   help="WAV sample format (FLOAT keeps given stems bit-identical)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


# ---------------------------------------------------------------------------------------------------------------
# import-official / import-codec


def _official_yaml(path: Path | None) -> tuple[dict[str, Any] | None, str | None]:
    """(parsed official YAML, its text) or (None, None)."""
    import yaml

    if path is None:
        return None, None
    text = path.read_text()
    config = yaml.safe_load(text)
    if not isinstance(config, dict):
        raise ValueError(f"--config {path}: expected a YAML mapping (an official MT-MusicLDM config)")
    return config, text


def _hifigan_json(path: Path | None) -> dict[str, Any] | None:
    return None if path is None else json.loads(path.read_text())


def _cmd_import_official(args: argparse.Namespace) -> None:
    from mtmusicldm.official.convert import ImportOptions, import_official, options_from_official_config

    config, text = _official_yaml(args.config)
    overrides: dict[str, Any] = {"ema": args.ema, "trust_checkpoint": args.trust_checkpoint,
                                 "num_head_channels": args.num_head_channels,
                                 "hifigan_config": _hifigan_json(args.hifigan_config), "text_model": args.text_model}
    if args.stems is not None:
        overrides["stems"] = tuple(s.strip() for s in args.stems.split(",") if s.strip())
    options = options_from_official_config(config, **overrides) if config is not None else ImportOptions(**overrides)
    out = import_official(args.checkpoint, args.out, options, vae_ckpt=args.vae_ckpt, hifigan_ckpt=args.hifigan_ckpt,
                          clap_ckpt=args.clap_ckpt, extra_files={"official_config.yaml": text} if text else None,
                          log=lambda m: print(f"import-official: {m}", file=sys.stderr))
    print(f"import-official: wrote {out} (load it with MTMusicLDM.from_pretrained or `mtmusicldm generate --model`)")


def _cmd_import_codec(args: argparse.Namespace) -> None:
    from mtmusicldm.official.convert import import_codec, options_from_official_config

    config, _ = _official_yaml(args.config)
    options = options_from_official_config(config) if config is not None else None
    out = import_codec(args.out, args.vae_ckpt, args.hifigan_ckpt,
                       ddconfig=options.ddconfig if options else None, embed_dim=options.embed_dim if options else None,
                       hifigan=_hifigan_json(args.hifigan_config), trust_checkpoint=args.trust_checkpoint)
    print(f"import-codec: wrote {out}")


def _add_import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None,
                   help="official YAML (model.params.unet_config / first_stage_config ...); default: infer from shapes")
    p.add_argument("--hifigan-config", type=Path, default=None,
                   help="HiFi-GAN config JSON (default: MusicLDM's config_16k_64.json, widths read from the weights)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a full (code-executing) unpickle if the safe loaders fail; trusted files only")


# ---------------------------------------------------------------------------------------------------------------
# studio

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _cmd_studio(args: argparse.Namespace) -> None:
    import uvicorn

    from studio.app import create_app

    if not args.model.is_dir():
        raise FileNotFoundError(f"model directory {args.model} does not exist (train one, or import the official "
                                "checkpoint with `mtmusicldm import-official`)")
    if args.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    if args.host not in LOOPBACK_HOSTS:
        print(f"studio: WARNING: serving on {args.host}: anyone who can reach this address can use the model and "
              "upload files (there is no login)", file=sys.stderr)
    print(f"studio: loading {args.model} ...", file=sys.stderr)
    app = create_app(args.model, max_upload_mb=args.max_upload_mb, work_root=args.work_root, device=args.device,
                     session_ttl_hours=args.session_ttl_hours)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"studio: open http://{shown}:{args.port}/ (Ctrl-C stops it and removes its temporary files)",
          file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


# ---------------------------------------------------------------------------------------------------------------
# fad


def _cmd_fad(args: argparse.Namespace) -> None:
    """FAD between two audio folders: the value on stdout (or a JSON record with --json), details on stderr."""
    from mtmusicldm.evaluation.embedders import EMBEDDERS, make_embedder
    from mtmusicldm.evaluation.fad_table import FadTable

    if args.backbone not in EMBEDDERS:
        raise ValueError(f"--backbone {args.backbone!r} is unknown; choose from {', '.join(sorted(EMBEDDERS))}")
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

    p = sub.add_parser("generate", help="generate all stems (total generation); long-form beyond one segment",
                       description="Writes <stem>.wav + mix.wav (16 kHz) into --out when --count is 1, else into "
                                   "--out/sample_<k>/, and --out/generation.json with every setting.")
    _add_sampling_args(p)
    p.add_argument("--count", type=int, default=1, help="number of samples (item k uses seed (seed, k))")
    p.add_argument("--seconds", type=float, default=None, help="length (default: one model segment)")
    p.add_argument("--batch-size", type=int, default=4)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("arrange", help="generate missing stems given others (any length: windowed long-form)",
                       description="Writes <stem>.wav + mix.wav (16 kHz, the input's length) and arrangement.json "
                                   "into --out. Given stems are copied bit-identically (after mono / 16 kHz "
                                   "conversion); stems neither given nor generated are silent.")
    _add_sampling_args(p)
    p.add_argument("--given", action="append", default=[], metavar="STEM=FILE", help="a given stem (repeatable)")
    p.add_argument("--generate", action="append", default=None, metavar="STEM",
                   help="a stem to generate (repeatable; default: every stem not given)")
    p.set_defaults(func=_cmd_arrange)

    p = sub.add_parser("import-official", help="convert an official MT-MusicLDM checkpoint into a model directory",
                       description="Converts an MT-MusicLDM Lightning checkpoint (Zenodo 13947715, unconditional or "
                                   "CLAP) into OUT_DIR: config.json, unet(_ema).safetensors, codec/ (VAE + HiFi-GAN), "
                                   "clap.pt (conditional), import.json. Loadable by MTMusicLDM.from_pretrained.")
    p.add_argument("checkpoint", type=Path, metavar="CKPT")
    p.add_argument("out", type=Path, metavar="OUT_DIR")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True,
                   help="sample with the EMA weights model_ema.* (default) or the raw model.diffusion_model.*")
    _add_import_args(p)
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
    p.set_defaults(func=_cmd_import_official)

    p = sub.add_parser("import-codec", help="build a codec directory from MusicLDM's vae/hifigan checkpoints",
                       description="MusicLDM's vae-ckpt.ckpt + hifigan-ckpt.ckpt (Zenodo 10643148) -> OUT_CODEC_DIR "
                                   "(codec.json, vae/, vocoder/), usable as codec.kind diffusers / a model's codec.")
    p.add_argument("out", type=Path, metavar="OUT_CODEC_DIR")
    p.add_argument("--vae-ckpt", type=Path, required=True)
    p.add_argument("--hifigan-ckpt", type=Path, required=True)
    _add_import_args(p)
    p.set_defaults(func=_cmd_import_codec)

    p = sub.add_parser("studio", help="a local web page: upload stems, pick what to generate, listen, download",
                       description="Serves the studio (FastAPI + uvicorn) on --host:--port, loopback by default. "
                                   "One generation runs at a time (others queue); uploads and results live in a "
                                   "temporary folder under --work-root that is removed when the studio stops.")
    p.add_argument("--model", type=Path, required=True, help="model directory (models/ldm or an imported one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-upload-mb", type=float, default=200.0, help="size limit of one uploaded file (MB)")
    p.add_argument("--work-root", type=Path, default=None, help="parent of the temporary folder (default: $TMPDIR)")
    p.add_argument("--session-ttl-hours", type=float, default=6.0, help="remove idle sessions after this long")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.set_defaults(func=_cmd_studio)

    p = sub.add_parser("fad", help="Frechet audio distance between two folders of audio files",
                       description="Embeds every audio file of DIR_A and DIR_B (first channel, resampled to the "
                                   "backbone's rate), pools the frames and prints the Frechet distance. offline "
                                   "(default) needs no weights but is not comparable with published VGGish FAD.")
    p.add_argument("dir_a", type=Path, metavar="DIR_A", help="e.g. the generated audio")
    p.add_argument("dir_b", type=Path, metavar="DIR_B", help="e.g. the reference audio")
    p.add_argument("--backbone", default="offline", help="offline (default) | crepe | vggish | clap")
    p.add_argument("--vggish-weights", type=Path, default=None, help="local vggish-10086976.pth (--backbone vggish)")
    p.add_argument("--clap-checkpoint", type=Path, default=None, help="local CLAP checkpoint (--backbone clap)")
    p.add_argument("--cache", type=Path, default=None, help="embedding cache folder (default: no cache)")
    p.add_argument("--recursive", action="store_true", help="include audio files in sub-folders")
    p.add_argument("--json", action="store_true", help="print a JSON record instead of the bare value")
    p.set_defaults(func=_cmd_fad)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ParamsError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"mtmusicldm {args.command}: {e}") from None


if __name__ == "__main__":
    main()
