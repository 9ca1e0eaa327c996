"""`evaluate` stage: samples/ (+ test shards) -> FAD Tables 1-3 with reference rows, coherence, report.

Protocols (official spec 9, ``pipeline/paper_results.json``), all with the backbone ``evaluate.backbone``, frames
pooled over files:

* Table 1 (total generation): ``total/mix`` vs ``target/mix``; per stem ``total/<stem>`` vs ``target/<stem>``;
  text settings ``text_<slug>/mix`` vs ``target/mix``.
* Table 2 (when ``evaluate.text_references`` maps prompts to folders): ``text_<slug>/mix`` vs every folder.
* Table 3 (the 14 arrangements): "mixture" ``arrange_X/mix`` vs ``target/mix``; "stems" ``arrange_X/sum`` vs
  ``target/sum_X``.

Reference rows, measured by the same protocol:

* ``floor``: real audio against itself, the target files split in halves (even vs odd items; Table 2: the reference
  folder's halves). Half the files per set, so it is slightly pessimistic (FAD is biased upwards at small N).
* ``floor_heldout``: ``count`` other test segments (not in samples/, seeded by ``evaluate.seed``) written in the target
  layout vs the targets: the same set sizes as our rows. Absent when the test split has fewer than 2 unused segments.
* ``ceiling``: the untrained model (``untrained/<setting>``, see pipeline/sample.py), when sampled.

Fewer than 2 embeddings in a set is an error for our rows ("need at least 2 embeddings") and a null reference value
with a note for reference rows; fewer than D + 1 is reported with ``rank_deficient`` (the covariance is singular).
Embeddings go through ``EmbeddingCache(cache_dir)`` (content-addressed: never stale). Outputs: ``<metrics>/fad.json``,
``<metrics>/coherence.json``, ``<metrics>/arrangement.csv``, ``<report>/evaluation.md`` + figures (pipeline/report.py).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mtmusicldm.audio import load_audio, save_audio
from mtmusicldm.config import EvaluateParams
from mtmusicldm.evaluation.audio_sets import DirEmbeddings, EmbeddingCache, embed_dir
from mtmusicldm.evaluation.base import AudioEmbedder
from mtmusicldm.evaluation.coherence import CoherenceResult, harmonic_coherence, rhythmic_coherence
from mtmusicldm.evaluation.embedders import make_embedder
from mtmusicldm.evaluation.fad import RankDeficientWarning, fad_from_embeddings
from mtmusicldm.utils.fs import atomic_dir, write_json
from pipeline._common import stage_main
from pipeline.report import write_arrangement_csv, write_report

PAPER_RESULTS = Path(__file__).with_name("paper_results.json")
INDEX_FORMAT, INDEX_VERSION = "mtmusicldm-samples", 1
PITCHED_EXCLUDE = ("drums",)  # harmonic coherence is only computed for pitched stems


def load_paper_results() -> dict[str, Any]:
    """The published numbers (``pipeline/paper_results.json``)."""
    return json.loads(PAPER_RESULTS.read_text())


def make_backbone(evaluate: EvaluateParams) -> AudioEmbedder:
    """The FAD embedder named by ``evaluate.backbone`` (weights from the params)."""
    evaluate.validate("evaluate")
    if evaluate.backbone == "vggish":
        return make_embedder("vggish", weights=evaluate.vggish_weights)
    if evaluate.backbone == "clap":
        return make_embedder("clap", checkpoint=evaluate.clap_checkpoint)
    return make_embedder(evaluate.backbone)


class FadTable:
    """Embeds each folder once (through the cache) and computes FADs between folders or halves of folders.

    Args:
        embedder: the backbone.
        cache_dir: embedding cache folder, None for no cache.
    """

    def __init__(self, embedder: AudioEmbedder, cache_dir: Path | None = None) -> None:
        self.embedder = embedder
        self.cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
        self._emb: dict[tuple[Path, bool], DirEmbeddings] = {}
        self.rank_deficient: list[str] = []
        self.notes: list[str] = []

    def embeddings(self, folder: Path, recursive: bool = False) -> DirEmbeddings:
        key = (Path(folder).resolve(), recursive)
        if key not in self._emb:
            self._emb[key] = embed_dir(folder, self.embedder, cache=self.cache, recursive=recursive)
        return self._emb[key]

    def rows(self, folder: Path, part: str = "all", recursive: bool = False) -> np.ndarray:
        """Embeddings of all files, or of the even / odd files (sorted names) of ``folder``."""
        d = self.embeddings(folder, recursive)
        if part == "all":
            return d.embeddings
        ends = np.cumsum((0, *d.frames))
        keep = range(0 if part == "even" else 1, len(d.frames), 2)
        parts = [d.embeddings[ends[i]:ends[i + 1]] for i in keep]
        return np.concatenate(parts) if parts else d.embeddings[:0]

    def fad(self, a: Path, b: Path, what: str, *, part_a: str = "all", part_b: str = "all",
            required: bool = True, recursive_a: bool = False, recursive_b: bool = False) -> float | None:
        """FAD between two folders (or halves).

        Args:
            a, b: folders (a: generated / first half, b: reference).
            what: label in messages and in ``rank_deficient``.
            part_a, part_b: "all", "even" or "odd".
            required: raise on fewer than 2 embeddings (else note it and return None).
            recursive_a, recursive_b: read the folder recursively (reference folders of Table 2).

        Raises:
            ValueError: fewer than 2 embeddings in a set while ``required``.
        """
        ra, rb = self.rows(a, part_a, recursive_a), self.rows(b, part_b, recursive_b)
        if min(len(ra), len(rb)) < 2:
            msg = (f"{what}: need at least 2 embeddings per set for a covariance, got {len(ra)} ({a}, {part_a}) "
                   f"and {len(rb)} ({b}, {part_b}); sample more or longer segments")
            if required:
                raise ValueError(msg)
            self.notes.append(msg)
            return None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RankDeficientWarning)
            value = fad_from_embeddings(ra, rb)
        if any(issubclass(w.category, RankDeficientWarning) for w in caught):
            self.rank_deficient.append(what)
        return round(float(value), 6)


def read_index(samples: Path, stems: Sequence[str]) -> dict[str, Any]:
    """samples/index.json, checked against the params' stems."""
    path = Path(samples) / "index.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the sample stage first")
    index = json.loads(path.read_text())
    if (index.get("format"), index.get("version")) != (INDEX_FORMAT, INDEX_VERSION):
        raise ValueError(f"{path}: not a {INDEX_FORMAT} v{INDEX_VERSION} index")
    if list(index["stems"]) != list(stems):
        raise ValueError(f"{path}: stems {index['stems']} differ from params stems {list(stems)}")
    return index


