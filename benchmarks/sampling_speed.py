"""Benchmark samplers: UNet evaluations and wall time per segment sample, DDIM-200 (official) vs DPM-Solver++(2M).

Default: the embedded-profile UNet (params `model` section of profiles/embedded.yaml, FiLM 512) with random
weights on the CPU, one segment of latents [1, 4, 8, T', 16] (T' from `audio.segment_samples`), latents only.
With `--model DIR` the trained model is used and the timing includes VAE decoding + vocoding; with `--model` and
`--shards DIR` (prepared shards) the FAD of each sampler's mixes against the test-split mixes is added (offline
backbone of `mtmusicldm.evaluation`, `--fad-count` samples per sampler).

    python benchmarks/sampling_speed.py [--configs ddim:200 dpmpp_2m:10 dpmpp_2m:25 dpmpp_2m:50]
                                        [--model models/ldm --shards data/shards --fad-count 32] [--out FILE]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("MTMUSICLDM_NO_PROGRESS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class CountingUNet(torch.nn.Module):
    """Wraps a UNet and counts its forward calls (one call on a CFG-doubled batch counts once)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.config = getattr(unet, "config", None)  # MTMusicLDM.film_dim reads unet.config
        self.calls = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor, film: torch.Tensor | None = None) -> torch.Tensor:
        self.calls += 1
        return self.unet(x, t, film)


