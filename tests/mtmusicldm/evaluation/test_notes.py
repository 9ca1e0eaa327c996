"""Note-level coherence: basic-pitch (ONNX) against rendered MIDI, the three metrics, MIDI windows, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtmusicldm.evaluation.notes import (
    BasicPitch,
    Notes,
    bass_root_agreement,
    drum_onsets,
    midi_notes,
    note_f1,
    onset_alignment,
    pitch_class_agreement,
)
from tests.mtmusicldm.evaluation.midi_songs import SR, render_song, write_midi

pytest.importorskip("onnxruntime")
PITCHED = ("bass", "guitar", "piano")
SECONDS = 4.0


def _ref(inst) -> Notes:  # noqa: ANN001 - pretty_midi.Instrument
    return Notes(*(np.array([getattr(n, k) for n in inst.notes]) for k in ("start", "end", "pitch")))


@pytest.fixture(scope="module")
def transcribed() -> dict[str, object]:
    bp = BasicPitch()
    songs = {seed: render_song(seed, SECONDS) for seed in (0, 5)}
    third = render_song(0, SECONDS, bass_offset=4)  # bass on the chord's third instead of its root
    wavs = [songs[s][0][n] for s in (0, 5) for n in PITCHED] + [third[0]["bass"]]
    notes = bp.transcribe(wavs, SR)
    est = {(s, n): notes[3 * k + j] for k, s in enumerate((0, 5)) for j, n in enumerate(PITCHED)}
    return {"bp": bp, "songs": songs, "est": est, "third": notes[-1]}


def test_transcriber_f1_on_rendered_midi(transcribed: dict[str, object]) -> None:
    songs, est = transcribed["songs"], transcribed["est"]
    for (seed, name), notes in est.items():
        ref = _ref(songs[seed][1][name]).between(0.1, SECONDS - 0.1)
        f1 = note_f1(ref, notes.between(0.1, SECONDS - 0.1))
        assert f1 >= 0.5, (seed, name, f1)
        shifted = Notes(notes.onsets + 0.2, notes.offsets + 0.2, notes.pitches).between(0.1, SECONDS - 0.1)
        assert note_f1(ref, shifted) < 0.3  # F1 looks at onsets: a 200 ms shift fails it
    assert np.isnan(note_f1(Notes.empty(), est[(0, "bass")])) and note_f1(_ref(songs[0][1]["bass"]), Notes.empty()) == 0


def test_metrics_tell_the_own_song_from_another(transcribed: dict[str, object]) -> None:
    songs, est = transcribed["songs"], transcribed["est"]
    ctx = Notes.concat([est[(0, "guitar")], est[(0, "piano")]])
    own, other, third = est[(0, "bass")], est[(5, "bass")], transcribed["third"]
    assert pitch_class_agreement(own, ctx, SECONDS) > 0.95 > pitch_class_agreement(other, ctx, SECONDS)
    assert bass_root_agreement(own, ctx, SECONDS) > 0.9
    assert bass_root_agreement(third, ctx, SECONDS) < 0.1 and bass_root_agreement(other, ctx, SECONDS) < 0.6
    drums = drum_onsets(songs[0][0]["drums"], SR)
    assert drums.size >= 8
    assert onset_alignment(own.onsets, drums) > 0.8 > 0.5 > onset_alignment(other.onsets, drums)


def test_metric_definitions() -> None:
    c = Notes(np.array([0.0]), np.array([1.0]), np.array([60]))  # C for 1 s
    e = Notes(np.array([0.0, 0.5]), np.array([0.5, 1.0]), np.array([48, 61]))  # C then C#: half agrees
    assert pitch_class_agreement(e, c, 1.0) == pytest.approx(0.5)
    assert np.isnan(pitch_class_agreement(Notes.empty(), c, 1.0))
    assert np.isnan(pitch_class_agreement(e, Notes.empty(), 1.0))
    chord = Notes(np.zeros(3), np.ones(3), np.array([57, 60, 64]))  # A minor
    assert bass_root_agreement(Notes(np.array([0.0]), np.array([1.0]), np.array([45])), chord, 1.0) == 1.0
    assert bass_root_agreement(Notes(np.array([0.0]), np.array([1.0]), np.array([48])), chord, 1.0) == 0.0
    assert onset_alignment(np.array([0.0, 0.04, 0.2]), np.array([0.0])) == pytest.approx(2 / 3)
    assert np.isnan(onset_alignment(np.array([]), np.array([0.0])))


def test_midi_notes_window(tmp_path: Path) -> None:
    _, midi = render_song(0, SECONDS)
    path = write_midi(midi["piano"], tmp_path / "MIDI" / "S00.mid")
    notes = midi_notes([path], 1.0, 2.0)
    src = [n for n in midi["piano"].notes if n.end > 1.0 and n.start < 3.0]
    assert len(notes) == len(src) and notes.offsets.max() <= 2.0 + 1e-9
    np.testing.assert_allclose(np.sort(notes.onsets), np.sort([n.start - 1.0 for n in src]), atol=1e-3)
    (tmp_path / "bad.mid").write_bytes(b"not midi")
    with pytest.raises(ValueError, match="bad.mid: unreadable MIDI"):
        midi_notes([tmp_path / "bad.mid"], 0.0, 1.0)


def test_bad_input(transcribed: dict[str, object]) -> None:
    bp = transcribed["bp"]
    silent, short = bp.transcribe([np.zeros(SR, np.float32), np.zeros(10, np.float32)], SR)
    assert len(silent) == 0 and len(short) == 0  # silence / too short for a note: no notes, no crash
    with pytest.raises(ValueError, match="waveform 1"):
        bp.transcribe([np.zeros(SR, np.float32), np.full(SR, np.nan, np.float32)], SR)
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        BasicPitch(Path("/nonexistent/nmp.onnx"))
