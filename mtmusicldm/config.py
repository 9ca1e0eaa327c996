"""`params.yaml` as typed, frozen, validated dataclasses.

One strict loader (`params_from_dict`) turns the parsed YAML mapping into `Params`: an unknown key, a missing key, a
value of the wrong type or out of range raises `ParamsError` naming the dotted key (e.g. `prepare.train_views`).
Defaults live in exactly one place, `params.yaml`; the dataclasses here have none. The library never parses YAML
itself: `pipeline/_common.py` reads the file and calls `params_from_dict`.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mtmusicldm import STEMS
from mtmusicldm.data.gm import CLASS_PROGRAMS
from mtmusicldm.data.slakh import MissingStemPolicy, SourceKind
from mtmusicldm.geometry import HOP, LATENT_DOWNSAMPLE, SAMPLE_RATE

__all__ = [
    "ParamsError",
    "Params",
    "AudioParams",
    "DataParams",
    "SyntheticParams",
    "PrepareParams",
    "CodecParams",
    "ConditioningParams",
    "EncodeParams",
    "ModelParams",
    "DiffusionParams",
    "TrainParams",
    "SampleParams",
    "EvaluateParams",
    "params_from_dict",
    "params_to_dict",
]

SPLITS: tuple[str, ...] = ("train", "validation", "test")


class ParamsError(ValueError):
    """A params file failed validation; the message starts with the dotted key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"params: {key}: {message}")
        self.key = key


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ParamsError(key, message)


# ----------------------------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class AudioParams:
    """Audio front-end shared by every stage."""

    sample_rate: int  # Hz; the MusicLDM mel front-end is defined at 16 kHz
    segment_samples: int  # samples per training/evaluation segment (paper: 163840 = 10.24 s)

    def validate(self, key: str) -> None:
        _check(self.sample_rate == SAMPLE_RATE, f"{key}.sample_rate", f"must be {SAMPLE_RATE} (the MusicLDM mel "
               f"front-end, VAE and HiFi-GAN are 16 kHz models), got {self.sample_rate}")
        # The VAE downsamples mel frames by 4 and the UNet time axis by up to 8 more: 32 mel frames.
        _check(self.segment_samples > 0 and self.segment_samples % (HOP * 32) == 0, f"{key}.segment_samples",
               f"must be a positive multiple of {HOP * 32} (hop {HOP} x 32 frames), got {self.segment_samples}")

    @property
    def segment_seconds(self) -> float:
        return self.segment_samples / self.sample_rate

    @property
    def mel_frames(self) -> int:
        """Mel frames per segment after the official crop (the n/hop + 1-th frame is dropped)."""
        return self.segment_samples // HOP


@dataclass(frozen=True)
class DataParams:
    """Which multi-track corpus to use and how to read it."""

    source: SourceKind  # a key of mtmusicldm.data.slakh.SCANNERS; synthetic = the embedded band dataset (no download)
    local_root: str | None  # an existing copy of the corpus; null = download (or generate) into the stage output
    missing_stem_policy: MissingStemPolicy  # a track lacking a class: drop it (official) or keep it silent
    silence_threshold_db: float  # a stem whose RMS is below this (dBFS) is flagged silent
    babyslakh_split: dict[str, float]  # BabySlakh has no splits: fractions for validation/test by track-id hash

    def validate(self, key: str) -> None:
        _check(-120.0 <= self.silence_threshold_db <= 0.0, f"{key}.silence_threshold_db",
               f"must be in [-120, 0] dBFS, got {self.silence_threshold_db}")
        _check(set(self.babyslakh_split) == {"validation", "test"}, f"{key}.babyslakh_split",
               f"must have exactly the keys validation and test, got {sorted(self.babyslakh_split)}")
        for split, frac in self.babyslakh_split.items():
            _check(0.0 <= frac < 1.0, f"{key}.babyslakh_split.{split}", f"must be in [0, 1), got {frac}")
        _check(sum(self.babyslakh_split.values()) < 1.0, f"{key}.babyslakh_split",
               "validation + test must leave some tracks for training")
        if self.local_root is not None:
            _check(bool(self.local_root.strip()), f"{key}.local_root", "must be null or a non-empty path")