def embedded_unet(film_dim: int | None) -> tuple[torch.nn.Module, tuple[int, int, int, int]]:
    """The embedded-profile UNet (random weights) and its latent shape [S, C, T', F']."""
    from mtmusicldm.training.loop import unet_config_from_params
    from mtmusicldm.models.unet3d import UNet3D
    from pipeline._common import PROFILES_DIR, load_params

    p = load_params(PROFILES_DIR / "embedded.yaml")
    torch.manual_seed(0)
    unet = UNet3D(unet_config_from_params(p.model, len(p.stems), film_dim)).eval()
    return unet, (len(p.stems), p.codec.latent_channels, p.audio.segment_samples // 640, 16)


def time_latents(unet: torch.nn.Module, shape: tuple[int, ...], sampler: str, steps: int, film_dim: int | None,
                 guidance: float, repeats: int) -> dict[str, Any]:
    """Median wall time of `repeats` single-segment latent samplings."""
    from mtmusicldm.diffusion import sample_latents

    counting = CountingUNet(unet)
    film = torch.nn.functional.normalize(torch.randn(1, film_dim), dim=-1) if film_dim else None
    uncond = torch.nn.functional.normalize(torch.randn(1, film_dim), dim=-1) if film_dim and guidance != 1 else None
    times = []
    with torch.inference_mode():
        counting(torch.randn(1, *shape), torch.tensor([500]), film)  # warm-up
        for r in range(repeats):
            counting.calls = 0
            g = torch.Generator().manual_seed(r)
            noise = torch.randn(1, *shape, generator=g)
            t0 = time.perf_counter()
            sample_latents(counting, noise, sampler=sampler, steps=steps, film=film, uncond_film=uncond,
                           guidance_scale=guidance, generator=[g])
            times.append(time.perf_counter() - t0)
    wall = sorted(times)[len(times) // 2]
    return {"sampler": sampler, "steps": steps, "unet_evals": counting.calls, "seconds_per_sample": wall,
            "seconds_per_eval": wall / counting.calls}


def time_model(model: Any, sampler: str, steps: int, guidance: float, repeats: int) -> dict[str, Any]:
    """Wall time of full segment samples (latents + decoding + vocoding) with a trained model."""
    from mtmusicldm.generation import generate

    counting = CountingUNet(model.unet)
    model.unet, original = counting, model.unet
    try:
        generate(model, 1, seed=0, sampler="ddim", steps=2)  # warm-up (loads the codec lazily)
        times = []
        for r in range(repeats):
            counting.calls = 0
            t0 = time.perf_counter()
            generate(model, 1, seed=r, sampler=sampler, steps=steps, guidance_scale=guidance, batch_size=1)
            times.append(time.perf_counter() - t0)
    finally:
        model.unet = original
    wall = sorted(times)[len(times) // 2]
    return {"sampler": sampler, "steps": steps, "unet_evals": counting.calls, "seconds_per_sample": wall,
            "seconds_per_eval": None}


def fad_column(model: Any, shards: Path, configs: list[tuple[str, int]], count: int, seed: int) -> dict[str, float]:
    """FAD (offline backbone) of each sampler's generated mixes vs the test-split mixes; {} without the module."""
    if importlib.util.find_spec("mtmusicldm.evaluation.fad_table") is None:
        return {}
    from mtmusicldm.audio import save_audio
    from mtmusicldm.data.shards import iter_samples, list_shards
    from mtmusicldm.evaluation import FadTable, OfflineEmbedder
    from mtmusicldm.generation import generate, mix_stems

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "reference"
        for i, s in enumerate(iter_samples(list_shards(shards / "test"), model.stems)):
            save_audio(ref / f"{i:05d}.wav", s.audio.sum(axis=0), 16000, subtype="FLOAT")
        for sampler, steps in configs:
            gen = Path(tmp) / f"{sampler}_{steps}"
            audio = generate(model, count, seed=seed, sampler=sampler, steps=steps, batch_size=4)
            for k in range(count):
                save_audio(gen / f"{k:05d}.wav", mix_stems(audio[k]).numpy(), 16000, subtype="FLOAT")
            out[f"{sampler}:{steps}"] = FadTable(OfflineEmbedder()).fad(gen, ref, f"{sampler}:{steps}").value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["ddim:200", "dpmpp_2m:10", "dpmpp_2m:25", "dpmpp_2m:50"])
    parser.add_argument("--model", type=Path, default=None, help="trained model dir (default: random embedded UNet)")
    parser.add_argument("--shards", type=Path, default=None, help="prepared shards, for the FAD column")
    parser.add_argument("--fad-count", type=int, default=32)
    parser.add_argument("--guidance", type=float, default=1.0, help="CFG scale (2.0 doubles the UNet batch)")
    parser.add_argument("--unconditional", action="store_true", help="random UNet without FiLM")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = [(c.split(":")[0], int(c.split(":")[1])) for c in args.configs]
    rows, fad = [], {}
    if args.model is None:
        film_dim = None if args.unconditional else 512
        unet, shape = embedded_unet(film_dim)
        what = f"embedded UNet (random weights, {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M params)"
        rows = [time_latents(unet, shape, s, n, film_dim, args.guidance, args.repeats) for s, n in configs]
    else:
        from mtmusicldm.ldm import MTMusicLDM

        model = MTMusicLDM.from_pretrained(args.model)
        shape, what = model.latent_shape, f"model {args.model} (latents + decode + vocoder)"
        rows = [time_model(model, s, n, args.guidance, args.repeats) for s, n in configs]
        if args.shards is not None:
            fad = fad_column(model, args.shards, configs, args.fad_count, seed=0)
    for row in rows:
        row["fad_offline"] = fad.get(f"{row['sampler']}:{row['steps']}")
    result = {"what": what, "latent_shape": list(shape), "guidance": args.guidance, "device": "cpu",
              "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(), "rows": rows}
    print(f"{what}, latents {list(shape)}, {torch.get_num_threads()} threads, guidance {args.guidance}")
    print(f"{'sampler':>10} {'steps':>5} {'UNet evals':>10} {'s/sample':>9} {'s/eval':>7} {'FAD':>7}")
    for r in rows:
        per_eval = "-" if r["seconds_per_eval"] is None else f"{r['seconds_per_eval']:.3f}"
        fad_s = "-" if r["fad_offline"] is None else f"{r['fad_offline']:.3f}"
        print(f"{r['sampler']:>10} {r['steps']:>5} {r['unet_evals']:>10} {r['seconds_per_sample']:>9.2f} "
              f"{per_eval:>7} {fad_s:>7}")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
