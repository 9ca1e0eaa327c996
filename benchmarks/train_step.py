"""Benchmark one LDM training step (eps-MSE, backward, AdamW, EMA): seconds per step and peak memory.

Variants (each runs in a fresh child process, so the CPU peak RSS is that variant's own):

* `embedded`: the embedded profile's UNet (`profiles/embedded.yaml`) at its batch size, on precomputed latents.
* `embedded+vae`: the official approach, the same step preceded by the VAE encoding of the stems' mel
  spectrograms (a diffusers AutoencoderKL of the embedded codec size: [32, 64, 128], 8 latent channels, 1 layer
  per block); timed in the same process as `embedded`, step for step, and reported as a ratio. The peak
  memory of these two rows is shared (one process).
* `paper-*`: the paper-size UNet (192 channels, [1, 2, 3, 5], latents [1, 4, 8, 256, 16]) in fp32 / bf16 autocast,
  with and without gradient checkpointing. On the CPU only `--paper` runs, and only one fp32 step (a paper-size
  forward alone takes about a minute on 2 cores); on CUDA every variant runs.

    python benchmarks/train_step.py [--paper] [--steps 3]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PAPER_MODEL = {"channels": 192, "channel_mult": (1, 2, 3, 5), "num_res_blocks": 2, "attention_resolutions": (8, 4, 2),
               "num_head_channels": 32}
PAPER_LATENT = (4, 8, 256, 16)


def _setup(variant: str, device: str) -> dict:
    """Build the UNet, optimizer, EMA and inputs of a variant."""
    import copy

    import torch

    from mtmusicldm.config import ModelParams
    from mtmusicldm.models.unet3d import UNet3D
    from mtmusicldm.training.loop import unet_config_from_params
    from pipeline._common import PROFILES_DIR, load_params

    p = load_params(PROFILES_DIR / "embedded.yaml")
    if variant.startswith("paper"):
        model, batch, latent = ModelParams(**PAPER_MODEL), 1, PAPER_LATENT
    else:
        model, batch = p.model, p.train.batch_size
        latent = (len(p.stems), p.codec.latent_channels, p.audio.mel_frames // 4, 16)
    ckpt = variant.endswith("+ckpt")
    torch.manual_seed(0)
    unet = UNet3D(unet_config_from_params(model, len(p.stems), 512, grad_checkpointing=ckpt)).to(device).train()
    return {"unet": unet, "ema": copy.deepcopy(unet).requires_grad_(False),
            "opt": torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=0.01), "batch": batch,
            "latent": latent, "params": sum(x.numel() for x in unet.parameters()),
            "bf16": "-bf16" in variant, "mel_frames": p.audio.mel_frames}


def _vae(device: str):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=1, out_channels=1, down_block_types=["DownEncoderBlock2D"] * 3,
                         up_block_types=["UpDecoderBlock2D"] * 3, block_out_channels=[32, 64, 128],
                         layers_per_block=1, latent_channels=8, norm_num_groups=32).to(device).eval()


def run_variant(variant: str, steps: int) -> list[dict]:
    """Time `steps` training steps (after one warm-up step) of one variant in this process.

    The `embedded` variant also times the official VAE-in-the-step version, interleaved step by step with the
    precomputed-latents step so that both see the same machine load; it returns two rows.
    """
    import torch

    from mtmusicldm.diffusion.losses import diffusion_loss
    from mtmusicldm.diffusion.schedules import DiffusionSchedule
    from mtmusicldm.training.ema import ema_update

    device = "cuda" if torch.cuda.is_available() else "cpu"
    s = _setup(variant, device)
    unet, opt, b = s["unet"], s["opt"], s["batch"]
    schedule, g = DiffusionSchedule(), torch.Generator().manual_seed(0)
    n_stems = s["latent"][0]
    z_pre = torch.randn(b, *s["latent"], generator=g).to(device)
    vae = _vae(device) if variant == "embedded" else None
    vae_gen = torch.Generator(device).manual_seed(1)
    mel = torch.randn(b * n_stems, 1, s["mel_frames"], 64, generator=g).to(device)  # [B*S, 1, T, 64]

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def step(encode: bool) -> float:
        t0 = time.perf_counter()
        if encode:
            with torch.no_grad():  # the official model encodes every batch (posterior sample) before the UNet
                z = vae.encode(mel).latent_dist.sample(generator=vae_gen)
            x0 = z.reshape(b, n_stems, *z.shape[1:])  # [B*S, C, T', F'] -> [B, S, C, T', F']
        else:
            x0 = z_pre
        t = torch.randint(0, 1000, (b,), generator=g).to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        film = torch.randn(b, 512, generator=g).to(device)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=s["bf16"]):
            loss = diffusion_loss(unet, x0, t, noise, film, schedule).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema_update(s["ema"], unet, 0.999)
        sync()
        return time.perf_counter() - t0

    modes = [False, True] if vae is not None else [False]
    if device == "cuda" or not variant.startswith("paper"):  # CPU paper size: the single step is the measurement
        for m in modes:
            step(m)  # warm-up
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times: dict[bool, list[float]] = {m: [] for m in modes}
    for _ in range(steps):
        for m in modes:
            times[m].append(step(m))
    peak = (torch.cuda.max_memory_allocated() / 2**30 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return [{"variant": variant + ("+vae" if m else ""), "device": device, "params_m": s["params"] / 1e6,
             "batch": b, "latent": list(s["latent"]), "s_per_step": sorted(ts)[len(ts) // 2], "steps": steps,
             "peak_gib": peak, "peak_kind": "cuda max allocated" if device == "cuda" else "process peak RSS"}
            for m, ts in times.items()]


def _child(variant: str, steps: int) -> list[dict]:
    out = subprocess.run([sys.executable, __file__, "--variant", variant, "--steps", str(steps)], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paper", action="store_true", help="also run the paper-size UNet (CPU: one fp32 step)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant (median reported)")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.steps)))
        return

    import torch

    cuda = torch.cuda.is_available()
    print(f"device: {torch.cuda.get_device_name(0) if cuda else 'cpu'}  torch {torch.__version__}  "
          f"threads {torch.get_num_threads()}  cpus {os.cpu_count()}")
    plan = [("embedded", args.steps)]
    if cuda:
        plan += [(f"paper{p}{c}", args.steps) for p in ("-fp32", "-bf16") for c in ("", "+ckpt")]
    elif args.paper:
        plan += [("paper-fp32", 1)]
    rows = [r for v, n in plan for r in _child(v, n)]
    print(f"{'variant':<22}{'params':>9}{'batch':>6}  {'latent [S,C,T,F]':<18}{'s/step':>9}{'peak GiB':>10}  peak")
    for r in rows:
        print(f"{r['variant']:<22}{r['params_m']:>8.2f}M{r['batch']:>6}  {str(r['latent']):<18}"
              f"{r['s_per_step']:>9.3f}{r['peak_gib']:>10.2f}  {r['peak_kind']}")
    by = {r["variant"]: r for r in rows}
    ratio = by["embedded+vae"]["s_per_step"] / by["embedded"]["s_per_step"]
    print(f"official approach (VAE encode in every step) / precomputed latents: {ratio:.2f}x step time")


if __name__ == "__main__":
    main()
