"""Offline FAD backbone: deterministic hand-crafted music features, no downloaded weights.

For the embedded (CPU, no download) profile. Its numbers are only comparable with each other (same
`fingerprint()`), never with the paper's VGGish FAD: `comparable_to_paper = False`.

Like VGGish, a file is cut into 0.96 s blocks (96 frames of the VGGish log-mel: 25 ms window, 10 ms hop, 64 HTK
mel bands over 125-7500 Hz), non-overlapping by default, after DC removal and right zero-padding to one block.
Each block gives an 80-d vector made of fixed groups, each multiplied by a fixed constant (`GROUP_SCALE`, chosen so
that every per-dimension standard deviation is O(1) on band music; no data-dependent standardisation, so the
features of two sets are always on the same scale):

| group      | dims | content                                                                                   |
|------------|------|-------------------------------------------------------------------------------------------|
| timbre     | 32   | mean log-mel over the block, adjacent band pairs averaged                                 |
| dynamics   | 8    | std over time of the log-mel in 8 groups of 8 bands                                       |
| chroma     | 12   | log(pitch-class profile / its sum + 0.01), 4096-point STFT (hop 1024), 65-2100 Hz          |
| consonance | 12   | the same profile sorted (key-invariant: concentration on few pitch classes)               |
| harmony    | 2    | cosine(bass-register chroma < 260 Hz, upper-register chroma); cosine(first, second half)  |
| onsets     | 6    | log(1 + mean) and coefficient of variation of the log-mel flux, low/mid/high mel bands    |
| sync       | 3    | Pearson correlations of the (3-frame smoothed) low/mid/high flux envelopes                |
| periodicity| 5    | max autocorrelation of the full-band flux over lags 40-80, 80-160, 160-320, 320-480, 480-640 ms |

The cross-register groups (harmony, sync) respond to stems that do not belong together: bass and chords in
different keys lower the bass/upper chroma cosine, drums and bass at different tempi lower the flux correlations.
"""
from __future__ import annotations

import numpy as np

from mtmusicldm.evaluation.base import config_digest
from mtmusicldm.evaluation.vggish import EXAMPLE_FRAMES, HOP, SAMPLE_RATE, WINDOW, vggish_log_mel

__all__ = ["GROUP_DIMS", "GROUP_SCALE", "OFFLINE_VERSION", "OfflineEmbedder", "group_slices", "offline_features"]

OFFLINE_VERSION = "mtmusicldm-offline/1"
"""Bump whenever the features change (it enters the fingerprint)."""
GROUP_SCALE: dict[str, float] = {
    "timbre": 0.5, "dynamics": 1.0, "chroma": 0.5, "consonance": 1.5,
    "harmony": 6.0, "onsets": 1.0, "sync": 3.0, "periodicity": 3.0,
}  # fmt: skip
GROUP_DIMS: dict[str, int] = {
    "timbre": 32, "dynamics": 8, "chroma": 12, "consonance": 12,
    "harmony": 2, "onsets": 6, "sync": 3, "periodicity": 5,
}  # fmt: skip
BLOCK_SAMPLES = WINDOW + (EXAMPLE_FRAMES - 1) * HOP  # 15600: the shortest input giving one 96-frame block
_CHROMA_FFT, _CHROMA_HOP = 4096, 1024
_CHROMA_HZ = (65.0, 2100.0)
_BASS_SPLIT_HZ = 260.0
_LAG_EDGES = (4, 8, 16, 32, 48, 64)  # in 10 ms frames
_EPS = 1e-8


def group_slices() -> dict[str, slice]:
    """Column range of each feature group in the 80-d embedding, in `GROUP_DIMS` order."""
    out, start = {}, 0
    for name, dims in GROUP_DIMS.items():
        out[name] = slice(start, start + dims)
        start += dims
    return out


def _chroma_bins() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the 4096-point rfft: selected bin indices, their pitch class (C = 0) and a bass-register mask."""
    freqs = np.arange(_CHROMA_FFT // 2 + 1) * SAMPLE_RATE / _CHROMA_FFT
    idx = np.flatnonzero((freqs >= _CHROMA_HZ[0]) & (freqs <= _CHROMA_HZ[1]))
    midi = 69.0 + 12.0 * np.log2(freqs[idx] / 440.0)
    return idx, np.round(midi).astype(int) % 12, freqs[idx] < _BASS_SPLIT_HZ


_CHROMA_IDX, _CHROMA_PC, _CHROMA_BASS = _chroma_bins()
_CHROMA_WIN = np.hanning(_CHROMA_FFT + 1)[:-1]
# Mel band centres of the VGGish filterbank: low < 250 Hz, high > 4 kHz.
_MEL_CENTRES = 700.0 * np.expm1(np.linspace(1127.0 * np.log1p(125 / 700), 1127.0 * np.log1p(7500 / 700), 66)[1:-1]
                                / 1127.0)
_BAND_GROUPS = (_MEL_CENTRES < 250.0, (_MEL_CENTRES >= 250.0) & (_MEL_CENTRES <= 4000.0), _MEL_CENTRES > 4000.0)


def _pitch_profile(mag: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Sum of magnitudes per pitch class: mag [W, bins_selected] -> [12]."""
    m = mag if mask is None else mag[:, mask]
    pc = _CHROMA_PC if mask is None else _CHROMA_PC[mask]
    return np.bincount(pc, weights=m.sum(axis=0), minlength=12)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > _EPS and nb > _EPS else 0.0


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return _cosine(a, b)


def _smooth3(x: np.ndarray) -> np.ndarray:
    return np.convolve(x, np.ones(3) / 3.0, mode="same")