@dataclass(frozen=True)
class SyntheticParams:
    """The embedded procedural band dataset (written in Slakh2100's layout)."""

    tracks: dict[str, int]  # tracks per split
    min_seconds: float
    max_seconds: float
    sample_rate: int  # Slakh2100's rate is 44100
    extra_stem_prob: float  # chance of an extra stem of an ignored class (strings, synth, organ)
    dropout_prob: float  # chance a stem drops out for a bar
    seed: int
    renderer: Literal["soundfont", "oscillators"]  # soundfont: GM presets of an SF2 file (like Slakh's instruments)
    soundfont: str | None  # SF2 file of the soundfont renderer; null = pretty_midi's bundled TimGM6mb.sf2
    programs: dict[str, tuple[int, ...]]  # per-class pools: GM programs (bass, guitar, piano), drum kits (drums)

    def validate(self, key: str) -> None:
        _check(set(self.tracks) == set(SPLITS), f"{key}.tracks",
               f"must have exactly the keys {list(SPLITS)}, got {sorted(self.tracks)}")
        for split, n in self.tracks.items():
            _check(n >= 1, f"{key}.tracks.{split}", f"must be >= 1, got {n}")
        _check(1.0 <= self.min_seconds <= self.max_seconds <= 600.0, f"{key}.min_seconds",
               f"need 1 <= min_seconds <= max_seconds <= 600, got {self.min_seconds}, {self.max_seconds}")
        _check(8000 <= self.sample_rate <= 192000, f"{key}.sample_rate", f"out of range: {self.sample_rate}")
        for name in ("extra_stem_prob", "dropout_prob"):
            v = getattr(self, name)
            _check(0.0 <= v <= 1.0, f"{key}.{name}", f"must be a probability in [0, 1], got {v}")
        if self.soundfont is not None:
            _check(bool(self.soundfont.strip()), f"{key}.soundfont", "must be null or a path to an SF2 file")
        families = {**CLASS_PROGRAMS, "drums": range(128)}
        _check(set(self.programs) <= set(families), f"{key}.programs",
               f"keys must be among {sorted(families)}, got {sorted(self.programs)}")
        for cls, pool in self.programs.items():
            allowed = families[cls]
            what = "drum kits" if cls == "drums" else f"General MIDI {cls} programs"
            _check(len(pool) >= 1 and all(p in allowed for p in pool), f"{key}.programs.{cls}",
                   f"must be a non-empty list of {what} in [{allowed.start}, {allowed.stop - 1}], got {list(pool)}")


@dataclass(frozen=True)
class PrepareParams:
    """Resampling to 16 kHz and cutting segments into WebDataset shards."""

    train_views: int  # randomly shifted views of every training chunk (the paper trains on shifted segments)
    max_shift_fraction: float  # training shift drawn uniformly in +-fraction*segment (official: 0.5 = +-5.12 s)
    max_track_seconds: float  # longer tracks are cut here (official: 640 s)
    samples_per_shard: int
    audio_format: Literal["flac", "npy"]  # flac = PCM_24 FLAC per stem, npy = float32 arrays
    workers: int  # processes decoding/resampling tracks (0 = in-process)

    def validate(self, key: str) -> None:
        _check(1 <= self.train_views <= 64, f"{key}.train_views", f"must be in [1, 64], got {self.train_views}")
        _check(0.0 <= self.max_shift_fraction <= 1.0, f"{key}.max_shift_fraction",
               f"must be in [0, 1], got {self.max_shift_fraction}")
        _check(self.max_track_seconds > 0, f"{key}.max_track_seconds", "must be > 0")
        _check(1 <= self.samples_per_shard <= 100000, f"{key}.samples_per_shard",
               f"must be in [1, 100000], got {self.samples_per_shard}")
        _check(0 <= self.workers <= 64, f"{key}.workers", f"must be in [0, 64], got {self.workers}")


