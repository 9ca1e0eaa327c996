"""VGGish FAD backbone, following the paper's protocol (audioldm_eval; official spec §9).

The paper's FAD runs `audioldm_eval`, which loads `torch.hub.load("harritaylor/torchvggish", "vggish")` with
`postprocess=False` (no PCA whitening / 8-bit quantisation) and the final ReLU of the embedding head removed. This
module re-implements that network and its log-mel input in plain torch/numpy, so nothing is fetched from GitHub:

* input (audioldm_eval `WaveDataset`): first channel, DC mean removed, 16 kHz, zero-padded on the right to at least
  2 s (32000 samples);
* log-mel (torchvggish `vggish_input` / `mel_features`): periodic Hann window of 400 samples (25 ms), hop 160
  (10 ms), |rfft| with 512 points, 64 HTK-mel triangles (linear in mel) over 125-7500 Hz with the DC bin zeroed,
  `log(mel + 0.01)`, computed in float64; no centre padding (frames = 1 + (T - 400) // 160);
* examples: non-overlapping 96 x 64 patches (0.96 s), so a 10.24 s file gives 10 embeddings;
* network (`VGGishNet`, torchvggish `VGG` layout): 3x3 convs 64-M-128-M-256-256-M-512-512-M, flatten in TF's
  NHWC order, fc 12288-4096-4096-128 with ReLUs between, no ReLU after the last layer.

Weights, two ways (nothing is fetched at run time):

* `weights=`: the torchvggish release file, downloaded once on a machine with network,

    https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth

  loaded into `VGGishNet` here (e.g. `models/vggish/vggish-10086976.pth`). Its keys are
  `features.{0,3,6,8,11,13}.{weight,bias}` and `embeddings.{0,2,4}.{weight,bias}`; `pproc.*` PCA tensors of a full
  torchvggish state dict are accepted and ignored. A file named `vggish-<hex>.pth` is checked against its sha256
  prefix, like torch.hub does.
* `hub_dir=`: a torch hub cache that already holds `harritaylor_torchvggish_master/` and
  `checkpoints/vggish-10086976.pth` (what `torch.hub.load("harritaylor/torchvggish", "vggish")` leaves behind on a
  machine with network). The model then comes from frechet-audio-distance's own loader
  (`FrechetAudioDistance(ckpt_dir=hub_dir, model_name="vggish", use_pca=False, use_activation=False)`), and
  torchvggish's `vggish_input` front end computes the log-mel.

Both give the same embeddings (tests/mtmusicldm/evaluation/test_vggish_oracle.py checks our network and log-mel
against torchvggish with one random state dict). What stays ours, and why: the audioldm_eval input policy above
(DC removal, 2 s padding, first channel), which frechet-audio-distance's loader does not apply (it averages channels
and gives no embedding for files under 0.96 s); loading a plain weights file, which its loader cannot (it only
reads a torch hub cache); and random weights for tests. Without weights, `seed=` builds a random network (tests,
plumbing): such numbers are not comparable to the paper. Remaining difference to audioldm_eval: resampling of
non-16 kHz files is done by our loader (soxr) instead of torchaudio's sinc resampler, and DC removal happens after,
not before, resampling.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mtmusicldm.evaluation.base import config_digest, state_dict_digest

__all__ = [
    "VGGISH_HUB_REPO",
    "VGGISH_KEYS",
    "VGGISH_WEIGHTS_URL",
    "VGGishEmbedder",
    "VGGishNet",
    "load_fad_vggish",
    "load_vggish_state_dict",
    "prepare_vggish_input",
    "vggish_examples",
    "vggish_log_mel",
    "vggish_mel_matrix",
]

VGGISH_WEIGHTS_URL = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"
VGGISH_HUB_REPO = "harritaylor_torchvggish"  # torch hub cache folder prefix (+ _master / _main)
SAMPLE_RATE = 16000
WINDOW = 400  # round(16000 * 0.025)
HOP = 160  # round(16000 * 0.010)
N_FFT = 512  # next power of two >= WINDOW
N_MELS = 64
FMIN_HZ, FMAX_HZ = 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # round(0.96 s / 10 ms), also the example hop
MIN_SAMPLES = 32000  # audioldm_eval pads every file to at least 2 s
_CONVS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
VGGISH_KEYS: tuple[str, ...] = tuple(
    f"{prefix}.{i}.{kind}"
    for prefix, idx in (("features", (0, 3, 6, 8, 11, 13)), ("embeddings", (0, 2, 4)))
    for i in idx
    for kind in ("weight", "bias")
)
"""State-dict keys of torchvggish's VGG (the content of vggish-10086976.pth)."""


