"""Model directory: save_model_dir / MTMusicLDM.from_pretrained round trip and its errors."""
import json

import pytest
import torch

from mtmusicldm import STEMS
from mtmusicldm.diffusion.schedules import DiffusionSchedule
from mtmusicldm.ldm import MTMusicLDM, make_model_config, save_model_dir
from mtmusicldm.models.unet3d import UNet3D, UNet3DConfig

UNET = UNet3DConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2,),
                    num_head_channels=32, film_dim=512)
COND = {"clap": "random", "amodel": "HTSAT-tiny", "checkpoint": None, "text_model": None, "seed": 0}


@pytest.fixture(autouse=True)
def _single_thread():
    """One intra-op thread: 2 OpenMP threads on a busy 2-core machine run several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _unet(seed: int, config: UNet3DConfig = UNET) -> UNet3D:
    torch.manual_seed(seed)
    unet = UNet3D(config)
    with torch.no_grad():
        for p in unet.parameters():  # conv_out is zero-initialised: perturb everything so outputs differ
            p.add_(0.01 * torch.randn_like(p))
    return unet


def _config(codec: str | None = "../codec", unet: UNet3DConfig = UNET, cond=COND, uncond=None) -> dict:
    return make_model_config(stems=STEMS, unet=unet, timesteps=1000, beta_start=0.0015, beta_end=0.0195,
                             scale_factor=0.7, latent_shape=(4, 8, 16, 16), segment_samples=10240,
                             sample_rate=16000, codec=codec, conditioning=cond,
                             uncond_clap=uncond if uncond is not None else ([0.1] * 512 if cond else None),
                             trained_steps=3, source="test")


def test_roundtrip_ema_and_raw(tmp_path):
    raw, ema = _unet(0), _unet(1)
    (tmp_path / "codec").mkdir()
    out = save_model_dir(tmp_path / "ldm", raw, ema, _config(), extra_files={"params.yaml": "seed: 1\n"})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "params.yaml", "unet.safetensors",
                                                     "unet_ema.safetensors"]
    m = MTMusicLDM.from_pretrained(out)
    x, t, film = torch.randn(2, 4, 8, 16, 16), torch.tensor([10, 900]), torch.randn(2, 512)
    with torch.no_grad():
        assert torch.equal(m.unet(x, t, film), ema.eval()(x, t, film))
        assert torch.equal(MTMusicLDM.from_pretrained(out, ema=False).unet(x, t, film), raw.eval()(x, t, film))
    assert not m.unet.training and m.stems == STEMS and m.scale_factor == 0.7 and m.film_dim == 512
    assert m.latent_shape == (4, 8, 16, 16) and m.uncond_clap.shape == (512,)
    assert m.schedule == DiffusionSchedule(1000, 0.0015, 0.0195)
    assert m.codec_dir == out / "../codec"


def test_unconditional_and_codec_errors(tmp_path):
    cfg = UNET.replace(film_dim=None)
    out = save_model_dir(tmp_path / "ldm", _unet(0, cfg), _unet(0, cfg), _config(codec=None, unet=cfg, cond=None))
    m = MTMusicLDM.from_pretrained(out)
    assert m.clap is None and m.uncond_clap is None and m.film_dim is None
    with pytest.raises(ValueError, match="codec: null"):
        m.vae
    out2 = save_model_dir(tmp_path / "ldm2", _unet(0, cfg), _unet(0, cfg), _config(codec="nowhere", unet=cfg,
                                                                                    cond=None))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        MTMusicLDM.from_pretrained(out2).vocoder


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MTMusicLDM.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        MTMusicLDM.from_pretrained(tmp_path / "empty")
    out = save_model_dir(tmp_path / "ldm", _unet(0), _unet(0), _config())
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "version": 99}))
    with pytest.raises(ValueError, match="version"):
        MTMusicLDM.from_pretrained(out)
    wider = {**cfg, "unet": {**cfg["unet"], "model_channels": 64}}
    (out / "config.json").write_text(json.dumps(wider))
    with pytest.raises(ValueError, match="shape mismatches .*conv_in.weight"):
        MTMusicLDM.from_pretrained(out)
    with pytest.raises(ValueError, match="missing .*film_proj"):
        save_model_dir(tmp_path / "bad", _unet(0, UNET.replace(film_dim=None)), _unet(0), _config())
    with pytest.raises(ValueError, match="film_dim"):
        _config(unet=UNET.replace(film_dim=None))  # conditioning given, UNet unconditional

