"""`sample` stage: trained model + test shards -> generated audio and ground-truth targets for the evaluate stage.

Settings (each on the same ``count`` test segments, one sample per segment, picked by a seeded permutation of the
test keys, official spec 8/9):

* ``total`` (Table 1): all four stems. Unconditional model: unconditional. Conditional model: conditioned on the
  CLAP embedding of the test segment's mixture with CFG ``guidance_scale`` (paper: 2.0).
* ``text_<prompt>`` (Table 2, conditional models only): conditioned on each prompt of ``prompts``.
* ``arrange_<letters>`` (Table 3): the 14 combinations (B, D, G, P, BD, ..., DGP = the stems GENERATED; the others
  are the ground truth), waveform-domain replacement of the given stems, CFG ``arrangement_guidance_scale``
  (official 1.0). A conditional model is conditioned on the full target mixture (``target_mix``, official) or on
  the mixture of the given stems only (``given_mix``, no leak of the stems being generated).

Output (``out/``, written atomically; file names ``<item>.wav`` with ``item = <index:05d>_<segment key>``)::

    target/{bass,drums,guitar,piano,mix}/     ground truth: stems, mix = sum of the 4 stems
    target/sum_<letters>/                     sum of the ground-truth stems of each arrangement combination
    total/, text_<slug>/ {bass,drums,guitar,piano,mix}/
    arrange_<letters>/ {<generated stems>,mix,sum}/   mix = generated + given stems; sum = generated stems only
    untrained/<setting>/...                   (``untrained_reference``) the same settings from the untrained model
    examples/                                 (``sample.examples``) listenable long-form examples: pipeline/sample_examples.py
    index.json                                one record per (model, setting, item): seeds, knobs, files, targets

FAD protocols (paper_results.json): total ``<setting>/mix`` (and ``/<stem>``) vs ``target/mix`` (``/<stem>``);
arrangement "mixture" ``arrange_X/mix`` vs ``target/mix``, "stems" ``arrange_X/sum`` vs ``target/sum_X``.
Item ``i`` of setting ``s`` uses the item seed ``sequence_seed(seed, crc32(s), i)``, so results do not depend on the
batch size, and settings can be added without changing the others.

Untrained reference (``sample.untrained_reference``, the "ceiling" row of the evaluation tables): every setting is
sampled again, with the same item seeds, codec, scale factor, conditioning and sampler, by a UNet of the same config
freshly initialised from ``sequence_seed(seed, crc32("untrained"))``. Its records carry ``model: "untrained"`` (the
others ``model: "trained"``) and its files live under ``untrained/<setting>/``; given stems of arrangements point at
the same ``target/`` files. The official initialisation zero-initialises the output convolutions, so the untrained
UNet outputs 0 at every step (eps = 0 for an eps-prediction model: the sampled latent is then the sampler's own
noise, rescaled; v = 0 for a v-prediction model: x0 is estimated as the shrunk noisy input); arrangements still
receive the re-noised given stems; the result is decoded by the real codec. That is the honest "no training at all"
reference (a random-weights network would be an arbitrary one). `UntrainedUNet` returns those zeros without running
the network (the same values, none of the cost).
"""
from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mtmusicldm.audio import save_audio
from mtmusicldm.config import AudioParams, SampleParams, params_to_dict
from mtmusicldm.data.shards import decode_sample, list_shards
from mtmusicldm.diffusion.inpainting import arrangement_combinations, combination_name
from mtmusicldm.diffusion.samplers import DEFAULT_ETA
from mtmusicldm.generation import arrange, embed_mixture, generate, mix_stems, postprocess, segment_samples
from mtmusicldm.ldm import MTMusicLDM, load_model
from mtmusicldm.models.unet3d import UNet3D
from mtmusicldm.utils.fs import atomic_dir, write_json
from mtmusicldm.utils.rng import name_key, sequence_seed
from pipeline._common import progress, stage_main
from pipeline.sample_examples import excerpts, write_examples

INDEX_FORMAT = "mtmusicldm-samples"
INDEX_VERSION = 1
UNTRAINED_DIR = "untrained"


