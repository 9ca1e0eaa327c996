"""Training of the 3D LDM: one plain Accelerate function (`train`) and small helpers.

Per optimizer step (official spec 6): `grad_accum` micro-batches of unscaled latents are scaled by
`scale_factor`, t ~ U{0..T-1}, eps ~ N(0, 1), the CLAP embedding is replaced by the "" embedding with probability
`cfg_dropout`, and the loss is the batch mean of the per-sample eps-MSE. AdamW with the official linear warm-up
`lr * min(1, step / warmup_steps)` (step = optimizer steps already done: diffusers'
`get_constant_schedule_with_warmup`, prepared by Accelerate and stepped once per optimizer step, which needs an
accelerator with `step_scheduler_with_optimizer=False`), optional clipping, then the EMA update with the official
`min(ema_decay, (1 + n) / (10 + n))`.

Randomness: the UNet initialisation uses `seed`; the timesteps, noise and CFG-dropout draws of micro-batch `m` of
step `s` on rank `r` come from generators seeded by `(seed, purpose, r, s, m)`, so a resumed run draws exactly
what an uninterrupted one would. The data stream is a function of its seed and position (see
`mtmusicldm.data.latents`). Noise is drawn on the CPU (device-independent) and moved. The process-wide RNGs
(python, numpy, torch, CUDA; nothing here draws from them, but a library or a dropout layer could) are seeded
from `(seed, rank)` at the start and saved in every checkpoint, so their states too are a function of the run and
the step: a resumed run saves the states an uninterrupted one would (they were the process's ambient states
before, different in every process).

Resume (`mtmusicldm.training.checkpoint`): the newest complete checkpoint under `checkpoints` is loaded through
Accelerate (weights, EMA, optimizer, scheduler, scaler, RNG states) after its `state.json` (data position, params
hashes) is checked. Frozen params (stems, model, diffusion, conditioning, latent shape) must match; the train
section may change: `train.steps` may grow (incremental training), and the current lr, warm-up and weight decay
apply from the resumed step on. Changed data or data layout continues from the weights with a fresh stream.
"""
from __future__ import annotations

import copy
import csv
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.optimization import get_constant_schedule_with_warmup

from mtmusicldm.codec.latents import LatentScale
from mtmusicldm.config import ConditioningParams, DiffusionParams, ModelParams, TrainParams, params_to_dict
from mtmusicldm.data.latents import LatentsIndex, check_latents, make_latent_loader
from mtmusicldm.diffusion.losses import cfg_dropout, diffusion_loss, sample_timesteps
from mtmusicldm.diffusion.schedules import DiffusionSchedule
from mtmusicldm.models.unet3d import UNet3D, UNet3DConfig
from mtmusicldm.training import checkpoint as ckpt_io
from mtmusicldm.training.ema import ema_decay_at, ema_update
from mtmusicldm.utils.rng import hash_seed

