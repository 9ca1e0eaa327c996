"""`evaluate` stage: samples/ (+ test shards, + raw MIDI) -> FAD Tables 1-3 and coherence, each number with its 95 %
bootstrap interval, beside reference rows; metrics and a report.

Protocols (official spec 9, ``pipeline/paper_results.json``), all with the backbone ``evaluate.backbone``, frames
pooled over files:

* Table 1 (total generation): ``total/mix`` vs ``target/mix``; per stem ``total/<stem>`` vs ``target/<stem>``;
  text settings ``text_<slug>/mix`` vs ``target/mix``.
* Table 2 (when ``evaluate.text_references`` maps prompts to folders): ``text_<slug>/mix`` vs every folder.
* Table 3 (the 14 arrangements, named by ``combination_name``): "mixture" ``arrange_X/mix`` vs ``target/mix``;
  "stems" ``arrange_X/sum`` vs ``target/sum_X``; and their means over the combinations.

Reference rows, same protocol and backbone, each record stating its set sizes (``n_a``, ``n_b``):

* ``floor``: real audio against itself, the target files split in halves (even vs odd items): N/2 per set, so
  pessimistic (FAD is biased upwards at small N).
* ``floor_heldout`` (**real**): ``count`` other test segments vs the targets: the same set sizes as our rows.
  Absent when the test split has fewer than 2 unused segments.
* ``ceiling`` (**untrained**): the untrained model (``untrained/<setting>``, see pipeline/sample.py), when sampled.
* ``shuffled``: real stems of different songs mixed (``mtmusicldm.evaluation.references``): same count; mixtures only.

Intervals: ``evaluate.bootstrap`` resamples of the items, seeded by ``evaluate.seed`` (``FadTable``,
``pipeline/eval_coherence.py``). Coherence, signal and note level: ``pipeline/eval_coherence.py``; the transcriber's
note F1 per stem against the corpus MIDI (``data/raw``, Slakh layout ``MIDI/SXX.mid``) when it has MIDI.

Bad input (unreadable, NaN, too short, silent files) is skipped per item with the reason in the report. Outputs:
``<metrics>/fad.json``, ``coherence.json``, ``summary.json`` (trained vs untrained vs shuffled vs real),
``arrangement.csv``, ``<report>/evaluation.md`` + figures (pipeline/report.py).
"""
from __future__ import annotations

import json
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mtmusicldm.config import EvaluateParams
from mtmusicldm.diffusion.inpainting import combination_name
from mtmusicldm.evaluation.base import AudioEmbedder
from mtmusicldm.evaluation.bootstrap import mean_interval
from mtmusicldm.evaluation.embedders import make_embedder
from mtmusicldm.evaluation.fad_table import FadRow, FadTable, mean_row
from mtmusicldm.evaluation.notes import BasicPitch, Notes, midi_notes, note_f1
from mtmusicldm.evaluation.references import write_heldout, write_shuffled
from mtmusicldm.utils.fs import write_json
from pipeline import eval_coherence as ec
from pipeline._common import stage_main
from pipeline.report import summary_rows, write_report
from pipeline.report_figures import write_arrangement_csv

PAPER_RESULTS = Path(__file__).with_name("paper_results.json")
INDEX_FORMAT, INDEX_VERSION = "mtmusicldm-samples", 1
F1_MARGIN_S = 0.1  # onsets this close to a segment edge are left out of the F1 (notes cut by the segment)


def load_paper_results() -> dict[str, Any]:
    """The published numbers (``pipeline/paper_results.json``)."""
    return json.loads(PAPER_RESULTS.read_text())


def make_backbone(evaluate: EvaluateParams) -> AudioEmbedder:
    """The FAD embedder named by ``evaluate.backbone`` (weights and settings from the params)."""
    kwargs: dict[str, Any] = {
        "vggish": {k: v for k, v in (("weights", evaluate.vggish_weights), ("hub_dir", evaluate.vggish_hub_dir))
                   if v is not None},
        "clap": {"checkpoint": evaluate.clap_checkpoint},
        "crepe": {"model": evaluate.crepe_model, "hop_s": evaluate.crepe_hop_s},
    }.get(evaluate.backbone, {})
    return make_embedder(evaluate.backbone, **kwargs)


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


def arrangement_combos(index: dict[str, Any]) -> dict[str, list[str]]:
    """Combination name -> generated stems of the index's arrangement settings, in its order."""
    return {combination_name(s["generated"], index["stems"]): list(s["generated"]) for s in index["settings"]
            if s["kind"] == "arrangement"}


