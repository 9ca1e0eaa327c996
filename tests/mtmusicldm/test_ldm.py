"""MTMusicLDM: save_pretrained / from_pretrained, self-contained copies, older directories, to(), embed_condition."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from mtmusicldm import STEMS
from mtmusicldm.audio import load_audio
from mtmusicldm.codec.codec_dir import Codec, save_codec
from mtmusicldm.codec.vae import build_vae
from mtmusicldm.codec.vocoder import GriffinLimVocoder
from mtmusicldm.diffusion.schedules import DiffusionSchedule
from mtmusicldm.generation import generate
from mtmusicldm.geometry import GEOMETRY
from mtmusicldm.ldm import MTMusicLDM, load_model
from mtmusicldm.model_config import OFFICIAL_SAMPLER, RecommendedSampler, make_model_config
from mtmusicldm.models.unet3d import UNet3D, UNet3DConfig
from tests.tiny_models import tiny_hifigan

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

UNET = UNet3DConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2,),
                    num_head_channels=32, film_dim=512)
COND = {"clap": "random", "amodel": "HTSAT-tiny", "checkpoint": None, "text_model": None, "seed": 0}
FAST = RecommendedSampler("dpmpp_2m", 3)


def _unet(seed: int, config: UNet3DConfig = UNET) -> UNet3D:
    torch.manual_seed(seed)
    unet = UNet3D(config)
    with torch.no_grad():  # conv_out is zero-initialised: perturb everything so outputs differ
        for p in unet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return unet


def _codec(vocoder: Any = None) -> Codec:
    torch.manual_seed(0)
    vae = build_vae(ch=16, ch_mult=(1, 1, 1), num_res_blocks=1, z_channels=8, norm_num_groups=8)
    return Codec(vae=vae.eval(), vocoder=vocoder or GriffinLimVocoder(n_iter=1, seed=0), latent_channels=8,
                 info={"kind": "trained", "source": {}})


def _config(unet: UNet3DConfig = UNET, cond: dict | None = COND, uncond: list | None = None,
            recommended: RecommendedSampler = FAST) -> dict:
    return make_model_config(stems=STEMS, unet=unet, timesteps=1000, beta_start=0.0015, beta_end=0.0195,
                             scale_factor=0.7, latent_shape=(4, 8, 16, 16), segment_samples=10240,
                             sample_rate=16000, conditioning=cond,
                             uncond_clap=uncond if uncond is not None else ([0.1] * 512 if cond else None),
                             trained_steps=3, source="test", recommended_sampler=recommended)


def _files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------------------------
# save / load


def test_roundtrip_ema_raw_and_self_contained_layout(tmp_path: Path) -> None:
    raw = _unet(0)
    model = MTMusicLDM(_unet(1), _config(), codec=_codec())
    out = model.save_pretrained(tmp_path / "ldm", raw_unet=raw, extra_files={"params.yaml": "seed: 1\n"})
    files = _files(out)
    assert {"config.json", "params.yaml", "unet.safetensors", "unet_ema.safetensors", "codec/codec.json",
            "codec/vae/config.json"} <= set(files)
    assert all(f.endswith((".json", ".safetensors", ".yaml")) for f in files), files  # nothing pickled
    m = MTMusicLDM.from_pretrained(out)
    x, t, film = torch.randn(2, 4, 8, 16, 16), torch.tensor([10, 900]), torch.randn(2, 512)
    with torch.no_grad():
        assert torch.equal(m.unet(x, t, film), model.unet(x, t, film))
        assert torch.equal(MTMusicLDM.from_pretrained(out, ema=False).unet(x, t, film), raw.eval()(x, t, film))
    assert not m.unet.training and m.stems == STEMS and m.scale_factor == 0.7 and m.film_dim == 512
    assert m.latent_shape == (4, 8, 16, 16) and m.uncond_clap.shape == (512,) and m.latent_scale.scale == 0.7
    assert m.schedule == DiffusionSchedule(1000, 0.0015, 0.0195) and m.codec_dir == out / "codec"
    assert m.geometry == GEOMETRY and m.recommended_sampler == FAST and m.config["codec"] == "codec"
    assert torch.equal(m.vae.state_dict()["decoder.conv_out.weight"], model.vae.state_dict()["decoder.conv_out.weight"])


def test_a_copy_elsewhere_loads_and_generates_the_same(tmp_path: Path) -> None:
    cfg = UNET.replace(film_dim=None)
    model = MTMusicLDM(_unet(2, cfg), _config(unet=cfg, cond=None), codec=_codec(tiny_hifigan()))
    model.save_pretrained(tmp_path / "a" / "ldm")
    shutil.copytree(tmp_path / "a" / "ldm", tmp_path / "b" / "model")
    shutil.rmtree(tmp_path / "a")
    copy = MTMusicLDM.from_pretrained(tmp_path / "b" / "model")
    kw = dict(seed=5, sampler="dpmpp_2m", steps=2)
    assert torch.equal(generate(copy, 1, **kw), generate(model, 1, **kw))


def test_pretrained_clap_is_kept_as_safetensors(tmp_path: Path) -> None:
    weights = {"audio_branch.bn0.weight": torch.randn(4), "text_branch.proj.weight": torch.randn(3, 2)}
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}}, tmp_path / "clap-ckpt.pt")
    cond = COND | {"clap": "pretrained", "checkpoint": str(tmp_path / "clap-ckpt.pt")}
    out = MTMusicLDM(_unet(0), _config(cond=cond), codec=_codec()).save_pretrained(tmp_path / "ldm")
    assert json.loads((out / "config.json").read_text())["conditioning"]["checkpoint"] == "clap.safetensors"
    saved = load_file(str(out / "clap.safetensors"))
    assert saved.keys() == weights.keys() and all(torch.equal(saved[k], v) for k, v in weights.items())
    explicit = {"x.weight": torch.ones(2)}
    again = MTMusicLDM.from_pretrained(out).save_pretrained(tmp_path / "ldm2", clap_weights=explicit)
    assert load_file(str(again / "clap.safetensors")).keys() == {"x.weight"}


def test_older_directories_still_load(tmp_path: Path) -> None:
    """Written before geometry / recommended_sampler were recorded, with the codec beside the model dir."""
    cfg = UNET.replace(film_dim=None)
    config = _config(unet=cfg, cond=None)
    del config["geometry"], config["recommended_sampler"]
    config["codec"] = "../codec"
    (tmp_path / "ldm").mkdir()
    (tmp_path / "ldm" / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in _unet(0, cfg).state_dict().items()},
              str(tmp_path / "ldm" / "unet_ema.safetensors"))
    codec = _codec()
    save_codec(tmp_path / "codec", codec.vae, codec.vocoder)
    m = load_model(tmp_path / "ldm", "cpu")
    assert m.geometry == GEOMETRY and m.recommended_sampler == OFFICIAL_SAMPLER
    assert m.codec_dir == tmp_path / "ldm" / "../codec" and m._codec is not None  # load_model loads it at once
    out = m.save_pretrained(tmp_path / "new")  # re-saving makes it self-contained
    assert json.loads((out / "config.json").read_text())["codec"] == "codec" and (out / "codec" / "vae").is_dir()


def test_geometry_and_recommendation_are_checked(tmp_path: Path) -> None:
    out = MTMusicLDM(_unet(0), _config(), codec=_codec()).save_pretrained(tmp_path / "ldm")
    config = json.loads((out / "config.json").read_text())
    foreign = config | {"geometry": {"sample_rate": 16000, "hop": 320, "downsample": 4}, "segment_samples": 20480}
    (out / "config.json").write_text(json.dumps(foreign))
    with pytest.raises(ValueError, match="differs from this code's front-end"):
        MTMusicLDM.from_pretrained(out)
    (out / "config.json").write_text(json.dumps(config | {"segment_samples": 12345}))
    with pytest.raises(ValueError, match="disagree with the geometry"):
        MTMusicLDM.from_pretrained(out)
    (out / "config.json").write_text(json.dumps(config | {"recommended_sampler": {"name": "heun", "steps": 9}}))
    with pytest.raises(ValueError, match="unknown sampler 'heun'"):
        MTMusicLDM.from_pretrained(out)


# ---------------------------------------------------------------------------------------------------------------
# to(), with_unet, embed_condition


class StubClap:
    """Records how the model calls its conditioner."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def to(self, device: Any) -> StubClap:
        self.calls.append(("to", str(device)))
        return self

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        self.calls.append(("text", texts))
        return torch.ones(len(texts), 512)

    def embed_audio_long(self, wav: torch.Tensor) -> torch.Tensor:
        self.calls.append(("audio", wav))
        return torch.zeros(wav.shape[0], 512)