def _letters(names: Sequence[str]) -> str:
    return "".join(s[0].upper() for s in names)


def _n_files(folder: Path) -> int:
    return sum(1 for p in folder.glob("*.wav")) if folder.is_dir() else 0


@contextmanager
def heldout_targets(shards: Path, index: dict[str, Any], combos: Sequence[str], cache_dir: Path | None,
                    seed: int) -> Iterator[tuple[Path | None, str]]:
    """Yield a folder of unused test segments in the target layout (mix, stems, sum_X), or (None, reason).

    The folder lives in ``cache_dir/heldout-<digest>`` (reused while shards and choice are unchanged), else in a
    temporary folder removed afterwards.
    """
    from mtmusicldm.data.shards import iter_samples, list_shards

    stems, sr, seg = index["stems"], int(index["sample_rate"]), int(index["segment_samples"])
    try:
        shard_paths = list_shards(Path(shards) / "test")
    except FileNotFoundError as e:
        yield None, str(e)
        return
    keys = []
    for p in shard_paths:
        with tarfile.open(p) as tar:
            keys += [n[: -len(".json")] for n in tar.getnames() if n.endswith(".json")]
    used = {it["key"] for it in index["items"]}
    pool = [k for k in keys if k not in used]
    pool = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))[: len(index["items"])]]
    if len(pool) < 2:
        yield None, f"only {len(pool)} unused test segments in {shards}/test (need 2)"
        return
    subtype = index["sample"]["subtype"]
    state = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in shard_paths]
    digest = hashlib.sha256(json.dumps([state, pool, sr, seg, subtype, list(combos), stems]).encode()).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(cache_dir) if cache_dir is not None else Path(tmp)
        folder = base / f"heldout-{digest[:16]}"
        if not (folder / "done.json").is_file():
            chosen = set(pool)
            with atomic_dir(folder) as out:
                for s in iter_samples(shard_paths, stems):
                    if s.key not in chosen:
                        continue
                    gt = s.audio[:, :seg]
                    save_audio(out / "mix" / f"{s.key}.wav", gt.sum(axis=0), sr, subtype)
                    for i, name in enumerate(stems):
                        save_audio(out / name / f"{s.key}.wav", gt[i], sr, subtype)
                    for combo in combos:
                        idx = [i for i, name in enumerate(stems) if name[0].upper() in combo]
                        save_audio(out / f"sum_{combo}" / f"{s.key}.wav", gt[idx].sum(axis=0), sr, subtype)
                write_json(out / "done.json", {"keys": pool, "digest": digest})
            for old in base.glob("heldout-*"):  # earlier choices / shard versions
                if old != folder and old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
        yield folder, ""


