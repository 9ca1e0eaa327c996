import hashlib

import numpy as np
import pytest

from mtmusicldm import STEMS
from mtmusicldm.data.shards import ShardWriter, decode_sample, encode_sample, iter_samples, list_shards


def _audio(seed: int, peak: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(4, 1600)).astype(np.float32)
    return x / np.abs(x).max() * peak


@pytest.mark.parametrize("fmt", ["flac", "npy"])
def test_encode_decode_roundtrip(fmt):
    audio = _audio(0)
    s = encode_sample("T1_c0000_v00", audio, {"track": "T1"}, STEMS, 16000, fmt)
    d = decode_sample(s, STEMS)
    assert d.meta["track"] == "T1"
    tol = 2.0 ** -22 if fmt == "flac" else 0.0
    np.testing.assert_allclose(d.audio, audio, atol=tol)


def test_loud_segment_is_scaled_not_clipped():
    audio = _audio(1, peak=2.7)  # e.g. two guitar stems summed
    s = encode_sample("k", audio, {}, STEMS, 16000, "flac")
    d = decode_sample(s, STEMS)
    assert d.meta["stem_gain"] > 2.7
    np.testing.assert_allclose(d.audio, audio, atol=3 * 2.7 * 2.0 ** -23)


def test_bad_inputs():
    with pytest.raises(ValueError, match="must not contain"):
        encode_sample("a.b", _audio(0), {}, STEMS, 16000, "npy")
    with pytest.raises(ValueError, match=r"\[S=4"):
        encode_sample("a", _audio(0)[:3], {}, STEMS, 16000, "npy")
    bad = _audio(0)
    bad[2, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        encode_sample("a", bad, {}, STEMS, 16000, "npy")
    s = encode_sample("a", _audio(0), {}, STEMS, 16000, "npy")
    del s["piano.npy"]
    with pytest.raises(ValueError, match="piano"):
        decode_sample(s, STEMS)


def _write(tmp, name):
    out = tmp / name
    with ShardWriter(out, "train", samples_per_shard=2) as w:
        for i in range(5):
            w.write(encode_sample(f"T{i}", _audio(i), {"i": i}, STEMS, 16000, "flac"))
    return out, w.shards


def test_writer_is_deterministic_and_readable(tmp_path):
    a, shards = _write(tmp_path, "a")
    b, _ = _write(tmp_path, "b")
    assert shards == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    for name in shards:
        ha = hashlib.sha256((a / name).read_bytes()).hexdigest()
        hb = hashlib.sha256((b / name).read_bytes()).hexdigest()
        assert ha == hb
    got = list(iter_samples(list_shards(a), STEMS))
    assert [s.meta["i"] for s in got] == list(range(5))
    assert not list(a.glob(".*tmp*"))


def test_writer_abort_leaves_no_partial_shard(tmp_path):
    out = tmp_path / "s"
    with pytest.raises(RuntimeError):
        with ShardWriter(out, "test", samples_per_shard=10) as w:
            w.write(encode_sample("T0", _audio(0), {}, STEMS, 16000, "npy"))
            raise RuntimeError("killed")
    assert list(out.iterdir()) == []
    with pytest.raises(FileNotFoundError, match=str(out)):
        list_shards(out)