def _n_files(folder: Path) -> int:
    return sum(1 for _ in folder.glob("*.wav")) if folder.is_dir() else 0


def _d(row: FadRow | None) -> dict[str, Any] | None:
    return None if row is None else row.as_dict()


def fad_tables(table: FadTable, root: Path, index: dict[str, Any], evaluate: EvaluateParams, heldout: Path | None,
               shuffled: Path) -> dict[str, Any]:
    """Tables 1-3 with floor / floor_heldout / ceiling / shuffled rows and intervals (see the module docstring)."""
    stems, paper, combos = index["stems"], load_paper_results(), arrangement_combos(index)
    settings = {s["name"]: s for s in index["settings"]}
    un = root / (index.get("untrained") or {}).get("dir", "untrained")
    has_un = index.get("untrained") is not None and un.is_dir()
    tgt, opt = root / "target", {"required": False}

    def halves(folder: Path, what: str) -> FadRow | None:
        return table.fad(folder, folder, what, part_a="even", part_b="odd", required=False)

    # rows are computed grouped by reference folder, so FadTable reuses its resampled statistics
    t1: dict[str, Any] = {"paper": paper["table1_total_generation_fad"]}
    key = "audio_cond" if index["model"]["conditional"] else "uncond"
    texts = {n: s for n, s in settings.items() if n.startswith("text_")}
    if "total" in settings:
        t1[key] = _d(table.fad(root / "total/mix", tgt / "mix", "table1/mix"))
        t1["shuffled"] = {"mix": _d(table.fad(shuffled / "total/mix", tgt / "mix", "shuffled/mix", **opt))}
    if texts:
        t1["text"] = {n: _d(table.fad(root / n / "mix", tgt / "mix", f"table1/{n}")) for n in texts}
    t1["ceiling"] = None
    if has_un:
        t1["ceiling"] = {}
        if "total" in settings:
            t1["ceiling"]["mix"] = _d(table.fad(un / "total/mix", tgt / "mix", "ceiling/mix", **opt))
        if texts:
            t1["ceiling"]["text"] = {n: _d(table.fad(un / n / "mix", tgt / "mix", f"ceiling/{n}", **opt))
                                     for n in texts}
    if "total" in settings:
        t1["per_stem"] = {}
        for s in stems:
            t1["per_stem"][s] = _d(table.fad(root / "total" / s, tgt / s, f"table1/{s}"))
            if has_un:
                t1["ceiling"].setdefault("per_stem", {})[s] = _d(table.fad(un / "total" / s, tgt / s, f"ceiling/{s}",
                                                                          **opt))
    t1["floor_heldout"] = None if heldout is None else {
        "mix": _d(table.fad(heldout / "mix", tgt / "mix", "floor_heldout/mix", **opt)),
        "per_stem": {s: _d(table.fad(heldout / s, tgt / s, f"floor_heldout/{s}", **opt)) for s in stems}}
    t1["floor"] = {"mix": _d(halves(tgt / "mix", "floor/mix")),
                   "per_stem": {s: _d(halves(tgt / s, f"floor/{s}")) for s in stems}}
    return {"table1": t1, "table2": _table2(table, root, un if has_un else None, evaluate, texts, paper),
            "table3": _table3(table, root, un if has_un else None, heldout, shuffled, combos, paper)}


