import copy
from pathlib import Path

import pytest
import yaml

from mtmusicldm import STEMS
from mtmusicldm.config import ParamsError, params_from_dict, params_to_dict

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load((ROOT / "profiles" / "embedded.yaml").read_text())


def test_profiles_load_and_params_is_a_profile(raw):
    for name in ("embedded", "paper"):
        p = params_from_dict(yaml.safe_load((ROOT / "profiles" / f"{name}.yaml").read_text()))
        assert p.stems == STEMS
    paper = params_from_dict(yaml.safe_load((ROOT / "profiles" / "paper.yaml").read_text()))
    assert paper.audio.segment_samples == 163840 and paper.audio.mel_frames == 1024
    assert paper.data.source == "slakh"
    # The committed params.yaml is one of the profiles (the embedded default).
    assert yaml.safe_load((ROOT / "params.yaml").read_text()) == raw


def test_roundtrip(raw):
    assert params_to_dict(params_from_dict(raw)) == raw


@pytest.mark.parametrize("mutate, key", [
    (lambda r: r.update(extra=1), "extra"),
    (lambda r: r["prepare"].update(typo_key=3), "prepare.typo_key"),
    (lambda r: r["prepare"].pop("train_views"), "prepare.train_views"),
    (lambda r: r["prepare"].update(train_views="2"), "prepare.train_views"),
    (lambda r: r["prepare"].update(train_views=2.5), "prepare.train_views"),
    (lambda r: r["prepare"].update(train_views=0), "prepare.train_views"),
    (lambda r: r["data"].update(source="youtube"), "data.source"),
    (lambda r: r["data"].update(silence_threshold_db="1e-4"), "data.silence_threshold_db"),
    (lambda r: r["audio"].update(sample_rate=22050), "audio.sample_rate"),
    (lambda r: r["audio"].update(segment_samples=1000), "audio.segment_samples"),
    (lambda r: r.update(stems=["drums", "bass", "guitar", "piano"]), "stems"),
    (lambda r: r["synthetic"]["tracks"].pop("test"), "synthetic.tracks"),
    (lambda r: r["synthetic"].update(dropout_prob=1.5), "synthetic.dropout_prob"),
    (lambda r: r["synthetic"]["programs"].update(bass=[0, 33]), "synthetic.programs.bass"),
    (lambda r: r["synthetic"].update(renderer="fm"), "synthetic.renderer"),
    (lambda r: r["prepare"].update(audio_format="mp3"), "prepare.audio_format"),
    (lambda r: r["prepare"].update(max_shift_fraction=True), "prepare.max_shift_fraction"),
])
def test_bad_params_name_the_key(raw, mutate, key):
    bad = copy.deepcopy(raw)
    mutate(bad)
    with pytest.raises(ParamsError) as exc:
        params_from_dict(bad)
    assert exc.value.key == key
    assert str(exc.value).startswith(f"params: {key}:")


def test_params_are_frozen(raw):
    p = params_from_dict(raw)
    with pytest.raises(Exception):
        p.prepare.train_views = 3  # type: ignore[misc]