def fad_tables(table: FadTable, root: Path, index: dict[str, Any], evaluate: EvaluateParams,
               heldout: Path | None) -> dict[str, Any]:
    """Tables 1-3 with floor / floor_heldout / ceiling rows (see the module docstring)."""
    stems, paper = index["stems"], load_paper_results()
    settings = {s["name"]: s for s in index["settings"]}
    un = root / (index.get("untrained") or {}).get("dir", "untrained")
    has_un = index.get("untrained") is not None and un.is_dir()
    tgt = root / "target"

    t1: dict[str, Any] = {"paper": paper["table1_total_generation_fad"]}
    key = "audio_cond" if index["model"]["conditional"] else "uncond"
    if "total" in settings:
        t1[key] = table.fad(root / "total/mix", tgt / "mix", "table1/mix")
        t1["per_stem"] = {s: table.fad(root / "total" / s, tgt / s, f"table1/{s}") for s in stems}
    texts = {n: s for n, s in settings.items() if n.startswith("text_")}
    if texts:
        t1["text"] = {n: table.fad(root / n / "mix", tgt / "mix", f"table1/{n}") for n in texts}
    t1["floor"] = {"mix": table.fad(tgt / "mix", tgt / "mix", "floor/mix", part_a="even", part_b="odd",
                                    required=False),
                   "per_stem": {s: table.fad(tgt / s, tgt / s, f"floor/{s}", part_a="even", part_b="odd",
                                             required=False) for s in stems}}
    t1["floor_heldout"] = None if heldout is None else {
        "mix": table.fad(heldout / "mix", tgt / "mix", "floor_heldout/mix", required=False),
        "per_stem": {s: table.fad(heldout / s, tgt / s, f"floor_heldout/{s}", required=False) for s in stems}}
    t1["ceiling"] = None
    if has_un:
        t1["ceiling"] = {}
        if "total" in settings:
            t1["ceiling"]["mix"] = table.fad(un / "total/mix", tgt / "mix", "ceiling/mix", required=False)
            t1["ceiling"]["per_stem"] = {s: table.fad(un / "total" / s, tgt / s, f"ceiling/{s}", required=False)
                                         for s in stems}
        if texts:
            t1["ceiling"]["text"] = {n: table.fad(un / n / "mix", tgt / "mix", f"ceiling/{n}", required=False)
                                     for n in texts}

    combos = [_letters(s["generated"]) for s in index["settings"] if s["kind"] == "arrangement"]
    t3: dict[str, Any] | None = None
    if combos:
        p3 = paper["table3_arrangement_fad"]
        pc = p3["combinations"]
        t3 = {"combinations": combos,
              "mixture": {c: table.fad(root / f"arrange_{c}/mix", tgt / "mix", f"table3/mixture/{c}") for c in combos},
              "stems": {c: table.fad(root / f"arrange_{c}/sum", tgt / f"sum_{c}", f"table3/stems/{c}") for c in combos},
              "floor": {"mixture": t1["floor"]["mix"],
                        "stems": {c: table.fad(tgt / f"sum_{c}", tgt / f"sum_{c}", f"floor/sum_{c}", part_a="even",
                                               part_b="odd", required=False) for c in combos}},
              "floor_heldout": None if heldout is None else {
                  "mixture": t1["floor_heldout"]["mix"],
                  "stems": {c: table.fad(heldout / f"sum_{c}", tgt / f"sum_{c}", f"floor_heldout/sum_{c}",
                                         required=False) for c in combos}},
              "ceiling": None if not has_un else {
                  "mixture": {c: table.fad(un / f"arrange_{c}/mix", tgt / "mix", f"ceiling/mixture/{c}",
                                           required=False) for c in combos},
                  "stems": {c: table.fad(un / f"arrange_{c}/sum", tgt / f"sum_{c}", f"ceiling/stems/{c}",
                                         required=False) for c in combos}},
              "paper": {proto: {c: p3[proto]["MT-MusicLDM"][pc.index(c)] for c in combos if c in pc}
                        for proto in ("mixture", "stems")},
              "paper_msdm": {proto: {c: p3[proto]["MSDM"][pc.index(c)] for c in combos if c in pc}
                             for proto in ("mixture", "stems")}}

    t2: dict[str, Any] | None = None
    if evaluate.text_references:
        by_prompt = {s["prompt"]: n for n, s in texts.items()}
        missing = sorted(set(evaluate.text_references) - set(by_prompt))
        if missing:
            table.notes.append(f"table2: no text setting in samples/ for prompts {missing} (sample.prompts)")
        refs = {p: Path(f) for p, f in evaluate.text_references.items()}
        rows = {p: by_prompt[p] for p in evaluate.text_references if p in by_prompt}
        t2 = {"references": {p: str(f) for p, f in refs.items()}, "paper": paper["table2_text_conditioned_fad"],
              "fad": {p: {q: table.fad(root / n / "mix", f, f"table2/{n}/{q}", recursive_b=True)
                          for q, f in refs.items()} for p, n in rows.items()},
              "floor": {q: table.fad(f, f, f"table2/floor/{q}", part_a="even", part_b="odd", required=False,
                                     recursive_a=True, recursive_b=True) for q, f in refs.items()},
              "ceiling": None if not has_un else {
                  p: {q: table.fad(un / n / "mix", f, f"table2/ceiling/{n}/{q}", required=False, recursive_b=True)
                      for q, f in refs.items()} for p, n in rows.items()}}
    return {"table1": t1, "table2": t2, "table3": t3}