def _table3(table: FadTable, root: Path, un: Path | None, heldout: Path | None, shuffled: Path,
            combos: dict[str, list[str]], paper: dict[str, Any]) -> dict[str, Any] | None:
    if not combos:
        return None
    tgt, opt, names = root / "target", {"required": False}, list(combos)
    pc, p3 = paper["table3_arrangement_fad"]["combinations"], paper["table3_arrangement_fad"]
    rows: dict[str, dict[str, dict[str, FadRow | None]]] = {"trained": {"mixture": {}, "stems": {}}, "shuffled": {
        "mixture": {}}} | ({"untrained": {"mixture": {}, "stems": {}}} if un is not None else {}) | (
        {"real": {"mixture": {}, "stems": {}}} if heldout is not None else {})
    for c in names:  # grouped by reference folder (see fad_tables)
        rows["trained"]["mixture"][c] = table.fad(root / f"arrange_{c}/mix", tgt / "mix", f"table3/mixture/{c}")
        rows["shuffled"]["mixture"][c] = table.fad(shuffled / f"arrange_{c}/mix", tgt / "mix",
                                                   f"shuffled/mixture/{c}", **opt)
        if un is not None:
            rows["untrained"]["mixture"][c] = table.fad(un / f"arrange_{c}/mix", tgt / "mix", f"ceiling/mixture/{c}",
                                                        **opt)
    if heldout is not None:
        real_mix = table.fad(heldout / "mix", tgt / "mix", "floor_heldout/mix", **opt)
        rows["real"]["mixture"] = {c: real_mix for c in names}
    floor_stems = {}
    for c in names:
        rows["trained"]["stems"][c] = table.fad(root / f"arrange_{c}/sum", tgt / f"sum_{c}", f"table3/stems/{c}")
        if un is not None:
            rows["untrained"]["stems"][c] = table.fad(un / f"arrange_{c}/sum", tgt / f"sum_{c}", f"ceiling/stems/{c}",
                                                      **opt)
        if heldout is not None:
            rows["real"]["stems"][c] = table.fad(heldout / f"sum_{c}", tgt / f"sum_{c}", f"floor_heldout/sum_{c}",
                                                 **opt)
        floor_stems[c] = table.fad(tgt / f"sum_{c}", tgt / f"sum_{c}", f"floor/sum_{c}", part_a="even", part_b="odd",
                                   **opt)
    floor_mix = table.fad(tgt / "mix", tgt / "mix", "floor/mix", part_a="even", part_b="odd", **opt)
    return {
        "combinations": names,
        "mixture": {c: _d(r) for c, r in rows["trained"]["mixture"].items()},
        "stems": {c: _d(r) for c, r in rows["trained"]["stems"].items()},
        "floor": {"mixture": _d(floor_mix), "stems": {c: _d(r) for c, r in floor_stems.items()}},
        "floor_heldout": None if "real" not in rows else {
            "mixture": _d(rows["real"]["mixture"][names[0]]),
            "stems": {c: _d(r) for c, r in rows["real"]["stems"].items()}},
        "ceiling": None if "untrained" not in rows else {p: {c: _d(r) for c, r in rows["untrained"][p].items()}
                                                         for p in ("mixture", "stems")},
        "shuffled": {"mixture": {c: _d(r) for c, r in rows["shuffled"]["mixture"].items()}},
        "mean": {p: {src: mean_row(list(r[p].values())) for src, r in rows.items() if p in r}
                 for p in ("mixture", "stems")},
        "paper": {proto: {c: p3[proto]["MT-MusicLDM"][pc.index(c)] for c in names if c in pc}
                  for proto in ("mixture", "stems")},
        "paper_msdm": {proto: {c: p3[proto]["MSDM"][pc.index(c)] for c in names if c in pc}
                       for proto in ("mixture", "stems")}}


def _table2(table: FadTable, root: Path, un: Path | None, evaluate: EvaluateParams, texts: dict[str, Any],
            paper: dict[str, Any]) -> dict[str, Any] | None:
    if not evaluate.text_references:
        return None
    by_prompt = {s["prompt"]: n for n, s in texts.items()}
    missing = sorted(set(evaluate.text_references) - set(by_prompt))
    if missing:
        table.notes.append(f"table2: no text setting in samples/ for prompts {missing} (sample.prompts)")
    refs = {p: Path(f) for p, f in evaluate.text_references.items()}
    rows = {p: by_prompt[p] for p in evaluate.text_references if p in by_prompt}
    return {"references": {p: str(f) for p, f in refs.items()}, "paper": paper["table2_text_conditioned_fad"],
            "fad": {p: {q: _d(table.fad(root / n / "mix", f, f"table2/{n}/{q}", recursive_b=True))
                        for q, f in refs.items()} for p, n in rows.items()},
            "floor": {q: _d(table.fad(f, f, f"table2/floor/{q}", part_a="even", part_b="odd", required=False,
                                      recursive_a=True, recursive_b=True)) for q, f in refs.items()},
            "ceiling": None if un is None else {
                p: {q: _d(table.fad(un / n / "mix", f, f"table2/ceiling/{n}/{q}", required=False, recursive_b=True))
                    for q, f in refs.items()} for p, n in rows.items()}}


# ---------------------------------------------------------------------------------------------------- transcriber F1