@dataclass(frozen=True)
class CodecParams:
    """The latent codec: VAE (mel <-> latents) and vocoder (mel -> audio)."""

    kind: Literal["pca", "trained", "diffusers", "official"]  # pca/trained: fitted/trained by train_codec
    path: str | None  # diffusers: directory or hub id (ucsd-reach/musicldm); official: MusicLDM vae-ckpt.ckpt
    vocoder: Literal["griffin_lim", "hifigan"]
    vocoder_path: str | None  # hifigan: diffusers-style dir / hub id, or official hifigan-ckpt.ckpt
    channels: int  # trained VAE: base width (MusicLDM: 128)
    channel_mult: tuple[int, ...]  # three levels: mel (T, 64) -> latents (T/4, 16)
    num_res_blocks: int
    latent_channels: int  # C of [B, S, C, T, F]; MusicLDM: 8
    whiten: bool  # pca: scale each latent channel to unit variance
    train_steps: int  # train_codec: optimisation steps (0 = keep the initial/pretrained weights)
    batch_size: int  # train_codec: stem spectrograms per step
    train_crop_frames: int  # train_codec: random mel crops of this many frames (multiple of 4; 0 = whole segment)
    lr: float
    kl_weight: float
    griffin_lim_iters: int

    def validate(self, key: str) -> None:
        if self.kind in ("diffusers", "official"):
            _check(self.path is not None, f"{key}.path", f"is required when kind is {self.kind!r}")
        if self.vocoder == "hifigan":
            _check(self.vocoder_path is not None or self.kind == "diffusers", f"{key}.vocoder_path",
                   "is required for the hifigan vocoder unless kind is diffusers (vocoder/ subfolder)")
        _check(len(self.channel_mult) == 3 and all(m >= 1 for m in self.channel_mult), f"{key}.channel_mult",
               f"must be three positive multipliers (mel bins 64 -> latent F 16), got {list(self.channel_mult)}")
        _check(self.channels >= 32 and self.channels % 32 == 0, f"{key}.channels",
               f"must be a positive multiple of 32 (GroupNorm groups), got {self.channels}")
        _check(1 <= self.num_res_blocks <= 4, f"{key}.num_res_blocks", "must be in [1, 4]")
        _check(1 <= self.latent_channels <= (16 if self.kind == "pca" else 64), f"{key}.latent_channels",
               "must be in [1, 64] (pca: [1, 16], the size of a 4x4 patch)")
        _check(self.train_steps >= 0 and self.batch_size >= 1, f"{key}.train_steps", "must be >= 0 (batch_size >= 1)")
        _check(self.train_crop_frames == 0 or (self.train_crop_frames >= 16 and self.train_crop_frames % 4 == 0),
               f"{key}.train_crop_frames", f"must be 0 or a multiple of 4 >= 16, got {self.train_crop_frames}")
        _check(0 < self.lr < 1, f"{key}.lr", f"must be in (0, 1), got {self.lr}")
        _check(0 <= self.kl_weight < 1, f"{key}.kl_weight", f"must be in [0, 1), got {self.kl_weight}")
        _check(1 <= self.griffin_lim_iters <= 1000, f"{key}.griffin_lim_iters", "must be in [1, 1000]")


@dataclass(frozen=True)
class ConditioningParams:
    """CLAP conditioning (FiLM) of the diffusion model."""

    clap: Literal["none", "random", "pretrained"]  # none = unconditional model; random = untrained CLAP weights
    amodel: Literal["HTSAT-tiny", "HTSAT-base"]  # MusicLDM's CLAP is HTSAT-base
    checkpoint: str | None  # pretrained: MusicLDM clap-ckpt.pt (music_audioset_epoch_15_esc_90.14.pt)
    text_model: str | None  # roberta-base tokenizer/config: local dir or hub id; null = offline stand-in
    seed: int  # random: weight seed

    def validate(self, key: str) -> None:
        if self.clap == "pretrained":
            _check(self.checkpoint is not None, f"{key}.checkpoint", "is required when clap is 'pretrained'")

    @property
    def film_dim(self) -> int | None:
        return None if self.clap == "none" else 512


@dataclass(frozen=True)
class EncodeParams:
    """Precomputing latents (and CLAP embeddings) from the shards."""

    posterior: Literal["sample", "mean"]  # stored per sample: a posterior draw (official) or the mean
    batch_size: int
    scale_segments: int  # training segments used for the latent scale factor 1/std (official: 1)

    def validate(self, key: str) -> None:
        _check(1 <= self.batch_size <= 1024, f"{key}.batch_size", "must be in [1, 1024]")
        _check(1 <= self.scale_segments <= 100000, f"{key}.scale_segments", "must be in [1, 100000]")


