"""`train` stage: plain run -> model directory, and a real 2-process `accelerate launch` on the CPU."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from mtmusicldm import STEMS
from mtmusicldm.data.latents import LatentsIndex, encode_latent_sample, write_latent_split, write_latents_index
from mtmusicldm.codec.codec_dir import codec_sha256, save_codec
from mtmusicldm.codec.vae import build_vae
from mtmusicldm.codec.vocoder import GriffinLimVocoder
from mtmusicldm.generation import generate
from mtmusicldm.geometry import GEOMETRY
from mtmusicldm.ldm import MTMusicLDM
from mtmusicldm.models.unet3d import UNet3D
from pipeline import train as stage
from pipeline._common import load_params

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (4, 8, 16, 16)


@pytest.fixture(autouse=True)
def _single_thread():
    """One intra-op thread: 2 OpenMP threads on a busy 2-core machine run several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params(tmp: Path, **train) -> Path:
    raw = yaml.safe_load((ROOT / "profiles" / "embedded.yaml").read_text())
    raw["model"] = {"channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [2],
                    "num_head_channels": 32}
    raw["conditioning"]["clap"] = "random"  # a conditional model (the latents below carry CLAP embeddings)
    # fp32: an AcceleratorState is per process and other tests of this process made one without bf16
    raw["train"].update({"steps": 3, "batch_size": 1, "checkpoint_every": 2, "log_every": 1, "warmup_steps": 1,
                         "mixed_precision": "no",
                         "num_workers": 0, **train})
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _latents(root: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    samples = [encode_latent_sample(f"T{i}_c0000_v00", z, z, z, rng.standard_normal(512).astype(np.float32), {})
               for i in range(n) for z in [rng.standard_normal(SHAPE).astype(np.float32)]]
    shards, count = write_latent_split(root, "train", samples, 2)
    write_latents_index(LatentsIndex(
        root=root, stems=STEMS, latent_shape=SHAPE, scale_factor=0.5, scale_segments=n, posterior="sample",
        clap={"kind": "random"}, uncond_clap=tuple([0.0] * 512), codec_sha256="0" * 64,
        splits={"train": {"samples": count, "shards": shards}}, codec_dir="models/codec"))
    return root


def _codec(root: Path) -> Path:
    """A tiny codec directory with 8 latent channels (the latents' C)."""
    torch.manual_seed(0)
    vae = build_vae(ch=16, ch_mult=(1, 1, 1), num_res_blocks=1, z_channels=8, norm_num_groups=8)
    save_codec(root, vae, GriffinLimVocoder(n_iter=1, seed=0))
    return root


def test_run_writes_model_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MTMUSICLDM_NO_PROGRESS", "1")
    monkeypatch.chdir(tmp_path)  # latents.json codec_dir is relative to the working directory
    codec = _codec(tmp_path / "models" / "codec")
    p = load_params(_params(tmp_path))
    report = stage.run(p.seed, p.stems, p.model, p.diffusion, p.conditioning, p.train, _latents(tmp_path / "lat"),
                       tmp_path / "ck", tmp_path / "models" / "ldm")
    out = tmp_path / "models" / "ldm"
    assert report["steps"] == 3 and report["world_size"] == 1 and report["start_step"] == 0
    assert sorted(f.name for f in out.iterdir()) == ["codec", "config.json", "loss.csv", "loss.png", "params.yaml",
                                                     "unet.safetensors", "unet_ema.safetensors"]
    assert codec_sha256(out / "codec") == codec_sha256(codec)  # a copy of the codec the latents come from
    assert (out / "loss.csv").read_text().splitlines()[0] == "step,loss,lr,samples_per_s"
    assert yaml.safe_load((out / "params.yaml").read_text())["model"]["channels"] == 32

    m = MTMusicLDM.from_pretrained(out)
    assert m.config["trained_steps"] == 3 and m.config["codec"] == "codec" and m.codec_dir == out / "codec"
    assert m.config["segment_samples"] == 16 * 640 and m.scale_factor == 0.5
    assert m.recommended_sampler == stage.RECOMMENDED_SAMPLER and m.geometry == GEOMETRY
    trained_ema = UNet3D(m.unet.config)
    trained_ema.load_state_dict(load_file(str(tmp_path / "ck" / "step-3" / "ema.safetensors")))
    x, t, film = torch.randn(2, *SHAPE), torch.tensor([5, 700]), torch.randn(2, 512)
    with torch.no_grad():
        assert torch.equal(m.unet(x, t, film), trained_ema.eval()(x, t, film))
    assert stage.weights_sha256(m.unet) == report["weights_sha256"]["ema"]
    shutil.copytree(out, tmp_path / "elsewhere" / "model")  # a copy of models/ldm loads and generates on its own
    shutil.rmtree(tmp_path / "models")
    audio = generate(MTMusicLDM.from_pretrained(tmp_path / "elsewhere" / "model"), 1, seed=0, sampler="euler", steps=2)
    assert audio.shape == (1, 4, 16 * 640) and bool(torch.isfinite(audio).all())


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tmp_path, monkeypatch):
    params = _params(tmp_path, steps=2, checkpoint_every=2)
    _codec(tmp_path / "models" / "codec")  # latents.json names it relative to the working directory
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MTMUSICLDM_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "pipeline.train",
           "--params", str(params), "--latents", str(_latents(tmp_path / "lat")), "--checkpoints",
           str(tmp_path / "ck"), "--out", str(tmp_path / "ldm")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = r"train: rank (\d)/2 weights sha256 (unet=[0-9a-f]{64} ema=[0-9a-f]{64})"  # ranks' lines may interleave
    hashes = dict(re.findall(line, proc.stdout))
    assert set(hashes) == {"0", "1"}, proc.stdout
    assert hashes["0"] == hashes["1"]  # DDP keeps the ranks bitwise identical
    assert MTMusicLDM.from_pretrained(tmp_path / "ldm").config["trained_steps"] == 2

    # the 2-process checkpoint (Accelerate state, UNet stored unwrapped) resumes in one process: the weights go on,
    # the data stream starts afresh
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MTMUSICLDM_NO_PROGRESS", "1")
    p = load_params(_params(tmp_path, steps=3, checkpoint_every=2))
    report = stage.run(p.seed, p.stems, p.model, p.diffusion, p.conditioning, p.train, tmp_path / "lat",
                       tmp_path / "ck", tmp_path / "ldm")
    assert report["start_step"] == 2 and report["steps"] == 3 and report["world_size"] == 1
    assert any("data changed (world_size)" in n for n in report["notes"])