def _segment_meta(shards: Path, keys: set[str]) -> dict[str, dict[str, Any]]:
    """Shard json metadata (track, split, offset_seconds, ...) of the given sample keys, no audio decoded."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((Path(shards) / "test").glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json") and member.name[: -len(".json")] in keys:
                    out[member.name[: -len(".json")]] = json.load(tar.extractfile(member))  # type: ignore[arg-type]
    return out


def _stem_midi(track_dir: Path) -> dict[str, list[Path]]:
    """Slakh layout: stem class -> MIDI files of its rendered stems (`MIDI/SXX.mid` that exist)."""
    from mtmusicldm.data.slakh import classify_stem

    meta = yaml.safe_load((track_dir / "metadata.yaml").read_text())
    out: dict[str, list[Path]] = {}
    for sid, entry in (meta.get("stems") or {}).items():
        stem, midi = classify_stem(entry), track_dir / meta.get("midi_dir", "MIDI") / f"{sid}.mid"
        if stem is not None and entry.get("audio_rendered", True) and midi.is_file():
            out.setdefault(stem, []).append(midi)
    return out


def transcriber_f1(samples: ec.Samples, index: dict[str, Any], shards: Path, raw: Path | None,
                   notes: dict[str, Notes], n_boot: int, seed: int) -> dict[str, Any]:
    """basic-pitch's note F1 per pitched stem on the target segments, against the corpus MIDI (when it has MIDI)."""
    from pipeline.download import resolve_root

    if raw is None or not (Path(raw) / "source.json").is_file():
        return {"available": False, "reason": f"no corpus at {raw} (source.json): no ground-truth MIDI"}
    _, root = resolve_root(Path(raw))
    metas = _segment_meta(shards, {it["key"] for it in index["items"]})
    seconds = samples.seg / samples.sr
    f1: dict[str, list[float]] = {s: [] for s in index["stems"] if s not in ec.UNPITCHED}
    skipped: list[str] = []
    for it in index["items"]:
        meta = metas.get(it["key"])
        track_dir = None if meta is None else root / str(meta.get("split")) / str(meta.get("track"))
        if track_dir is None or not (track_dir / "metadata.yaml").is_file():
            skipped.append(f"{it['item']}: no Slakh-layout track folder with metadata.yaml")
            continue
        try:
            midi = _stem_midi(track_dir)
            for stem in f1:
                rel = f"target/{stem}/{it['item']}.wav"
                if stem in midi and rel in notes:
                    ref = midi_notes(midi[stem], float(meta["offset_seconds"]), seconds)
                    window = (F1_MARGIN_S, seconds - F1_MARGIN_S)
                    f1[stem].append(note_f1(ref.between(*window), notes[rel].between(*window)))
        except (ValueError, OSError, yaml.YAMLError) as e:
            skipped.append(f"{it['item']}: {e}")
    per_stem = {s: mean_interval(v, n_boot, seed).as_dict() | {"n": int(np.isfinite(v).sum()) if v else 0}
                for s, v in f1.items()}
    available = any(r["n"] for r in per_stem.values())
    return {"available": available, "per_stem": per_stem, "skipped": skipped,
            "reason": "" if available else "the corpus has no MIDI for these segments"}


# ---------------------------------------------------------------------------------------------------- stage


def coherence_metrics(samples: ec.Samples, index: dict[str, Any], evaluate: EvaluateParams, shards: Path,
                      raw: Path | None, partners: np.ndarray, distinct: bool) -> dict[str, Any]:
    """coherence.json: signal level, note level (with the transcriber's F1), skipped files."""
    combos, n = arrangement_combos(index), len(samples.items)
    if not evaluate.coherence:
        return {"enabled": False}
    if n < 2:
        return {"enabled": True, "skipped": f"need at least 2 items for mismatched pairs, got {n}"}
    out = {"enabled": True, "n": n, "seed": evaluate.seed, "bootstrap": evaluate.bootstrap,
           "shuffled": {"partner": "real stem of item partners[i, 1]", "distinct_tracks": distinct}}
    out |= ec.signal_coherence(samples, index, combos, partners, evaluate.bootstrap, evaluate.seed)
    if evaluate.notes == "off":
        out["notes"] = {"enabled": False}
    else:
        settings = ec.note_settings(index, combos, evaluate.notes)
        transcriber, known = BasicPitch(), {}
        targets = [f"target/{s}/{it}.wav" for s in index["stems"] if s not in ec.UNPITCHED for it in samples.items]
        ec.transcribe_all(samples, targets, transcriber, known)  # the given / real stems, and the F1's estimates
        out["notes"] = {"enabled": True, "mode": evaluate.notes, "settings": sorted(settings)}
        out["notes"] |= ec.note_coherence(samples, index, combos, partners, settings, transcriber, known,
                                          evaluate.bootstrap, evaluate.seed)
        out["notes"]["transcriber"] = transcriber_f1(samples, index, shards, raw, known, evaluate.bootstrap,
                                                     evaluate.seed)
    out["unreadable"] = dict(sorted(samples.bad.items()))
    return out