@dataclass(frozen=True)
class ModelParams:
    """The 3D UNet (official: 192 channels, [1, 2, 3, 5], 2 res blocks, attention at 2/4/8, 32 head channels)."""

    channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]  # downsampling factors with self-attention
    num_head_channels: int

    def validate(self, key: str) -> None:
        _check(self.channels >= 32 and self.channels % 32 == 0, f"{key}.channels",
               f"must be a positive multiple of 32 (GroupNorm groups), got {self.channels}")
        _check(1 <= len(self.channel_mult) <= 6 and all(m >= 1 for m in self.channel_mult), f"{key}.channel_mult",
               f"must be 1-6 positive multipliers, got {list(self.channel_mult)}")
        _check(1 <= self.num_res_blocks <= 8, f"{key}.num_res_blocks", "must be in [1, 8]")
        factors = {2**i for i in range(len(self.channel_mult))}
        _check(set(self.attention_resolutions) <= factors, f"{key}.attention_resolutions",
               f"must be downsampling factors among {sorted(factors)}, got {list(self.attention_resolutions)}")
        _check(self.num_head_channels >= 1 and self.channels % self.num_head_channels == 0,
               f"{key}.num_head_channels", "must divide channels")

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)


@dataclass(frozen=True)
class DiffusionParams:
    """The noise schedule (official: T = 1000, scaled-linear betas 0.0015 -> 0.0195, eps-prediction)."""

    timesteps: int
    beta_start: float
    beta_end: float
    prediction: Literal["eps", "v"]  # what the UNet predicts: the noise (official) or the velocity v

    def validate(self, key: str) -> None:
        _check(2 <= self.timesteps <= 100000, f"{key}.timesteps", "must be in [2, 100000]")
        _check(0 < self.beta_start < self.beta_end < 1, f"{key}.beta_start", "need 0 < beta_start < beta_end < 1")


@dataclass(frozen=True)
class TrainParams:
    """Training of the 3D LDM with Accelerate (official: AdamW 3e-5, wd 0.01, 1000 warm-up steps, fp32)."""

    steps: int  # total optimizer steps; raising it continues from the last checkpoint
    batch_size: int  # per process
    grad_accum: int
    lr: float
    weight_decay: float
    warmup_steps: int
    ema_decay: float
    cfg_dropout: float  # probability of replacing the CLAP embedding by the "" embedding
    mixed_precision: Literal["no", "bf16", "fp16"]
    grad_checkpointing: bool
    max_grad_norm: float  # 0 = no clipping (official)
    snr_gamma: float | None  # min-SNR-gamma loss weighting (Hang et al. 2023); null = uniform (official)
    splits: tuple[str, ...]  # splits trained on (official: train + validation; test is held out)
    checkpoint_every: int
    log_every: int
    num_workers: int

    def validate(self, key: str) -> None:
        _check(self.steps >= 1, f"{key}.steps", "must be >= 1")
        _check(1 <= self.batch_size <= 4096, f"{key}.batch_size", "must be in [1, 4096]")
        _check(1 <= self.grad_accum <= 1024, f"{key}.grad_accum", "must be in [1, 1024]")
        _check(0 < self.lr < 1, f"{key}.lr", f"must be in (0, 1), got {self.lr}")
        _check(0 <= self.weight_decay < 1, f"{key}.weight_decay", "must be in [0, 1)")
        _check(self.warmup_steps >= 0, f"{key}.warmup_steps", "must be >= 0")
        _check(0 <= self.ema_decay < 1, f"{key}.ema_decay", "must be in [0, 1)")
        _check(0 <= self.cfg_dropout <= 1, f"{key}.cfg_dropout", "must be a probability")
        _check(self.max_grad_norm >= 0, f"{key}.max_grad_norm", "must be >= 0")
        _check(self.snr_gamma is None or 0 < self.snr_gamma <= 1000, f"{key}.snr_gamma",
               f"must be null or in (0, 1000], got {self.snr_gamma}")
        _check(len(self.splits) >= 1 and set(self.splits) <= set(SPLITS) and "test" not in self.splits,
               f"{key}.splits", f"must be a non-empty subset of [train, validation] (test is held out), got {list(self.splits)}")
        _check(self.checkpoint_every >= 1 and self.log_every >= 1, f"{key}.checkpoint_every",
               "checkpoint_every and log_every must be >= 1")
        _check(0 <= self.num_workers <= 64, f"{key}.num_workers", "must be in [0, 64]")


