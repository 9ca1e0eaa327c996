"""The training loop on a tiny latent dataset: learning, exact resume, incremental steps, NaN stop, refusals."""
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from mtmusicldm import STEMS
from mtmusicldm.config import ConditioningParams, DiffusionParams, ModelParams, TrainParams
from mtmusicldm.data.latents import (
    LatentsIndex,
    encode_latent_sample,
    read_latents_index,
    write_latent_split,
    write_latents_index,
)
from mtmusicldm.training import loop
from mtmusicldm.training.checkpoint import CheckpointError, find_latest, list_checkpoints

SHAPE = (4, 8, 16, 16)
MODEL = ModelParams(channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2,),
                    num_head_channels=32)
DIFFUSION = DiffusionParams(timesteps=1000, beta_start=0.0015, beta_end=0.0195, prediction="eps")
COND = ConditioningParams(clap="random", amodel="HTSAT-tiny", checkpoint=None, text_model=None, seed=0)
TRAIN = TrainParams(steps=6, batch_size=1, grad_accum=2, lr=1e-3, weight_decay=0.01, warmup_steps=3,
                    ema_decay=0.999, cfg_dropout=0.5, mixed_precision="no", grad_checkpointing=False,
                    max_grad_norm=1.0, snr_gamma=None, splits=("train",), checkpoint_every=2, log_every=1,
                    num_workers=0)


@pytest.fixture(autouse=True)
def _quiet_single_thread(monkeypatch):
    """No progress bars; one intra-op thread (2 OpenMP threads on a busy 2-core machine run ~6x slower)."""
    monkeypatch.setenv("MTMUSICLDM_NO_PROGRESS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_latents(root: Path, n: int = 4, seed: int = 0) -> LatentsIndex:
    """n fixed latents (+ CLAP vectors) in one shard, with latents.json."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        z = rng.standard_normal(SHAPE).astype(np.float32)
        samples.append(encode_latent_sample(f"T{i}_c0000_v00", z, z, z, rng.standard_normal(512).astype(np.float32),
                                            {"track": f"T{i}"}))
    shards, count = write_latent_split(root, "train", samples, 64)
    write_latents_index(LatentsIndex(
        root=root, stems=STEMS, latent_shape=SHAPE, scale_factor=0.5, scale_segments=n, posterior="sample",
        clap={"kind": "random"}, uncond_clap=tuple(rng.standard_normal(512).tolist()), codec_sha256="0" * 64,
        splits={"train": {"samples": count, "shards": shards}}))
    return read_latents_index(root)


def accelerator(grad_accum: int) -> Accelerator:
    return Accelerator(cpu=True, gradient_accumulation_steps=grad_accum, step_scheduler_with_optimizer=False)


def run_train(index: LatentsIndex, ckpt: Path, **changes) -> loop.TrainResult:
    params = TRAIN.replace(**{k: v for k, v in changes.items() if k != "model"})
    acc = accelerator(params.grad_accum)
    return loop.train(seed=3, stems=STEMS, model=changes.get("model", MODEL), diffusion=DIFFUSION, conditioning=COND,
                      train=params, latents=index, checkpoints=ckpt, accelerator=acc, log=lambda _: None)


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _rows(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as f:
        return [(r["step"], r["loss"]) for r in csv.DictReader(f)]


def test_loss_falls(tmp_path):
    index = make_latents(tmp_path / "lat")
    res = run_train(index, tmp_path / "ck", steps=24, batch_size=2, grad_accum=1, lr=3e-3, warmup_steps=0,
                    cfg_dropout=0.1, checkpoint_every=24, log_every=8)
    first, last = np.mean(res.losses[:8]), np.mean(res.losses[-8:])
    assert len(res.losses) == 24 and res.step == 24 and last < 0.7 * first, (first, last)
    assert [r[0] for r in _rows(res.loss_csv)] == ["8", "16", "24"]
    assert not _equal(res.unet, res.ema)  # the EMA lags the raw weights


def test_exact_resume_and_incremental(tmp_path, monkeypatch):
    index = make_latents(tmp_path / "lat")
    straight = run_train(index, tmp_path / "a")

    # killed during step 5 (after the checkpoint of step 4), then restarted
    calls = {"n": 0}
    real_loss = loop.diffusion_loss

    def dying_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 * 4 + 1:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(loop, "diffusion_loss", dying_loss)
    with pytest.raises(KeyboardInterrupt):
        run_train(index, tmp_path / "b")
    monkeypatch.setattr(loop, "diffusion_loss", real_loss)
    assert [s for s, _ in list_checkpoints(tmp_path / "b")] == [2, 4]
    resumed = run_train(index, tmp_path / "b")
    assert resumed.start_step == 4 and resumed.resumed_from == tmp_path / "b" / "step-4"
    assert _equal(resumed.unet, straight.unet) and _equal(resumed.ema, straight.ema)
    assert _rows(resumed.loss_csv) == _rows(straight.loss_csv)  # row 5 of the killed run was dropped

    # incremental: 4 steps, then train.steps raised to 6
    short = run_train(index, tmp_path / "c", steps=4)
    assert short.step == 4 and find_latest(tmp_path / "c").name == "step-4"
    longer = run_train(index, tmp_path / "c", steps=6)
    assert longer.start_step == 4 and longer.step == 6 and len(longer.losses) == 2
    assert _equal(longer.ema, straight.ema)
    assert [s for s, _ in list_checkpoints(tmp_path / "c")] == [2, 4, 6]

    # new data: continue from the weights with a fresh stream
    grown = run_train(make_latents(tmp_path / "lat2", n=6, seed=1), tmp_path / "c", steps=7)
    assert grown.start_step == 6 and any("data changed (fingerprint)" in n for n in grown.notes)
    # nothing to do at the target; beyond it is refused
    assert run_train(make_latents(tmp_path / "lat2", n=6, seed=1), tmp_path / "c", steps=7).losses == []
    with pytest.raises(CheckpointError, match="beyond train.steps"):
        run_train(index, tmp_path / "c", steps=5)


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    index = make_latents(tmp_path / "lat")
    calls = {"n": 0}
    real_loss = loop.diffusion_loss

    def nan_loss(*args, **kwargs):
        calls["n"] += 1
        out = real_loss(*args, **kwargs)
        return out * float("nan") if calls["n"] > 2 * 3 else out

    monkeypatch.setattr(loop, "diffusion_loss", nan_loss)
    with pytest.raises(loop.NonFiniteLossError, match="at step 4 .*last good checkpoint is .*step-2"):
        run_train(index, tmp_path / "ck")
    assert [s for s, _ in list_checkpoints(tmp_path / "ck")] == [2]
    assert max(int(s) for s, _ in _rows(tmp_path / "ck" / "loss.csv")) == 3  # nothing logged for step 4

    monkeypatch.setattr(loop, "diffusion_loss", real_loss)
    bigger = MODEL.replace(channels=64, num_head_channels=32)
    with pytest.raises(CheckpointError, match="different model params"):
        run_train(index, tmp_path / "ck", model=bigger)
    assert run_train(index, tmp_path / "ck", steps=3).start_step == 2  # the good checkpoint still resumes


def test_data_mismatch_is_reported_before_training(tmp_path):
    index = make_latents(tmp_path / "lat")
    with pytest.raises(ValueError, match="params.stems"):
        loop.train(seed=0, stems=STEMS[:3], model=MODEL, diffusion=DIFFUSION, conditioning=COND, train=TRAIN,
                   latents=index, checkpoints=tmp_path / "ck", accelerator=accelerator(2))
    assert not (tmp_path / "ck").exists()
