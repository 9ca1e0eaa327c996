"""Building a codec from params: VAE sources (trained / diffusers / official) and vocoders."""
from __future__ import annotations

import pathlib
from pathlib import Path

import pytest
import torch

from mtmusicldm.codec import build
from mtmusicldm.codec.build import codec_from_params
from mtmusicldm.codec.codec_dir import Codec, save_codec
from mtmusicldm.codec.vocoder import HifiGanVocoder
from mtmusicldm.official.hifigan import official_hifigan_key_map
from mtmusicldm.official.vae import official_vae_key_map
from test_codec_dir import (  # noqa: F401 - fixtures (tests/mtmusicldm/codec is on sys.path)
    TINY_DDCONFIG,
    TINY_HIFIGAN,
    codec,
    codec_params,
    tiny_hifigan,
    tiny_hifigan_audio,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_missing_pretrained_weights_say_where_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="10643148"):
        codec_from_params(codec_params(kind="official", path=str(tmp_path / "vae-ckpt.ckpt")))
    with pytest.raises(FileNotFoundError, match="ucsd-reach/musicldm"):
        codec_from_params(codec_params(kind="diffusers", path=str(tmp_path / "nothing")))


def test_trained_kind_is_seeded(codec: Codec) -> None:
    same = codec_from_params(codec_params(griffin_lim_iters=2), seed=0)
    other = codec_from_params(codec_params(griffin_lim_iters=2), seed=1)
    w = "decoder.conv_out.weight"
    assert torch.equal(codec.vae.state_dict()[w], same.vae.state_dict()[w])
    assert not torch.equal(codec.vae.state_dict()[w], other.vae.state_dict()[w])


def test_diffusers_kind_loads_a_saved_codec_dir(codec: Codec, tiny_hifigan: HifiGanVocoder, tmp_path: Path) -> None:
    save_codec(tmp_path / "codec", codec.vae, tiny_hifigan)
    built = codec_from_params(codec_params(kind="diffusers", path=str(tmp_path / "codec"), vocoder="hifigan"))
    w = "encoder.conv_in.weight"
    assert torch.equal(built.vae.state_dict()[w], codec.vae.state_dict()[w])
    assert isinstance(built.vocoder, HifiGanVocoder)
    other = codec.latent_channels + 2
    with pytest.raises(ValueError, match=f"codec.latent_channels={other}"):
        codec_from_params(codec_params(kind="diffusers", path=str(tmp_path / "codec"), latent_channels=other))


def test_official_kind_loads_lightning_checkpoints(codec: Codec, tiny_hifigan: HifiGanVocoder, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Official-layout files (with `loss.*` keys and a non-tensor entry) load through the weights_only fallback."""
    monkeypatch.setattr(build, "MUSICLDM_DDCONFIG", TINY_DDCONFIG)  # MusicLDM size (55 M) is too slow for a unit test
    monkeypatch.setattr(build, "MUSICLDM_HIFIGAN_CONFIG", TINY_HIFIGAN)
    ours = codec.vae.state_dict()
    official = {src: ours[dst] for src, dst in official_vae_key_map(TINY_DDCONFIG).items()}
    official["loss.logvar"] = torch.zeros(())
    torch.save({"state_dict": official, "hyper_parameters": {"root": pathlib.PurePosixPath("/x")}},
               tmp_path / "vae-ckpt.ckpt")
    voc = tiny_hifigan.model.state_dict()
    torch.save({"generator": {src: voc[dst] for src, dst in official_hifigan_key_map(TINY_HIFIGAN).items()}},
               tmp_path / "hifigan-ckpt.ckpt")
    params = codec_params(kind="official", path=str(tmp_path / "vae-ckpt.ckpt"), vocoder="hifigan",
                          vocoder_path=str(tmp_path / "hifigan-ckpt.ckpt"))
    with pytest.warns(UserWarning, match="weights_only=False"):
        built = codec_from_params(params)
    assert all(torch.equal(built.vae.state_dict()[k], v) for k, v in ours.items())
    mel = torch.randn(1, 1, 8, 64)
    with torch.inference_mode():
        assert torch.equal(built.mel_to_audio(mel), tiny_hifigan_audio(tiny_hifigan, mel))
