"""Reference audio sets for the evaluation, built with the same item count as the generated sets they are compared
with, in the sample stage's layout (see `pipeline/sample.py`), so the FAD protocols apply unchanged.

* **shuffled** (`write_shuffled`): real stems of different songs mixed together: the right timbres, no coherence.
  Item i draws `partners[i] = (i, j1, j2, j3)`, items whose tracks differ from each other where the test split
  allows it (seeded). Total generation: stem s of the mix comes from item `partners[i, s]`. Arrangements: the
  given stems of item i plus the real generated-class stems of item `partners[i, 1]` (mix and sum). A model that
  learned coherence must beat this on the coherence metrics; the "stems" protocol is left out (its shuffled set
  is the target set itself, reordered).
* **held-out real** (`write_heldout`): as many other test segments (not in samples/), in the target layout.

Both are written through `atomic_dir` into `<base>/<kind>-<digest>` and reused while their inputs are unchanged.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtmusicldm.audio import load_audio, save_audio
from mtmusicldm.utils.fs import atomic_dir, write_json

__all__ = ["shuffle_partners", "write_heldout", "write_shuffled"]


def shuffle_partners(tracks: Sequence[str], k: int, seed: int) -> tuple[np.ndarray, bool]:
    """For each item i, `k` items `(i, j_1, ..., j_{k-1})` from pairwise different tracks.

    Args:
        tracks: track id of each item (items of one track are segments of one song).
        k: items per row (the first is i itself).
        seed: numpy seed.

    Returns:
        ([N, k] int item indices, distinct): `distinct` is False when the split has fewer than k tracks; then the
        partners are only pairwise different items (never i itself).
    """
    n = len(tracks)
    if n < 2:
        raise ValueError(f"shuffle_partners: need at least 2 items, got {n}")
    rng = np.random.default_rng(seed)
    distinct = len(set(tracks)) >= k
    out = np.zeros((n, k), dtype=np.int64)
    for i in range(n):
        chosen = [i]
        for _ in range(1, k):
            taken = {tracks[c] for c in chosen}
            pool = [j for j in range(n) if j not in chosen and (not distinct or tracks[j] not in taken)]
            chosen.append(int(rng.choice(pool)) if pool else int(rng.choice([j for j in range(n) if j != i])))
        out[i] = chosen
    return out, distinct


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _reuse_or_build(base: Path, kind: str, digest: str) -> tuple[Path, bool]:
    """(folder, complete): `<base>/<kind>-<digest>`; other folders of that kind are removed once it is complete."""
    folder = base / f"{kind}-{digest}"
    return folder, (folder / "done.json").is_file()


def _drop_others(base: Path, kind: str, keep: Path) -> None:
    for old in base.glob(f"{kind}-*"):
        if old != keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def write_shuffled(samples: Path, index: Mapping[str, Any], combos: Mapping[str, Sequence[str]], base: Path,
                   seed: int) -> tuple[Path, np.ndarray, bool]:
    """Shuffled real mixes (see the module docstring) from `samples/target/<stem>/`.

    Args:
        samples: the samples folder (targets are read from it).
        index: its index.json content (stems, items with tracks, sample rate, subtype).
        combos: combination name (e.g. "BD") -> generated stems.
        base: parent folder of the output.
        seed: partner seed.

    Returns:
        (folder with `total/mix/` and `arrange_<C>/{mix,sum}/`, partners [N, S], distinct tracks).
    """
    stems, sr, subtype = list(index["stems"]), int(index["sample_rate"]), index["sample"]["subtype"]
    items = [it["item"] for it in index["items"]]
    partners, distinct = shuffle_partners([it["track"] for it in index["items"]], len(stems), seed)
    files = [samples / "target" / s / f"{it}.wav" for it in items for s in stems]
    state = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    digest = _digest(state, partners.tolist(), {k: list(v) for k, v in combos.items()}, sr, subtype)
    folder, done = _reuse_or_build(Path(base), "shuffled", digest)
    if not done:
        wav = {(i, s): load_audio(samples / "target" / s / f"{it}.wav", sr) for i, it in enumerate(items)
               for s in stems}
        with atomic_dir(folder) as out:
            for i, it in enumerate(items):
                mix = np.sum([wav[(int(partners[i, k]), s)] for k, s in enumerate(stems)], axis=0)
                save_audio(out / "total" / "mix" / f"{it}.wav", mix, sr, subtype)
                j = int(partners[i, 1])
                for name, generated in combos.items():
                    other = np.sum([wav[(j, s)] for s in generated], axis=0)
                    given = np.sum([wav[(i, s)] for s in stems if s not in generated], axis=0)
                    save_audio(out / f"arrange_{name}" / "mix" / f"{it}.wav", given + other, sr, subtype)
                    save_audio(out / f"arrange_{name}" / "sum" / f"{it}.wav", other, sr, subtype)
            write_json(out / "done.json", {"digest": digest, "partners": partners.tolist(), "distinct": distinct})
        _drop_others(Path(base), "shuffled", folder)
    return folder, partners, distinct


def write_heldout(shards: Path, index: Mapping[str, Any], combos: Mapping[str, Sequence[str]], base: Path,
                  seed: int) -> tuple[Path | None, str]:
    """As many unused test segments as samples/ has items, in the target layout (mix, stems, sum_<C>).

    Returns:
        (folder, "") or (None, reason) when the test split has fewer than 2 unused segments.
    """
    from mtmusicldm.data.shards import iter_samples, list_shards

    stems, sr, seg = list(index["stems"]), int(index["sample_rate"]), int(index["segment_samples"])
    try:
        shard_paths = list_shards(Path(shards) / "test")
    except FileNotFoundError as e:
        return None, str(e)
    keys = []
    for p in shard_paths:
        with tarfile.open(p) as tar:
            keys += [n[: -len(".json")] for n in tar.getnames() if n.endswith(".json")]
    used = {it["key"] for it in index["items"]}
    pool = [k for k in keys if k not in used]
    pool = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))[: len(index["items"])]]
    if len(pool) < 2:
        return None, f"only {len(pool)} unused test segments in {shards}/test (need 2)"
    subtype = index["sample"]["subtype"]
    state = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in shard_paths]
    digest = _digest(state, pool, sr, seg, subtype, {k: list(v) for k, v in combos.items()}, stems)
    folder, done = _reuse_or_build(Path(base), "heldout", digest)
    if not done:
        chosen = set(pool)
        with atomic_dir(folder) as out:
            for s in iter_samples(shard_paths, stems):
                if s.key not in chosen:
                    continue
                gt = s.audio[:, :seg]
                save_audio(out / "mix" / f"{s.key}.wav", gt.sum(axis=0), sr, subtype)
                for i, name in enumerate(stems):
                    save_audio(out / name / f"{s.key}.wav", gt[i], sr, subtype)
                for combo, generated in combos.items():
                    idx = [stems.index(g) for g in generated]
                    save_audio(out / f"sum_{combo}" / f"{s.key}.wav", gt[idx].sum(axis=0), sr, subtype)
            write_json(out / "done.json", {"keys": pool, "digest": digest})
        _drop_others(Path(base), "heldout", folder)
    return folder, ""