def run(stems: Sequence[str], evaluate: EvaluateParams, samples: Path, shards: Path, raw: Path | None,
        out_metrics: Path, out_report: Path, cache_dir: Path | None) -> dict[str, Any]:
    """Evaluate ``samples/`` and write metrics and the report (see the module docstring).

    Returns:
        The fad.json content.
    """
    samples = Path(samples)
    index = read_index(samples, stems)
    embedder = make_backbone(evaluate)
    table = FadTable(embedder, cache_dir, n_boot=evaluate.bootstrap, seed=evaluate.seed, skip_bad=True)
    combos = arrangement_combos(index)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(cache_dir) if cache_dir is not None else Path(tmp)
        heldout, why = write_heldout(shards, index, combos, base, evaluate.seed)
        if heldout is None:
            table.notes.append(f"floor_heldout not computed: {why}")
        shuffled, partners, distinct = write_shuffled(samples, index, combos, base, evaluate.seed)
        if not distinct:
            table.notes.append("shuffled: the test split has fewer tracks than stems; partners are other items")
        tables = fad_tables(table, samples, index, evaluate, heldout, shuffled)
    sr, seg = int(index["sample_rate"]), int(index["segment_samples"])
    untrained_dir = samples / ((index.get("untrained") or {}).get("dir") or "untrained")
    fad = {
        "backbone": embedder.name, "fingerprint": embedder.fingerprint(), "embedding_dim": int(embedder.dim),
        "comparable_to_paper": bool(embedder.comparable_to_paper), "sample_rate": sr,
        "segment_seconds": round(seg / sr, 6), "items": len(index["items"]), "bootstrap": evaluate.bootstrap,
        "seed": evaluate.seed,
        "n": {s["name"]: _n_files(samples / s["name"] / "mix") for s in index["settings"]},
        "n_untrained": {s["name"]: _n_files(untrained_dir / s["name"] / "mix") for s in index["settings"]
                        if (untrained_dir / s["name"]).is_dir()},
        "sampling": {k: index["sample"].get(k) for k in ("sampler", "steps", "eta", "count", "guidance_scale",
                                                           "arrangement_guidance_scale", "arrangement_conditioning")},
        "model": index["model"], **tables,
        "rank_deficient": sorted(set(table.rank_deficient)), "notes": table.notes,
    }
    coherence = coherence_metrics(ec.Samples(samples, index), index, evaluate, shards, raw, partners, distinct)
    summary = {"backbone": fad["backbone"], "comparable_to_paper": fad["comparable_to_paper"],
               "items": fad["items"], "bootstrap": evaluate.bootstrap, "rows": summary_rows(fad, coherence)}
    out_metrics = Path(out_metrics)
    write_json(out_metrics / "fad.json", fad)
    write_json(out_metrics / "coherence.json", coherence)
    write_json(out_metrics / "summary.json", summary)
    write_arrangement_csv(out_metrics / "arrangement.csv", tables["table3"])
    write_report(fad, coherence, summary, samples, index, Path(out_report))
    return fad


@stage_main
def main(argv: Sequence[str] | None = None) -> None:
    from pipeline._common import load_params, stage_parser

    parser = stage_parser("evaluate stage: samples/ -> FAD tables, coherence, report")
    parser.add_argument("--samples", type=Path, default=Path("samples"))
    parser.add_argument("--shards", type=Path, default=Path("data/shards"))
    parser.add_argument("--raw", type=Path, default=Path("data/raw"), help="the corpus (MIDI for the transcriber F1)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics"))
    parser.add_argument("--report", type=Path, default=Path("reports"))
    parser.add_argument("--cache", type=Path, default=Path("data/fad_cache"),
                        help="embedding / reference-set cache (outside DVC outs); 'none' disables it")
    args = parser.parse_args(argv)
    p = load_params(args.params)
    cache = None if str(args.cache).lower() == "none" else args.cache
    fad = run(p.stems, p.evaluate, args.samples, args.shards, args.raw, args.metrics, args.report, cache)
    t1 = fad["table1"]
    print(json.dumps({"backbone": fad["backbone"], "comparable_to_paper": fad["comparable_to_paper"],
                      "table1": {k: t1.get(k) for k in ("uncond", "audio_cond") if k in t1},
                      "metrics": str(args.metrics), "report": str(args.report / "evaluation.md")}))


if __name__ == "__main__":
    main()
