"""`train` stage: latent shards -> trained 3D LDM (`models/ldm/`), with resumable checkpoints (`checkpoints/ldm/`).

Runs as a plain process (`python -m pipeline.train`) or under `accelerate launch` (DDP; CPU: `--multi_gpu
--num_processes N --num_machines 1 --mixed_precision no --dynamo_backend no`, which gives N real gloo processes).
Killed runs resume from the newest checkpoint; raising `train.steps` continues training (see
`mtmusicldm.training.loop`). At the end rank 0 writes the self-contained model directory atomically
(`MTMusicLDM.save_pretrained`, docs/formats.md): config.json, unet.safetensors, unet_ema.safetensors, codec/ (a copy
of the codec the latents were encoded with), clap.safetensors (pretrained CLAP only), params.yaml, loss.csv, loss.png.
"""
from __future__ import annotations

import hashlib
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator

from mtmusicldm.codec.codec_dir import load_codec
from mtmusicldm.config import ConditioningParams, DiffusionParams, ModelParams, TrainParams, params_to_dict
from mtmusicldm.data.latents import LatentsIndex, read_latents_index
from mtmusicldm.ldm import MTMusicLDM
from mtmusicldm.model_config import RecommendedSampler, make_model_config
from mtmusicldm.training.loop import TrainResult, train as train_loop, unet_config_from_params
from pipeline._common import parse_and_load, stage_main, stage_parser

RECOMMENDED_SAMPLER = RecommendedSampler("dpmpp_2m", 25)
"""Written into every model trained here (the CLI and studio default): on the trained embedded model DPM-Solver++(2M)
with 25 steps gave the offline FAD of DDIM-200 at a ninth of the time (README, `benchmarks/sampling_speed.py`)."""


def make_accelerator(train: TrainParams) -> Accelerator:
    """Accelerator for this machine: CUDA if present (else CPU/gloo), the params' precision and accumulation, and
    the lr schedule stepped once per optimizer step (`mtmusicldm.training.loop`)."""
    cuda = torch.cuda.is_available()
    if train.mixed_precision == "fp16" and not cuda:
        raise ValueError("train.mixed_precision: fp16 needs a CUDA GPU; use bf16 or no on the CPU")
    return Accelerator(cpu=not cuda, mixed_precision=train.mixed_precision,
                       gradient_accumulation_steps=train.grad_accum, step_scheduler_with_optimizer=False)


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 over the state dict (sorted keys, raw bytes): equal iff the weights are bitwise equal."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy())
    return h.hexdigest()


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10,
                             cwd=Path(__file__).resolve().parents[1])  # the code's commit, wherever we run
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _codec_dir(index: LatentsIndex) -> Path:
    """The codec the latents were encoded with (latents.json `codec_dir`, relative to the working directory)."""
    if index.codec_dir is None:
        raise ValueError(f"{index.root}/latents.json records no codec_dir: re-run the encode stage (the model "
                         "directory keeps a copy of the codec the latents come from)")
    return Path(index.codec_dir)


def plot_loss(loss_csv: Path, png: Path) -> None:
    """Loss (log scale) against step from loss.csv."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(loss_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("eps-MSE loss")
    losses = [float(r["loss"]) for r in rows]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 10:  # log scale only when it spans a decade
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def write_model_dir(out: Path, result: TrainResult, *, stems: Sequence[str], model: ModelParams,
                    diffusion: DiffusionParams, conditioning: ConditioningParams, index: LatentsIndex,
                    params_yaml: str) -> None:
    """Write the self-contained `models/ldm/` from a finished run (rank 0 only)."""
    film_dim, geometry = conditioning.film_dim, index.geometry
    config = make_model_config(
        stems=stems, unet=unet_config_from_params(model, len(stems), film_dim), timesteps=diffusion.timesteps,
        beta_start=diffusion.beta_start, beta_end=diffusion.beta_end, prediction=diffusion.prediction,
        scale_factor=index.scale_factor,
        latent_shape=index.latent_shape, segment_samples=geometry.segment_samples(index.latent_shape[2]),
        sample_rate=geometry.sample_rate, conditioning=params_to_dict(conditioning) if film_dim is not None else None,
        uncond_clap=index.uncond_clap if film_dim is not None else None, trained_steps=result.step, source="train",
        recommended_sampler=RECOMMENDED_SAMPLER, geometry=geometry,
    )
    ldm = MTMusicLDM(result.ema, config, codec=load_codec(_codec_dir(index)))
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "loss.png"
        plot_loss(result.loss_csv, png)
        ldm.save_pretrained(out, raw_unet=result.unet, extra_files={
            "params.yaml": params_yaml, "loss.csv": result.loss_csv, "loss.png": png})


def run(seed: int, stems: tuple[str, ...], model: ModelParams, diffusion: DiffusionParams,
        conditioning: ConditioningParams, train: TrainParams, latents: Path, checkpoints: Path, out: Path, *,
        accelerator: Accelerator | None = None) -> dict[str, Any]:
    """Train (resuming from `checkpoints` when possible) and write the model directory `out`.

    Returns:
        A report: steps, start_step, world_size, final loss, seconds, notes, per-rank weight hashes.
    """
    index = read_latents_index(latents)
    accelerator = accelerator or make_accelerator(train)
    params_yaml = yaml.safe_dump({"seed": seed, "stems": list(stems), "model": params_to_dict(model),
                                  "diffusion": params_to_dict(diffusion),
                                  "conditioning": params_to_dict(conditioning), "train": params_to_dict(train)},
                                 sort_keys=False)
    result = train_loop(seed=seed, stems=stems, model=model, diffusion=diffusion, conditioning=conditioning,
                        train=train, latents=index, checkpoints=checkpoints, accelerator=accelerator,
                        params_yaml=params_yaml, run_info={"git_sha": _git_sha()})
    if accelerator.is_main_process:
        write_model_dir(out, result, stems=stems, model=model, diffusion=diffusion, conditioning=conditioning,
                        index=index, params_yaml=params_yaml)
    accelerator.wait_for_everyone()
    tail = result.losses[-train.log_every:]
    return {
        "steps": result.step, "start_step": result.start_step, "world_size": result.world_size,
        "rank": accelerator.process_index, "device": str(accelerator.device),
        "mixed_precision": train.mixed_precision, "seconds": round(result.seconds, 3),
        "final_loss": sum(tail) / len(tail) if tail else None, "notes": result.notes,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None, "out": str(out),
        "weights_sha256": {"unet": weights_sha256(result.unet), "ema": weights_sha256(result.ema)},
    }


@stage_main
def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("train stage: latent shards -> 3D LDM model directory (resumable)")
    parser.add_argument("--latents", type=Path, default=Path("data/latents"), help="encode stage output")
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints/ldm"), help="persistent checkpoints")
    parser.add_argument("--out", type=Path, default=Path("models/ldm"))
    args, p = parse_and_load(parser, argv)
    report = run(p.seed, p.stems, p.model, p.diffusion, p.conditioning, p.train, args.latents, args.checkpoints,
                 args.out)
    h = report["weights_sha256"]
    print(f"train: rank {report['rank']}/{report['world_size']} weights sha256 unet={h['unet']} ema={h['ema']}",
          flush=True)
    if report["rank"] == 0:
        loss = "n/a" if report["final_loss"] is None else f"{report['final_loss']:.4f}"
        print(f"train: {report['steps']} steps (from {report['start_step']}) on {report['world_size']} x "
              f"{report['device']} in {report['seconds']:.1f} s, final loss {loss} -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