LOSS_CSV = "loss.csv"
LOSS_COLUMNS = ("step", "loss", "lr", "samples_per_s")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf; nothing was saved for the failing step."""


@dataclass
class TrainResult:
    """What `train` returns on every rank."""

    unet: UNet3D  # raw weights (unwrapped)
    ema: UNet3D  # EMA weights
    step: int  # optimizer steps done in total
    start_step: int  # step this run started from (0 = fresh)
    resumed_from: Path | None
    checkpoint: Path | None  # newest checkpoint after the run
    loss_csv: Path
    world_size: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # per step of this run (mean over ranks and micro-batches)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def _generator(*parts: Any) -> torch.Generator:
    return torch.Generator().manual_seed(hash_seed(*parts))


def apply_train_params(optimizer: torch.optim.Optimizer, scheduler: Any, train: TrainParams) -> None:
    """Set the lr schedule and weight decay of `train` at the scheduler's current step.

    A resumed run restores the optimizer and scheduler of the checkpoint, with the lr and weight decay they were
    made with; the train section may have changed since (the warm-up lambda is not saved: it is always current).
    """
    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate's AcceleratedScheduler wraps a LambdaLR
    inner.base_lrs = [train.lr] * len(optimizer.param_groups)
    for group, lr_lambda in zip(optimizer.param_groups, inner.lr_lambdas):
        group["lr"] = train.lr * lr_lambda(inner.last_epoch)
        group["weight_decay"] = train.weight_decay


def unet_config_from_params(model: ModelParams, n_stems: int, film_dim: int | None,
                            grad_checkpointing: bool = False) -> UNet3DConfig:
    """The UNet3D configuration of `params.model` (stems in = stems out)."""
    return UNet3DConfig(in_stems=n_stems, out_stems=n_stems, model_channels=model.channels,
                        channel_mult=tuple(model.channel_mult), num_res_blocks=model.num_res_blocks,
                        attention_resolutions=tuple(model.attention_resolutions),
                        num_head_channels=model.num_head_channels, film_dim=film_dim,
                        use_checkpoint=grad_checkpointing)


def frozen_sections(stems: Sequence[str], model: ModelParams, diffusion: DiffusionParams,
                    conditioning: ConditioningParams, latent_shape: Sequence[int]) -> dict[str, Any]:
    """The params that must not change when resuming, by section."""
    return {"stems": list(stems), "model": params_to_dict(model), "diffusion": params_to_dict(diffusion),
            "conditioning": params_to_dict(conditioning), "latent_shape": list(latent_shape)}


def _init_loss_csv(path: Path, resume_step: int | None) -> None:
    """Fresh run: a new file with the header. Resume: drop rows logged after the resumed checkpoint."""
    rows: list[list[str]] = []
    if resume_step is not None and path.is_file():
        with open(path, newline="") as f:
            rows = [r for r in list(csv.reader(f))[1:] if r and int(r[0]) <= resume_step]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([list(LOSS_COLUMNS), *rows])


def _append_loss_row(path: Path, row: Sequence[float]) -> None:
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow([int(row[0]), f"{row[1]:.6g}", f"{row[2]:.6g}", f"{row[3]:.4g}"])


def _data_layout(seed: int, fingerprint: str, train: TrainParams, world_size: int) -> dict[str, Any]:
    """What the data position depends on: any change starts a fresh stream."""
    return {"seed": seed, "fingerprint": fingerprint, "splits": list(train.splits), "batch_size": train.batch_size,
            "world_size": world_size, "num_workers": train.num_workers}


# ----------------------------------------------------------------------------------------------------------------
# Train


def train(*, seed: int, stems: Sequence[str], model: ModelParams, diffusion: DiffusionParams,
          conditioning: ConditioningParams, train: TrainParams, latents: LatentsIndex, checkpoints: Path,
          accelerator: Accelerator, params_yaml: str | None = None, run_info: Mapping[str, Any] | None = None,
          log: Callable[[str], None] | None = None) -> TrainResult:
    """Train (or resume / extend) the 3D LDM up to `train.steps` optimizer steps.

    Args:
        seed, stems, model, diffusion, conditioning, train: the params sections (`mtmusicldm.config`).
        latents: the latent dataset (`read_latents_index`); `train.splits` are trained on.
        checkpoints: the persistent checkpoint directory (`checkpoints/ldm`); `loss.csv` lives there too.
        accelerator: configured with `mixed_precision` and `gradient_accumulation_steps = train.grad_accum`.
        params_yaml: resolved params text saved in every checkpoint.
        run_info: extra JSON-serialisable facts stored in state.json (e.g. git SHA).
        log: message sink (default: `accelerator.print`, i.e. rank 0).

    Returns:
        TrainResult (identical weights on every rank).

    Raises:
        ValueError: data/params mismatch. CheckpointError: incompatible checkpoint.
        NonFiniteLossError: NaN/inf loss (the step is named; the last good checkpoint is untouched).
    """
    t_start = time.perf_counter()
    log = log or accelerator.print
    checkpoints = Path(checkpoints)
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    if accelerator.gradient_accumulation_steps != train.grad_accum:
        raise ValueError(f"accelerator has gradient_accumulation_steps={accelerator.gradient_accumulation_steps}, "
                         f"params train.grad_accum is {train.grad_accum}")
    if accelerator.step_scheduler_with_optimizer:  # it would step the schedule once per process per step
        raise ValueError("the accelerator must have step_scheduler_with_optimizer=False (the lr schedule counts "
                         "optimizer steps, whatever the number of processes)")
    film_dim = conditioning.film_dim
    unet_cfg = unet_config_from_params(model, len(stems), film_dim, train.grad_checkpointing)
    check_latents(latents, stems=stems, film_dim=film_dim, downsampling=unet_cfg.downsampling_factor)
    uncond = None
    if film_dim is not None and train.cfg_dropout > 0:
        if latents.uncond_clap is None:
            raise ValueError("train.cfg_dropout > 0 needs uncond_clap in latents.json (the CLAP embedding of \"\")")
        uncond = torch.tensor(latents.uncond_clap, dtype=torch.float32, device=device)
    schedule = DiffusionSchedule(num_timesteps=diffusion.timesteps, beta_start=diffusion.beta_start,
                                 beta_end=diffusion.beta_end)
    frozen = ckpt_io.params_hashes(frozen_sections(stems, model, diffusion, conditioning, latents.latent_shape))
    shards = [p for split in train.splits for p in latents.shard_paths(split)]
    layout = _data_layout(seed, latents.fingerprint(train.splits), train, world)

    # ---- model, optimizer, schedule, resume
    if accelerator.is_main_process:
        for p in ckpt_io.clean_incomplete(checkpoints):
            log(f"train: removed incomplete checkpoint leftover {p}")
    accelerator.wait_for_everyone()
    latest = ckpt_io.find_latest(checkpoints)
    state: dict[str, Any] = {}
    notes: list[str] = []
    if latest is not None:
        state = ckpt_io.read_state(latest)
        ckpt_io.check_frozen(state["params_hash"]["frozen"], frozen, latest)
        if state["step"] > train.steps:
            raise ckpt_io.CheckpointError(f"{latest} is at step {state['step']}, beyond train.steps={train.steps}; "
                                          "raise train.steps or move the checkpoints away")
    set_seed(hash_seed(seed, "process-rngs", rank) % 2**32)  # a resumed run restores the saved states below
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(hash_seed(seed, "unet-init"))
        unet = UNet3D(unet_cfg)
    ema = copy.deepcopy(unet).requires_grad_(False).to(device).eval()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    scheduler = get_constant_schedule_with_warmup(optimizer, train.warmup_steps)
    unet, optimizer, scheduler = accelerator.prepare(unet, optimizer, scheduler)
    if latest is not None:
        ckpt_io.load_checkpoint(accelerator, latest, state, ema)
        apply_train_params(optimizer, scheduler, train)
    start = int(state["step"]) if state else 0

    # ---- data stream
    if state and state["data"]["layout"] == layout:
        data = dict(state["data"])
    else:
        data = {"layout": layout, "stream_seed": hash_seed(seed, "stream", start), "stream_start": start}
        if state:
            changed = sorted(k for k in layout if state["data"]["layout"][k] != layout[k])
            notes.append(f"data changed ({', '.join(changed)}): continuing from the weights of step {start} "
                         "with a fresh data stream")
    position = (start - data["stream_start"]) * train.grad_accum
    loader = make_latent_loader(shards, batch_size=train.batch_size, seed=data["stream_seed"], rank=rank,
                                world_size=world, num_workers=train.num_workers, resample=True,
                                start_position=position, expected_shape=latents.latent_shape)
    loss_csv = checkpoints / LOSS_CSV
    if accelerator.is_main_process:
        checkpoints.mkdir(parents=True, exist_ok=True)
        _init_loss_csv(loss_csv, start if state else None)
    if state:
        notes.insert(0, f"resumed from {latest} (step {start})")
    for n in notes:
        log(f"train: {n}")

    # ---- loop
    samples_per_step = train.batch_size * train.grad_accum * world
    scale = LatentScale(latents.scale_factor)
    samples_seen = int(state["samples_seen"]) if state else 0
    last_ckpt = latest
    losses: list[float] = []
    window: list[float] = []
    t_window = time.perf_counter()
    step = start
    batches = iter(loader)
    bar = _progress(accelerator, start, train.steps)
    try:
        while step < train.steps:
            lr = optimizer.param_groups[0]["lr"]  # the schedule's value for `step` optimizer steps done
            step_loss = 0.0
            for micro in range(train.grad_accum):
                batch = next(batches)
                x0 = scale.encode(batch["latents"].to(device))  # [B, S, C, T', F']
                b = x0.shape[0]
                t = sample_timesteps(b, schedule.num_timesteps, _generator(seed, "t", rank, step, micro), device)
                noise = torch.randn(x0.shape, generator=_generator(seed, "noise", rank, step, micro)).to(device)
                film = None
                if film_dim is not None:
                    film = batch["clap"].to(device)
                    if uncond is not None:
                        film = cfg_dropout(film, uncond, train.cfg_dropout, _generator(seed, "cfg", rank, step, micro))
                with accelerator.accumulate(unet):
                    loss = diffusion_loss(unet, x0, t, noise, film, schedule, prediction=diffusion.prediction,
                                          snr_gamma=train.snr_gamma).mean()
                    mean_loss = float(accelerator.reduce(loss.detach().float().clone(), "mean"))
                    if not math.isfinite(mean_loss):
                        raise NonFiniteLossError(
                            f"training loss is {mean_loss} at step {step + 1} (micro-batch {micro}); nothing was "
                            f"saved for it, the last good checkpoint is {last_ckpt or 'none'}")
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and train.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(unet.parameters(), train.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                step_loss += mean_loss / train.grad_accum
            scheduler.step()
            step += 1
            samples_seen += samples_per_step
            ema_update(ema, accelerator.unwrap_model(unet), ema_decay_at(step, train.ema_decay))
            losses.append(step_loss)
            window.append(step_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            if step % train.log_every == 0 or step == train.steps:
                now = time.perf_counter()
                if accelerator.is_main_process:
                    rate = len(window) * samples_per_step / max(now - t_window, 1e-9)
                    _append_loss_row(loss_csv, (step, sum(window) / len(window), lr, rate))
                window, t_window = [], now
            if step % train.checkpoint_every == 0 or step == train.steps:
                data["position"] = (step - data["stream_start"]) * train.grad_accum
                last_ckpt = ckpt_io.save_checkpoint(accelerator, checkpoints, step, ema, {
                    "samples_seen": samples_seen, "data": data, "params_hash": {"frozen": frozen},
                    "params": {"train": params_to_dict(train)}, "run": dict(run_info or {}),
                }, params_yaml=params_yaml)
    finally:
        bar.close()
    return TrainResult(unet=accelerator.unwrap_model(unet, keep_fp32_wrapper=False), ema=ema, step=step,
                       start_step=start, resumed_from=latest, checkpoint=last_ckpt, loss_csv=loss_csv, world_size=world,
                       seconds=time.perf_counter() - t_start, losses=losses, notes=notes)


def _progress(accelerator: Accelerator, start: int, total: int) -> Any:
    """A tqdm bar (rank 0; off when MTMUSICLDM_NO_PROGRESS=1) showing loss, steps/s and ETA."""
    from tqdm.auto import tqdm

    disable = not accelerator.is_main_process or os.environ.get("MTMUSICLDM_NO_PROGRESS") == "1"
    return tqdm(total=total, initial=start, desc="train", unit="step", disable=disable, dynamic_ncols=True)