def test_to_moves_every_part() -> None:
    model = MTMusicLDM(_unet(0), _config(), codec=_codec(tiny_hifigan()))
    model._clap = StubClap()
    model.to("meta")
    for part in (model.unet, model.vae, model.vocoder):
        assert {p.device.type for p in part.parameters()} == {"meta"}, type(part).__name__
    assert model._clap.calls == [("to", "meta")] and model.device.type == "meta"
    other = model.with_unet(_unet(1))
    assert other.codec is model.codec and other.clap is model.clap and other.device.type == "meta"


def test_embed_condition_routes_prompt_and_reference(tmp_path: Path) -> None:
    model = MTMusicLDM(_unet(0), _config(), codec=_codec())
    stub = model._clap = StubClap()
    assert model.embed_condition() is None
    assert torch.equal(model.embed_condition(prompt="soft piano"), torch.ones(512))
    stereo = 0.1 * np.random.default_rng(0).standard_normal((22050, 2)).astype(np.float32)
    sf.write(str(tmp_path / "ref.wav"), stereo, 44100)
    model.embed_condition(reference=tmp_path / "ref.wav")
    model.embed_condition(reference=np.zeros(800, np.float32))
    (_, text), (_, from_file), (_, from_array) = stub.calls
    assert text == ["soft piano"] and from_array.shape == (1, 800)
    assert torch.equal(from_file[0], torch.from_numpy(load_audio(tmp_path / "ref.wav", 16000)))
    with pytest.raises(ValueError, match="not both"):
        model.embed_condition(prompt="a", reference=np.zeros(10))
    uncond = MTMusicLDM(_unet(0, UNET.replace(film_dim=None)), _config(unet=UNET.replace(film_dim=None), cond=None))
    assert uncond.embed_condition() is None
    with pytest.raises(ValueError, match="unconditional"):
        uncond.embed_condition(prompt="a")