# ---------------------------------------------------------------------------------------------------- log-mel


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale, 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def vggish_mel_matrix() -> np.ndarray:
    """VGGish mel filterbank: triangles linear in HTK mel over 125-7500 Hz, DC bin zeroed.

    Returns:
        [257, 64] float64 matrix M; mel = |STFT| @ M.
    """
    bins_mel = _hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1))
    edges = np.linspace(_hz_to_mel(FMIN_HZ), _hz_to_mel(FMAX_HZ), N_MELS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # HTK convention: the DC bin never contributes
    return weights


_MEL = vggish_mel_matrix()
_HANN = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WINDOW) / WINDOW)  # periodic Hann


def _stft_magnitude(wav: np.ndarray) -> np.ndarray:
    """|rfft| of periodic-Hann frames without centre padding: [frames, 257] float64."""
    frames = np.lib.stride_tricks.sliding_window_view(wav, WINDOW)[::HOP]
    return np.abs(np.fft.rfft(frames * _HANN, N_FFT))


def vggish_log_mel(wav: np.ndarray) -> np.ndarray:
    """VGGish log-mel spectrogram, log(mel + 0.01).

    Args:
        wav: [T] waveform at 16 kHz, T >= 400.

    Returns:
        [1 + (T - 400) // 160, 64] float64.
    """
    wav = np.asarray(wav)
    if wav.ndim != 1 or wav.shape[0] < WINDOW:
        raise ValueError(f"vggish_log_mel: expected a [T] waveform with T >= {WINDOW}, got shape {wav.shape}")
    return np.log(_stft_magnitude(wav) @ _MEL + LOG_OFFSET)


def vggish_examples(wav: np.ndarray) -> np.ndarray:
    """Non-overlapping 0.96 s log-mel patches, VGGish's input examples.

    Args:
        wav: [T] waveform at 16 kHz with at least 0.975 s (15600 samples).

    Returns:
        [N, 96, 64] float32 with N = (1 + (T - 400) // 160) // 96 (a 10.24 s file gives 10).

    Raises:
        ValueError: too short for one example.
    """
    log_mel = vggish_log_mel(wav)
    n = log_mel.shape[0] // EXAMPLE_FRAMES
    if n == 0:
        need = WINDOW + (EXAMPLE_FRAMES - 1) * HOP
        raise ValueError(f"vggish_examples: {len(wav)} samples give no 0.96 s example (need >= {need})")
    return log_mel[: n * EXAMPLE_FRAMES].reshape(n, EXAMPLE_FRAMES, N_MELS).astype(np.float32)


def prepare_vggish_input(wav: np.ndarray) -> np.ndarray:
    """audioldm_eval's per-file preprocessing: DC mean removed, right-padded with zeros to at least 2 s.

    Args:
        wav: [T] mono (first channel) float waveform at 16 kHz, T >= 1.

    Returns:
        [max(T, 32000)] float32.
    """
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1 or wav.shape[0] == 0:
        raise ValueError(f"prepare_vggish_input: expected a non-empty [T] waveform, got shape {wav.shape}")
    wav = wav - wav.mean(dtype=np.float32)
    if wav.shape[0] < MIN_SAMPLES:
        wav = np.pad(wav, (0, MIN_SAMPLES - wav.shape[0]))
    return wav


# ---------------------------------------------------------------------------------------------------- network


class VGGishNet(nn.Module):
    """torchvggish's VGG with the same state-dict keys; the last ReLU is dropped unless `last_relu`.

    Args:
        last_relu: keep torchvggish's final ReLU (audioldm_eval removes it: `use_activation=False`).
    """

    def __init__(self, *, last_relu: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for v in _CONVS:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = int(v)
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [
            nn.Linear(512 * 6 * 4, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, 128),
        ]  # fmt: skip
        if last_relu:
            head.append(nn.ReLU(inplace=True))
        self.embeddings = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        """Embed log-mel examples.

        Args:
            x: [B, 1, 96, 64] log-mel patches (time, mel).

        Returns:
            [B, 128] embeddings.
        """
        h = self.features(x)  # [B, 512, 6, 4]
        h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)  # TF flattens NHWC: (time, mel, channel)
        return self.embeddings(h)


