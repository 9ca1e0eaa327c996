"""The evaluate stage on a hand-made samples/ folder (the sample stage's layout): tables, reference rows, report."""
from __future__ import annotations

import csv
import inspect
import json
import shutil
from dataclasses import replace
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mtmusicldm import STEMS
from mtmusicldm.audio import save_audio
from mtmusicldm.config import EvaluateParams
from mtmusicldm.data.shards import ShardWriter, encode_sample
from pipeline import evaluate as stage
from pipeline import report

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SR, SEG, N_ITEMS, N_HELDOUT = 16000, 32000, 4, 4  # 2 s items: 2 offline-backbone blocks each
COMBOS = ["".join(s[0].upper() for s in c) for k in (1, 2, 3) for c in combinations(STEMS, k)]
NOISY = "D"  # arrange_D is white noise; arrange_B and total are copies of the targets
PARAMS = EvaluateParams(backbone="offline", vggish_weights=None, clap_checkpoint=None, text_references={},
                        coherence=True, seed=0)


def song(i: int) -> np.ndarray:
    """[4, SEG] stems of item i: bass / guitar / piano tones at item-dependent pitches, drum clicks."""
    t = np.arange(SEG) / SR
    f = 55.0 * 2 ** (i / 12)
    drums = np.zeros(SEG)
    drums[:: SR // (2 + i % 3)] = 0.8
    drums = np.convolve(drums, np.exp(-np.arange(400) / 40.0))[:SEG]
    tones = [0.3 * np.sin(2 * np.pi * f * m * t) * (1 + 0.5 * np.sin(2 * np.pi * (1 + i) * t)) for m in (1, 4, 6)]
    return np.stack([tones[0], drums, tones[1], tones[2]]).astype(np.float32) * 0.5


def write_samples(root: Path, *, untrained: bool = True, arrangement: bool = True) -> dict[str, Any]:
    """A samples/ folder in the sample stage's layout (see pipeline/sample.py) with an index.json."""
    rng = np.random.default_rng(1)
    items = [f"{i:05d}_Track{i:05d}_c0000_v00" for i in range(N_ITEMS)]
    settings = [{"name": "total", "kind": "total", "generated": list(STEMS), "prompt": None}]
    if arrangement:
        settings += [{"name": f"arrange_{c}", "kind": "arrangement",
                      "generated": [s for s in STEMS if s[0].upper() in c], "prompt": None} for c in COMBOS]

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
    """Test shards holding the sampled items and N_HELDOUT other segments."""
    with ShardWriter(root / "test", "test", samples_per_shard=4) as writer:
        for i in range(N_ITEMS + N_HELDOUT):
            meta = {"track": f"Track{i:05d}", "split": "test", "silent": [False] * 4}
            writer.write(encode_sample(f"Track{i:05d}_c0000_v00", song(i), meta, STEMS, SR, "flac"))
    return root


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("evaluate")
    write_samples(root / "samples")
    shards = write_shards(root / "shards")
    fad = stage.run(STEMS, PARAMS, root / "samples", shards, root / "metrics", root / "reports", root / "cache")
    return {"root": root, "fad": fad, "shards": shards}


def test_run_signature_takes_params_sections_and_paths() -> None:
    assert list(inspect.signature(stage.run).parameters) == ["stems", "evaluate", "samples", "shards",
                                                             "out_metrics", "out_report", "cache_dir"]


def test_fad_tables(evaluated: dict[str, Any]) -> None:
    root, fad = evaluated["root"], evaluated["fad"]
    assert json.loads((root / "metrics/fad.json").read_text()) == json.loads(json.dumps(fad))
    assert fad["backbone"] == "offline" and fad["comparable_to_paper"] is False
    assert fad["items"] == N_ITEMS and fad["segment_seconds"] == 2.0 and fad["n"]["total"] == N_ITEMS
    assert fad["n_untrained"]["arrange_BD"] == N_ITEMS
    t1, t3 = fad["table1"], fad["table3"]
    assert t1["uncond"] < 1e-6 and all(v < 1e-6 for v in t1["per_stem"].values())  # total = the targets
    assert t1["paper"]["MT-MusicLDM (uncond)"] == 1.36
    assert t3["combinations"] == COMBOS and len(COMBOS) == 14
    assert t3["mixture"]["B"] < 1e-6 and t3["stems"]["B"] < 1e-6
    assert t3["mixture"][NOISY] > 1.0 and t3["stems"][NOISY] > 1.0  # noise is far from the targets
    for proto in ("mixture", "stems"):
        assert all(np.isfinite(v) for v in t3[proto].values())
        assert all(np.isfinite(v) and v > t3[proto]["B"] for v in t3["ceiling"][proto].values())
    assert t3["paper"]["stems"]["GP"] == 2.53 and t3["paper_msdm"]["mixture"]["B"] == 0.45
    # reference rows: real-vs-real floors are finite and well below the (noise) ceilings
    assert 0 < t1["floor"]["mix"] < t1["ceiling"]["mix"] and np.isfinite(t1["floor_heldout"]["mix"])
    assert set(t1["floor"]["per_stem"]) == set(STEMS) and set(t3["floor"]["stems"]) == set(COMBOS)
    assert all(v is not None and v < t3["ceiling"]["stems"][c] for c, v in t3["floor"]["stems"].items())
    assert set(t3["floor_heldout"]["stems"]) == set(COMBOS) and t3["floor"]["mixture"] == t1["floor"]["mix"]
    assert "table3/mixture/B" in fad["rank_deficient"]  # 12 embeddings for 80 dimensions: flagged, still computed
    assert fad["table2"] is None


def test_arrangement_csv(evaluated: dict[str, Any]) -> None:
    rows = list(csv.DictReader((evaluated["root"] / "metrics/arrangement.csv").open()))
    assert [r["combination"] for r in rows] == COMBOS
    assert list(rows[0])[:9] == ["combination", "mixture", "stems", "floor_mixture", "floor_stems",
                                 "ceiling_mixture", "ceiling_stems", "paper_mixture", "paper_stems"]
    for r in rows:
        assert all(np.isfinite(float(r[k])) for k in report.CSV_COLUMNS[1:]), r
    assert float(rows[0]["paper_mixture"]) == 0.16 and float(rows[COMBOS.index("DGP")]["paper_stems"]) == 1.42


def test_report(evaluated: dict[str, Any]) -> None:
    reports = evaluated["root"] / "reports"
    text = (reports / "evaluation.md").read_text()
    assert "offline backbone: not comparable with published VGGish FAD" in text
    for number in ("1.36", "1.13", "6.55", "0.16", "1.42", "2.53", "4.90"):  # Table 1 and Table 3 paper values
        assert number in text, number
    assert "floor: real vs real (halves)" in text and "ceiling: untrained model" in text and "| DGP |" in text
    assert f"{N_ITEMS} per setting" in text and "2 s at 16000 Hz" in text
    for png in ("fad_arrangement.png", "spectrograms.png"):
        assert (reports / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_coherence(evaluated: dict[str, Any]) -> None:
    coh = json.loads((evaluated["root"] / "metrics/coherence.json").read_text())
    assert coh["enabled"] and coh["n"] == N_ITEMS and set(coh["arrangement"]) == set(COMBOS)
    bd = coh["arrangement"]["BD"]
    assert set(bd) == {"bass", "drums"} and set(bd["bass"]) == {"generated", "real", "untrained"}
    assert set(bd["bass"]["real"]["rhythmic"]) == {"matched", "shuffled", "delta", "z", "n"}
    assert bd["drums"]["real"]["harmonic"] is None and bd["bass"]["real"]["harmonic"]["n"] == N_ITEMS
    assert bd["bass"]["generated"] == bd["bass"]["real"]  # arrange_BD is a copy of the targets
    assert set(coh["total"]) == set(STEMS) and set(coh["mean_delta"]) == {"arrangement", "total"}
    assert coh["mean_delta"]["total"]["real"]["harmonic"] > coh["mean_delta"]["total"]["untrained"]["harmonic"]


def test_cache_reuse_and_invalidation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path
    write_samples(work / "samples", untrained=False, arrangement=False)
    calls: list[str] = []
    real = stage.embed_dir

    def counting(directory: Path, *args: Any, **kwargs: Any) -> Any:
        out = real(directory, *args, **kwargs)
        if not out.cache_hit:
            calls.append(Path(directory).relative_to(work).as_posix())
        return out

    monkeypatch.setattr(stage, "embed_dir", counting)
    no_coh = replace(PARAMS, coherence=False)
    stage.run(STEMS, no_coh, work / "samples", work / "noshards", work / "m", work / "r", work / "cache")
    assert "samples/total/mix" in calls  # new folders: embedded once
    calls.clear()
    stage.run(STEMS, no_coh, work / "samples", work / "noshards", work / "m", work / "r", work / "cache")
    assert calls == []  # unchanged: every folder from the cache
    save_audio(next((work / "samples/total/mix").glob("*.wav")), np.zeros(SEG, np.float32), SR, subtype="PCM_16")
    fad = stage.run(STEMS, no_coh, work / "samples", work / "noshards", work / "m", work / "r", work / "cache")
    assert calls == ["samples/total/mix"] and fad["table1"]["uncond"] > 1e-3  # the changed folder only: not stale
    assert json.loads((work / "m/coherence.json").read_text()) == {"enabled": False}


def test_text_references_and_errors(tmp_path: Path) -> None:
    index = write_samples(tmp_path / "samples", untrained=False, arrangement=False)
    index["settings"].append({"name": "text_soft_music", "kind": "total", "generated": list(STEMS),
                              "prompt": "soft music"})
    shutil.copytree(tmp_path / "samples/total", tmp_path / "samples/text_soft_music")
    (tmp_path / "samples/index.json").write_text(json.dumps(index))
    refs = {"soft music": str(tmp_path / "samples/target/mix"), "energetic music": str(tmp_path / "samples/total/bass")}
    params = replace(PARAMS, coherence=False, text_references=refs)
    fad = stage.run(STEMS, params, tmp_path / "samples", tmp_path / "noshards", tmp_path / "m", tmp_path / "r", None)
    t2 = fad["table2"]
    assert t2["fad"]["soft music"]["soft music"] < 1e-6 < t2["fad"]["soft music"]["energetic music"]
    assert set(t2["floor"]) == set(refs) and t2["ceiling"] is None and fad["table3"] is None
    assert fad["table1"]["text"]["text_soft_music"] < 1e-6 and fad["table1"]["ceiling"] is None
    assert fad["table1"]["floor_heldout"] is None and any("floor_heldout" in n for n in fad["notes"])
    text = (tmp_path / "r/evaluation.md").read_text()
    assert "Table 2" in text and "4.320" in text and (tmp_path / "r/fad_arrangement.png").is_file()
    assert (tmp_path / "m/arrangement.csv").read_text().strip() == ",".join(report.CSV_COLUMNS)
    # fewer than 2 embeddings: one 2 s item per set gives 2 blocks; a 0.5 s one gives 1
    tiny = tmp_path / "tiny"
    write_samples(tiny, untrained=False, arrangement=False)
    for f in (tiny / "total/mix").glob("*.wav"):
        f.unlink()
    save_audio(tiny / "total/mix/a.wav", np.zeros(SR // 2, np.float32), SR)
    with pytest.raises(ValueError, match="need at least 2 embeddings"):
        stage.run(STEMS, params, tiny, tmp_path / "noshards", tmp_path / "m2", tmp_path / "r2", None)
    with pytest.raises(ValueError, match="stems"):
        stage.run(("bass",), PARAMS, tiny, tmp_path, tmp_path / "m3", tmp_path / "r3", None)
    with pytest.raises(FileNotFoundError, match="sample stage"):
        stage.run(STEMS, PARAMS, tmp_path / "nothing", tmp_path, tmp_path / "m3", tmp_path / "r3", None)
