"""The evaluate stage on a hand-made samples/ folder (the sample stage's layout) whose ground truth is rendered MIDI
with a Slakh-layout corpus beside it: tables with intervals, reference rows, coherence, note level, report."""
from __future__ import annotations

import csv
import inspect
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml

from mtmusicldm import STEMS
from mtmusicldm.audio import save_audio
from mtmusicldm.config import EvaluateParams
from mtmusicldm.data.shards import ShardWriter, encode_sample
from mtmusicldm.diffusion.inpainting import arrangement_combinations, combination_name
from pipeline import evaluate as stage
from pipeline import report_figures
from tests.mtmusicldm.evaluation.midi_songs import render_song, write_midi

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SR, SEG, N_ITEMS, N_HELDOUT = 16000, 32000, 4, 4  # 2 s items: 2 offline-backbone blocks each
COMBOS = [combination_name(c) for c in arrangement_combinations(STEMS)]
NOISY = "D"  # arrange_D is white noise; arrange_B and total are copies of the targets
PARAMS = EvaluateParams(backbone="offline", vggish_weights=None, vggish_hub_dir=None, clap_checkpoint=None,
                        crepe_model="tiny", crepe_hop_s=0.08, text_references={}, coherence=True, notes="single",
                        bootstrap=30, seed=0)


def song(i: int) -> np.ndarray:
    """[4, SEG] rendered stems of item i (MIDI song i, see tests/mtmusicldm/evaluation/midi_songs.py)."""
    audio, _ = render_song(i, SEG / SR)
    return np.stack([audio[s] for s in STEMS])


def write_corpus(raw: Path) -> Path:
    """data/raw in the download stage's layout: source.json + Slakh-layout tracks with metadata.yaml and MIDI."""
    for i in range(N_ITEMS + N_HELDOUT):
        track = raw / "slakh" / "test" / f"Track{i:05d}"
        _, midi = render_song(i, SEG / SR)
        stems = {}
        for k, name in enumerate(STEMS):
            write_midi(midi[name], track / "MIDI" / f"S{k:02d}.mid")
            stems[f"S{k:02d}"] = {"audio_rendered": True, "is_drum": name == "drums", "inst_class": name,
                                  "program_num": {"bass": 33, "drums": 0, "guitar": 25, "piano": 0}[name]}
        (track / "metadata.yaml").write_text(yaml.safe_dump({"midi_dir": "MIDI", "stems": stems}))
    (raw / "source.json").write_text(json.dumps({"source": "synthetic", "root": "slakh"}))
    return raw


