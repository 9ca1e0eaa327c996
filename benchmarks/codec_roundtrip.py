"""audio -> log-mel -> VAE -> log-mel -> vocoder, end to end with exact lengths, and what each step costs.

Two codecs: the embedded one (`models/codec` when `make run` has produced it, else a random-weight small VAE with
Griffin-Lim) on a 2.56 s 4-stem segment, and a random-weight MusicLDM-size codec (VAE 128 channels, 55 M params;
HiFi-GAN 1024 channels, 55 M params) on a 10.24 s 4-stem segment. Prints shapes, lengths and seconds.

    python benchmarks/codec_roundtrip.py [--codec models/codec] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402


def roundtrip(codec, n_samples: int, label: str) -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.arange(n_samples) / 16000
    wav = torch.stack([0.3 * torch.sin(2 * torch.pi * f * t) for f in (55.0, 110.0, 330.0, 440.0)])[None]  # [1,4,n]
    wav = wav + 0.01 * torch.randn(wav.shape, generator=g)
    times = {}
    with torch.inference_mode():
        t0 = time.perf_counter()
        mel = codec.audio_to_mel(wav)
        times["mel"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        z = codec.encode_mel(mel, sample=False, generator=None)
        times["vae encode"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        mel_hat = codec.decode_mel(z)
        times["vae decode"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = codec.mel_to_audio(mel_hat, n_samples)
        times["vocoder"] = time.perf_counter() - t0
    assert mel.shape == mel_hat.shape == (1, 4, n_samples // 160, 64), (mel.shape, mel_hat.shape)
    assert tuple(out.shape) == (1, 4, n_samples), out.shape
    print(f"{label}: wav {tuple(wav.shape)} -> mel {tuple(mel.shape)} -> z {tuple(z.shape)} -> mel "
          f"{tuple(mel_hat.shape)} -> wav {tuple(out.shape)} (exact length)")
    print("    " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", type=Path, default=Path("models/codec"))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from mtmusicldm.codec.codec_dir import Codec, load_codec
    from mtmusicldm.official.hifigan import MUSICLDM_HIFIGAN_CONFIG
    from mtmusicldm.official.vae import MUSICLDM_DDCONFIG
    from mtmusicldm.codec.vae import build_vae, vae_config
    from mtmusicldm.codec.vocoder import GriffinLimVocoder, HifiGanVocoder
    from mtmusicldm.official.hifigan import hifigan_config
    from mtmusicldm.official.vae import vae_kwargs_from_ddconfig
    from transformers import SpeechT5HifiGan

    print(f"device cpu, torch {torch.__version__}, {torch.get_num_threads()} threads")
    if (args.codec / "codec.json").is_file():
        small, label = load_codec(args.codec), f"embedded codec ({args.codec})"
    else:
        small = Codec(vae=build_vae(**vae_config(ch=32, ch_mult=(1, 2, 4), num_res_blocks=1, z_channels=8)).eval(),
                      vocoder=GriffinLimVocoder(n_iter=32), latent_channels=8)
        label = "embedded-size codec (random weights)"
    roundtrip(small, 40960, label)
    torch.manual_seed(0)
    vae = build_vae(**vae_kwargs_from_ddconfig(MUSICLDM_DDCONFIG, 8)).eval()
    hifigan = SpeechT5HifiGan(hifigan_config(MUSICLDM_HIFIGAN_CONFIG)).eval()
    big = Codec(vae=vae, vocoder=HifiGanVocoder(hifigan), latent_channels=8)
    n_params = sum(p.numel() for p in vae.parameters()) / 1e6, sum(p.numel() for p in hifigan.parameters()) / 1e6
    roundtrip(big, 163840, f"MusicLDM-size codec (random weights; VAE {n_params[0]:.1f} M, HiFi-GAN {n_params[1]:.1f} M)")


if __name__ == "__main__":
    main()
