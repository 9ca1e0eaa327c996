"""`train_codec` stage: shards -> the latent codec in `models/codec/` (VAE + vocoder, docs/formats.md).

* `codec.kind: pca` (embedded default): the patch-PCA codec (`mtmusicldm.codec.pca`), fitted in closed form on the
  log-mels of every non-silent stem of the TRAIN shards, in one pass (seconds).
* `codec.kind: trained`: a new small VAE (`codec.channels`, `channel_mult`, `num_res_blocks`, `latent_channels`),
  initialised from `seed`, trained for `codec.train_steps` steps on single-stem log-mels of the TRAIN shards.
* `diffusers` / `official`: the pretrained MusicLDM VAE (`codec.path`), fine-tuned on single stems only when
  `codec.train_steps > 0`.
* Training data (trained VAEs): every non-silent stem (json `silent` flag) of the train split, streamed in a seeded
  order (shard order reshuffled each epoch, then a `SHUFFLE_BUFFER`-stem shuffle buffer); batches of
  `codec.batch_size` stems, log-mel cropped to `segment // 160` frames. Loss and optimiser: `mtmusicldm.codec.training`.
* Evaluation on up to `EVAL_PER_STEM` non-silent segments of each stem from the TEST split (validation if test has
  none), in stored order, with the posterior mean (deterministic): mel L1 (before and after training), log-spectral
  distance between the input audio and the vocoded reconstruction, and between the input and the vocoded *input*
  mel (the vocoder's own floor), overall and per stem. Written to `report.json`, with `recon.png` (input vs
  reconstructed mels, one row per stem).

Same shards, params and seed -> the same bytes (on the CPU). Output replaced atomically.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtmusicldm.audio.mel import HOP, LOG_FLOOR, log_mel
from mtmusicldm.codec.build import codec_from_params
from mtmusicldm.codec.codec_dir import Codec, write_codec
from mtmusicldm.codec.training import init_output_bias, log_spectral_distance, mel_l1, train_vae
from mtmusicldm.config import AudioParams, CodecParams, params_to_dict
from mtmusicldm.data.shards import iter_samples, list_shards
from mtmusicldm.utils.fs import atomic_dir
from pipeline._common import parse_and_load, progress, resolve_device, stage_main, stage_parser

EVAL_PER_STEM = 8  # test segments per stem for the report
PCA_BATCH = 64  # stems per log-mel batch when fitting the PCA codec
SHUFFLE_BUFFER = 256  # stem waveforms held for shuffling (~170 MB at 10.24 s)
EVAL_CHUNK = 8
PLOT_ROWS = 4


# ---------------------------------------------------------------------------------------------------------------
# Data


def _silent_flags(meta: dict[str, Any], key: str, n_stems: int) -> list[bool]:
    flags = meta.get("silent")
    if not isinstance(flags, list) or len(flags) != n_stems:
        raise ValueError(f"sample {key}: json 'silent' must be a list of {n_stems} booleans, got {flags!r}")
    return [bool(f) for f in flags]


def stem_stream(shards: Sequence[Path], stems: Sequence[str], *, generator: torch.Generator,
                buffer_size: int = SHUFFLE_BUFFER) -> Iterator[np.ndarray]:
    """Endless seeded stream of non-silent single-stem waveforms [n] from `shards`.

    Each epoch visits the shards in a fresh `generator` order; stems pass through a shuffle buffer.

    Raises:
        ValueError: an epoch yielded no non-silent stem.
    """
    buffer: list[np.ndarray] = []
    while True:
        found = 0
        for i in torch.randperm(len(shards), generator=generator).tolist():
            for sample in iter_samples([shards[i]], stems):
                for s, silent in enumerate(_silent_flags(sample.meta, sample.key, len(stems))):
                    if silent:
                        continue
                    found += 1
                    buffer.append(sample.audio[s])
                    if len(buffer) >= buffer_size:
                        j = int(torch.randint(len(buffer), (1,), generator=generator))
                        buffer[j], buffer[-1] = buffer[-1], buffer[j]
                        yield buffer.pop()
        if found == 0:
            raise ValueError(f"no non-silent stems in the training shards {[str(p) for p in shards[:3]]}")
        buffer_size = min(buffer_size, found)  # a split smaller than the buffer starts yielding in epoch 2


def mel_batches(stream: Iterator[np.ndarray], batch_size: int, frames: int,
                device: str | torch.device = "cpu", *, crop_frames: int = 0,
                generator: torch.Generator | None = None) -> Iterator[Tensor]:
    """Stack `batch_size` waveforms and compute log-mels on `device`: yields [B, 1, frames, 64].

    With `crop_frames` (a multiple of 4, < frames) each item is a random crop of that many frames instead (offsets
    on the VAE's 4-frame grid, drawn from `generator`): the VAE is fully convolutional, so it trains on short crops
    at a fraction of the cost and still encodes whole segments.
    """
    while True:
        wav = torch.from_numpy(np.stack([next(stream) for _ in range(batch_size)])).to(device)
        mel = log_mel(wav, target_frames=frames).unsqueeze(1)
        if 0 < crop_frames < frames:
            starts = torch.randint(0, (frames - crop_frames) // 4 + 1, (batch_size,), generator=generator) * 4
            mel = torch.stack([m[:, int(o):int(o) + crop_frames] for m, o in zip(mel, starts)])
        yield mel


def eval_set(shards_root: Path, stems: Sequence[str], per_stem: int) -> tuple[str, Tensor, list[str]]:
    """Up to `per_stem` non-silent segments of each stem from the test split (else validation), in stored order.

    Returns:
        (split, wav [N, n], labels "<key>/<stem>").

    Raises:
        ValueError: neither split has a non-silent stem.
    """
    for split in ("test", "validation"):
        split_dir = shards_root / split
        if not split_dir.is_dir() or not any(split_dir.glob("*.tar")):
            continue
        waves, labels, taken = [], [], dict.fromkeys(stems, 0)
        for sample in iter_samples(list_shards(split_dir), stems):
            for s, silent in enumerate(_silent_flags(sample.meta, sample.key, len(stems))):
                if not silent and taken[stems[s]] < per_stem:
                    taken[stems[s]] += 1
                    waves.append(sample.audio[s])
                    labels.append(f"{sample.key}/{stems[s]}")
            if all(v >= per_stem for v in taken.values()):
                break
        if waves:
            return split, torch.from_numpy(np.stack(waves)), labels
    raise ValueError(f"no non-silent stem segments in {shards_root}/test or {shards_root}/validation to evaluate on")


def all_stems(shards: Sequence[Path], stems: Sequence[str], frames: int, batch_size: int) -> Iterator[Tensor]:
    """Log-mels [B, 1, frames, 64] of every non-silent stem of `shards`, once, in stored order."""
    buffer: list[np.ndarray] = []
    for sample in iter_samples(list(shards), stems):
        buffer += [sample.audio[s] for s, silent in enumerate(_silent_flags(sample.meta, sample.key, len(stems)))
                   if not silent]
        while len(buffer) >= batch_size:
            yield log_mel(torch.from_numpy(np.stack(buffer[:batch_size])), target_frames=frames).unsqueeze(1)
            del buffer[:batch_size]
    if buffer:
        yield log_mel(torch.from_numpy(np.stack(buffer)), target_frames=frames).unsqueeze(1)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation


def reconstruct(codec: Codec, wav: Tensor, *, vocode: bool) -> dict[str, Tensor]:
    """Mel -> posterior mean -> mel (-> audio) for single stems, in chunks.

    Args:
        wav: [N, n] stem waveforms.
        vocode: also vocode the reconstruction and the input mel.

    Returns:
        `mel` [N, T, 64], `rec` [N, T, 64], and with `vocode`: `audio_rec`, `audio_floor` [N, n].
    """
    out: dict[str, list[Tensor]] = {"mel": [], "rec": [], "audio_rec": [], "audio_floor": []}
    n = wav.shape[-1]
    with torch.inference_mode():
        for chunk in wav.split(EVAL_CHUNK):
            mel = codec.audio_to_mel(chunk[:, None])  # [b, 1, T, 64]
            rec = codec.decode_mel(codec.encode_mel(mel, sample=False))
            out["mel"].append(mel[:, 0].cpu())
            out["rec"].append(rec[:, 0].cpu())
            if vocode:
                out["audio_rec"].append(codec.mel_to_audio(rec, n)[:, 0].cpu())
                out["audio_floor"].append(codec.mel_to_audio(mel, n)[:, 0].cpu())
    return {k: torch.cat(v) for k, v in out.items() if v}


def plot_reconstructions(path: Path, rec: dict[str, Tensor], labels: Sequence[str], l1: Tensor) -> None:
    """Save input vs reconstructed log-mels of one segment per stem name (time in s, frequency in Hz)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtmusicldm.utils.figures import show_log_mel

    picked: list[int] = []
    for i, label in enumerate(labels):  # first occurrence of each stem name, then fill up in order
        if label.rsplit("/", 1)[1] not in {labels[j].rsplit("/", 1)[1] for j in picked}:
            picked.append(i)
    picked += [i for i in range(len(labels)) if i not in picked]
    picked = picked[:PLOT_ROWS]
    fig, axes = plt.subplots(len(picked), 2, figsize=(11, 2.6 * len(picked)), squeeze=False, layout="constrained")
    lo, hi = LOG_FLOOR, float(rec["mel"].max())  # the input's range: silence floor ln(1e-5) .. loudest bin
    for row, i in enumerate(picked):
        for col, (name, title) in enumerate((("mel", "input"), ("rec", "reconstruction"))):
            extra = f" (mel L1 {float(l1[i]):.3f})" if name == "rec" else ""
            im = show_log_mel(axes[row][col], rec[name][i].numpy(), vmin=lo, vmax=hi,
                              title=f"{title}: {labels[i]}{extra}")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="log-mel (ln)")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def per_stem_metrics(labels: Sequence[str], stems: Sequence[str], **values: Tensor) -> dict[str, dict[str, float]]:
    """Mean of each per-item metric over the items of each stem (`labels` end in "/<stem>")."""
    names = [label.rsplit("/", 1)[1] for label in labels]
    out = {}
    for stem in stems:
        idx = [i for i, n in enumerate(names) if n == stem]
        if idx:
            out[stem] = {k: round(float(v[idx].mean()), 4) for k, v in values.items()} | {"segments": len(idx)}
    return out