def write_samples(root: Path, *, untrained: bool = True, arrangement: bool = True) -> dict[str, Any]:
    """A samples/ folder in the sample stage's layout (see pipeline/sample.py) with an index.json."""
    rng = np.random.default_rng(1)
    items = [f"{i:05d}_Track{i:05d}_c0000_v00" for i in range(N_ITEMS)]
    settings = [{"name": "total", "kind": "total", "generated": list(STEMS), "prompt": None}]
    if arrangement:
        settings += [{"name": f"arrange_{combination_name(c)}", "kind": "arrangement", "generated": list(c),
                      "prompt": None} for c in arrangement_combinations(STEMS)]

    def put(rel: str, wav: np.ndarray) -> None:
        save_audio(root / rel, wav, SR, subtype="PCM_16")

    for i, item in enumerate(items):
        gt = song(i)
        for s, name in enumerate(STEMS):
            put(f"target/{name}/{item}.wav", gt[s])
        put(f"target/mix/{item}.wav", gt.sum(0))
        for c in COMBOS if arrangement else []:
            put(f"target/sum_{c}/{item}.wav", gt[[s for s, n in enumerate(STEMS) if n[0].upper() in c]].sum(0))
        for prefix in ["", "untrained/"] if untrained else [""]:
            for st in settings:
                noise = prefix or (st["name"] == f"arrange_{NOISY}")
                gen = (0.3 * rng.standard_normal(gt.shape)).astype(np.float32) if noise else gt
                out = gt.copy()
                for s, name in enumerate(STEMS):
                    if name in st["generated"]:
                        out[s] = gen[s]
                        put(f"{prefix}{st['name']}/{name}/{item}.wav", gen[s])
                put(f"{prefix}{st['name']}/mix/{item}.wav", np.clip(out.sum(0), -1, 1))
                if st["kind"] == "arrangement":
                    idx = [s for s, n in enumerate(STEMS) if n in st["generated"]]
                    put(f"{prefix}{st['name']}/sum/{item}.wav", np.clip(gen[idx].sum(0), -1, 1))
    index = {"format": "mtmusicldm-samples", "version": 1, "stems": list(STEMS), "sample_rate": SR,
             "segment_samples": SEG, "seed": 0,
             "sample": {"subtype": "PCM_16", "sampler": "ddim", "steps": 2, "eta": None, "count": N_ITEMS,
                        "guidance_scale": 2.0, "arrangement_guidance_scale": 1.0,
                        "arrangement_conditioning": "target_mix"},
             "model": {"dir": "models/ldm", "source": "test", "trained_steps": 0, "conditional": False},
             "items": [{"item": it, "key": it[6:], "track": it[6:15], "silent": [False] * 4} for it in items],
             "settings": settings, "untrained": {"dir": "untrained"} if untrained else None, "samples": []}
    (root / "index.json").write_text(json.dumps(index))
    return index


def write_shards(root: Path) -> Path:
    """Test shards holding the sampled items and N_HELDOUT other segments (offset 0 of each track)."""
    with ShardWriter(root / "test", "test", samples_per_shard=4) as writer:
        for i in range(N_ITEMS + N_HELDOUT):
            meta = {"track": f"Track{i:05d}", "split": "test", "silent": [False] * 4, "offset_seconds": 0.0}
            writer.write(encode_sample(f"Track{i:05d}_c0000_v00", song(i), meta, STEMS, SR, "flac"))
    return root


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("evaluate")
    write_samples(root / "samples")
    shards, raw = write_shards(root / "shards"), write_corpus(root / "raw")
    fad = stage.run(STEMS, PARAMS, root / "samples", shards, raw, root / "metrics", root / "reports", root / "cache")
    return {"root": root, "fad": fad, "shards": shards, "raw": raw}


def test_run_signature_takes_params_sections_and_paths() -> None:
    assert list(inspect.signature(stage.run).parameters) == ["stems", "evaluate", "samples", "shards", "raw",
                                                             "out_metrics", "out_report", "cache_dir"]


def _v(rec: dict[str, Any] | None) -> float:
    assert rec is not None and rec["low"] <= rec["value"] <= rec["high"], rec
    return rec["value"]