def _summary(r: CoherenceResult) -> dict[str, float | int | None]:
    out = {k: round(float(getattr(r, k)), 6) for k in ("matched", "shuffled", "delta", "z")}
    return {k: (v if np.isfinite(v) else None) for k, v in out.items()} | {"n": r.n}


def coherence_metrics(root: Path, index: dict[str, Any], seed: int) -> dict[str, Any]:
    """Rhythmic / harmonic coherence of generated stems with their context, vs real data and the untrained model.

    Arrangements: each generated stem vs the mix of the given (ground-truth) stems; "real" = the ground-truth stem
    vs the same mix (the ceiling of coherence). Total generation: each stem vs the mix of the other stems of the
    same sample. Harmonic coherence is skipped for drums.
    """
    stems, sr = index["stems"], int(index["sample_rate"])
    items = [it["item"] for it in index["items"]]
    if len(items) < 2:
        return {"enabled": True, "skipped": f"need at least 2 items for mismatched pairs, got {len(items)}"}
    cache: dict[str, np.ndarray] = {}

    def wav(rel: str) -> np.ndarray:
        if rel not in cache:
            cache[rel] = load_audio(root / rel, sr)
        return cache[rel]

    def mix(folder: str, names: Sequence[str]) -> list[np.ndarray]:
        return [np.sum([wav(f"{folder}/{s}/{it}.wav") for s in names], axis=0) for it in items]

    def pair(a: list[np.ndarray], ctx: list[np.ndarray], stem: str) -> dict[str, Any]:
        out = {"rhythmic": _summary(rhythmic_coherence(a, ctx, sr, seed=seed))}
        pitched = stem not in PITCHED_EXCLUDE
        out["harmonic"] = _summary(harmonic_coherence(a, ctx, sr, seed=seed)) if pitched else None
        return out

    un = (index.get("untrained") or {}).get("dir")
    sources = {"generated": ""} | ({"untrained": f"{un}/"} if un and (root / un).is_dir() else {})
    names = {s["name"]: s for s in index["settings"]}
    result: dict[str, Any] = {"enabled": True, "n": len(items), "seed": seed, "arrangement": {}, "total": {}}
    for name, st in names.items():
        if st["kind"] != "arrangement":
            continue
        given = [s for s in stems if s not in st["generated"]]
        ctx = mix("target", given)
        result["arrangement"][_letters(st["generated"])] = {
            g: {"real": pair(mix("target", [g]), ctx, g)}
            | {src: pair(mix(f"{pre}{name}", [g]), ctx, g) for src, pre in sources.items()}
            for g in st["generated"]}
    if "total" in names:
        for s in stems:
            others = [o for o in stems if o != s]
            result["total"][s] = {"real": pair(mix("target", [s]), mix("target", others), s)} | {
                src: pair(mix(f"{pre}total", [s]), mix(f"{pre}total", others), s) for src, pre in sources.items()}
    result["mean_delta"] = {part: _mean_delta(result[part]) for part in ("arrangement", "total")}
    return result


