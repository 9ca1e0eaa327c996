"""Oracles for our VGGish: torchvggish (registry wheel) with one random state dict loaded into both, and
frechet-audio-distance's own loader reading that state dict from a local torch hub cache.

The hub cache's repository folder holds a stand-in `hubconf.py` (written below, not torchvggish's GitHub code):
the pip torchvggish network and front end, weights read from the cache by `torch.hub.load_state_dict_from_url`,
the entry point and attributes frechet-audio-distance uses. torch.hub and frechet-audio-distance run unchanged.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from mtmusicldm.evaluation.vggish import (
    VGGishEmbedder,
    VGGishNet,
    _random_vggish,
    load_fad_vggish,
    vggish_examples,
)

torchvggish = pytest.importorskip("torchvggish")
SR = 16000
HUBCONF = '''
dependencies = ["torch", "numpy"]
from torch import hub
from torchvggish import torchvggish as tv, vggish_input

URL = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"


class VGGish(tv.VGG):
    def __init__(self):
        super().__init__(tv.make_layers(), postprocess=False)
        self.load_state_dict(hub.load_state_dict_from_url(URL))
        self.preprocess = True

    def _preprocess(self, x, fs):
        return vggish_input.waveform_to_examples(x, fs)

    def forward(self, x, fs=None):
        return super().forward(self._preprocess(x, fs) if self.preprocess else x)


def vggish(**kwargs):
    return VGGish()
'''


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vggish") / "random-vggish.pth"
    torch.save(_random_vggish(3).state_dict(), path)
    return path


def _wav(seconds: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    noise = np.random.default_rng(0).normal(size=t.shape)
    return (0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * noise).astype(np.float32)


def _reference_vgg(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """torchvggish's VGG with the state dict, last ReLU removed as frechet-audio-distance / audioldm_eval do."""
    ref = torchvggish.torchvggish.VGG(torchvggish.torchvggish.make_layers(), postprocess=False)
    ref.load_state_dict(state)
    ref.embeddings = torch.nn.Sequential(*list(ref.embeddings.children())[:-1])
    return ref.eval()


def test_network_matches_torchvggish(weights: Path) -> None:
    state = torch.load(weights, weights_only=True)
    ours = VGGishEmbedder(weights)
    x = np.random.default_rng(1).normal(size=(5, 96, 64)).astype(np.float32)
    with torch.inference_mode():
        want = _reference_vgg(state)(torch.from_numpy(x)[:, None]).numpy()
    np.testing.assert_allclose(ours.embed_examples(x), want, rtol=1e-4, atol=1e-7)  # outputs ~1e-2
    assert isinstance(ours.net, VGGishNet)


def test_log_mel_matches_vggish_input() -> None:
    wav = _wav()
    want = torchvggish.vggish_input.waveform_to_examples(wav.astype(np.float64), SR, return_tensor=False)
    got = vggish_examples(wav)
    assert got.shape == want.shape == (3, 96, 64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_frechet_audio_distance_loader_from_a_local_hub_cache(weights: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    hub = tmp_path / "hub"
    (hub / "harritaylor_torchvggish_master").mkdir(parents=True)
    (hub / "harritaylor_torchvggish_master" / "hubconf.py").write_text(HUBCONF)
    (hub / "checkpoints").mkdir()
    (hub / "checkpoints" / "vggish-10086976.pth").write_bytes(weights.read_bytes())
    for name in ("laion_clap", "encodec"):  # imported by frechet_audio_distance, unused by its VGGish path
        stub = types.ModuleType(name)
        stub.EncodecModel = None  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, name, stub)
    before = torch.hub.get_dir()
    try:
        fad_model = load_fad_vggish(hub)
        via_hub = VGGishEmbedder(hub_dir=hub)
    finally:
        for name in [m for m in sys.modules if m.startswith("frechet_audio_distance")]:
            del sys.modules[name]  # do not leave a module bound to the stubs behind
    assert torch.hub.get_dir() == before  # the process-wide hub dir is restored
    assert fad_model.postprocess is False and not isinstance(fad_model.embeddings[-1], torch.nn.ReLU)
    ours = VGGishEmbedder(weights)
    wav = _wav(2.5)
    np.testing.assert_allclose(via_hub.embed(wav), ours.embed(wav), rtol=1e-4, atol=1e-7)
    assert via_hub.comparable_to_paper and via_hub.fingerprint() != ours.fingerprint()  # loader recorded
    with pytest.raises(FileNotFoundError, match="hubconf.py"):
        load_fad_vggish(tmp_path / "empty")
    with pytest.raises(ValueError, match="exactly one of"):
        VGGishEmbedder(weights, hub_dir=hub)