def test_fad_tables_with_intervals(evaluated: dict[str, Any]) -> None:
    root, fad = evaluated["root"], evaluated["fad"]
    assert json.loads((root / "metrics/fad.json").read_text()) == json.loads(json.dumps(fad))
    assert fad["backbone"] == "offline" and fad["comparable_to_paper"] is False and fad["bootstrap"] == 30
    assert fad["items"] == N_ITEMS and fad["segment_seconds"] == 2.0 and fad["n"]["total"] == N_ITEMS
    t1, t3 = fad["table1"], fad["table3"]
    assert _v(t1["uncond"]) < 1e-6 and t1["uncond"]["high"] < 1e-6  # total = the targets: paired, exact
    assert all(_v(v) < 1e-6 for v in t1["per_stem"].values()) and t1["uncond"]["n_a"] == N_ITEMS
    assert t1["paper"]["MT-MusicLDM (uncond)"] == 1.36
    assert t3["combinations"] == COMBOS and len(COMBOS) == 14
    assert _v(t3["mixture"]["B"]) < 1e-6 and _v(t3["mixture"][NOISY]) > 1.0 and _v(t3["stems"][NOISY]) > 1.0
    for proto in ("mixture", "stems"):
        assert all(_v(v) > _v(t3["mixture"]["B"]) for v in t3["ceiling"][proto].values())
    # references: the same counts as our rows (held-out, shuffled, untrained); halves have N/2
    assert t1["floor_heldout"]["mix"]["n_a"] == t1["ceiling"]["mix"]["n_a"] == t1["shuffled"]["mix"]["n_a"] == N_ITEMS
    assert t1["floor"]["mix"]["n_a"] == N_ITEMS // 2
    assert 0 < _v(t1["shuffled"]["mix"]) < _v(t1["ceiling"]["mix"])  # real stems of other songs: far from noise
    assert set(t3["shuffled"]["mixture"]) == set(COMBOS) and "stems" not in t3["shuffled"]
    mean = t3["mean"]["mixture"]
    assert set(mean) == {"trained", "untrained", "shuffled", "real"}
    assert mean["trained"]["high"] < mean["untrained"]["low"]
    assert mean["trained"]["value"] == pytest.approx(np.mean([t3["mixture"][c]["value"] for c in COMBOS]), abs=1e-5)
    assert "table3/mixture/B" in fad["rank_deficient"] and fad["table2"] is None


def test_summary_compares_trained_untrained_shuffled_real(evaluated: dict[str, Any]) -> None:
    summary = json.loads((evaluated["root"] / "metrics/summary.json").read_text())
    rows = {r["measure"]: r for r in summary["rows"]}
    total = rows["total generation FAD (mix)"]
    assert total["better"] == "lower" and total["trained_vs_untrained"] == "better"  # copies vs noise: apart
    assert rows["arrangement FAD, mixture protocol (mean of 14)"]["trained_vs_untrained"] == "better"
    rhythm = rows["arrangement: rhythmic coherence delta (mean)"]
    assert rhythm["better"] == "higher" and set(rhythm) >= {"trained", "untrained", "shuffled", "real"}
    assert "arrangement: onset alignment (mean)" in rows and "total: pitch-class agreement (mean)" in rows


def test_coherence_sources_and_intervals(evaluated: dict[str, Any]) -> None:
    coh = json.loads((evaluated["root"] / "metrics/coherence.json").read_text())
    assert coh["enabled"] and coh["n"] == N_ITEMS and set(coh["arrangement"]) == set(COMBOS)
    bd = coh["arrangement"]["BD"]
    assert set(bd) == {"bass", "drums"} and set(bd["bass"]) == {"generated", "real", "untrained", "shuffled"}
    m = bd["bass"]["real"]["rhythmic"]
    assert set(m) == {"matched", "mismatched", "delta", "z"} and m["delta"]["n"] == N_ITEMS
    assert m["delta"]["low"] <= m["delta"]["value"] <= m["delta"]["high"]
    assert bd["drums"]["real"]["harmonic"] is None
    assert bd["bass"]["generated"] == bd["bass"]["real"]  # arrange_BD is a copy of the targets
    real, shuf = coh["arrangement"]["B"]["bass"]["real"], coh["arrangement"]["B"]["bass"]["shuffled"]
    assert shuf["rhythmic"]["matched"]["value"] == pytest.approx(real["rhythmic"]["mismatched"]["value"], abs=0.2)
    assert set(coh["mean_delta"]["arrangement"]) == {"generated", "untrained", "shuffled", "real"}