@dataclass(frozen=True)
class Setting:
    name: str
    kind: Literal["total", "arrangement"]
    generated: tuple[str, ...]
    guidance_scale: float
    conditioning: str  # none | uncond | audio_mix | text | target_mix | given_mix
    prompt: str | None = None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "empty"


def settings_for(sample: SampleParams, stems: Sequence[str], conditional: bool) -> list[Setting]:
    """The generation settings of a run, in a fixed order."""
    out = []
    if sample.total:
        out.append(Setting("total", "total", tuple(stems), sample.guidance_scale if conditional else 1.0,
                           "audio_mix" if conditional else "none"))
    if conditional:
        out += [Setting(f"text_{slug(p)}", "total", tuple(stems), sample.guidance_scale, "text", p)
                for p in sample.prompts]
    if sample.arrangement:
        out += [Setting(f"arrange_{combination_name(c, stems)}", "arrangement", c,
                        sample.arrangement_guidance_scale if conditional else 1.0,
                        sample.arrangement_conditioning if conditional else "none")
                for c in arrangement_combinations(stems)]
    return out


def list_keys(shard_paths: Sequence[Path]) -> list[str]:
    """Sample keys in shard order, from the tar member names only (no audio is decoded)."""
    keys: list[str] = []
    for path in shard_paths:
        with tarfile.open(path) as tar:
            for name in tar.getnames():
                if name.endswith(".json"):
                    keys.append(name[: -len(".json")])
    return keys


def list_silent(shard_paths: Sequence[Path]) -> dict[str, list[bool]]:
    """Sample key -> per-stem silent flags, in shard order, from the json members only (no audio decoded)."""
    flags: dict[str, list[bool]] = {}
    for path in shard_paths:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
                    flags[member.name[: -len(".json")]] = [bool(f) for f in meta["silent"]]
    return flags


def load_segments(shard_paths: Sequence[Path], keys: set[str], stems: Sequence[str]) -> dict[str, Any]:
    """Decode only the samples in ``keys``: ``{key: DecodedSample}``."""
    import webdataset as wds

    found = {}
    for raw in wds.WebDataset([str(p) for p in shard_paths], shardshuffle=False, empty_check=False):
        if raw["__key__"] in keys:
            found[raw["__key__"]] = decode_sample(raw, stems)
    return found


def _write(path: Path, wav: torch.Tensor, sr: int, subtype: str) -> str:
    save_audio(path, wav.numpy(), sr, subtype=subtype)
    return str(path)


def _generate_batch(model: Any, setting: Setting, seeds: list[int], audio: torch.Tensor,
                    sample: SampleParams) -> torch.Tensor:
    """Generated stems ``[B, S, n]`` of one batch of a setting (``audio``: the ground-truth stems)."""
    knobs = dict(sampler=sample.sampler, steps=sample.steps, eta=sample.eta, noise_mode=sample.noise_mode,
                 guidance_scale=setting.guidance_scale, batch_size=len(seeds))
    film = None
    if setting.conditioning in ("audio_mix", "target_mix"):
        film = embed_mixture(model, audio.sum(dim=1), seeds)
    elif setting.conditioning == "text":
        film = model.clap.embed_text([setting.prompt])[0]
    if setting.kind == "total":
        return generate(model, len(seeds), seed=seeds, film=film, **knobs)
    mask = torch.tensor([s not in setting.generated for s in model.stems])
    return arrange(model, audio, mask=mask, seed=seeds, film=film,
                   condition_on_given=setting.conditioning == "given_mix", **knobs)


def untrained_model(model: MTMusicLDM, init_seed: int) -> MTMusicLDM:
    """The untrained counterpart of ``model``: the same UNet config freshly initialised, sharing codec and CLAP.

    Args:
        model: a loaded ``MTMusicLDM``.
        init_seed: torch seed of the initialisation (the global RNG state is restored afterwards).

    Returns:
        An ``MTMusicLDM`` with the same config (schedule, scale factor, latent shape, conditioning) and device.
    """
    with torch.inference_mode(False), torch.random.fork_rng(devices=[]):  # normal tensors even inside inference
        torch.manual_seed(init_seed)
        unet = UntrainedUNet(model.unet.config).eval()
    return model.with_unet(unet)