# ---------------------------------------------------------------------------------------------------------------
# Stage


def _train(codec_obj: Codec, codec: CodecParams, seed: int, train_shards: list[Path], stems: Sequence[str],
           frames: int, device: torch.device) -> list[dict[str, float]]:
    data_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator().manual_seed(seed + 1)
    stream = stem_stream(train_shards, stems, generator=data_gen)
    batches = mel_batches(stream, codec.batch_size, frames, device, crop_frames=codec.train_crop_frames,
                          generator=data_gen)
    if codec.kind == "trained":  # fresh weights: start the decoder at the data's mean log-mel
        first = next(batches)
        init_output_bias(codec_obj.vae, first)
        batches = itertools.chain([first], batches)
    bar = iter(progress(range(codec.train_steps), total=codec.train_steps, desc="train_codec", unit="step"))
    history = train_vae(codec_obj.vae, batches, steps=codec.train_steps, lr=codec.lr, kl_weight=codec.kl_weight,
                        generator=noise_gen, on_step=lambda step, loss: next(bar, None))
    next(bar, None)  # close the bar
    return history


def _fit_pca(codec_obj: Codec, train_shards: list[Path], stems: Sequence[str], frames: int) -> dict[str, Any]:
    """Fit the patch-PCA codec on every non-silent training stem (one pass); returns its variance profile."""
    n_stems = sum(1 for sample in iter_samples(train_shards, stems)
                  for silent in _silent_flags(sample.meta, sample.key, len(stems)) if not silent)
    batches = progress(all_stems(train_shards, stems, frames, PCA_BATCH), total=-(-n_stems // PCA_BATCH),
                       desc="train_codec (fit PCA)", unit="batch")
    vae = codec_obj.vae.fit(batches)
    return {"stems": n_stems, "component_variance": [round(float(v), 5) for v in vae.variances]}


def run(seed: int, stems: tuple[str, ...], audio: AudioParams, codec: CodecParams, shards: Path,
        out: Path, *, device: str = "cpu") -> dict[str, Any]:
    """Build (and train or fine-tune) the codec, evaluate it, and write `out` (the codec directory).

    Args:
        seed: weight initialisation (trained kind), data order and posterior noise.
        stems: the S axis (params.stems).
        audio: segment length (mel frames = segment_samples // 160).
        codec: the codec params section.
        shards: prepare output (`<split>/<split>-NNNNNN.tar`).
        out: codec directory to write (replaced atomically).
        device: torch device for the VAE ("cpu" is bit-reproducible).

    Returns:
        The report written to `out/report.json`, plus wall-clock `seconds` and `train_seconds`.
    """
    t0 = time.perf_counter()
    frames = audio.segment_samples // HOP
    dev = torch.device(device)
    codec_obj = codec_from_params(codec, seed=seed).to(dev)
    split, eval_wav, labels = eval_set(Path(shards), stems, EVAL_PER_STEM)
    if eval_wav.shape[-1] != audio.segment_samples:
        raise ValueError(f"{shards}/{split} segments have {eval_wav.shape[-1]} samples, params audio.segment_samples "
                         f"is {audio.segment_samples}: re-run prepare")
    train_shards = list_shards(Path(shards) / "train")
    initial = None
    if codec.kind != "pca":  # an unfitted PCA codec has no "before"
        before = reconstruct(codec_obj, eval_wav, vocode=False)
        initial = mel_l1(before["mel"], before["rec"])
    history: list[dict[str, float]] = []
    fit: dict[str, Any] | None = None
    t_train = time.perf_counter()
    if codec.kind == "pca":
        fit = _fit_pca(codec_obj, train_shards, stems, frames)
    elif codec.train_steps > 0:
        history = _train(codec_obj, codec, seed, train_shards, stems, frames, dev)
    train_seconds = time.perf_counter() - t_train
    rec = reconstruct(codec_obj, eval_wav, vocode=True)
    l1 = mel_l1(rec["mel"], rec["rec"])
    lsd = log_spectral_distance(eval_wav, rec["audio_rec"])
    floor = log_spectral_distance(eval_wav, rec["audio_floor"])
    report: dict[str, Any] = {
        "kind": codec.kind,
        "vocoder": codec_obj.info["vocoder"],
        "latent_shape": list(codec_obj.latent_shape(audio.segment_samples, len(stems))),
        "vae_parameters": sum(p.numel() for p in codec_obj.vae.parameters()),
        "params": params_to_dict(codec),
        "train": {"steps": 0 if codec.kind == "pca" else codec.train_steps, "history": history, "pca": fit},
        "eval": {"split": split, "segments": len(labels), "items": labels, "posterior": "mean"},
        "mel_l1": float(l1.mean()),
        "mel_l1_initial": None if initial is None else float(initial.mean()),
        "lsd_db": float(lsd.mean()),
        "lsd_vocoder_floor_db": float(floor.mean()),
        "per_stem": per_stem_metrics(labels, stems, mel_l1=l1, lsd_db=lsd, lsd_vocoder_floor_db=floor,
                                     lsd_gap_db=lsd - floor),
        "device": str(dev),
    }  # no timings in the file: same inputs, same bytes
    with atomic_dir(Path(out)) as tmp:
        write_codec(tmp, codec_obj.vae, codec_obj.vocoder, kind=codec.kind, report=report,
                    source=codec_obj.info["source"])
        plot_reconstructions(tmp / "recon.png", rec, labels, l1)
    return report | {"seconds": round(time.perf_counter() - t0, 2), "train_seconds": round(train_seconds, 2)}


@stage_main
def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("train_codec stage: shards -> mel VAE + vocoder (models/codec)")
    parser.add_argument("--shards", type=Path, default=Path("data/shards"), help="prepare stage output")
    parser.add_argument("--out", type=Path, default=Path("models/codec"))
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda[:N]")
    args, p = parse_and_load(parser, argv)
    report = run(p.seed, p.stems, p.audio, p.codec, args.shards, args.out, device=resolve_device(args.device))
    how = (f"fitted on {report['train']['pca']['stems']} stems" if report["kind"] == "pca"
           else f"{report['train']['steps']} steps")
    start = "" if report["mel_l1_initial"] is None else f"{report['mel_l1_initial']:.3f} -> "
    print(f"train_codec: {report['kind']} codec, {how} in {report['train_seconds']} s; mel L1 {start}"
          f"{report['mel_l1']:.3f}, LSD {report['lsd_db']:.2f} dB (vocoder floor {report['lsd_vocoder_floor_db']:.2f}"
          f" dB) on {report['eval']['segments']} {report['eval']['split']} stems -> {args.out}")
    for stem, m in report["per_stem"].items():
        print(f"train_codec:   {stem:7s} mel L1 {m['mel_l1']:.3f}, LSD {m['lsd_db']:.2f} dB "
              f"(+{m['lsd_gap_db']:.2f} dB over the vocoder alone)")


if __name__ == "__main__":
    main()
