"""The embedded band corpus: generation throughput per renderer, and a look and a listen.

    python benchmarks/band_corpus.py                       # throughput table (8 tracks per renderer)
    python benchmarks/band_corpus.py --figure docs/band_corpus.png --listen docs/   # + figure and audio clips

Throughput is seconds of 4-stem audio (the track length, all its stems rendered and written: FLAC + MIDI) per wall
second, single process, as the download stage generates it. The figure shows the log-mel of the four stems and the
mix of one track (the same song, composed once) from each renderer side by side; `--listen` writes 8 s mixes of it.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from mtmusicldm import STEMS
from mtmusicldm.audio import load_audio, save_audio
from mtmusicldm.audio.mel import log_mel
from mtmusicldm.data.slakh import load_track, scan_slakh_redux
from mtmusicldm.data.synthetic import RENDERERS, BandSettings, generate_band_dataset


def throughput(renderer: str, tracks: int, seed: int) -> tuple[float, float]:
    """(seconds of audio generated, wall seconds) for `tracks` tracks of 10-16 s."""
    settings = BandSettings(seed=seed, min_seconds=10.0, max_seconds=16.0, renderer=renderer)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_band_dataset(Path(tmp), {"train": tracks}, settings)
        wall = time.perf_counter() - t0
        audio = sum(load_audio(p, 16000).size / 16000 for p in Path(tmp).glob("train/*/mix.flac"))
    return audio, wall


def figure(path: Path, listen: Path | None, seed: int, index: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtmusicldm.utils.figures import show_log_mel

    mels = {}
    with tempfile.TemporaryDirectory() as tmp:
        for renderer in RENDERERS:
            settings = BandSettings(seed=seed, min_seconds=10.0, max_seconds=16.0, renderer=renderer,  # type: ignore[arg-type]
                                    extra_stem_prob=0.0, dropout_prob=0.0)
            root = Path(tmp) / renderer
            generate_band_dataset(root, {"train": index}, settings)
            src = next(s for s in scan_slakh_redux(root)[0] if s.track_id == f"Track{index:05d}")
            track = load_track(src, 16000)
            n = min(track.audio.shape[1], 8 * 16000)
            stems = track.audio[:, :n]
            mix = stems.sum(0)
            mels[renderer] = [log_mel(stems[s], target_frames=n // 160).numpy() for s in range(len(STEMS))]
            mels[renderer].append(log_mel(mix, target_frames=n // 160).numpy())
            if listen is not None:
                save_audio(listen / f"band_{renderer}.flac", 0.9 * mix / max(1e-9, float(np.abs(mix).max())), 16000,
                           "PCM_16")
    rows = [*STEMS, "mix"]
    fig, axes = plt.subplots(len(rows), 2, figsize=(12, 1.9 * len(rows)), squeeze=False, layout="constrained")
    hi = max(float(m.max()) for ms in mels.values() for m in ms)
    for col, renderer in enumerate(RENDERERS):
        for row, name in enumerate(rows):
            im = show_log_mel(axes[row][col], mels[renderer][row], vmin=hi - 12.0, vmax=hi,
                              title=f"{renderer}: {name}", labels=row == len(rows) - 1)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="log-mel (ln)")
    fig.suptitle(f"Band corpus, the same composed song (seed {seed}, Track{index:05d}) from both renderers")
    fig.savefig(path, dpi=70)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=8)
    parser.add_argument("--seed", type=int, default=20240324)
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument("--listen", type=Path, default=None, help="folder for band_<renderer>.flac (8 s mixes)")
    parser.add_argument("--index", type=int, default=3, help="track shown in the figure")
    args = parser.parse_args()
    print(f"{'renderer':12s} {'tracks':>6s} {'audio s':>8s} {'wall s':>7s} {'x real time':>11s}")
    for renderer in RENDERERS:
        audio, wall = throughput(renderer, args.tracks, args.seed)
        print(f"{renderer:12s} {args.tracks:6d} {audio:8.1f} {wall:7.2f} {audio / wall:11.1f}")
    if args.figure is not None:
        figure(args.figure, args.listen, args.seed, args.index)


if __name__ == "__main__":
    main()
