"""`mtmusicldm import-official` / `import-codec` through `cli.main` on scaled official checkpoints."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch
import yaml

from cli import main

_HELPERS = Path(__file__).resolve().parents[1] / "mtmusicldm" / "official" / "test_import_checkpoint.py"


def _helpers() -> ModuleType:
    """The scaled-checkpoint builders of the library tests (loaded by path: tests/mtmusicldm is not a package)."""
    spec = importlib.util.spec_from_file_location("_official_checkpoint_builders", _HELPERS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def helpers() -> ModuleType:
    return _helpers()


@pytest.fixture(scope="module")
def uncond_ckpt(tmp_path_factory: pytest.TempPathFactory, helpers: ModuleType) -> Path:
    path = tmp_path_factory.mktemp("official") / "musicldm-uncond.ckpt"
    torch.save(helpers.lightning_container(helpers.build_state_dict(film=False, seed=3)), path)
    return path


def test_import_official_with_yaml_config(tmp_path: Path, uncond_ckpt: Path, helpers: ModuleType,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from mtmusicldm.ldm import MTMusicLDM

    unet_params = {"image_size": 64, "extra_film_condition_dim": None, "extra_film_use_concat": True,
                   "in_channels": 4, "out_channels": 4, "model_channels": 32, "no_condition": False, "dims": 3,
                   "attention_resolutions": [4, 2], "num_res_blocks": 2, "channel_mult": [1, 2, 2],
                   "num_head_channels": 8, "use_spatial_transformer": False}
    official = {"model": {"params": {
        "linear_start": 0.0015, "linear_end": 0.0195, "timesteps": 1000,
        "unet_config": {"target": "UNetModel", "params": unet_params},
        "first_stage_config": {"params": {"embed_dim": 8, "ddconfig": helpers.SMALL_DDCONFIG}}}},
        "preprocessing": {"audio": {"sampling_rate": 16000, "duration": 10.24}}}
    config_path = tmp_path / "uncond.yaml"
    config_path.write_text(yaml.safe_dump(official))
    out = tmp_path / "ldm"
    main(["import-official", str(uncond_ckpt), str(out), "--config", str(config_path)])
    assert "import-official: wrote" in capsys.readouterr().out
    model = MTMusicLDM.from_pretrained(out)
    assert model.unet.config.num_head_channels == 8 and model.latent_shape == (4, 8, 256, 16)
    assert (out / "official_config.yaml").is_file() and model.codec_dir == out / "codec"
    assert json.loads((out / "import.json").read_text())["unet_config_from"] == "config"
    assert model.vae.config.latent_channels == 8  # the codec loads


def test_import_codec(tmp_path: Path, uncond_ckpt: Path) -> None:
    sd = torch.load(uncond_ckpt, weights_only=True)["state_dict"]
    torch.save({"state_dict": {k[len("first_stage_model."):]: v for k, v in sd.items()
                               if k.startswith("first_stage_model.") and ".vocoder." not in k}}, tmp_path / "vae.ckpt")
    torch.save({"generator": {k[len("first_stage_model.vocoder."):]: v for k, v in sd.items()
                              if k.startswith("first_stage_model.vocoder.")}}, tmp_path / "hifigan.ckpt")
    main(["import-codec", str(tmp_path / "codec"), "--vae-ckpt", str(tmp_path / "vae.ckpt"),
          "--hifigan-ckpt", str(tmp_path / "hifigan.ckpt")])
    assert json.loads((tmp_path / "codec" / "codec.json").read_text())["vocoder"]["kind"] == "hifigan"


def test_import_official_errors(tmp_path: Path, uncond_ckpt: Path) -> None:
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(uncond_ckpt.read_bytes()[:4096])
    with pytest.raises(SystemExit, match=r"mtmusicldm import-official: .*truncated or not a PyTorch checkpoint "
                                         r"\(size 4096 bytes\)"):
        main(["import-official", str(cut), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit, match="import-official: .*stems"):
        main(["import-official", str(uncond_ckpt), str(tmp_path / "out"), "--stems", "bass,drums"])
    with pytest.raises(SystemExit, match="not found"):
        main(["import-official", str(tmp_path / "absent.ckpt"), str(tmp_path / "out")])


@pytest.mark.parametrize("head", [b"", b"\x80\x02", b"\x80\x04\x95", b"PK\x03\x04"], ids=["raw", "p2", "p4", "zip"])
def test_import_official_random_bytes_is_not_a_checkpoint(tmp_path: Path, head: bytes) -> None:
    """Random bytes are called what they are, with no advice to unpickle them with --trust-checkpoint."""
    path = tmp_path / "random.ckpt"
    path.write_bytes(head + torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(len(head)),
                                          dtype=torch.uint8).numpy().tobytes())
    for extra in ([], ["--trust-checkpoint"]):
        with pytest.raises(SystemExit) as e:
            main(["import-official", str(path), str(tmp_path / "out"), *extra])
        assert "not a PyTorch checkpoint" in str(e.value) and "--trust-checkpoint" not in str(e.value)
    assert not (tmp_path / "out").exists()
