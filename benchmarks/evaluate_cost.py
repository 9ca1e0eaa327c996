"""What the evaluate stage costs at the main job's size: N items x (total + 14 arrangements) x (trained, untrained).

Builds a samples/ folder in the sample stage's layout from real test segments of the embedded corpus (the trained
rows are the targets themselves, the untrained rows white noise: the audio content does not change the cost), runs
`pipeline.evaluate.run` with params.yaml's `evaluate` section (overridable) and prints the wall time per phase.

    python benchmarks/evaluate_cost.py [--items 32] [--backbone offline] [--notes single] [--bootstrap 200]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from fad_backbones import corpus, segments  # noqa: E402 (this folder is on sys.path)

STEMS = ("bass", "drums", "guitar", "piano")


def build_samples(segs: list[tuple[int, np.ndarray]], n: int, root: Path, combos: dict[str, list[str]]) -> None:
    from mtmusicldm.audio import save_audio

    rng = np.random.default_rng(0)
    chosen = [segs[i % len(segs)] for i in range(n)]
    items = [f"{i:05d}_Track{t:05d}_c{i:04d}_v00" for i, (t, _) in enumerate(chosen)]
    settings = [("total", list(STEMS))] + [(f"arrange_{c}", g) for c, g in combos.items()]

    def put(rel: str, wav: np.ndarray) -> None:
        save_audio(root / rel, wav, 16000, "PCM_16")

    for item, (_, gt) in zip(items, chosen):
        for s, stem in enumerate(STEMS):
            put(f"target/{stem}/{item}.wav", gt[s])
        put(f"target/mix/{item}.wav", gt.sum(0))
        for c, gen in combos.items():
            put(f"target/sum_{c}/{item}.wav", gt[[STEMS.index(g) for g in gen]].sum(0))
        for prefix in ("", "untrained/"):
            wav = gt if not prefix else (0.1 * rng.normal(size=gt.shape)).astype(np.float32)
            for name, gen in settings:
                out = np.stack([wav[s] if stem in gen else gt[s] for s, stem in enumerate(STEMS)])
                for stem in gen:
                    put(f"{prefix}{name}/{stem}/{item}.wav", wav[STEMS.index(stem)])
                put(f"{prefix}{name}/mix/{item}.wav", np.clip(out.sum(0), -1, 1))
                if name != "total":
                    put(f"{prefix}{name}/sum/{item}.wav", np.clip(wav[[STEMS.index(g) for g in gen]].sum(0), -1, 1))
    index = {"format": "mtmusicldm-samples", "version": 1, "stems": list(STEMS), "sample_rate": 16000,
             "segment_samples": int(chosen[0][1].shape[1]), "seed": 0,
             "sample": {"subtype": "PCM_16", "sampler": "dpmpp_2m", "steps": 8, "eta": None, "count": n,
                        "guidance_scale": 1.0, "arrangement_guidance_scale": 1.0, "arrangement_conditioning": "none"},
             "model": {"dir": "-", "source": "benchmark", "trained_steps": 0, "conditional": False},
             "items": [{"item": it, "key": it[6:], "track": it[6:15], "silent": [False] * 4} for it in items],
             "settings": [{"name": s, "kind": "total" if s == "total" else "arrangement", "generated": g,
                           "prompt": None} for s, g in settings],
             "untrained": {"dir": "untrained"}, "samples": []}
    (root / "index.json").write_text(json.dumps(index))


def timed(module: Any, name: str, times: dict[str, float]) -> None:
    fn: Callable[..., Any] = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            times[name] = times.get(name, 0.0) + time.perf_counter() - t0

    setattr(module, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--raw", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=2.56)
    ap.add_argument("--backbone", default=None)
    ap.add_argument("--notes", default=None, choices=["off", "single", "all"])
    ap.add_argument("--bootstrap", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from mtmusicldm.diffusion.inpainting import arrangement_combinations, combination_name
    from pipeline import eval_coherence, evaluate
    from pipeline._common import load_params

    p = load_params("params.yaml")
    overrides = {k: v for k, v in (("backbone", args.backbone), ("notes", args.notes),
                                   ("bootstrap", args.bootstrap)) if v is not None}
    params = p.evaluate.replace(**overrides)
    combos = {combination_name(c): list(c) for c in arrangement_combinations(STEMS)}
    times: dict[str, float] = {}
    for module, name in ((evaluate, "fad_tables"), (eval_coherence, "signal_coherence"),
                         (eval_coherence, "transcribe_all"), (eval_coherence, "note_coherence"),
                         (evaluate, "transcriber_f1"), (evaluate, "write_report"), (evaluate, "write_shuffled"),
                         (evaluate, "write_heldout")):
        timed(module, name, times)
    with tempfile.TemporaryDirectory() as tmp:
        kind, root = corpus(args.raw, 8, Path(tmp))
        segs = segments(kind, root, args.seconds)
        build_samples(segs, args.items, Path(tmp) / "samples", combos)
        files = sum(1 for _ in (Path(tmp) / "samples").rglob("*.wav"))
        t0 = time.perf_counter()
        evaluate.run(STEMS, params, Path(tmp) / "samples", Path(tmp) / "noshards", Path(tmp) / "raw",
                     Path(tmp) / "metrics", Path(tmp) / "reports", Path(tmp) / "cache")
        total = time.perf_counter() - t0
    print(f"evaluate: {args.items} items x 15 settings x 2 models ({files} wav files), backbone {params.backbone}, "
          f"notes {params.notes}, {params.bootstrap} resamples: {total:.1f} s")
    for name, secs in times.items():
        print(f"  {name:18s} {secs:7.1f} s")


if __name__ == "__main__":
    main()
