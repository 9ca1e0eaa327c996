"""Benchmark the prepare stage: 44.1 kHz FLAC stems -> 16 kHz WebDataset shards.

Prints throughput as seconds of 4-stem audio per wall-clock second, and the peak resident memory of the main
process and of the worker processes for two corpus sizes (it must not grow with the corpus: tracks are streamed).

    python benchmarks/prepare_throughput.py [--tracks 8 16] [--seconds 30] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MTMUSICLDM_NO_PROGRESS", "1")


def generate(raw: Path, n_tracks: int, seconds: float) -> None:
    from pipeline import download
    from pipeline._common import PROFILES_DIR, load_params

    p = load_params(PROFILES_DIR / "embedded.yaml")
    syn = p.synthetic.replace(tracks={"train": n_tracks, "validation": 1, "test": 1},
                              min_seconds=seconds, max_seconds=seconds)
    download.run(p.data, syn, raw)


def one_run(n_tracks: int, seconds: float, workers: int) -> dict:
    from pipeline import download, prepare
    from pipeline._common import PROFILES_DIR, load_params

    p = load_params(PROFILES_DIR / "embedded.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw", Path(tmp) / "shards"
        # the corpus is generated in another process so that peak memory below is prepare's alone
        subprocess.run([sys.executable, __file__, "--generate", str(raw), "--tracks", str(n_tracks), "--seconds",
                        str(seconds)], check=True)
        source, root = download.resolve_root(raw)
        t0 = time.perf_counter()
        report = prepare.run(p.seed, p.stems, p.audio, p.data, p.prepare.replace(workers=workers, train_views=1),
                             raw, out, source=source, root=root)
        wall = time.perf_counter() - t0
    audio_s = sum(s["hours_source"] for s in report["splits"].values()) * 3600
    return {
        "tracks": n_tracks + 2,
        "audio_seconds": audio_s,
        "wall_seconds": wall,
        "x_realtime": audio_s / wall,
        "peak_rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,  # largest child
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, nargs="+", default=[6, 18])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate is not None:
        generate(args.generate, args.tracks[0], args.seconds)
        return
    if args.child:
        print(json.dumps(one_run(args.tracks[0], args.seconds, args.workers)))
        return
    print(f"prepare benchmark: {args.seconds:.0f} s tracks, 5-7 stems at 44.1 kHz FLAC -> 16 kHz PCM_24 FLAC shards, "
          f"{args.workers} workers, {os.cpu_count()} CPUs")
    print(f"{'tracks':>6} {'audio s':>8} {'wall s':>7} {'x real time':>11} {'peak RSS main':>14} {'peak RSS worker':>16}")
    for n in args.tracks:  # each size in a fresh process so peak RSS is per size
        out = subprocess.run([sys.executable, __file__, "--child", "--tracks", str(n), "--seconds",
                              str(args.seconds), "--workers", str(args.workers)],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{r['tracks']:>6} {r['audio_seconds']:>8.0f} {r['wall_seconds']:>7.1f} {r['x_realtime']:>10.0f}x "
              f"{r['peak_rss_main_mb']:>11.0f} MB {r['peak_rss_worker_mb']:>13.0f} MB")


if __name__ == "__main__":
    main()
