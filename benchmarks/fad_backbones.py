"""Which FAD backbone tells real music from incoherent music: offline vs crepe, on the same sets, with costs.

Sets, cut from the corpus's test tracks (`--seconds` segments on the fixed grid):
    A = segments of the even tracks; B = segments of the odd tracks ("real");
    shuffled = each of B's segments rebuilt from 4 stems of 4 different songs of B; noise = white noise at B's RMS.
A backbone separates when FAD(A, B) << FAD(A, shuffled) << FAD(A, noise), with 95 % bootstrap intervals apart.
Also prints the embedding cost per file and basic-pitch's transcription cost per pitched stem file.

    python benchmarks/fad_backbones.py [--raw data/raw] [--tracks 24] [--backbones offline crepe:tiny:0.08 ...]

Without --raw, the embedded corpus (params.yaml's `data`/`synthetic` sections, `--tracks` test tracks) is made
in a temporary folder by the download stage's own code.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

STEMS = ("bass", "drums", "guitar", "piano")


def corpus(raw: Path | None, tracks: int, tmp: Path) -> tuple[str, Path]:
    """(source kind, layout root) of `raw`, or of a freshly generated embedded corpus."""
    from pipeline.download import resolve_root

    if raw is None:
        from pipeline import download
        from pipeline._common import load_params

        p = load_params("params.yaml")
        # Only the test split: 0 tracks elsewhere is below the params minimum on purpose, so this copy skips
        # validation (pydantic's model_copy; `replace` would refuse it).
        synthetic = p.synthetic.model_copy(update={"tracks": {"train": 0, "validation": 0, "test": tracks}})
        download.run(p.data, synthetic, tmp / "raw")
        raw = tmp / "raw"
    return resolve_root(raw)


def segments(kind: str, root: Path, seconds: float, sr: int = 16000) -> list[tuple[int, np.ndarray]]:
    """(track number, [4, T] stems) of every full segment of the test tracks."""
    from mtmusicldm.data.slakh import load_track, scan_source

    sources, _ = scan_source(kind, root, splits=("test",))
    n, out = round(seconds * sr), []
    for t, src in enumerate(sources):
        audio = load_track(src, sample_rate=sr, silence_db=-60.0).audio
        out += [(t, audio[:, k * n:(k + 1) * n]) for k in range(audio.shape[1] // n)]
    return out


def write_sets(segs: list[tuple[int, np.ndarray]], out: Path, seed: int) -> dict[str, Path]:
    """Folders real_a, real_b, shuffled, noise of mixes (see the module docstring)."""
    from mtmusicldm.audio import save_audio

    rng = np.random.default_rng(seed)
    a = [s for t, s in segs if t % 2 == 0]
    b = [(t, s) for t, s in segs if t % 2 == 1]
    folders = {k: out / k for k in ("real_a", "real_b", "shuffled", "noise")}
    for i, s in enumerate(a):
        save_audio(folders["real_a"] / f"{i:04d}.wav", s.sum(0), 16000, "FLOAT")
    for i, (t, s) in enumerate(b):
        save_audio(folders["real_b"] / f"{i:04d}.wav", s.sum(0), 16000, "FLOAT")
        picks: list[int] = []
        for _ in STEMS:  # stems of pairwise different songs (also different from song t when possible)
            pool = [j for j, (u, _) in enumerate(b) if u not in {t, *(b[p][0] for p in picks)}] or list(range(len(b)))
            picks.append(int(rng.choice(pool)))
        mix = np.sum([b[p][1][k] for k, p in enumerate(picks)], axis=0)
        save_audio(folders["shuffled"] / f"{i:04d}.wav", mix, 16000, "FLOAT")
        x = s.sum(0)
        save_audio(folders["noise"] / f"{i:04d}.wav", rng.normal(size=x.size) * x.std(), 16000, "FLOAT")
    return folders


def embedder(spec: str):  # noqa: ANN201 - an AudioEmbedder
    from mtmusicldm.evaluation import make_embedder

    name, *rest = spec.split(":")
    if name == "crepe":
        model, hop_s = (rest[0] if rest else "tiny"), (float(rest[1]) if len(rest) > 1 else 0.08)
        return make_embedder("crepe", model=model, hop_s=hop_s)
    return make_embedder(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", type=Path, default=None, help="download-stage output (source.json) to read")
    ap.add_argument("--tracks", type=int, default=24, help="test tracks to generate without --raw")
    ap.add_argument("--seconds", type=float, default=2.56)
    ap.add_argument("--backbones", nargs="+", default=["offline", "crepe:tiny:0.08", "crepe:tiny:0.16",
                                                       "crepe:full:0.16"])
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from mtmusicldm.evaluation import FadTable
    from mtmusicldm.evaluation.notes import BasicPitch

    with tempfile.TemporaryDirectory() as tmp:
        kind, root = corpus(args.raw, args.tracks, Path(tmp))
        segs = segments(kind, root, args.seconds)
        sets = write_sets(segs, Path(tmp) / "sets", seed=0)
        n_a, n_b = (len(list(sets[k].glob("*.wav"))) for k in ("real_a", "real_b"))
        print(f"corpus {kind} at {root}: {len({t for t, _ in segs})} test tracks, {len(segs)} segments of "
              f"{args.seconds:g} s; A = {n_a}, B = shuffled = noise = {n_b} files; {args.boot} resamples")
        print(f"{'backbone':18s} {'dim':>4s} {'ms/file':>8s}  {'real vs real':>22s}  {'real vs shuffled':>22s}  "
              f"{'real vs noise':>22s}  shuf/real  apart")
        for spec in args.backbones:
            emb = embedder(spec)
            table = FadTable(emb, n_boot=args.boot, seed=0)
            t0 = time.perf_counter()
            table.embeddings(sets["real_a"])
            ms = 1000 * (time.perf_counter() - t0) / n_a
            rows = {k: table.fad(sets["real_a"], sets[k], k) for k in ("real_b", "shuffled", "noise")}
            cell = {k: f"{r.value:8.3f} [{r.low:.3f}, {r.high:.3f}]" for k, r in rows.items()}
            apart = rows["shuffled"].low > rows["real_b"].high and rows["noise"].low > rows["shuffled"].high
            print(f"{spec:18s} {emb.dim:4d} {ms:8.1f}  {cell['real_b']:>22s}  {cell['shuffled']:>22s}  "
                  f"{cell['noise']:>22s}  {rows['shuffled'].value / rows['real_b'].value:9.2f}  {apart}")
        pitched = [s[k] for _, s in segs[:32] for k in (0, 2, 3)]
        bp = BasicPitch()
        bp.transcribe(pitched[:2], 16000)  # warm-up (ONNX session)
        t0 = time.perf_counter()
        bp.transcribe(pitched, 16000)
        print(f"basic-pitch (onnxruntime): {1000 * (time.perf_counter() - t0) / len(pitched):.1f} ms per "
              f"{args.seconds:g} s stem ({len(pitched)} files in one batched call)")


if __name__ == "__main__":
    main()