def load_vggish_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read torchvggish weights from a local file (no download).

    Args:
        path: vggish-10086976.pth (see the module docstring for the URL) or any file holding the same tensors.

    Returns:
        The VGG tensors (keys `VGGISH_KEYS`; `pproc.*` dropped).

    Raises:
        FileNotFoundError: missing file (the message gives the download URL).
        ValueError: sha256 prefix mismatch for `vggish-<hex>.pth` names, or not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: VGGish weights not found. Download {VGGISH_WEIGHTS_URL} on a machine with network access "
            "and place it at this path (nothing is downloaded at run time)."
        )
    m = re.fullmatch(r"vggish-([0-9a-f]{6,})\.pth", path.name)
    if m:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if not h.hexdigest().startswith(m.group(1)):
            raise ValueError(f"{path}: sha256 {h.hexdigest()[:12]}... does not start with {m.group(1)} "
                             "(corrupt or truncated download)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k: v for k, v in state.items() if not k.startswith("pproc.")}


def load_fad_vggish(hub_dir: str | Path) -> nn.Module:
    """frechet-audio-distance's VGGish from a local torch hub cache (its loader; no download).

    Args:
        hub_dir: a torch hub directory holding `harritaylor_torchvggish_master/` (or `_main/`) and
            `checkpoints/vggish-10086976.pth`.

    Returns:
        torchvggish's `VGGish` as frechet-audio-distance prepares it (no PCA, last ReLU removed), in eval mode,
        with `preprocess` switched off: feed it `model._preprocess(wav, 16000)` examples.

    Raises:
        FileNotFoundError: the repository or the weights are missing from `hub_dir` (the message says what to put
            there).
    """
    hub_dir = Path(hub_dir).expanduser()
    if not any((hub_dir / f"{VGGISH_HUB_REPO}_{ref}" / "hubconf.py").is_file() for ref in ("master", "main")):
        raise FileNotFoundError(
            f"{hub_dir}: no {VGGISH_HUB_REPO}_master/hubconf.py; run torch.hub.load('harritaylor/torchvggish', "
            f"'vggish') once with network and TORCH_HOME/hub = {hub_dir}, or use vggish_weights")
    if not (hub_dir / "checkpoints" / "vggish-10086976.pth").is_file():
        raise FileNotFoundError(f"{hub_dir}/checkpoints/vggish-10086976.pth missing: download {VGGISH_WEIGHTS_URL}")
    from frechet_audio_distance import FrechetAudioDistance

    previous = torch.hub.get_dir()
    try:  # FrechetAudioDistance points torch.hub at ckpt_dir for the whole process: undo that
        model = FrechetAudioDistance(ckpt_dir=str(hub_dir), model_name="vggish", use_pca=False,
                                     use_activation=False, verbose=False).model
    finally:
        torch.hub.set_dir(previous)
    model.preprocess = False
    return model.eval().requires_grad_(False)


def _random_vggish(seed: int) -> VGGishNet:
    """VGGishNet with U(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights and biases (PyTorch's default init bounds for
    conv/linear), drawn from a `torch.Generator` seeded with `seed` (the global RNG is untouched)."""
    with torch.device("meta"):
        net = VGGishNet()
    net = net.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                bound = 1.0 / float(np.sqrt(module.weight[0].numel()))  # fan_in = in_features * kernel size
                module.weight.uniform_(-bound, bound, generator=gen)
                module.bias.uniform_(-bound, bound, generator=gen)
    return net


class VGGishEmbedder:
    """VGGish embeddings per the paper protocol (see the module docstring).

    Args:
        weights: local path of vggish-10086976.pth (paper-comparable, our `VGGishNet`).
        hub_dir: or a torch hub cache holding harritaylor/torchvggish (paper-comparable, frechet-audio-distance's
            loader and model, torchvggish's front end).
        seed: or random weights from this seed (not comparable to the paper).
        device: torch device for the network.
        max_batch: examples per forward pass.

    Raises:
        ValueError: not exactly one of `weights` / `hub_dir` / `seed`, or weights that do not fit torchvggish.
        FileNotFoundError: missing weights file or hub cache content.
    """

    name = "vggish"
    sample_rate = SAMPLE_RATE
    dim = 128

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        hub_dir: str | Path | None = None,
        seed: int | None = None,
        device: str | torch.device = "cpu",
        max_batch: int = 64,
    ) -> None:
        if sum(x is not None for x in (weights, hub_dir, seed)) != 1:
            raise ValueError(
                "VGGishEmbedder: give exactly one of `weights` (local path of vggish-10086976.pth, from "
                f"{VGGISH_WEIGHTS_URL}), `hub_dir` (a torch hub cache with harritaylor/torchvggish) or `seed` "
                "(random weights, not comparable to the paper)"
            )
        self._hub: nn.Module | None = None
        if hub_dir is not None:
            self._hub = load_fad_vggish(hub_dir).to(device)
            net = self._hub
            self._source = f"hub:{Path(hub_dir).name}"
        elif seed is not None:
            net = _random_vggish(seed)
            self._source = f"seed:{seed}"
        else:
            net = self._load(weights)  # type: ignore[arg-type]
            self._source = f"weights:{Path(weights).name}"  # type: ignore[arg-type]
        self.net = net.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        self.max_batch = int(max_batch)
        self.comparable_to_paper = seed is None
        self._fingerprint: str | None = None

    @staticmethod
    def _load(weights: str | Path) -> VGGishNet:
        state = load_vggish_state_dict(weights)
        missing = sorted(set(VGGISH_KEYS) - set(state))
        unexpected = sorted(set(state) - set(VGGISH_KEYS))
        if missing or unexpected:
            raise ValueError(f"{weights}: not a torchvggish VGG state dict (missing {missing[:6]}, "
                             f"unexpected {unexpected[:6]})")
        with torch.device("meta"):  # no throw-away random init of 72 M parameters
            net = VGGishNet()
        try:
            net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
        except RuntimeError as e:  # shape mismatches
            raise ValueError(f"{weights}: tensors do not fit torchvggish's VGG ({e})") from e
        return net

    def fingerprint(self) -> str:
        """Digest of the network tensors, the loader and the preprocessing constants (computed once)."""
        if self._fingerprint is None:
            tensors = {k: v for k, v in self.net.state_dict().items() if k in VGGISH_KEYS}
            config = {"backbone": "vggish/audioldm_eval", "window": WINDOW, "hop": HOP, "n_fft": N_FFT,
                      "mels": [N_MELS, FMIN_HZ, FMAX_HZ], "log_offset": LOG_OFFSET, "min_samples": MIN_SAMPLES,
                      "example": EXAMPLE_FRAMES, "last_relu": False, "loader": "fad" if self._hub else "ours",
                      "weights": state_dict_digest(tensors)}
            self._fingerprint = config_digest(config)
        return self._fingerprint

    def embed_examples(self, examples: np.ndarray) -> np.ndarray:
        """Run the network on log-mel examples.

        Args:
            examples: [N, 96, 64] patches (from `vggish_examples`).

        Returns:
            [N, 128] float32 embeddings.
        """
        x = torch.from_numpy(np.ascontiguousarray(examples, dtype=np.float32))[:, None]
        with torch.inference_mode():
            out = [self.net(x[i : i + self.max_batch].to(self.device)).cpu() for i in range(0, len(x), self.max_batch)]
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    def embed(self, wav: np.ndarray) -> np.ndarray:
        """Embed one file: audioldm_eval preprocessing, then one 128-d vector per 0.96 s.

        Args:
            wav: [T] float32 mono waveform at 16 kHz (first channel of the file).

        Returns:
            [frames, 128] float32 (10 frames for 10.24 s, 2 for anything up to 2 s).
        """
        wav = prepare_vggish_input(wav)
        if self._hub is not None:  # torchvggish's own front end (vggish_input.waveform_to_examples)
            examples = self._hub._preprocess(wav.astype(np.float64), SAMPLE_RATE).detach()[:, 0].numpy()
        else:
            examples = vggish_examples(wav)
        return self.embed_examples(examples)

    def __repr__(self) -> str:
        return f"VGGishEmbedder({self._source}, comparable_to_paper={self.comparable_to_paper})"
