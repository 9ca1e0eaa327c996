import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mtmusicldm import STEMS
from mtmusicldm.data.shards import iter_samples, list_shards
from pipeline import download, prepare
from tests.pipeline.conftest import tiny_params


def _hashes(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


def _run(p, raw, out, **kw):
    return prepare.run(p.seed, p.stems, p.audio, p.data, p.prepare, raw, out, **kw)


def test_prepare_writes_splits_report_and_is_deterministic(tiny, tiny_corpus, tmp_path):
    report = _run(tiny, tiny_corpus, tmp_path / "a")
    assert set(report["splits"]) == {"train", "validation", "test"}
    assert report["segment_samples"] == 10240 and report["stems"] == list(STEMS)
    for split, s in report["splits"].items():
        assert s["tracks"] == (2 if split == "train" else 1)
        samples = list(iter_samples(list_shards(tmp_path / "a" / split), STEMS))
        assert len(samples) == s["segments"] > 0
        for smp in samples:
            assert smp.audio.shape == (4, 10240) and smp.meta["split"] == split
            assert smp.meta["sample_rate"] == 16000 and smp.meta["source_sample_rate"] == 44100
            if split != "train":
                assert smp.meta["offset_samples"] % 10240 == 0  # fixed grid
    train = list(iter_samples(list_shards(tmp_path / "a" / "train"), STEMS))
    assert {s.meta["view"] for s in train} == {0, 1}  # two shifted views per chunk
    assert json.loads((tmp_path / "a" / "report.json").read_text()) == report
    _run(tiny, tiny_corpus, tmp_path / "b")
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")
    # parallel workers give the same bytes
    _run(tiny.replace(prepare=tiny.prepare.replace(workers=2)), tiny_corpus, tmp_path / "c")
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "c")


def test_segments_equal_resampled_stems(tiny, tiny_corpus, tmp_path):
    """The first test segment is the 16 kHz sum of its class's stems, starting at 0."""
    from mtmusicldm.data.slakh import load_track, scan_source

    _run(tiny, tiny_corpus, tmp_path / "s")
    first = next(iter_samples(list_shards(tmp_path / "s" / "test"), STEMS))
    source, root = download.resolve_root(tiny_corpus)
    tracks, _ = scan_source(source, root)
    src = next(t for t in tracks if t.track_id == first.meta["track"])
    ref = load_track(src, 16000).audio[:, :10240]
    np.testing.assert_allclose(first.audio, ref, atol=2e-6 * max(1.0, first.meta["stem_gain"]))


def test_bad_tracks_are_reported_and_the_rest_processed(tiny, tiny_corpus, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_corpus, raw)
    _, root = download.resolve_root(raw)
    train = sorted((root / "train").iterdir())
    corrupt = root / "train" / "Track09998"
    shutil.copytree(train[0], corrupt)
    stem = sorted((corrupt / "stems").glob("*.flac"))[0]
    stem.write_bytes(stem.read_bytes()[: len(stem.read_bytes()) // 3])  # truncated FLAC
    nometa = root / "train" / "Track09999"
    shutil.copytree(train[1], nometa)
    (nometa / "metadata.yaml").unlink()
    report = _run(tiny, raw, tmp_path / "out")
    reasons = {s["track"]: s["reason"] for s in report["skipped"]}
    assert "metadata" in reasons["Track09999"]
    assert "Track09998" in reasons and ("truncat" in reasons["Track09998"] or "corrupt" in reasons["Track09998"])
    assert report["splits"]["train"]["tracks"] == 2  # the good ones


def test_short_tracks_are_skipped_with_reason(tiny, tiny_corpus, tmp_path):
    p = tiny.replace(audio=tiny.audio.replace(segment_samples=5120 * 9))  # 2.88 s: longer than some tracks
    report = _run(p, tiny_corpus, tmp_path / "o")
    short = [s for s in report["skipped"] if "shorter than one segment" in s["reason"]]
    kept = sum(s["tracks"] for s in report["splits"].values())
    assert short and kept + len(short) == 4


def test_failure_leaves_no_partial_output(tiny, tiny_corpus, tmp_path, monkeypatch):
    out = tmp_path / "shards"

    def boom(*a, **k):
        raise RuntimeError("killed mid-way")

    monkeypatch.setattr(prepare, "encode_sample", boom)
    with pytest.raises(RuntimeError):
        _run(tiny, tiny_corpus, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []
