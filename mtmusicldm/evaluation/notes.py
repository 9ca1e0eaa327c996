"""Note-level coherence from a real transcriber, and the transcriber's note F1 against ground-truth MIDI.

Transcriber: basic-pitch (Bittner et al., ICASSP 2022), Spotify's polyphonic note model, run from the ONNX file its
wheel ships (`basic_pitch/saved_models/icassp_2022/nmp.onnx`) with onnxruntime; its TensorFlow dependency is not
needed for that path. Audio is resampled to 22.05 kHz, cut into basic-pitch's 2 s windows (30 frames overlap, its
own `window_audio_file` / `unwrap_output`), windows of many files go through the network in one batch, and
`model_output_to_notes` turns the activations into notes (onset 0.5, frame 0.3, min length 127.7 ms: its defaults).
Drums are not transcribed (basic-pitch is a pitched-note model): their onsets come from librosa's onset detector
on the same onset-strength envelope as `coherence.rhythmic_coherence`.

Metrics of a generated stem against the stems it was generated with (the "context"), per item:

* `pitch_class_agreement`: the fraction of the stem's note time (20 ms frames x pitch classes) whose pitch class
  also sounds in the pitched context within +-0.25 s. NaN when either has no notes.
* `bass_root_agreement`: the fraction of frames where the bass sounds (lowest note) on the root of the context's
  chord, the best of the 24 major/minor triads over the context's pitch classes within +-0.5 s. NaN without bass
  notes or pitched context.
* `onset_alignment`: the fraction of the stem's onsets within 50 ms of an onset of the context. NaN without onsets
  on either side.

`note_f1`: mir_eval's onset-only note F1 (50 ms, pitch within 50 cents), the standard transcription score.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["BasicPitch", "Notes", "bass_root_agreement", "drum_onsets", "midi_notes", "note_f1", "onset_alignment",
           "pitch_class_agreement"]

FRAME_S = 0.02  # grid of the pitch-class metrics
HARMONY_WINDOW_S, ROOT_WINDOW_S, ONSET_TOLERANCE_S = 0.25, 0.5, 0.05
_TRIADS = np.array([[i in {r, (r + t) % 12, (r + 7) % 12} for i in range(12)]
                    for t in (4, 3) for r in range(12)], dtype=np.float64)  # [24, 12]: major then minor, root r


@dataclass(frozen=True)
class Notes:
    """Note events of one stem: onsets / offsets in seconds, MIDI pitches; all [K]."""

    onsets: np.ndarray
    offsets: np.ndarray
    pitches: np.ndarray

    @classmethod
    def empty(cls) -> Notes:
        return cls(np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64))

    @classmethod
    def concat(cls, parts: Sequence[Notes]) -> Notes:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("onsets", "offsets", "pitches")))

    def __len__(self) -> int:
        return int(self.onsets.shape[0])

    def between(self, start_s: float, end_s: float) -> Notes:
        """Notes whose onset lies in [start_s, end_s)."""
        keep = (self.onsets >= start_s) & (self.onsets < end_s)
        return Notes(self.onsets[keep], self.offsets[keep], self.pitches[keep])

    def roll(self, seconds: float) -> np.ndarray:
        """[frames, 12] bool pitch-class roll on the 20 ms grid (frames = ceil(seconds / 20 ms))."""
        n = int(np.ceil(seconds / FRAME_S))
        out = np.zeros((n, 12), dtype=bool)
        for on, off, p in zip(self.onsets, self.offsets, self.pitches):
            a, b = int(on / FRAME_S), max(int(on / FRAME_S) + 1, int(np.ceil(off / FRAME_S)))
            out[max(a, 0):min(b, n), int(p) % 12] = True
        return out

    def lowest(self, seconds: float) -> np.ndarray:
        """[frames] pitch class of the lowest sounding note per 20 ms frame, -1 where none sounds."""
        n = int(np.ceil(seconds / FRAME_S))
        low = np.full(n, 128)
        for on, off, p in zip(self.onsets, self.offsets, self.pitches):
            a, b = int(on / FRAME_S), max(int(on / FRAME_S) + 1, int(np.ceil(off / FRAME_S)))
            low[max(a, 0):min(b, n)] = np.minimum(low[max(a, 0):min(b, n)], int(p))
        return np.where(low < 128, low % 12, -1)


# ---------------------------------------------------------------------------------------------------- transcriber


def _import_basic_pitch():  # noqa: ANN202 - module objects
    """basic-pitch's inference and note modules; its import-time warnings about the absent TF/CoreML/TFLite
    back-ends are silenced (only the ONNX one is used)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        import basic_pitch
        from basic_pitch import constants, inference, note_creation
    finally:
        logging.disable(previous)
    return basic_pitch, constants, inference, note_creation


class BasicPitch:
    """basic-pitch note transcription through onnxruntime (see the module docstring).

    Args:
        model_path: an `nmp.onnx`; default the one in the basic-pitch wheel.
        batch_windows: 2 s windows per network call.
    """

    def __init__(self, model_path: str | Path | None = None, *, batch_windows: int = 32) -> None:
        bp, self._c, self._inference, self._notes = _import_basic_pitch()
        path = Path(model_path) if model_path else bp.build_icassp_2022_model_path(bp.FilenameSuffix.onnx)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: basic-pitch ONNX model not found (reinstall basic-pitch)")
        self.model_path, self.batch_windows = path, int(batch_windows)
        self.model = self._inference.Model(path)
        if self.model.model_type != self._inference.Model.MODEL_TYPES.ONNX:
            raise RuntimeError(f"{path}: basic-pitch loaded a {self.model.model_type} model, expected ONNX")

    def transcribe(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[Notes]:
        """Transcribe mono waveforms.

        Args:
            wavs: [T_i] float waveforms (T_i >= 1, finite) at `sample_rate`.
            sample_rate: their rate (resampled to basic-pitch's 22.05 kHz with soxr).

        Returns:
            One `Notes` per waveform (empty for silence).

        Raises:
            ValueError: an empty or non-finite waveform (names its index).
        """
        import soxr

        c, inf = self._c, self._inference
        overlap = 30 * c.FFT_HOP
        hop = c.AUDIO_N_SAMPLES - overlap
        windows, owners, lengths = [], [], []
        for i, wav in enumerate(wavs):
            wav = np.asarray(wav, dtype=np.float32)
            if wav.ndim != 1 or wav.size == 0 or not np.isfinite(wav).all():
                raise ValueError(f"transcribe: waveform {i} is empty, not [T] or not finite (shape {wav.shape})")
            y = soxr.resample(wav, sample_rate, c.AUDIO_SAMPLE_RATE).astype(np.float32)
            lengths.append(len(y))
            y = np.concatenate([np.zeros(overlap // 2, np.float32), y])
            for w, _ in inf.window_audio_file(y, hop):
                windows.append(w)
                owners.append(i)
        outputs: dict[str, list[np.ndarray]] = {"note": [], "onset": [], "contour": []}
        for start in range(0, len(windows), self.batch_windows):
            for k, v in self.model.predict(np.stack(windows[start:start + self.batch_windows])).items():
                outputs[k].append(v)
        stacked = {k: np.concatenate(v) for k, v in outputs.items()}
        owners_arr = np.array(owners)
        result = []
        for i, n in enumerate(lengths):
            out = {k: inf.unwrap_output(v[owners_arr == i], n, 30) for k, v in stacked.items()}
            if out["note"].shape[0] == 0:  # shorter than one 11.6 ms model frame
                result.append(Notes.empty())
                continue
            _, events = self._notes.model_output_to_notes(out, onset_thresh=0.5, frame_thresh=0.3,
                                                          min_note_len=11, include_pitch_bends=False)
            if not events:
                result.append(Notes.empty())
                continue
            on, off, pitch = (np.array([e[k] for e in events]) for k in range(3))
            order = np.argsort(on, kind="stable")
            result.append(Notes(on[order].astype(float), off[order].astype(float), pitch[order].astype(np.int64)))
        return result


def drum_onsets(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """Onset times (s) of a drum stem: librosa's peak picking on the rhythmic-coherence onset envelope."""
    import librosa

    from mtmusicldm.evaluation.coherence import ONSET_FFT, ONSET_HOP, ONSET_MELS

    env = librosa.onset.onset_strength(y=np.asarray(wav, np.float32), sr=sample_rate, n_fft=ONSET_FFT,
                                       hop_length=ONSET_HOP, n_mels=ONSET_MELS)
    return librosa.onset.onset_detect(onset_envelope=env, sr=sample_rate, hop_length=ONSET_HOP, units="time")


# ---------------------------------------------------------------------------------------------------- metrics


def _dilate(roll: np.ndarray, frames: int) -> np.ndarray:
    """Max filter over +-frames along time of a [T, 12] roll."""
    from scipy.ndimage import maximum_filter1d

    return maximum_filter1d(roll.astype(np.uint8), size=2 * frames + 1, axis=0, mode="constant").astype(bool)


def pitch_class_agreement(stem: Notes, context: Notes, seconds: float) -> float:
    """Fraction of the stem's pitch-class time that also sounds in the context within +-0.25 s (NaN if undefined)."""
    g, c = stem.roll(seconds), context.roll(seconds)
    if not g.any() or not c.any():
        return float("nan")
    return float((g & _dilate(c, round(HARMONY_WINDOW_S / FRAME_S))).sum() / g.sum())


def bass_root_agreement(bass: Notes, context: Notes, seconds: float) -> float:
    """Fraction of bass frames on the root of the context's best-matching triad within +-0.5 s (NaN if undefined)."""
    from scipy.ndimage import uniform_filter1d

    low, c = bass.lowest(seconds), context.roll(seconds).astype(np.float64)
    w = round(ROOT_WINDOW_S / FRAME_S)
    profile = uniform_filter1d(c, size=2 * w + 1, axis=0, mode="constant")  # [T, 12] local pitch-class weight
    scores = profile @ _TRIADS.T  # [T, 24]
    has_ctx = profile.sum(axis=1) > 0
    root = np.argmax(scores, axis=1) % 12
    frames = (low >= 0) & has_ctx
    if not frames.any():
        return float("nan")
    return float((low[frames] == root[frames]).mean())


def onset_alignment(onsets: np.ndarray, context_onsets: np.ndarray) -> float:
    """Fraction of `onsets` within 50 ms of a context onset (NaN when either is empty)."""
    a, b = np.asarray(onsets, float), np.asarray(context_onsets, float)
    if a.size == 0 or b.size == 0:
        return float("nan")
    nearest = np.abs(a[:, None] - b[None, :]).min(axis=1)
    return float((nearest <= ONSET_TOLERANCE_S + 1e-9).mean())


# ---------------------------------------------------------------------------------------------------- ground truth


def note_f1(reference: Notes, estimate: Notes) -> float:
    """mir_eval onset-only note F1 (50 ms onset tolerance, 50 cents); NaN when the reference has no notes."""
    import mir_eval

    if len(reference) == 0:
        return float("nan")
    if len(estimate) == 0:
        return 0.0

    def args(n: Notes) -> tuple[np.ndarray, np.ndarray]:
        return np.stack([n.onsets, np.maximum(n.offsets, n.onsets + 1e-3)], 1), 440.0 * 2 ** ((n.pitches - 69) / 12)

    (ri, rp), (ei, ep) = args(reference), args(estimate)
    return float(mir_eval.transcription.precision_recall_f1_overlap(ri, rp, ei, ep, onset_tolerance=0.05,
                                                                    offset_ratio=None)[2])


def midi_notes(paths: Sequence[str | Path], start_s: float, seconds: float) -> Notes:
    """Pitched notes of MIDI files that sound in [start_s, start_s + seconds), shifted to start at 0 and clipped.

    Raises:
        ValueError: an unreadable MIDI file (names it).
    """
    import pretty_midi

    parts = []
    for path in paths:
        try:
            pm = pretty_midi.PrettyMIDI(str(path))
        except Exception as e:  # pretty_midi/mido raise many types for corrupt files
            raise ValueError(f"{path}: unreadable MIDI file ({e})") from e
        notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes
                 if n.end > start_s and n.start < start_s + seconds]
        parts.append(Notes(np.array([n.start - start_s for n in notes], float),
                           np.array([min(n.end, start_s + seconds) - start_s for n in notes], float),
                           np.array([n.pitch for n in notes], np.int64)))
    return Notes.concat(parts)
