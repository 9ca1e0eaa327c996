"""`mtmusicldm generate` / `mtmusicldm arrange`: happy paths on a tiny model directory and every CLI error."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import cli
from mtmusicldm import STEMS
from mtmusicldm.audio import load_audio
from tests.tiny_models import SEG, SR, TINY_SAMPLER, make_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("model"), vocoder="hifigan")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """bass: 1.5 s stereo 44.1 kHz FLAC; drums: 1.5 s mono 16 kHz WAV; broken.wav: not audio."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * 44100)) / 44100
    bass = 0.3 * np.stack([np.sin(2 * np.pi * 55 * t), np.sin(2 * np.pi * 110 * t)], axis=1)
    sf.write(str(d / "bass.flac"), bass.astype(np.float32), 44100, subtype="PCM_24")
    sf.write(str(d / "drums.wav"), (0.2 * rng.standard_normal(int(1.5 * SR))).astype(np.float32), SR,
             subtype="FLOAT")
    (d / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    return {"bass": d / "bass.flac", "drums": d / "drums.wav", "broken": d / "broken.wav"}


def run(*argv: str | Path) -> None:
    cli.main([str(a) for a in argv])


def test_arrange_writes_five_files_of_input_length(model_dir: Path, inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "arr"
    run("arrange", "--model", model_dir, "--given", f"bass={inputs['bass']}", "--given", f"drums={inputs['drums']}",
        "--out", out, "--steps", "2", "--seed", "3")
    n = int(1.5 * SR)
    for name in (*STEMS, "mix"):
        info = sf.info(str(out / f"{name}.wav"))
        assert (info.samplerate, info.channels, info.frames) == (SR, 1, n), name
    for stem in ("bass", "drums"):  # given stems: bit-identical to the 16 kHz mono input
        assert np.array_equal(sf.read(str(out / f"{stem}.wav"), dtype="float32")[0], load_audio(inputs[stem], SR))
    for stem in ("guitar", "piano"):
        assert np.abs(sf.read(str(out / f"{stem}.wav"))[0]).max() > 1e-4
    stems = np.stack([sf.read(str(out / f"{s}.wav"), dtype="float32")[0] for s in STEMS])
    np.testing.assert_allclose(sf.read(str(out / "mix.wav"), dtype="float32")[0], np.clip(stems.sum(0), -1, 1),
                               atol=1e-6)
    record = json.loads((out / "arrangement.json").read_text())
    assert record["generated"] == ["guitar", "piano"] and record["steps"] == 2 and record["seed"] == 3
    assert record["eta"] == 1.0 and record["guidance_scale"] == 1.0 and record["silent"] == []


def test_arrange_explicit_generate_leaves_other_stems_silent(model_dir: Path, inputs: dict[str, Path],
                                                             tmp_path: Path) -> None:
    out = tmp_path / "arr"
    run("arrange", "--model", model_dir, "--given", f"drums={inputs['drums']}", "--generate", "piano",
        "--out", out, "--steps", "2", "--sampler", "dpmpp_2m")
    assert np.abs(sf.read(str(out / "bass.wav"))[0]).max() == 0.0
    assert np.abs(sf.read(str(out / "piano.wav"))[0]).max() > 1e-4
    assert json.loads((out / "arrangement.json").read_text())["silent"] == ["bass", "guitar"]


def test_generate_count_and_long_form(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen"
    run("generate", "--model", model_dir, "--out", out, "--count", "2", "--seconds", "1.0", "--steps", "2")
    for k in range(2):
        for name in (*STEMS, "mix"):
            assert sf.info(str(out / f"sample_{k}" / f"{name}.wav")).frames == SR
    record = json.loads((out / "generation.json").read_text())
    assert record["long_form"] is True and record["count"] == 2 and record["samples"] == SR
    assert record["files"]["sample_1"]["mix"] == "sample_1/mix.wav"
    one = tmp_path / "one"
    run("generate", "--model", model_dir, "--out", one, "--steps", "2")  # count 1: files directly in --out
    assert sf.info(str(one / "mix.wav")).frames == SEG and not (one / "sample_0").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--given", "flute=IN_bass"], "unknown stem 'flute'"),
    (["--given", "bass"], "expected STEM=FILE"),
    (["--given", "bass=IN_bass", "--generate", "kazoo"], "unknown stem"),
    (["--given", "bass=IN_bass", "--generate", "bass"], "both --given and --generate"),
    (["--given", "bass=IN_bass", "--given", "bass=IN_drums"], "given twice"),
    ([f"--given={s}=IN_bass" for s in STEMS], "every stem is given"),
    ([], "nothing is given"),
    (["--given", "bass=IN_broken"], "broken.wav"),
    (["--given", "bass=IN_missing"], "missing.wav: file not found"),
    (["--given", "bass=IN_bass", "--prompt", "soft music"], "need a conditional model"),
    (["--given", "bass=IN_bass", "--guidance", "2.0"], "need a conditional model"),
    (["--given", "bass=IN_bass", "--steps", "0"], "--steps must be >= 1"),
])
def test_arrange_errors(model_dir: Path, inputs: dict[str, Path], tmp_path: Path, argv: list[str],
                        message: str) -> None:
    files = inputs | {"missing": inputs["bass"].with_name("missing.wav")}
    argv = [_fill(a, files) for a in argv]
    with pytest.raises(SystemExit, match=message):
        run("arrange", "--model", model_dir, "--out", tmp_path / "o", "--steps", "2", *argv)
    assert not (tmp_path / "o" / "mix.wav").exists()


def _fill(arg: str, files: dict[str, Path]) -> str:
    for k, v in files.items():
        arg = arg.replace(f"IN_{k}", str(v))
    return arg


def test_missing_model_dir_and_generate_errors(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="model directory .*nowhere does not exist"):
        run("generate", "--model", tmp_path / "nowhere", "--out", tmp_path / "o")
    with pytest.raises(SystemExit, match="need a conditional model"):
        run("generate", "--model", model_dir, "--out", tmp_path / "o", "--prompt", "soft music", "--steps", "2")
    with pytest.raises(SystemExit, match="--count must be >= 1"):
        run("generate", "--model", model_dir, "--out", tmp_path / "o", "--count", "0")
    with pytest.raises(SystemExit):  # argparse: --prompt and --reference are exclusive
        run("generate", "--model", model_dir, "--out", tmp_path / "o", "--prompt", "a", "--reference", "b.wav")


def test_sampler_defaults_to_the_models_recommendation(model_dir: Path, tmp_path: Path) -> None:
    run("generate", "--model", model_dir, "--out", tmp_path / "rec")
    record = json.loads((tmp_path / "rec" / "generation.json").read_text())
    assert (record["sampler"], record["steps"]) == (TINY_SAMPLER.name, TINY_SAMPLER.steps)
    run("generate", "--model", model_dir, "--out", tmp_path / "own", "--sampler", "euler")
    record = json.loads((tmp_path / "own" / "generation.json").read_text())
    assert (record["sampler"], record["steps"], record["eta"]) == ("euler", TINY_SAMPLER.steps, None)


def test_sampler_choices_come_from_the_registry(model_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run("generate", "--model", model_dir, "--out", tmp_path / "o", "--sampler", "nope")
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "dpmpp_2m_sde" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from mtmusicldm import __version__

    with pytest.raises(SystemExit) as exc:
        run("--version")
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"mtmusicldm {__version__}"


@pytest.fixture
def no_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output checks must come before any compute: sampling fails the test."""
    import cli.arrange
    import cli.generate

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("sampled before checking --out")

    monkeypatch.setattr(cli.arrange, "arrange", refuse)
    monkeypatch.setattr(cli.generate, "generate", refuse)


def test_arrange_never_overwrites_a_given_file(model_dir: Path, tmp_path: Path, no_sampling: None) -> None:
    """--given DIR/bass.wav --out DIR: the user's original (6 channels, 96 kHz) must survive untouched."""
    wav = 0.1 * np.random.default_rng(1).standard_normal((9600, 6)).astype(np.float32)
    sf.write(str(tmp_path / "bass.wav"), wav, 96000, subtype="PCM_24")
    original = (tmp_path / "bass.wav").read_bytes()
    with pytest.raises(SystemExit, match=rf"writing bass.wav would overwrite the input {tmp_path / 'bass.wav'}"):
        run("arrange", "--model", model_dir, "--given", f"bass={tmp_path / 'bass.wav'}", "--out", tmp_path)
    (tmp_path / "arrangement.json").write_text("{}")  # even in an earlier output folder of ours
    with pytest.raises(SystemExit, match="would overwrite the input"):
        run("arrange", "--model", model_dir, "--given", f"bass={tmp_path / 'bass.wav'}", "--out", tmp_path)
    assert (tmp_path / "bass.wav").read_bytes() == original


@pytest.mark.parametrize(("out", "message"), [
    ("FILE", r"--out .*out.txt exists and is not a directory"),
    ("FOREIGN", r"--out .*foreign already holds piano.wav \(not an earlier output of this command\)"),
    ("/proc/mtmusicldm-out", r"--out /proc/mtmusicldm-out: /proc does not accept new files"),
])
def test_outputs_are_checked_before_any_work(model_dir: Path, inputs: dict[str, Path], tmp_path: Path,
                                             no_sampling: None, out: str, message: str) -> None:
    (tmp_path / "out.txt").write_text("notes")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "piano.wav").write_bytes(b"the user's own piano")
    target = {"FILE": tmp_path / "out.txt", "FOREIGN": tmp_path / "foreign"}.get(out, Path(out))
    with pytest.raises(SystemExit, match=message):
        run("arrange", "--model", model_dir, "--given", f"bass={inputs['bass']}", "--out", target)
    with pytest.raises(SystemExit, match=message):
        run("generate", "--model", model_dir, "--out", target)
    assert (tmp_path / "foreign" / "piano.wav").read_bytes() == b"the user's own piano"


def test_generate_never_overwrites_the_reference(model_dir: Path, tmp_path: Path, no_sampling: None) -> None:
    (tmp_path / "mix.wav").write_bytes(b"reference")
    with pytest.raises(SystemExit, match="writing mix.wav would overwrite the input"):
        run("generate", "--model", model_dir, "--out", tmp_path, "--reference", tmp_path / "mix.wav")


def test_rerun_into_an_earlier_output_replaces_it(model_dir: Path, inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "again"
    for seed in ("1", "2"):
        run("arrange", "--model", model_dir, "--given", f"drums={inputs['drums']}", "--out", out, "--steps", "2",
            "--seed", seed)
    assert json.loads((out / "arrangement.json").read_text())["seed"] == 2


def test_arranged_stems_depend_on_the_given_file(model_dir: Path, inputs: dict[str, Path], tmp_path: Path) -> None:
    """End to end: same seed, another given bass file -> another generated piano (given stems are copied back
    whatever the model does, so only the generated ones show that arrangement used them)."""
    other = tmp_path / "other_bass.wav"
    sf.write(str(other), 0.3 * np.sin(2 * np.pi * 98 * np.arange(int(1.5 * SR)) / SR).astype(np.float32), SR)
    pianos = []
    for k, bass in enumerate((inputs["bass"], other)):
        run("arrange", "--model", model_dir, "--given", f"bass={bass}", "--given", f"drums={inputs['drums']}",
            "--generate", "piano", "--out", tmp_path / f"o{k}", "--steps", "4", "--seed", "5")
        pianos.append(sf.read(str(tmp_path / f"o{k}" / "piano.wav"), dtype="float32")[0])
    assert np.abs(pianos[0] - pianos[1]).max() > 1e-4