@dataclass(frozen=True)
class SampleParams:
    """The `sample` stage: total generation and the 14 arrangement settings on the test split."""

    count: int  # test segments (= samples) per setting; official: 300 (arrangement), 150 (text)
    batch_size: int
    sampler: str  # a key of mtmusicldm.diffusion.samplers.SAMPLERS (checked in validate); ddim = official
    steps: int  # official: 200
    eta: float | None  # null = the sampler's default (DDIM: 1.0, official)
    noise_mode: Literal["fresh", "fixed"]  # inpainting re-noising of the known stems (fresh = official)
    total: bool  # total generation (Table 1)
    arrangement: bool  # the 14 arrangement combinations (Table 3)
    guidance_scale: float  # CFG of conditional total generation (paper: 2.0)
    arrangement_guidance_scale: float  # official: 1.0
    arrangement_conditioning: Literal["target_mix", "given_mix"]  # official: target_mix
    prompts: tuple[str, ...]  # text-conditioned total generation (conditional models; Table 2)
    subtype: Literal["PCM_16", "FLOAT"]  # WAV format (official: PCM_16)
    untrained_reference: bool  # also sample every setting from the untrained model (the tables' ceiling row)
    examples: int  # listenable long-form examples in samples/examples (total generation + arrangement each)
    examples_seconds: float  # their length

    def validate(self, key: str) -> None:
        from mtmusicldm.diffusion.samplers import SAMPLERS  # lazy: `import mtmusicldm.config` stays torch-free

        _check(self.sampler in SAMPLERS, f"{key}.sampler", f"must be one of {sorted(SAMPLERS)}, got {self.sampler!r}")
        _check(1 <= self.count <= 100000, f"{key}.count", f"must be in [1, 100000], got {self.count}")
        _check(1 <= self.batch_size <= 1024, f"{key}.batch_size", "must be in [1, 1024]")
        _check(1 <= self.steps <= 1000, f"{key}.steps", f"must be in [1, 1000], got {self.steps}")
        if self.eta is not None:
            _check(0.0 <= self.eta <= 1.0, f"{key}.eta", f"must be null or in [0, 1], got {self.eta}")
        _check(self.guidance_scale >= 0 and self.arrangement_guidance_scale >= 0, f"{key}.guidance_scale",
               "guidance scales must be >= 0")
        _check(0 <= self.examples <= 16, f"{key}.examples", f"must be in [0, 16], got {self.examples}")
        _check(0 < self.examples_seconds <= 600, f"{key}.examples_seconds",
               f"must be in (0, 600] seconds, got {self.examples_seconds}")
        _check(self.total or self.arrangement or bool(self.prompts), f"{key}.total",
               "nothing to sample: total, arrangement and prompts are all off")


@dataclass(frozen=True)
class EvaluateParams:
    """The `evaluate` stage: FAD (Tables 1-3) with 95 % intervals, reference rows, coherence metrics."""

    backbone: str  # a key of mtmusicldm.evaluation.embedders.EMBEDDERS; offline/crepe: NOT comparable with FAD
    vggish_weights: str | None  # vggish-10086976.pth (torchvggish release); or vggish_hub_dir, for backbone vggish
    vggish_hub_dir: str | None  # torch hub cache with harritaylor/torchvggish (frechet-audio-distance's loader)
    clap_checkpoint: str | None  # CLAP weights for backbone clap (MusicLDM clap-ckpt.pt)
    crepe_model: Literal["tiny", "full"]  # backbone crepe: network size
    crepe_hop_s: float  # backbone crepe: frame hop in seconds
    text_references: dict[str, str]  # Table 2: prompt -> folder of reference clips tagged with it
    coherence: bool  # rhythmic/harmonic coherence of arrangements (real data = the ceiling)
    notes: Literal["off", "single", "all"]  # note-level coherence: off | total + 1-stem arrangements | all
    bootstrap: int  # resamples behind every 95 % interval
    seed: int

    def validate(self, key: str) -> None:
        from mtmusicldm.evaluation.embedders import EMBEDDERS  # lazy: `import mtmusicldm.config` stays torch-free

        _check(self.backbone in EMBEDDERS, f"{key}.backbone",
               f"must be one of {sorted(EMBEDDERS)}, got {self.backbone!r}")
        if self.backbone == "vggish":
            _check((self.vggish_weights is None) != (self.vggish_hub_dir is None), f"{key}.vggish_weights",
                   "backbone vggish needs exactly one of vggish_weights (a .pth file) and vggish_hub_dir")
        if self.backbone == "clap":
            _check(self.clap_checkpoint is not None, f"{key}.clap_checkpoint", "is required for backbone clap")
        _check(self.crepe_hop_s > 0, f"{key}.crepe_hop_s", f"must be > 0, got {self.crepe_hop_s}")
        _check(self.bootstrap >= 10, f"{key}.bootstrap", f"must be >= 10 resamples, got {self.bootstrap}")


