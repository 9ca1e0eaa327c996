"""`prepare` stage: corpus -> 16 kHz, fixed-length 4-stem segments in WebDataset shards per split.

Per track: read the stems of each class (summing several stems of one class, ignoring other classes), mix down to
mono, resample to 16 kHz (soxr HQ), cap at `prepare.max_track_seconds`, cut segments (fixed grid for validation/test,
`train_views` randomly shifted views per chunk for training; `mtmusicldm.data.segment`), and write
`<out>/<split>/<split>-NNNNNN.tar` plus `<out>/report.json`. Tracks are processed in parallel but written in sorted
order, so the same corpus and params give byte-identical shards. A track that cannot be read is reported with its id
and reason, and the rest is processed. The whole output appears atomically at the end; a killed run's temporary
folder is removed by the next run (`atomic_dir`), and the workers die with the stage process (Linux).

Without DVC: `mtmusicldm prepare --source synthetic --out data/shards` (or `--source slakh --root PATH`).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtmusicldm.config import SPLITS, AudioParams, DataParams, PrepareParams
from mtmusicldm.data.segment import cut_segment, rms_db, segment_offsets
from mtmusicldm.data.shards import ShardWriter, encode_sample
from mtmusicldm.data.slakh import TrackError, TrackSource, load_track, scan_source
from mtmusicldm.utils.fs import atomic_dir, write_json
from pipeline._common import parse_and_load, progress, stage_main, stage_parser


@dataclass
class TrackResult:
    track_id: str
    split: str
    samples: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    silent_segments: list[int] = field(default_factory=list)  # per stem: segments where it is silent
    error: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Job:
    src: TrackSource
    seed: int
    stems: tuple[str, ...]
    audio: AudioParams
    data: DataParams
    prepare: PrepareParams


def _die_with_parent(parent: int) -> None:
    """Pool initializer: on Linux, SIGKILL this worker when the stage process dies (even by SIGKILL), so a killed
    stage leaves no worker decoding on (it would otherwise finish its track before noticing)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the call
            os._exit(1)


def _process(job: _Job) -> TrackResult:
    """Load one track and encode all its segments (runs in a worker process)."""
    src, audio, prep = job.src, job.audio, job.prepare
    res = TrackResult(track_id=src.track_id, split=src.split)
    try:
        track = load_track(src, sample_rate=audio.sample_rate, silence_db=job.data.silence_threshold_db)
    except TrackError as e:
        res.error = str(e)
        return res
    res.notes = list(track.notes)
    max_len = int(prep.max_track_seconds * audio.sample_rate)
    wav = track.audio[:, :max_len]
    res.seconds = wav.shape[1] / audio.sample_rate
    L = audio.segment_samples
    specs = segment_offsets(wav.shape[1], L, train=src.split == "train", views=prep.train_views,
                            max_shift=int(prep.max_shift_fraction * L), seed=job.seed, track_id=src.track_id)
    if not specs:
        res.error = f"shorter than one segment ({res.seconds:.2f} s < {L / audio.sample_rate:.2f} s)"
        return res
    res.silent_segments = [0] * len(job.stems)
    for spec in specs:
        seg = cut_segment(wav, spec.offset, L)
        levels = rms_db(seg)
        silent = [bool(v < job.data.silence_threshold_db) for v in levels]
        res.silent_segments = [a + b for a, b in zip(res.silent_segments, silent)]
        meta = {
            "track": src.track_id,
            "split": src.split,
            "view": spec.view,
            "chunk": spec.chunk,
            "offset_samples": spec.offset,
            "offset_seconds": spec.offset / audio.sample_rate,
            "sample_rate": audio.sample_rate,
            "source_sample_rate": track.source_sample_rate,
            "source_layout": src.source_layout,
            "stems": list(job.stems),
            "rms_db": [round(float(v), 3) for v in levels],
            "silent": silent,
            "track_silent": list(track.silent),
            "mix_peak": round(float(np.max(np.abs(seg.sum(0)))), 6),
        }
        key = f"{src.track_id}_c{spec.chunk:04d}_v{spec.view:02d}"
        res.samples.append(encode_sample(key, seg, meta, job.stems, audio.sample_rate, prep.audio_format))
    return res