def test_note_level_and_transcriber_f1(evaluated: dict[str, Any]) -> None:
    notes = json.loads((evaluated["root"] / "metrics/coherence.json").read_text())["notes"]
    assert notes["enabled"] and notes["settings"] == ["arrange_B", "arrange_D", "arrange_G", "arrange_P", "total"]
    assert set(notes["arrangement"]) == {"B", "D", "G", "P"}
    bass = notes["arrangement"]["B"]["bass"]
    assert bass["generated"] == bass["real"] and _v(bass["real"]["bass_root"]) > 0.7
    assert bass["real"]["pitch_class"]["value"] > bass["shuffled"]["pitch_class"]["value"]
    assert notes["arrangement"]["D"]["drums"]["real"]["pitch_class"] is None  # drums: onsets only
    assert _v(notes["arrangement"]["D"]["drums"]["real"]["onset_alignment"]) > 0.5
    f1 = notes["transcriber"]
    assert f1["available"] and set(f1["per_stem"]) == {"bass", "guitar", "piano"}
    assert f1["per_stem"]["bass"]["n"] == N_ITEMS and all(r["n"] >= 1 and _v(r) > 0.4 for r in f1["per_stem"].values())


def test_report_and_csv(evaluated: dict[str, Any]) -> None:
    root = evaluated["root"]
    text = (root / "reports/evaluation.md").read_text()
    assert "offline backbone: not comparable with published VGGish FAD" in text
    assert "## Trained vs untrained vs shuffled vs real" in text and "trained vs untrained" in text
    for number in ("1.36", "1.13", "6.55", "0.16", "1.42", "2.53", "4.90"):  # Table 1 and Table 3 paper values
        assert number in text, number
    assert "Transcriber note F1" in text and "| DGP |" in text and "bootstrap resamples" in text
    assert f"{N_ITEMS} per setting" in text and "2 s at 16000 Hz" in text and " [" in text
    for png in ("fad_arrangement.png", "spectrograms.png"):
        assert (root / "reports" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((root / "metrics/arrangement.csv").open()))
    assert [r["combination"] for r in rows] == COMBOS and list(rows[0]) == report_figures.CSV_COLUMNS
    assert float(rows[0]["paper_mixture"]) == 0.16 and all(r["shuffled_mixture"] for r in rows)


def test_bad_items_are_skipped_with_reasons(evaluated: dict[str, Any], tmp_path: Path) -> None:
    root = evaluated["root"]
    shutil.copytree(root / "samples", tmp_path / "samples")
    item = "00001_Track00001_c0000_v00"
    wav = np.zeros(SEG, np.float32)
    wav[7] = np.nan
    sf.write(str(tmp_path / f"samples/arrange_B/bass/{item}.wav"), wav, SR, subtype="FLOAT")
    save_audio(tmp_path / f"samples/arrange_G/mix/{item}.wav", np.zeros(100, np.float32), SR)  # too short
    params = PARAMS.replace(notes="off")
    fad = stage.run(STEMS, params, tmp_path / "samples", evaluated["shards"], None, tmp_path / "m", tmp_path / "r",
                    None)
    coh = json.loads((tmp_path / "m/coherence.json").read_text())
    assert coh["arrangement"]["B"]["bass"]["generated"]["rhythmic"]["delta"]["n"] == N_ITEMS - 1
    assert any(item in k and "NaN" in v for k, v in coh["unreadable"].items())
    assert fad["table3"]["mixture"]["G"]["n_a"] == N_ITEMS  # 100 samples still embed (padded to one block)
    text = (tmp_path / "r/evaluation.md").read_text()
    assert f"arrange_B/bass/{item}.wav: left out" in text


def test_cache_reuse_and_invalidation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mtmusicldm.evaluation import fad_table

    write_samples(tmp_path / "samples", untrained=False, arrangement=False)
    calls: list[str] = []
    real = fad_table.embed_dir

    def counting(directory: Path, *args: Any, **kwargs: Any) -> Any:
        out = real(directory, *args, **kwargs)
        if not out.cache_hit:
            calls.append(Path(directory).relative_to(tmp_path).as_posix())
        return out

    monkeypatch.setattr(fad_table, "embed_dir", counting)
    no_coh = PARAMS.replace(coherence=False)
    args = (tmp_path / "noshards", None, tmp_path / "m", tmp_path / "r", tmp_path / "cache")
    stage.run(STEMS, no_coh, tmp_path / "samples", *args)
    assert "samples/total/mix" in calls  # new folders: embedded once
    calls.clear()
    stage.run(STEMS, no_coh, tmp_path / "samples", *args)
    assert calls == []  # unchanged: every folder from the cache
    save_audio(next((tmp_path / "samples/total/mix").glob("*.wav")), np.zeros(SEG, np.float32), SR)
    fad = stage.run(STEMS, no_coh, tmp_path / "samples", *args)
    assert calls == ["samples/total/mix"] and fad["table1"]["uncond"]["value"] > 1e-3  # the changed folder only
    assert json.loads((tmp_path / "m/coherence.json").read_text()) == {"enabled": False}