def _mean_delta(part: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Mean ``delta`` per source and metric over every (combination, stem) entry."""
    leaves = [v for v in part.values() if "real" in v] or [v for c in part.values() for v in c.values()]
    out: dict[str, dict[str, float | None]] = {}
    for src in sorted({k for v in leaves for k in v}):
        out[src] = {}
        for metric in ("rhythmic", "harmonic"):
            vals = [v[src][metric]["delta"] for v in leaves if src in v and v[src][metric] is not None
                    and v[src][metric]["delta"] is not None]
            out[src][metric] = round(float(np.mean(vals)), 6) if vals else None
    return out


def run(stems: Sequence[str], evaluate: EvaluateParams, samples: Path, shards: Path, out_metrics: Path,
        out_report: Path, cache_dir: Path | None) -> dict[str, Any]:
    """Evaluate ``samples/`` and write metrics and the report (see the module docstring).

    Returns:
        The fad.json content.
    """
    samples = Path(samples)
    index = read_index(samples, stems)
    embedder = make_backbone(evaluate)
    table = FadTable(embedder, cache_dir)
    combos = [_letters(s["generated"]) for s in index["settings"] if s["kind"] == "arrangement"]
    with heldout_targets(shards, index, combos, cache_dir, evaluate.seed) as (heldout, why):
        if heldout is None:
            table.notes.append(f"floor_heldout not computed: {why}")
        tables = fad_tables(table, samples, index, evaluate, heldout)
    sr, seg = int(index["sample_rate"]), int(index["segment_samples"])
    untrained_dir = samples / ((index.get("untrained") or {}).get("dir") or "untrained")
    fad = {
        "backbone": embedder.name, "fingerprint": embedder.fingerprint(), "embedding_dim": int(embedder.dim),
        "comparable_to_paper": bool(embedder.comparable_to_paper), "sample_rate": sr,
        "segment_seconds": round(seg / sr, 6), "items": len(index["items"]),
        "n": {s["name"]: _n_files(samples / s["name"] / "mix") for s in index["settings"]},
        "n_untrained": {s["name"]: _n_files(untrained_dir / s["name"] / "mix") for s in index["settings"]
                        if (untrained_dir / s["name"]).is_dir()},
        "sampling": {k: index["sample"].get(k) for k in ("sampler", "steps", "eta", "count", "guidance_scale",
                                                           "arrangement_guidance_scale", "arrangement_conditioning")},
        "model": index["model"], **tables,
        "rank_deficient": sorted(set(table.rank_deficient)), "notes": table.notes,
    }
    coherence = coherence_metrics(samples, index, evaluate.seed) if evaluate.coherence else {"enabled": False}
    out_metrics = Path(out_metrics)
    write_json(out_metrics / "fad.json", fad)
    write_json(out_metrics / "coherence.json", coherence)
    write_arrangement_csv(out_metrics / "arrangement.csv", tables["table3"])
    write_report(fad, coherence, samples, index, Path(out_report))
    return fad


@stage_main
def main(argv: Sequence[str] | None = None) -> None:
    from pipeline._common import load_params, stage_parser

    parser = stage_parser("evaluate stage: samples/ -> FAD tables, coherence, report")
    parser.add_argument("--samples", type=Path, default=Path("samples"))
    parser.add_argument("--shards", type=Path, default=Path("data/shards"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics"))
    parser.add_argument("--report", type=Path, default=Path("reports"))
    parser.add_argument("--cache", type=Path, default=Path("data/fad_cache"),
                        help="embedding cache (outside DVC outs); 'none' disables it")
    args = parser.parse_args(argv)
    p = load_params(args.params)
    cache = None if str(args.cache).lower() == "none" else args.cache
    fad = run(p.stems, p.evaluate, args.samples, args.shards, args.metrics, args.report, cache)
    t1 = fad["table1"]
    print(json.dumps({"backbone": fad["backbone"], "comparable_to_paper": fad["comparable_to_paper"],
                      "table1": {k: t1.get(k) for k in ("uncond", "audio_cond") if k in t1},
                      "metrics": str(args.metrics), "report": str(args.report / "evaluation.md")}))


if __name__ == "__main__":
    main()
