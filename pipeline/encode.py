"""`encode` stage: audio shards -> per-stem VAE latents (+ CLAP mixture embeddings) in `data/latents/`.

For every split and every input shard, in order, one latent shard of the same name holding the same sample keys
(docs/formats.md): per stem the log-mel (`segment // 160` frames), the VAE posterior (mean, std) and the stored latent
(`encode.posterior`: one posterior draw with a per-sample generator seeded from (seed, key), or the mean), float16,
unscaled; with conditioning on, the CLAP audio embedding of the mixture (sum of stems; a 10 s crop whose offset comes
from a per-sample generator, irrelevant for segments of up to 10 s). `latents.json` records the latent shape, the
scale factor `1 / std` of the stored latents of the first `encode.scale_segments` training samples (torch unbiased
std over all values, official `scale_by_std`), the CLAP embedding of "" (the CFG token) and the codec fingerprint.

Resumable: shards are written atomically into a work directory next to `out`, named after a hash of the inputs and
params (`.<out>.encode-partial-<hash>`, outside `out` because DVC deletes outputs before a run). A restarted run skips
the shards already there and finally renames the work directory to `out`. Batches never cross shards and all noise
is per sample, so a resumed run writes the same bytes as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tarfile
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtmusicldm.codec.codec_dir import Codec, codec_sha256, load_codec, sample_posterior
from mtmusicldm.codec.latents import scale_factor_from_latents
from mtmusicldm.codec.vae import WEIGHTS_HINT
from mtmusicldm.config import SPLITS, AudioParams, CodecParams, ConditioningParams, EncodeParams, params_to_dict
from mtmusicldm.data.latents import (
    LatentsIndex,
    encode_latent_sample,
    index_to_json,
    iter_latent_samples,
    write_latents_index,
)
from mtmusicldm.data.shards import DecodedSample, ShardWriter, iter_samples
from mtmusicldm.utils.rng import hash_seed_joined
from pipeline._common import parse_and_load, progress, resolve_device, stage_main, stage_parser

PARTIAL_INFIX = ".encode-partial-"


# ---------------------------------------------------------------------------------------------------------------
# Seeds, CLAP


def sample_generators(seed: int, keys: Sequence[str], purpose: str) -> list[torch.Generator]:
    """One CPU generator per sample key for one purpose ("posterior" or "clap"), independent of batching."""
    return [torch.Generator().manual_seed(hash_seed_joined(seed, key, purpose)) for key in keys]


def build_conditioner(conditioning: ConditioningParams, device: str | torch.device = "cpu") -> Any | None:
    """The frozen CLAP for `conditioning.clap` ("random": untrained weights seeded by `conditioning.seed`;
    "pretrained": `conditioning.checkpoint`), or None for "none".

    `conditioning.text_model` is used as a local roberta-base directory when it is one; otherwise the text tower is
    built from its config (the "" token needs no tokenizer, and a checkpoint overwrites the tower's weights).

    Raises:
        FileNotFoundError: the pretrained checkpoint is missing (the message says where to get it).
    """
    if conditioning.clap == "none":
        return None
    from mtmusicldm.conditioning import ClapConditioner

    text_dir = None
    if conditioning.text_model is not None and Path(conditioning.text_model).expanduser().is_dir():
        text_dir = Path(conditioning.text_model).expanduser()
    if conditioning.clap == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(conditioning.seed)
            return ClapConditioner.build(conditioning.amodel, text_model_dir=text_dir, device=device)
    assert conditioning.checkpoint is not None  # ConditioningParams._rules
    path = Path(conditioning.checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"conditioning.checkpoint: CLAP checkpoint {str(path)!r} not found. {WEIGHTS_HINT}")
    try:
        return ClapConditioner.from_checkpoint(path, amodel=conditioning.amodel, text_model_dir=text_dir,
                                               device=device)
    except pickle.UnpicklingError as err:
        warnings.warn(f"{path}: not loadable with weights_only=True ({str(err).splitlines()[0]}); retrying with "
                      "weights_only=False (only for trusted files such as MusicLDM's clap-ckpt.pt)", stacklevel=2)
        return ClapConditioner.from_checkpoint(path, amodel=conditioning.amodel, text_model_dir=text_dir,
                                               device=device, weights_only=False)


# ---------------------------------------------------------------------------------------------------------------
# Work directory (resume)


def input_shards(shards: Path) -> dict[str, list[Path]]:
    """Shard files per split in order (an absent or empty split has none)."""
    return {split: sorted((Path(shards) / split).glob("*.tar")) for split in SPLITS}


def work_key(params: dict[str, Any], fingerprint: str, inputs: dict[str, list[Path]], shards: Path) -> str:
    """Hash of everything a latent shard depends on: params, codec fingerprint, input shard names and sizes (and
    the prepare report, which changes whenever the shards are rewritten)."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    h.update(fingerprint.encode())
    report = Path(shards) / "report.json"
    if report.is_file():
        h.update(report.read_bytes())
    for split, paths in inputs.items():
        for p in paths:
            h.update(f"{split}/{p.name}:{p.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def prepare_work_dir(out: Path, key: str) -> Path:
    """`<out.parent>/.<out.name>.encode-partial-<key>`; partial dirs of other inputs/params are removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}{PARTIAL_INFIX}{key}"
    for stale in out.parent.glob(f".{out.name}{PARTIAL_INFIX}*"):
        if stale != work:
            shutil.rmtree(stale, ignore_errors=True)
    shutil.rmtree(work / ".scratch", ignore_errors=True)
    for split in SPLITS:
        (work / split).mkdir(parents=True, exist_ok=True)
    return work


def replace_dir(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`, replacing an existing `dst` (same file system)."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def shard_keys(path: Path) -> list[str]:
    """Sample keys of a latent shard, in order (from the tar member names)."""
    with tarfile.open(path) as tar:
        keys = [m.name.split(".", 1)[0] for m in tar.getmembers()]
    return list(dict.fromkeys(keys))


# ---------------------------------------------------------------------------------------------------------------
# Encoding


def _batches(samples: Iterator[DecodedSample], size: int) -> Iterator[list[DecodedSample]]:
    batch: list[DecodedSample] = []
    for s in samples:
        batch.append(s)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _check_audio(sample: DecodedSample, shard: Path, shape: tuple[int, int]) -> None:
    if tuple(sample.audio.shape) != shape:
        raise ValueError(f"{shard}: sample {sample.key}: audio shape {list(sample.audio.shape)}, expected "
                         f"{list(shape)} (params stems x audio.segment_samples): re-run prepare")
    if not np.all(np.isfinite(sample.audio)):
        raise ValueError(f"{shard}: sample {sample.key}: audio contains NaN or inf")


def encode_batch(codec: Codec, clap: Any | None, batch: list[DecodedSample], *, seed: int, posterior: str,
                 shard: Path, latent_shape: tuple[int, ...]) -> list[dict[str, bytes | str]]:
    """Encode a batch of audio samples into latent shard samples.

    Args:
        codec: the codec (VAE on its device).
        clap: a `ClapConditioner`, or None (no conditioning).
        batch: decoded audio samples, each [S, n].
        seed: the stage seed (per-sample generators from (seed, key)).
        posterior: "sample" or "mean" (`encode.posterior`).
        shard: the input shard (for error messages).
        latent_shape: the expected [S, C, T', F'].

    Returns:
        WebDataset samples (`mtmusicldm.data.latents.encode_latent_sample`), in batch order.

    Raises:
        ValueError: NaN/inf in a posterior or latent (after the float16 cast), naming the sample key.
    """
    keys = [s.key for s in batch]
    wav = torch.from_numpy(np.stack([s.audio for s in batch]))  # [B, S, n]
    with torch.inference_mode():
        mean, std = codec.posterior(codec.audio_to_mel(wav))  # [B, S, C, T', F']
        z = sample_posterior(mean, std, sample_generators(seed, keys, "posterior")) if posterior == "sample" else mean
        emb = None
        if clap is not None:  # mixture = sum of stems, [B, n]; per-sample crop generators
            emb = clap.embed_audio(wav.sum(1), generator=sample_generators(seed, keys, "clap"), crop="random")
    arrays = {name: t.cpu().numpy().astype(np.float16) for name, t in (("mean", mean), ("std", std), ("latents", z))}
    if tuple(arrays["latents"].shape[1:]) != tuple(latent_shape):
        raise ValueError(f"{shard}: latents of shape {list(arrays['latents'].shape[1:])}, expected "
                         f"{list(latent_shape)}")
    out = []
    for b, sample in enumerate(batch):
        for name, x in arrays.items():
            if not np.all(np.isfinite(x[b])):
                raise ValueError(f"{shard}: sample {sample.key}: {name} contains NaN or inf after the float16 cast")
        clap_b = None if emb is None else emb[b].cpu().numpy().astype(np.float32)
        out.append(encode_latent_sample(sample.key, arrays["mean"][b], arrays["std"][b], arrays["latents"][b],
                                        clap_b, sample.meta))
    return out


def encode_shard(codec: Codec, clap: Any | None, shard: Path, dest: Path, *, stems: Sequence[str],
                 audio: AudioParams, encode: EncodeParams, seed: int) -> int:
    """Encode one input shard into `dest` (written to a scratch file, then renamed). Returns the sample count."""
    scratch = dest.parent.parent / ".scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    count = 0
    with ShardWriter(scratch, dest.parent.name, samples_per_shard=2**62) as writer:
        for batch in _batches(iter_samples([shard], stems), encode.batch_size):
            for sample in batch:
                _check_audio(sample, shard, (len(stems), audio.segment_samples))
            for latent in encode_batch(codec, clap, batch, seed=seed, posterior=encode.posterior, shard=shard,
                                       latent_shape=codec.latent_shape(audio.segment_samples, len(stems))):
                writer.write(latent)
                count += 1
    if count == 0:
        raise ValueError(f"{shard}: no samples")
    os.replace(scratch / writer.shards[0], dest)
    shutil.rmtree(scratch, ignore_errors=True)
    return count


def scale_from_work(work: Path, scale_segments: int) -> tuple[float, int]:
    """Scale factor from the stored (float16) latents of the first `scale_segments` training samples."""
    values = []
    for sample in iter_latent_samples(sorted((work / "train").glob("*.tar"))):
        values.append(sample.latents.astype(np.float64))
        if len(values) == scale_segments:
            break
    if not values:
        raise ValueError("no training samples: cannot estimate the latent scale factor (train split is empty)")
    return scale_factor_from_latents(torch.from_numpy(np.stack(values))), len(values)


# ---------------------------------------------------------------------------------------------------------------
# Stage


def run(seed: int, stems: tuple[str, ...], audio: AudioParams, codec: CodecParams, conditioning: ConditioningParams,
        encode: EncodeParams, shards: Path, codec_dir: Path, out: Path, *, device: str = "cpu") -> dict[str, Any]:
    """Encode `shards` with the codec in `codec_dir` (and CLAP) into `out` (see the module docstring).

    Returns:
        The `latents.json` content plus `encoded_shards`, `resumed_shards` and `seconds`.

    Raises:
        ValueError: non-finite audio or latents (naming the sample key), a codec that does not match the params.
    """
    t0 = time.perf_counter()
    shards, out = Path(shards), Path(out)
    codec_obj = load_codec(Path(codec_dir), device=device)
    if codec_obj.latent_channels != codec.latent_channels:
        raise ValueError(f"{codec_dir}: codec has {codec_obj.latent_channels} latent channels, params "
                         f"codec.latent_channels is {codec.latent_channels}: re-run train_codec")
    fingerprint = codec_sha256(Path(codec_dir))
    inputs = input_shards(shards)
    if not inputs["train"]:
        raise FileNotFoundError(f"no training shards in {shards}/train: run the prepare stage first")
    params = params_to_dict({"seed": seed, "stems": stems, "audio": audio, "codec": codec,
                             "conditioning": conditioning, "encode": encode})
    work = prepare_work_dir(out, work_key(params, fingerprint, inputs, shards))
    clap = build_conditioner(conditioning, device)
    encoded = resumed = 0
    splits: dict[str, dict[str, Any]] = {}
    for split, paths in inputs.items():
        n_samples = 0
        for shard in progress(paths, total=len(paths), desc=f"encode {split}", unit="shard"):
            dest = work / split / shard.name
            if dest.is_file():
                n_samples += len(shard_keys(dest))
                resumed += 1
                continue
            n_samples += encode_shard(codec_obj, clap, shard, dest, stems=stems, audio=audio, encode=encode,
                                      seed=seed)
            encoded += 1
        splits[split] = {"samples": n_samples, "shards": [p.name for p in paths]}
    scale, used = scale_from_work(work, encode.scale_segments)
    uncond = None if clap is None else [float(v) for v in clap.uncond_embedding(1)[0].cpu()]
    clap_info = None if clap is None else {
        "kind": conditioning.clap, "amodel": conditioning.amodel, "checkpoint": conditioning.checkpoint,
        "text_model": conditioning.text_model, "seed": conditioning.seed, "crop": "random",
    }  # fmt: skip
    index = LatentsIndex(
        root=work, stems=tuple(stems), latent_shape=codec_obj.latent_shape(audio.segment_samples, len(stems)),
        scale_factor=scale, scale_segments=used, posterior=encode.posterior, clap=clap_info,
        uncond_clap=None if uncond is None else tuple(uncond), codec_sha256=fingerprint, splits=splits,
        codec_dir=str(codec_dir), geometry=codec_obj.geometry,
    )  # fmt: skip
    write_latents_index(index)
    replace_dir(work, out)
    meta = index_to_json(index)
    return meta | {"encoded_shards": encoded, "resumed_shards": resumed,
                   "seconds": round(time.perf_counter() - t0, 2)}


@stage_main
def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("encode stage: audio shards -> VAE latents + CLAP embeddings (data/latents)")
    parser.add_argument("--shards", type=Path, default=Path("data/shards"), help="prepare stage output")
    parser.add_argument("--codec", type=Path, default=Path("models/codec"), help="train_codec stage output")
    parser.add_argument("--out", type=Path, default=Path("data/latents"))
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda[:N]")
    args, p = parse_and_load(parser, argv)
    meta = run(p.seed, p.stems, p.audio, p.codec, p.conditioning, p.encode, args.shards, args.codec, args.out,
               device=resolve_device(args.device))
    counts = ", ".join(f"{s} {v['samples']}" for s, v in meta["splits"].items())
    print(f"encode: {counts} samples, latent {meta['latent_shape']}, scale_factor {meta['scale_factor']:.4f} "
          f"({meta['encoded_shards']} shards encoded, {meta['resumed_shards']} resumed, {meta['seconds']} s) "
          f"-> {args.out}")


if __name__ == "__main__":
    main()
