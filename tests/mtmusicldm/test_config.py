import copy
import typing
from pathlib import Path

import pytest
import yaml

from mtmusicldm import STEMS
from mtmusicldm.codec.build import VAE_SOURCES, VOCODERS
from mtmusicldm.config import CodecParams, DataParams, ParamsError, SampleParams, params_from_dict, params_to_dict
from mtmusicldm.data.slakh import SCANNERS
from mtmusicldm.diffusion.inpainting import NoiseMode
from mtmusicldm.diffusion.samplers import SAMPLERS
from mtmusicldm.evaluation.base import EmbedderName
from mtmusicldm.evaluation.embedders import EMBEDDERS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load((ROOT / "profiles" / "embedded.yaml").read_text())


def test_profiles_load_and_params_is_a_profile(raw):
    for name in ("embedded", "paper", "cpu-hour"):
        p = params_from_dict(yaml.safe_load((ROOT / "profiles" / f"{name}.yaml").read_text()))
        assert p.stems == STEMS
    paper = params_from_dict(yaml.safe_load((ROOT / "profiles" / "paper.yaml").read_text()))
    assert paper.audio.segment_samples == 163840 and paper.audio.mel_frames == 1024
    assert paper.data.source == "slakh"
    # The committed params.yaml is one of the profiles (the embedded default).
    assert yaml.safe_load((ROOT / "params.yaml").read_text()) == raw
    # cpu-hour is the embedded default trained longer, nothing else (so the learning curve describes both)
    longer = yaml.safe_load((ROOT / "profiles" / "cpu-hour.yaml").read_text())
    assert longer["train"]["steps"] >= 5 * raw["train"]["steps"]
    for section in (longer, raw):
        section["train"].pop("steps"), section["train"].pop("checkpoint_every")
    assert longer == raw


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
    (lambda r: r["sample"].update(sampler="heun"), "sample.sampler"),
    (lambda r: r["evaluate"].update(backbone="pann"), "evaluate.backbone"),
    (lambda r: r["prepare"].update(train_views=True), "prepare.train_views"),
    (lambda r: r["train"].update(lr=float("nan")), "train.lr"),
    (lambda r: r["model"].update(channel_mult=[1, "2"]), "model.channel_mult[1]"),
    (lambda r: r["synthetic"]["tracks"].update({1: 2}), "synthetic.tracks.<key>"),
    (lambda r: r.update(audio=[16000]), "audio"),
])
def test_bad_params_name_the_key(raw, mutate, key):
    bad = copy.deepcopy(raw)
    mutate(bad)
    with pytest.raises(ParamsError) as exc:
        params_from_dict(bad)
    assert exc.value.key == key
    assert str(exc.value).startswith(f"params: {key}:") and "\n" not in str(exc.value)


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["prepare"].update(train_views=0), "params: prepare.train_views: must be in [1, 64], got 0"),
    (lambda r: r["train"].update(lr=1.0), "params: train.lr: must be in (0.0, 1.0), got 1.0"),
    (lambda r: r["evaluate"].update(bootstrap=5), "params: evaluate.bootstrap: must be >= 10, got 5"),
    (lambda r: r["data"].update(silence_threshold_db="1e-4"), "params: data.silence_threshold_db: expected a number, "
                                                              "got the string '1e-4' (write floats as 1.0e-4)"),
    (lambda r: r["train"].update(splits="train"), "params: train.splits: expected a list, got 'train'"),
    (lambda r: r["prepare"].update(typo_key=3), "params: prepare.typo_key: unknown key (allowed here: train_views, "
                                                "max_shift_fraction, max_track_seconds, samples_per_shard, "
                                                "audio_format, workers)"),
    (lambda r: r["sample"].update(total=False, arrangement=False, prompts=[]),
     "params: sample.total: nothing to sample: total, arrangement and prompts are all off"),
])
def test_messages_say_what_is_allowed(raw, mutate, message):
    bad = copy.deepcopy(raw)
    mutate(bad)
    with pytest.raises(ParamsError) as exc:
        params_from_dict(bad)
    assert str(exc.value) == message


def test_lists_are_stored_as_tuples(raw):
    p = params_from_dict(raw)
    assert p.model.channel_mult == tuple(raw["model"]["channel_mult"]) and isinstance(p.train.splits, tuple)
    assert p.synthetic.programs["bass"] == tuple(raw["synthetic"]["programs"]["bass"])


def test_replace_is_a_validated_copy(raw):
    p = params_from_dict(raw)
    faster = p.train.replace(lr=1.0e-3)
    assert faster.lr == 1.0e-3 and p.train.lr == raw["train"]["lr"] and faster.steps == p.train.steps
    assert p.replace(train=faster).train == faster and p.sample.replace(prompts=["a"]).prompts == ("a",)
    with pytest.raises(ParamsError, match=r"^params: train\.lr: must be in \(0\.0, 1\.0\), got 2\.0$"):
        p.train.replace(lr=2.0)
    with pytest.raises(ParamsError, match=r"^params: sample\.total: nothing to sample"):
        p.sample.replace(total=False, arrangement=False, prompts=())
    with pytest.raises(ParamsError, match=r"^params: model\.channel_mult: 6 levels"):  # cross-section rules too
        p.replace(model=p.model.replace(channel_mult=(1,) * 6))
    with pytest.raises(ParamsError, match=r"^params: train\.no_such_field: unknown key"):
        p.train.replace(no_such_field=1)


def test_params_are_frozen(raw):
    p = params_from_dict(raw)
    with pytest.raises(Exception):
        p.prepare.train_views = 3  # type: ignore[misc]


def _choices(cls: type, field: str) -> set[str]:
    return set(typing.get_args(typing.get_type_hints(cls)[field]))


def test_every_registry_key_is_accepted_and_only_those(raw):
    """One source per registry: params accept exactly the registered samplers, backbones and corpus sources."""
    for name in SAMPLERS:
        params_from_dict(copy.deepcopy(raw) | {"sample": raw["sample"] | {"sampler": name}})
    for name in EMBEDDERS:
        evaluate = raw["evaluate"] | {"backbone": name, "vggish_weights": "w.pth", "clap_checkpoint": "c.pt"}
        params_from_dict(copy.deepcopy(raw) | {"evaluate": evaluate})
    assert _choices(DataParams, "source") == set(SCANNERS)
    bad = copy.deepcopy(raw)
    bad["sample"]["sampler"] = "heun"
    with pytest.raises(ParamsError, match=str(sorted(SAMPLERS)).replace("[", r"\[")):
        params_from_dict(bad)


def test_literals_match_their_registries():
    """Enumerations kept as Literals (their code is an if-chain or lives elsewhere) are tested against it."""
    assert _choices(CodecParams, "kind") == set(VAE_SOURCES)
    assert _choices(CodecParams, "vocoder") == set(VOCODERS)
    assert _choices(SampleParams, "noise_mode") == set(typing.get_args(NoiseMode))
    assert set(typing.get_args(EmbedderName)) == set(EMBEDDERS)