def _block_chroma(block: np.ndarray) -> np.ndarray:
    """|rfft| of 4096-sample Hann windows (hop 1024) inside one block, restricted to the chroma bins: [W, bins]."""
    frames = np.lib.stride_tricks.sliding_window_view(block, _CHROMA_FFT)[::_CHROMA_HOP]
    return np.abs(np.fft.rfft(frames * _CHROMA_WIN, _CHROMA_FFT))[:, _CHROMA_IDX]


def _block_features(log_mel: np.ndarray, flux: np.ndarray, audio: np.ndarray) -> dict[str, np.ndarray]:
    """Feature groups of one block: log_mel [96, 64], flux [96, 64] (positive log-mel differences), audio [>=4096]."""
    groups: dict[str, np.ndarray] = {}
    groups["timbre"] = log_mel.mean(axis=0).reshape(32, 2).mean(axis=1)
    groups["dynamics"] = log_mel.reshape(-1, 8, 8).mean(axis=2).std(axis=0)

    mag = _block_chroma(audio)
    profile = _pitch_profile(mag)
    norm = profile / (profile.sum() + _EPS)
    groups["chroma"] = np.log(norm + 0.01)
    groups["consonance"] = np.sort(groups["chroma"])[::-1]
    half = mag.shape[0] // 2
    groups["harmony"] = np.array([
        _cosine(_pitch_profile(mag, _CHROMA_BASS), _pitch_profile(mag, ~_CHROMA_BASS)),
        _cosine(_pitch_profile(mag[:half]), _pitch_profile(mag[half:])) if half else 0.0,
    ])  # fmt: skip

    envs = [flux[:, g].mean(axis=1) for g in _BAND_GROUPS]  # 3 x [96]
    onsets = []
    for env in envs:
        mean = float(env.mean())
        onsets += [np.log1p(mean), float(env.std()) / (mean + 1e-3)]
    groups["onsets"] = np.array(onsets)
    smooth = [_smooth3(e) for e in envs]
    groups["sync"] = np.array([_pearson(smooth[0], smooth[1]), _pearson(smooth[0], smooth[2]),
                               _pearson(smooth[1], smooth[2])])
    full = flux.mean(axis=1)
    full = full - full.mean()
    energy = float(full @ full)
    acf = np.correlate(full, full, mode="full")[len(full) - 1 :] / energy if energy > _EPS else np.zeros(len(full))
    groups["periodicity"] = np.array([acf[lo:hi].max() for lo, hi in zip(_LAG_EDGES[:-1], _LAG_EDGES[1:])])
    return groups


def offline_features(wav: np.ndarray, *, hop_frames: int = EXAMPLE_FRAMES) -> np.ndarray:
    """Hand-crafted 80-d embeddings of 0.96 s blocks (see the module docstring).

    Args:
        wav: [T] float mono waveform at 16 kHz (T >= 1; DC removed and padded to one block here).
        hop_frames: block hop in 10 ms frames (96 = non-overlapping, 48 = half overlap).

    Returns:
        [blocks, 80] float32, blocks = 1 + (frames - 96) // hop_frames with frames = 1 + (T' - 400) // 160.
    """
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1 or wav.shape[0] == 0:
        raise ValueError(f"offline_features: expected a non-empty [T] waveform, got shape {wav.shape}")
    if not np.isfinite(wav).all():
        raise ValueError("offline_features: waveform contains NaN or infinite samples")
    if hop_frames < 1:
        raise ValueError(f"offline_features: hop_frames must be >= 1, got {hop_frames}")
    wav = wav - wav.mean(dtype=np.float32)
    if wav.shape[0] < BLOCK_SAMPLES:
        wav = np.pad(wav, (0, BLOCK_SAMPLES - wav.shape[0]))
    log_mel = vggish_log_mel(wav)  # [F, 64]
    flux = np.maximum(0.0, np.diff(log_mel, axis=0, prepend=log_mel[:1]))
    rows = []
    for start in range(0, log_mel.shape[0] - EXAMPLE_FRAMES + 1, hop_frames):
        sl = slice(start, start + EXAMPLE_FRAMES)
        audio = wav[start * HOP : start * HOP + BLOCK_SAMPLES]
        groups = _block_features(log_mel[sl], flux[sl], audio)
        rows.append(np.concatenate([GROUP_SCALE[k] * np.asarray(groups[k], np.float64) for k in GROUP_DIMS]))
    return np.stack(rows).astype(np.float32)


class OfflineEmbedder:
    """`AudioEmbedder` over `offline_features` (deterministic, no weights, not comparable to the paper).

    Args:
        hop_s: block hop in seconds, a multiple of 10 ms (0.96 = non-overlapping, as VGGish).
    """

    name = "offline"
    sample_rate = SAMPLE_RATE
    dim = sum(GROUP_DIMS.values())
    comparable_to_paper = False

    def __init__(self, hop_s: float = 0.96) -> None:
        hop_frames = round(hop_s * SAMPLE_RATE / HOP)
        if hop_frames < 1 or abs(hop_frames * HOP / SAMPLE_RATE - hop_s) > 1e-9:
            raise ValueError(f"OfflineEmbedder: hop_s must be a positive multiple of 0.01 s, got {hop_s}")
        self.hop_frames = int(hop_frames)

    def fingerprint(self) -> str:
        """Digest of the feature version, group scales and block hop."""
        return config_digest({"backbone": OFFLINE_VERSION, "scale": GROUP_SCALE, "dims": GROUP_DIMS,
                              "hop_frames": self.hop_frames})

    def embed(self, wav: np.ndarray) -> np.ndarray:
        """Embed one file: [T] float32 at 16 kHz -> [blocks, 80] float32."""
        return offline_features(wav, hop_frames=self.hop_frames)

    def __repr__(self) -> str:
        return f"OfflineEmbedder(hop_frames={self.hop_frames})"