def test_text_references_and_errors(tmp_path: Path) -> None:
    index = write_samples(tmp_path / "samples", untrained=False, arrangement=False)
    index["settings"].append({"name": "text_soft_music", "kind": "total", "generated": list(STEMS),
                              "prompt": "soft music"})
    shutil.copytree(tmp_path / "samples/total", tmp_path / "samples/text_soft_music")
    (tmp_path / "samples/index.json").write_text(json.dumps(index))
    refs = {"soft music": str(tmp_path / "samples/target/mix"), "energetic music": str(tmp_path / "samples/total/bass")}
    params = PARAMS.replace(coherence=False, text_references=refs)
    fad = stage.run(STEMS, params, tmp_path / "samples", tmp_path / "noshards", None, tmp_path / "m", tmp_path / "r",
                    None)
    t2 = fad["table2"]
    assert t2["fad"]["soft music"]["soft music"]["value"] < 1e-6 < t2["fad"]["soft music"]["energetic music"]["value"]
    assert set(t2["floor"]) == set(refs) and t2["ceiling"] is None and fad["table3"] is None
    assert fad["table1"]["text"]["text_soft_music"]["value"] < 1e-6 and fad["table1"]["ceiling"] is None
    assert fad["table1"]["floor_heldout"] is None and any("floor_heldout" in n for n in fad["notes"])
    text = (tmp_path / "r/evaluation.md").read_text()
    assert "Table 2" in text and (tmp_path / "r/fad_arrangement.png").is_file()
    assert (tmp_path / "m/arrangement.csv").read_text().strip() == ",".join(report_figures.CSV_COLUMNS)
    tiny = tmp_path / "tiny"  # fewer than 2 embeddings: one 0.5 s file gives one block
    write_samples(tiny, untrained=False, arrangement=False)
    for f in (tiny / "total/mix").glob("*.wav"):
        f.unlink()
    save_audio(tiny / "total/mix/a.wav", np.zeros(SR // 2, np.float32), SR)
    with pytest.raises(ValueError, match="need at least 2 embeddings"):
        stage.run(STEMS, params, tiny, tmp_path / "noshards", None, tmp_path / "m2", tmp_path / "r2", None)
    with pytest.raises(ValueError, match="stems"):
        stage.run(("bass",), PARAMS, tiny, tmp_path, None, tmp_path / "m3", tmp_path / "r3", None)
    with pytest.raises(FileNotFoundError, match="sample stage"):
        stage.run(STEMS, PARAMS, tmp_path / "nothing", tmp_path, None, tmp_path / "m3", tmp_path / "r3", None)


def test_make_backbone_maps_the_params() -> None:
    from mtmusicldm.config import ParamsError

    crepe = stage.make_backbone(PARAMS.replace(backbone="crepe", crepe_model="tiny", crepe_hop_s=0.16))
    assert (crepe.name, crepe.model, crepe.hop) == ("crepe", "tiny", 2560)
    assert stage.make_backbone(PARAMS).name == "offline"
    with pytest.raises(ParamsError, match="exactly one of vggish_weights"):
        stage.make_backbone(PARAMS.replace(backbone="vggish"))
    with pytest.raises(ParamsError, match="bootstrap"):
        stage.make_backbone(PARAMS.replace(bootstrap=5))