class UntrainedUNet(UNet3D):
    """A freshly initialised `UNet3D` that skips the computation whose result is known: the official init zeroes
    `conv_out`, so the network's output is exactly zero whatever the input. With a nonzero `conv_out` (e.g. weights
    loaded into it) it runs the network as usual."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, film: torch.Tensor | None = None) -> torch.Tensor:
        if self.conv_out.weight.any() or self.conv_out.bias.any():
            return super().forward(x, t, film)
        self._check_inputs(x, t, film)
        return x.new_zeros((x.shape[0], self.config.out_stems, *x.shape[2:]))


def run(seed: int, stems: Sequence[str], audio: AudioParams, sample: SampleParams, model_dir: Path, shards: Path,
        out: Path) -> dict[str, Any]:
    """Generate every setting on the test split and write ``out/`` (see the module docstring).

    Returns:
        The index.json content.
    """
    model = load_model(model_dir)
    if tuple(model.stems) != tuple(stems):
        raise ValueError(f"{model_dir}: model stems {list(model.stems)} differ from params stems {list(stems)}")
    seg, sr = segment_samples(model), int(model.config["sample_rate"])
    if (seg, sr) != (audio.segment_samples, audio.sample_rate):
        raise ValueError(f"{model_dir}: model segments are {seg} samples at {sr} Hz, params.audio says "
                         f"{audio.segment_samples} at {audio.sample_rate}")
    shard_paths = list_shards(Path(shards) / "test")
    keys = list_keys(shard_paths)
    order = np.random.default_rng(seed).permutation(len(keys))[: sample.count]
    chosen = [keys[i] for i in order]
    segments = load_segments(shard_paths, set(chosen), stems)
    items = [f"{i:05d}_{k}" for i, k in enumerate(chosen)]
    gt = torch.stack([torch.from_numpy(segments[k].audio[:, :seg]) for k in chosen])  # [N, S, seg]
    settings = settings_for(sample, stems, model.film_dim is not None)
    eta = sample.eta if sample.eta is not None else DEFAULT_ETA.get(sample.sampler)
    records: list[dict[str, Any]] = []
    init_seed = sequence_seed(seed, name_key(UNTRAINED_DIR))
    runs = [("trained", "")] + ([("untrained", f"{UNTRAINED_DIR}/")] if sample.untrained_reference else [])
    with atomic_dir(Path(out)) as tmp, torch.inference_mode():
        _write_targets(tmp, gt, items, stems, settings, sr, sample.subtype)
        for label, prefix in runs:
            net = model if label == "trained" else untrained_model(model, init_seed)
            for st in progress(settings, desc=f"sample settings ({label})", unit="setting"):
                seeds = [sequence_seed(seed, name_key(st.name), i) for i in range(len(items))]
                for a in range(0, len(items), sample.batch_size):
                    rows = slice(a, a + sample.batch_size)
                    wav = _generate_batch(net, st, seeds[rows], gt[rows], sample)
                    for b, i in enumerate(range(a, min(a + sample.batch_size, len(items)))):
                        files = _write_item(tmp, st, items[i], wav[b], stems, sr, sample.subtype, prefix)
                        records.append({
                            "model": label, "setting": st.name, "kind": st.kind, "item": items[i], "key": chosen[i],
                            "seed": seeds[i],
                            "sampler": sample.sampler, "steps": sample.steps, "eta": eta,
                            "noise_mode": sample.noise_mode, "guidance_scale": st.guidance_scale,
                            "conditioning": st.conditioning, "prompt": st.prompt, "generated": list(st.generated),
                            "given": [s for s in stems if s not in st.generated], "files": files,
                            "targets": _item_targets(st, items[i], stems),
                        })
        index = {
            "format": INDEX_FORMAT, "version": INDEX_VERSION, "stems": list(stems), "sample_rate": sr,
            "segment_samples": seg, "seed": seed, "sample": params_to_dict(sample),
            "model": {"dir": str(model_dir), "source": model.config["source"],
                      "trained_steps": model.config["trained_steps"], "conditional": model.film_dim is not None},
            "items": [{"item": it, "key": k, "track": segments[k].meta["track"],
                       "silent": segments[k].meta["silent"]} for it, k in zip(items, chosen)],
            "settings": [asdict(st) | {"generated": list(st.generated)} for st in settings],
            "untrained": ({"dir": UNTRAINED_DIR, "init_seed": init_seed, "unet": "same config, fresh official init "
                           "(zero output convs: eps = 0)"} if sample.untrained_reference else None),
            "samples": records,
        }
        if sample.examples:
            index["examples"] = _examples(tmp / "examples", model, sample, seed, stems, shard_paths, seg, sr)
        write_json(tmp / "index.json", index)
    return index


def _examples(out: Path, model: MTMusicLDM, sample: SampleParams, seed: int, stems: Sequence[str],
              shard_paths: Sequence[Path], seg: int, sr: int) -> list[dict[str, Any]]:
    """The listenable long-form examples (`pipeline/sample_examples.py`) from consecutive test segments."""
    n = int(round(sample.examples_seconds * sr))
    silent = list_silent(shard_paths)
    runs = excerpts(list(silent), silent, stems, -(-n // seg), sample.examples)
    segments = load_segments(shard_paths, {k for run in runs for k in run}, stems)
    audio = [torch.cat([torch.from_numpy(segments[k].audio[:, :seg]) for k in run], dim=1) for run in runs]
    return write_examples(out, model, sample, seed, stems, audio, sr)


def _write_targets(root: Path, gt: torch.Tensor, items: list[str], stems: Sequence[str], settings: list[Setting],
                   sr: int, subtype: str) -> None:
    """Ground truth: per-stem files, the (unclipped before writing) mix, and the subset sums of arrangements."""
    subsets = sorted({st.generated for st in settings if st.kind == "arrangement"}, key=lambda c: (len(c), c))
    for i, item in enumerate(items):
        for s, name in enumerate(stems):
            _write(root / "target" / name / f"{item}.wav", gt[i, s], sr, subtype)
        _write(root / "target" / "mix" / f"{item}.wav", gt[i].sum(dim=0), sr, subtype)
        for combo in subsets:
            idx = [stems.index(c) for c in combo]
            combo_name = combination_name(combo, stems)
            _write(root / "target" / f"sum_{combo_name}" / f"{item}.wav", gt[i, idx].sum(dim=0), sr, subtype)


def _write_item(root: Path, st: Setting, item: str, wav: torch.Tensor, stems: Sequence[str], sr: int,
                subtype: str, prefix: str = "") -> dict[str, str]:
    """Write one generated item under ``prefix<setting>/``; given stems of an arrangement point at the identical
    target files."""
    files = {}
    for s, name in enumerate(stems):
        if name in st.generated:
            files[name] = f"{prefix}{st.name}/{name}/{item}.wav"
            _write(root / files[name], wav[s], sr, subtype)
        else:
            files[name] = f"target/{name}/{item}.wav"
    files["mix"] = f"{prefix}{st.name}/mix/{item}.wav"
    _write(root / files["mix"], mix_stems(wav), sr, subtype)
    if st.kind == "arrangement":
        files["sum"] = f"{prefix}{st.name}/sum/{item}.wav"
        idx = [list(stems).index(c) for c in st.generated]
        _write(root / files["sum"], postprocess(wav[idx].sum(dim=0)), sr, subtype)
    return files


def _item_targets(st: Setting, item: str, stems: Sequence[str]) -> dict[str, str]:
    t = {"mix": f"target/mix/{item}.wav"} | {s: f"target/{s}/{item}.wav" for s in stems}
    if st.kind == "arrangement":
        t["sum"] = f"target/sum_{combination_name(st.generated, stems)}/{item}.wav"
    return t


@stage_main
def main(argv: Sequence[str] | None = None) -> None:
    from pipeline._common import load_params, stage_parser

    parser = stage_parser("sample stage: model + test shards -> generated audio + targets (samples/)")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--shards", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    p = load_params(args.params)
    index = run(p.seed, p.stems, p.audio, p.sample, args.model, args.shards, args.out)
    print(json.dumps({"samples": len(index["samples"]), "settings": len(index["settings"]), "out": str(args.out)}))


if __name__ == "__main__":
    main()
