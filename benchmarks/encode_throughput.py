"""Benchmark the codec on the CPU: encode throughput (embedded and MusicLDM-size VAEs) and the train_codec step.

Rows (random weights; timings exclude the first, warm-up call):

* embedded VAE (params profiles/embedded.yaml: ch 32, [1, 2, 4], 1 res block): log-mel + posterior + draw for a
  batch of 4-stem 2.56 s segments -> segments per second.
* MusicLDM-size VAE (ch 128, [1, 2, 4], 2 res blocks, 55 M params): one 4-stem 10.24 s segment -> seconds per segment.
* train_codec step of the embedded VAE (batch of `codec.batch_size` stems, 256 x 64 mels) -> seconds per step, and
  the steps that fit in 150 s.
* optional (`--clap`): random-weight CLAP (`conditioning.amodel`) embedding of a 2.56 s mixture -> seconds per item.

    python benchmarks/encode_throughput.py [--batch 16] [--repeats 3] [--threads 2] [--clap]
"""
from __future__ import annotations

import argparse
import itertools
import os
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of `fn` over `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def encode_fn(codec, wav: torch.Tensor) -> Callable[[], object]:
    from mtmusicldm.codec.codec_dir import sample_posterior

    def run() -> torch.Tensor:
        with torch.inference_mode():
            mean, std = codec.posterior(codec.audio_to_mel(wav))
            return sample_posterior(mean, std, torch.Generator().manual_seed(0))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="segments per encode batch (embedded VAE)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--clap", action="store_true", help="also time the random-weight CLAP embedding")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from mtmusicldm.codec.build import codec_from_params
    from mtmusicldm.codec.codec_dir import Codec
    from mtmusicldm.codec.training import train_vae
    from mtmusicldm.codec.vae import build_vae
    from mtmusicldm.codec.vocoder import GriffinLimVocoder
    from pipeline._common import PROFILES_DIR, load_params

    p = load_params(PROFILES_DIR / "embedded.yaml")
    g = torch.Generator().manual_seed(0)
    rows: list[tuple[str, str, str]] = []

    small = codec_from_params(p.codec, seed=0)
    wav = 0.1 * torch.randn(args.batch, len(p.stems), p.audio.segment_samples, generator=g)
    sec = timed(encode_fn(small, wav), args.repeats)
    rows.append((f"embedded VAE encode, batch {args.batch} x 4 stems x {p.audio.segment_seconds:.2f} s",
                 f"{sec:.2f} s/batch", f"{args.batch / sec:.2f} segments/s"))

    torch.manual_seed(0)
    big = Codec(vae=build_vae(ch=128, ch_mult=(1, 2, 4), num_res_blocks=2, z_channels=8), vocoder=GriffinLimVocoder(),
                latent_channels=8)
    wav = 0.1 * torch.randn(1, 4, 163840, generator=g)
    sec = timed(encode_fn(big, wav), max(1, args.repeats - 1))
    n_params = sum(q.numel() for q in big.vae.parameters()) / 1e6
    rows.append((f"MusicLDM-size VAE ({n_params:.1f} M) encode, 1 x 4 stems x 10.24 s", f"{sec:.2f} s/segment",
                 f"{sec / 4:.2f} s/stem"))

    vae = build_vae(ch=p.codec.channels, ch_mult=p.codec.channel_mult, num_res_blocks=p.codec.num_res_blocks,
                    z_channels=p.codec.latent_channels)
    mel = -5 + torch.randn(p.codec.batch_size, 1, p.audio.mel_frames, 64, generator=g)
    steps = max(2, args.repeats)

    def train() -> None:
        train_vae(vae, itertools.repeat(mel), steps=steps, lr=p.codec.lr, kl_weight=p.codec.kl_weight,
                  generator=torch.Generator().manual_seed(0))

    sec = timed(train, 1) / steps
    rows.append((f"embedded VAE train step, batch {p.codec.batch_size} x {p.audio.mel_frames} x 64",
                 f"{sec:.2f} s/step", f"{int(150 / sec)} steps in 150 s"))

    if args.clap:
        from pipeline.encode import build_conditioner

        t0 = time.perf_counter()
        clap = build_conditioner(p.conditioning)
        build = time.perf_counter() - t0
        mix = 0.1 * torch.randn(4, p.audio.segment_samples, generator=g)
        sec = timed(lambda: clap.embed_audio(mix, generator=torch.Generator().manual_seed(0)), 1) / 4
        rows.append((f"CLAP {p.conditioning.amodel} (random) mixture embedding, 4 x {p.audio.segment_seconds:.2f} s",
                     f"{sec:.2f} s/item", f"build {build:.1f} s"))

    width = max(len(r[0]) for r in rows)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    for name, a, b in rows:
        print(f"{name:<{width}}  {a:>14}  {b}")


if __name__ == "__main__":
    main()