def run(seed: int, stems: tuple[str, ...], audio: AudioParams, data: DataParams, prepare: PrepareParams,
        raw: Path, out: Path, *, source: str | None = None, root: Path | None = None) -> dict[str, Any]:
    """Cut the corpus described by `raw/source.json` (or `source`/`root`) into shards under `out`.

    Returns:
        The report written to `out/report.json`.
    """
    if source is None or root is None:
        from pipeline.download import resolve_root

        source, root = resolve_root(raw)
    extra = ({"validation_fraction": data.babyslakh_split["validation"],
              "test_fraction": data.babyslakh_split["test"]} if source == "babyslakh" else {})
    tracks, skipped = scan_source(source, root, missing_stem_policy=data.missing_stem_policy, **extra)
    if not tracks:
        raise ValueError(f"no usable tracks found under {root} (source {source}); skipped: "
                         + "; ".join(f"{s.track_id}: {s.reason}" for s in skipped[:10]))
    report: dict[str, Any] = {
        "source": source,
        "root": str(root),
        "sample_rate": audio.sample_rate,
        "segment_samples": audio.segment_samples,
        "segment_seconds": audio.segment_seconds,
        "stems": list(stems),
        "audio_format": prepare.audio_format,
        "train_views": prepare.train_views,
        "splits": {},
        "skipped": [{"track": s.track_id, "split": s.split, "reason": s.reason} for s in skipped],
    }
    pool = (mp.get_context("spawn").Pool(prepare.workers, initializer=_die_with_parent, initargs=(os.getpid(),))
            if prepare.workers > 0 else None)
    try:
        with atomic_dir(out) as tmp:
            for split in SPLITS:
                jobs = [_Job(t, seed, tuple(stems), audio, data, prepare) for t in tracks if t.split == split]
                results = pool.imap(_process, jobs) if pool is not None else map(_process, jobs)
                n_tracks = n_segments = 0
                seconds = 0.0
                silent_counts = [0] * len(stems)
                with ShardWriter(tmp / split, split, prepare.samples_per_shard) as writer:
                    for res in progress(results, total=len(jobs), desc=f"prepare {split}", unit="track"):
                        if res.error is not None:
                            report["skipped"].append({"track": res.track_id, "split": split, "reason": res.error})
                            continue
                        n_tracks += 1
                        seconds += res.seconds
                        for sample in res.samples:
                            writer.write(sample)
                            n_segments += 1
                        silent_counts = [a + b for a, b in zip(silent_counts, res.silent_segments)]
                report["splits"][split] = {
                    "tracks": n_tracks,
                    "segments": n_segments,
                    "hours_source": round(seconds / 3600, 4),
                    "hours_segments": round(n_segments * audio.segment_seconds / 3600, 4),
                    "silent_stem_segments": dict(zip(stems, silent_counts)),
                    "shards": writer.shards,
                }
            report["skipped"].sort(key=lambda s: (s["split"], s["track"]))
            write_json(tmp / "report.json", report)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return report


@stage_main
def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("prepare stage: corpus -> 16 kHz 4-stem segments in WebDataset shards")
    parser.add_argument("--raw", type=Path, default=Path("data/raw"), help="download stage output (source.json)")
    parser.add_argument("--out", type=Path, default=Path("data/shards"))
    args, p = parse_and_load(parser, argv)
    report = run(p.seed, p.stems, p.audio, p.data, p.prepare, args.raw, args.out)
    print_summary(report, args.out)


def print_summary(report: dict[str, Any], out: Path) -> None:
    for split, s in report["splits"].items():
        print(f"prepare: {split:<10} {s['tracks']:>5} tracks {s['segments']:>7} segments "
              f"{s['hours_segments']:.3f} h in {len(s['shards'])} shards")
    if report["skipped"]:
        print(f"prepare: {len(report['skipped'])} tracks skipped (reasons in {out / 'report.json'})", file=sys.stderr)


if __name__ == "__main__":
    main()
