"""`download` stage: make a multi-track corpus available under `data/raw` and describe it in `source.json`.

Sources (`data.source` in params.yaml):
* `synthetic` (default): the embedded procedural band generator writes Slakh2100's own layout; no network.
* `slakh`: Slakh2100 `slakh2100_flac_redux` (Zenodo 4599666, ~105 GB) or an existing copy at `data.local_root`.
* `babyslakh`: BabySlakh 16 kHz (Zenodo 4603870, ~1 GB) or an existing copy.
* `msdm`: MSDM's 4-stem 22.05 kHz release: no public archive to fetch, so `data.local_root` is required.

Downloads resume from a partial file (HTTP Range), are checked against the published md5 and extracted through a
temporary directory. `data/raw` is a DVC output with `cache: false, persist: true`, so DVC neither copies 105 GB into
its cache nor deletes a partial download before a rerun. `source.json` holds a fingerprint of the corpus (file
names, sizes, mtimes), so `prepare` reruns when the corpus changes.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtmusicldm.config import DataParams, SyntheticParams, params_to_dict
from mtmusicldm.data.soundfont import SoundFontError
from mtmusicldm.utils.fs import atomic_dir, md5_file, write_json
from pipeline._common import parse_and_load, progress, stage_main, stage_parser


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str
    size_hint: str
    layout_dir: str  # folder the archive extracts to


ARCHIVES: dict[str, Archive] = {
    "slakh": Archive("https://zenodo.org/records/4599666/files/slakh2100_flac_redux.tar.gz?download=1",
                     "f4b71b6c45ac9b506f59788456b3f0c4", "~105 GB", "slakh2100_flac_redux"),
    "babyslakh": Archive("https://zenodo.org/records/4603870/files/babyslakh_16k.tar.gz?download=1",
                         "311096dc2bde7d61c97e930edbfc7f78", "~1 GB", "babyslakh_16k"),
}
SYNTHETIC_DIR = "slakh2100_flac_redux"


class DownloadError(RuntimeError):
    pass


def fingerprint(root: Path) -> dict[str, Any]:
    """Cheap content fingerprint: sorted (relative path, size, mtime_ns) of every file under `root`."""
    h = hashlib.sha256()
    n_files = 0
    total = 0
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            st = p.stat()
            h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            n_files += 1
            total += st.st_size
    return {"sha256": h.hexdigest(), "files": n_files, "bytes": total}


def fetch(url: str, dest: Path, md5: str, *, chunk: int = 1 << 20) -> Path:
    """Download `url` to `dest`, resuming a partial `dest.part`, then verify the md5."""
    part = dest.with_name(dest.name + ".part")
    if dest.is_file() and md5_file(dest) == md5:
        return dest
    start = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        resp = urllib.request.urlopen(req, timeout=60)
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise DownloadError(
            f"cannot download {url}: {e}. Without network access, download the archive on another machine, "
            f"extract it and set data.local_root in params.yaml to the extracted folder.") from e
    with resp:
        resumed = start and resp.status == 206
        total = resp.length + (start if resumed else 0) if resp.length is not None else None
        mode = "ab" if resumed else "wb"
        with open(part, mode) as f:
            def blocks():
                while block := resp.read(chunk):
                    yield block
            try:
                for block in progress(blocks(), total=(total // chunk + 1) if total else None,
                                      desc=f"download {dest.name}", unit="MiB"):
                    f.write(block)
                cut = f"the server sent {f.tell()} of {total} bytes" if total and f.tell() < total else None
            except (http.client.HTTPException, OSError) as e:  # a reset connection, a timeout mid-transfer
                cut = type(e).__name__
            if cut is not None:  # http.client ends a cut transfer like a complete one: keep the part, never md5 it
                raise DownloadError(f"download of {dest.name} interrupted after {f.tell()} bytes ({cut}); rerun "
                                    f"to resume from {part}")
    got = md5_file(part)
    if got != md5:
        part.unlink()
        raise DownloadError(f"{dest.name}: md5 {got} != expected {md5}; the partial file was removed, rerun to retry")
    part.replace(dest)
    return dest


def extract(archive: Path, out: Path, layout_dir: str) -> Path:
    """Extract a .tar.gz into `out/layout_dir` through a temporary directory (a killed run leaves nothing)."""
    final = out / layout_dir
    if final.is_dir():
        return final
    with atomic_dir(out / f".extract-{layout_dir}") as tmp, tarfile.open(archive, "r:*") as tar:
        tar.extractall(tmp, filter="data")
        inner = tmp / layout_dir
        if not inner.is_dir():
            raise DownloadError(f"{archive.name} does not contain {layout_dir}/")
        inner.rename(final)
    shutil.rmtree(out / f".extract-{layout_dir}", ignore_errors=True)
    return final


def run(data: DataParams, synthetic: SyntheticParams, out: Path) -> dict[str, Any]:
    """Make the corpus named by `data.source` available and write `out/source.json`.

    Returns:
        The content of `source.json`: source kind, layout root (absolute, or relative to `out`), fingerprint.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"source": data.source}
    if data.local_root is not None:
        root = Path(data.local_root).expanduser().resolve()
        if not root.is_dir():
            raise DownloadError(f"data.local_root={data.local_root!r} is not a directory")
        info.update(root=str(root), origin="local copy")
    elif data.source == "synthetic":
        from mtmusicldm.data.synthetic import BandSettings, check_soundfont, generate_band_dataset

        settings = BandSettings(seed=synthetic.seed, min_seconds=synthetic.min_seconds,
                                max_seconds=synthetic.max_seconds, sample_rate=synthetic.sample_rate,
                                renderer=synthetic.renderer, soundfont=synthetic.soundfont,
                                programs=synthetic.programs, extra_stem_prob=synthetic.extra_stem_prob,
                                dropout_prob=synthetic.dropout_prob)
        check_soundfont(settings)  # a bad SoundFont fails here, before anything is removed or written
        gen_params = params_to_dict(synthetic)
        root = out / SYNTHETIC_DIR
        previous = out / "source.json"
        if root.exists() and (not previous.is_file()
                              or json.loads(previous.read_text()).get("generator") != gen_params):
            shutil.rmtree(root)  # made with other generator params: regenerate, never mix
        generate_band_dataset(root, dict(synthetic.tracks), settings, progress=True)
        info.update(root=SYNTHETIC_DIR, origin="embedded procedural generator", generator=gen_params)
    elif data.source in ARCHIVES:
        arc = ARCHIVES[data.source]
        (out / "downloads").mkdir(exist_ok=True)
        tar = fetch(arc.url, out / "downloads" / f"{arc.layout_dir}.tar.gz", arc.md5)
        extract(tar, out, arc.layout_dir)
        info.update(root=arc.layout_dir, origin=arc.url, md5=arc.md5)
    else:
        raise DownloadError(f"data.source={data.source!r} has no public archive: set data.local_root to your copy")
    root_path = Path(info["root"]) if Path(info["root"]).is_absolute() else out / info["root"]
    info["fingerprint"] = fingerprint(root_path)
    write_json(out / "source.json", info)
    return info


def resolve_root(raw: Path) -> tuple[str, Path]:
    """Read `raw/source.json` -> (source kind, absolute layout root)."""
    src = Path(raw) / "source.json"
    if not src.is_file():
        raise FileNotFoundError(f"{src} not found: run the download stage first (dvc repro download)")
    info = json.loads(src.read_text())
    root = Path(info["root"])
    return info["source"], root if root.is_absolute() else Path(raw) / root


@stage_main
def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("download stage: fetch/generate the multi-track corpus")
    parser.add_argument("--out", type=Path, default=Path("data/raw"))
    args, params = parse_and_load(parser, argv)
    try:
        info = run(params.data, params.synthetic, args.out)
    except (DownloadError, SoundFontError) as e:
        sys.exit(f"download: {e}")
    print(f"download: {info['source']} corpus at {info['root']} "
          f"({info['fingerprint']['files']} files, {info['fingerprint']['bytes'] / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