@dataclass(frozen=True)
class Params:
    """The whole `params.yaml`."""

    seed: int
    stems: tuple[str, ...]
    audio: AudioParams
    data: DataParams
    synthetic: SyntheticParams
    prepare: PrepareParams
    codec: CodecParams
    conditioning: ConditioningParams
    encode: EncodeParams
    model: ModelParams
    diffusion: DiffusionParams
    train: TrainParams
    sample: SampleParams
    evaluate: EvaluateParams

    def validate(self, key: str = "") -> None:
        _check(0 <= self.seed < 2**63, "seed", f"must be a non-negative 64-bit integer, got {self.seed}")
        _check(tuple(self.stems) == STEMS, "stems",
               f"must be exactly {list(STEMS)} (the order of the S axis everywhere), got {list(self.stems)}")
        _check(self.prepare.max_track_seconds * self.audio.sample_rate >= self.audio.segment_samples,
               "prepare.max_track_seconds", "must be at least one segment long")
        latent_t = self.audio.mel_frames // LATENT_DOWNSAMPLE
        _check(latent_t % self.model.downsampling == 0 and 16 % self.model.downsampling == 0,
               "model.channel_mult", f"{len(self.model.channel_mult)} levels downsample by {self.model.downsampling}, "
               f"which must divide the latent time ({latent_t}) and frequency (16) sizes")


# ----------------------------------------------------------------------------------------------------------------
# Strict construction


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` and return it in its typed form (lists -> tuples)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            _check(type(None) in args, key, "must not be null")
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _coerce(value, a, key)
            except ParamsError as e:
                errors.append(str(e))
        raise ParamsError(key, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        _check(value in args, key, f"must be one of {list(args)}, got {value!r}")
        return value
    if tp is bool:
        _check(isinstance(value, bool), key, f"expected a boolean, got {value!r}")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        # YAML 1.1 reads `1e-4` (no dot) as a string: reject it with a hint rather than guessing.
        if isinstance(value, str):
            raise ParamsError(key, f"expected a number, got the string {value!r} (write floats as 1.0e-4)")
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key,
               f"expected a number, got {value!r}")
        _check(math.isfinite(float(value)), key, f"must be finite, got {value!r}")
        return float(value)
    if tp is str:
        _check(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    if origin is tuple:
        _check(isinstance(value, (list, tuple)), key, f"expected a list, got {value!r}")
        item_tp = args[0]
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _check(isinstance(value, Mapping), key, f"expected a mapping, got {value!r}")
        k_tp, v_tp = args
        return {_coerce(k, k_tp, f"{key}.<key>"): _coerce(v, v_tp, f"{key}.{k}") for k, v in value.items()}
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # a bug in this module, not in the params


def _build(cls: type, raw: Any, key: str) -> Any:
    where = key or "<top level>"
    if not isinstance(raw, Mapping):
        raise ParamsError(where, f"expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamsError(f"{key}.{unknown[0]}" if key else str(unknown[0]),
                          f"unknown key (allowed here: {', '.join(fields)})")
    missing = [f for f in fields if f not in raw]
    if missing:
        raise ParamsError(f"{key}.{missing[0]}" if key else missing[0], "missing key")
    values = {f: _coerce(raw[f], hints[f], f"{key}.{f}" if key else f) for f in fields}
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(key)
    return obj


def params_from_dict(raw: Mapping[str, Any]) -> Params:
    """Build and validate `Params` from a parsed `params.yaml` mapping.

    Raises:
        ParamsError: naming the first offending dotted key.
    """
    return _build(Params, raw, "")


def params_to_dict(obj: Any) -> Any:
    """Inverse of `params_from_dict` (tuples become lists): for writing resolved params next to outputs."""
    if dataclasses.is_dataclass(obj):
        return {f.name: params_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [params_to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: params_to_dict(v) for k, v in obj.items()}
    return obj