# ---------------------------------------------------------------------------------------------------------------
# errors


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist .*import-official"):
        MTMusicLDM.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        MTMusicLDM.from_pretrained(tmp_path / "empty")
    out = MTMusicLDM(_unet(0), _config(), codec=_codec()).save_pretrained(tmp_path / "ldm")
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "version": 99}))
    with pytest.raises(ValueError, match="version"):
        MTMusicLDM.from_pretrained(out)
    (out / "config.json").write_text(json.dumps({**cfg, "unet": {**cfg["unet"], "model_channels": 64}}))
    with pytest.raises(ValueError, match="shape mismatches .*conv_in.weight"):
        MTMusicLDM.from_pretrained(out)
    with pytest.raises(ValueError, match="missing .*film_proj"):
        MTMusicLDM(_unet(0, UNET.replace(film_dim=None)), _config(), codec=_codec()).save_pretrained(tmp_path / "b")
    with pytest.raises(ValueError, match="film_dim"):
        _config(unet=UNET.replace(film_dim=None))  # conditioning given, UNet unconditional
    with pytest.raises(ValueError, match="reserved"):
        MTMusicLDM(_unet(0), _config(), codec=_codec()).save_pretrained(tmp_path / "c", extra_files={"codec": "x"})
    (out / "config.json").write_text(json.dumps(cfg | {"codec": None}))
    with pytest.raises(ValueError, match="codec: null"):
        MTMusicLDM.from_pretrained(out).vae
    shutil.rmtree(out / "codec" / "vae")
    (out / "config.json").write_text(json.dumps(cfg))
    MTMusicLDM.from_pretrained(out)  # lazy: the codec is not read yet
    with pytest.raises(FileNotFoundError, match="has no VAE"):
        load_model(out, "cpu")
