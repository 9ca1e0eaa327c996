"""The codec's ceiling on total-generation FAD: the target stems through the model's own codec and vocoder.

    python benchmarks/codec_ceiling.py --model models/ldm --samples samples --out /tmp/ceiling [--backbone offline]

A generated mix can be no closer to real music than real stems that went through the same codec and vocoder. This
encodes each target stem of the sample stage's total generation (`samples/target/<stem>/*.wav`) with the model's
codec (posterior draw, latent scale: what training sees), decodes and vocodes it, mixes the four stems like
generated ones, and prints the FAD of those round trips against the targets (`samples/target/mix`) beside the FAD of
the generated mixes (`samples/total/mix`) against the same targets, each with its 95 % bootstrap interval, on the
same backbone as `params.evaluate` unless told otherwise.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mtmusicldm.audio import load_audio, save_audio
from mtmusicldm.evaluation.fad_table import FadTable
from mtmusicldm.generation.codec_io import decode_audio, encode_audio, mix_stems
from mtmusicldm.geometry import FRAME_SAMPLES
from mtmusicldm.ldm import load_model
from mtmusicldm.utils.fs import write_json
from mtmusicldm.utils.rng import hash_seed
from pipeline._common import load_params
from pipeline.evaluate import make_backbone


def round_trip(model_dir: Path, samples: Path, out: Path, stems: tuple[str, ...], sample_rate: int) -> int:
    """Write `out/<stem>/<item>.wav` and `out/mix/<item>.wav` for every total-generation target item."""
    model = load_model(model_dir, device="cpu")
    items = sorted(p.name for p in (samples / "target" / stems[0]).glob("*.wav"))
    for name in items:
        wav = torch.stack([torch.as_tensor(load_audio(samples / "target" / s / name)) for s in stems])[None]  # [1, S, n]
        n = wav.shape[-1] - wav.shape[-1] % FRAME_SAMPLES
        z = encode_audio(model, wav[..., :n], [hash_seed(0, "ceiling", name)])
        audio = decode_audio(model, z, n)[0]  # [S, n]
        for key, track in zip((*stems, "mix"), (*audio, mix_stems(audio))):
            (out / key).mkdir(parents=True, exist_ok=True)
            save_audio(out / key / name, track.numpy(), sample_rate, subtype="FLOAT")
    return len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", type=Path, default=Path("models/ldm"))
    parser.add_argument("--samples", type=Path, default=Path("samples"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backbone", default=None, help="default: params.evaluate.backbone")
    args = parser.parse_args()
    p = load_params(args.params)
    evaluate = p.evaluate if args.backbone is None else p.evaluate.replace(backbone=args.backbone)
    count = round_trip(args.model, args.samples, args.out, p.stems, p.audio.sample_rate)
    table = FadTable(make_backbone(evaluate), args.out / "cache", n_boot=evaluate.bootstrap, seed=evaluate.seed)
    target = args.samples / "target" / "mix"
    rows = {"codec round trip": table.fad(args.out / "mix", target, "codec round trip"),
            "generated (total)": table.fad(args.samples / "total" / "mix", target, "generated (total)")}
    print(f"{count} items, backbone {evaluate.backbone}; FAD of the mix against the targets (95 % interval)")
    for name, r in rows.items():
        print(f"  {name:18s} {r.value:.2f} [{r.low:.2f}, {r.high:.2f}]")
    write_json(args.out / "ceiling.json", {k: r.as_dict() for k, r in rows.items()})


if __name__ == "__main__":
    main()
