"""`params.yaml` as typed, frozen, validated pydantic models.

`params_from_dict` turns the parsed YAML mapping into `Params`. pydantic checks the shape (unknown and missing keys,
strict types: no str -> number or bool -> int coercion, finite floats, `Literal` choices, single-field ranges
declared with `Field`); each section's `_rules` validator checks what spans fields or needs a domain explanation.
The first error becomes one `ParamsError` naming the dotted key (e.g. `prepare.train_views`). Defaults live in
exactly one place, `params.yaml`: the models here have none. The library never parses YAML itself:
`pipeline/_common.py` reads the file and calls `params_from_dict`.

Copies with changes: `section.replace(**changes)` (validated again, like a fresh load). pydantic's own
`model_copy(update=...)` skips validation: do not use it on params.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self, TypeVar

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

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
        self.reason = message


# ----------------------------------------------------------------------------------------------------------------
# Building blocks

T = TypeVar("T")
FrozenList = Annotated[tuple[T, ...], Strict(False)]
"""A YAML list, stored as a tuple (frozen, hashable). Only the container is lax (YAML has no tuples, and strict
pydantic accepts only tuples for them); its items stay strict."""
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
UnitInterval = Annotated[float, Field(gt=0.0, lt=1.0)]  # learning rates


class _RuleError(ValueError):
    """A rule of a section's `_rules` failed; pydantic reports it as a `value_error` holding this instance."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field  # dotted, relative to the section


def _check(cond: bool, field: str, message: str) -> None:
    if not cond:
        raise _RuleError(field, message)


class _Section(BaseModel):
    """Frozen, strict, no unknown keys, finite floats; no defaults (they live in params.yaml)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed, validated again (`ParamsError` naming the dotted key)."""
        try:
            return type(self).model_validate(dict(self) | changes)
        except ValidationError as e:
            raise _params_error(e, type(self), _SECTION_KEYS.get(type(self), "")) from None


# ----------------------------------------------------------------------------------------------------------------
# Sections


class AudioParams(_Section):
    """Audio front-end shared by every stage."""

    sample_rate: int  # Hz; the MusicLDM mel front-end is defined at 16 kHz
    segment_samples: int  # samples per training/evaluation segment (paper: 163840 = 10.24 s)

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _check(self.sample_rate == SAMPLE_RATE, "sample_rate", f"must be {SAMPLE_RATE} (the MusicLDM mel "
               f"front-end, VAE and HiFi-GAN are 16 kHz models), got {self.sample_rate}")
        # The VAE downsamples mel frames by 4 and the UNet time axis by up to 8 more: 32 mel frames.
        _check(self.segment_samples > 0 and self.segment_samples % (HOP * 32) == 0, "segment_samples",
               f"must be a positive multiple of {HOP * 32} (hop {HOP} x 32 frames), got {self.segment_samples}")
        return self

    @property
    def segment_seconds(self) -> float:
        return self.segment_samples / self.sample_rate

    @property
    def mel_frames(self) -> int:
        """Mel frames per segment after the official crop (the n/hop + 1-th frame is dropped)."""
        return self.segment_samples // HOP


class DataParams(_Section):
    """Which multi-track corpus to use and how to read it."""

    source: SourceKind  # a key of mtmusicldm.data.slakh.SCANNERS; synthetic = the embedded band dataset (no download)
    local_root: str | None  # an existing copy of the corpus; null = download (or generate) into the stage output
    missing_stem_policy: MissingStemPolicy  # a track lacking a class: drop it (official) or keep it silent
    silence_threshold_db: Annotated[float, Field(ge=-120.0, le=0.0)]  # a stem below this RMS (dBFS) is silent
    babyslakh_split: dict[str, float]  # BabySlakh has no splits: fractions for validation/test by track-id hash

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _check(set(self.babyslakh_split) == {"validation", "test"}, "babyslakh_split",
               f"must have exactly the keys validation and test, got {sorted(self.babyslakh_split)}")
        for split, frac in self.babyslakh_split.items():
            _check(0.0 <= frac < 1.0, f"babyslakh_split.{split}", f"must be in [0, 1), got {frac}")
        _check(sum(self.babyslakh_split.values()) < 1.0, "babyslakh_split",
               "validation + test must leave some tracks for training")
        if self.local_root is not None:
            _check(bool(self.local_root.strip()), "local_root", "must be null or a non-empty path")
        return self


class SyntheticParams(_Section):
    """The embedded procedural band dataset (written in Slakh2100's layout)."""

    tracks: dict[str, int]  # tracks per split
    min_seconds: float
    max_seconds: float
    sample_rate: Annotated[int, Field(ge=8000, le=192000)]  # Slakh2100's rate is 44100
    extra_stem_prob: Probability  # chance of an extra stem of an ignored class (strings, synth, organ)
    dropout_prob: Probability  # chance a stem drops out for a bar
    seed: int
    renderer: Literal["soundfont", "oscillators"]  # soundfont: GM presets of an SF2 file (like Slakh's instruments)
    soundfont: str | None  # SF2 file of the soundfont renderer; null = pretty_midi's bundled TimGM6mb.sf2
    programs: dict[str, FrozenList[int]]  # per-class pools: GM programs (bass, guitar, piano), drum kits (drums)

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _check(set(self.tracks) == set(SPLITS), "tracks",
               f"must have exactly the keys {list(SPLITS)}, got {sorted(self.tracks)}")
        for split, n in self.tracks.items():
            _check(n >= 1, f"tracks.{split}", f"must be >= 1, got {n}")
        _check(1.0 <= self.min_seconds <= self.max_seconds <= 600.0, "min_seconds",
               f"need 1 <= min_seconds <= max_seconds <= 600, got {self.min_seconds}, {self.max_seconds}")
        if self.soundfont is not None:
            _check(bool(self.soundfont.strip()), "soundfont", "must be null or a path to an SF2 file")
        families = {**CLASS_PROGRAMS, "drums": range(128)}
        _check(set(self.programs) <= set(families), "programs",
               f"keys must be among {sorted(families)}, got {sorted(self.programs)}")
        for cls, pool in self.programs.items():
            allowed = families[cls]
            what = "drum kits" if cls == "drums" else f"General MIDI {cls} programs"
            _check(len(pool) >= 1 and all(p in allowed for p in pool), f"programs.{cls}",
                   f"must be a non-empty list of {what} in [{allowed.start}, {allowed.stop - 1}], got {list(pool)}")
        return self


class PrepareParams(_Section):
    """Resampling to 16 kHz and cutting segments into WebDataset shards."""

    train_views: Annotated[int, Field(ge=1, le=64)]  # shifted views of every training chunk (the paper trains on them)
    max_shift_fraction: Probability  # training shift drawn uniformly in +-fraction*segment (official: 0.5 = +-5.12 s)
    max_track_seconds: Annotated[float, Field(gt=0.0)]  # longer tracks are cut here (official: 640 s)
    samples_per_shard: Annotated[int, Field(ge=1, le=100000)]
    audio_format: Literal["flac", "npy"]  # flac = PCM_24 FLAC per stem, npy = float32 arrays
    workers: Annotated[int, Field(ge=0, le=64)]  # processes decoding/resampling tracks (0 = in-process)


class CodecParams(_Section):
    """The latent codec: VAE (mel <-> latents) and vocoder (mel -> audio)."""

    kind: Literal["pca", "trained", "diffusers", "official"]  # pca/trained: fitted/trained by train_codec
    path: str | None  # diffusers: directory or hub id (ucsd-reach/musicldm); official: MusicLDM vae-ckpt.ckpt
    vocoder: Literal["griffin_lim", "hifigan"]
    vocoder_path: str | None  # hifigan: diffusers-style dir / hub id, or official hifigan-ckpt.ckpt
    channels: int  # trained VAE: base width (MusicLDM: 128)
    channel_mult: FrozenList[int]  # three levels: mel (T, 64) -> latents (T/4, 16)
    num_res_blocks: Annotated[int, Field(ge=1, le=4)]
    latent_channels: int  # C of [B, S, C, T, F]; MusicLDM: 8
    whiten: bool  # pca: scale each latent channel to unit variance
    train_steps: Annotated[int, Field(ge=0)]  # train_codec: optimisation steps (0 = keep the initial weights)
    batch_size: Annotated[int, Field(ge=1)]  # train_codec: stem spectrograms per step
    train_crop_frames: int  # train_codec: random mel crops of this many frames (multiple of 4; 0 = whole segment)
    lr: UnitInterval
    kl_weight: Annotated[float, Field(ge=0.0, lt=1.0)]
    griffin_lim_iters: Annotated[int, Field(ge=1, le=1000)]

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.kind in ("diffusers", "official"):
            _check(self.path is not None, "path", f"is required when kind is {self.kind!r}")
        if self.vocoder == "hifigan":
            _check(self.vocoder_path is not None or self.kind == "diffusers", "vocoder_path",
                   "is required for the hifigan vocoder unless kind is diffusers (vocoder/ subfolder)")
        _check(len(self.channel_mult) == 3 and all(m >= 1 for m in self.channel_mult), "channel_mult",
               f"must be three positive multipliers (mel bins 64 -> latent F 16), got {list(self.channel_mult)}")
        _check(self.channels >= 32 and self.channels % 32 == 0, "channels",
               f"must be a positive multiple of 32 (GroupNorm groups), got {self.channels}")
        _check(1 <= self.latent_channels <= (16 if self.kind == "pca" else 64), "latent_channels",
               "must be in [1, 64] (pca: [1, 16], the size of a 4x4 patch)")
        _check(self.train_crop_frames == 0 or (self.train_crop_frames >= 16 and self.train_crop_frames % 4 == 0),
               "train_crop_frames", f"must be 0 or a multiple of 4 >= 16, got {self.train_crop_frames}")
        return self


class ConditioningParams(_Section):
    """CLAP conditioning (FiLM) of the diffusion model."""

    clap: Literal["none", "random", "pretrained"]  # none = unconditional model; random = untrained CLAP weights
    amodel: Literal["HTSAT-tiny", "HTSAT-base"]  # MusicLDM's CLAP is HTSAT-base
    checkpoint: str | None  # pretrained: MusicLDM clap-ckpt.pt (music_audioset_epoch_15_esc_90.14.pt)
    text_model: str | None  # roberta-base tokenizer/config: local dir or hub id; null = offline stand-in
    seed: int  # random: weight seed

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.clap == "pretrained":
            _check(self.checkpoint is not None, "checkpoint", "is required when clap is 'pretrained'")
        return self

    @property
    def film_dim(self) -> int | None:
        return None if self.clap == "none" else 512


class EncodeParams(_Section):
    """Precomputing latents (and CLAP embeddings) from the shards."""

    posterior: Literal["sample", "mean"]  # stored per sample: a posterior draw (official) or the mean
    batch_size: Annotated[int, Field(ge=1, le=1024)]
    scale_segments: Annotated[int, Field(ge=1, le=100000)]  # segments for the latent scale 1/std (official: 1)


class ModelParams(_Section):
    """The 3D UNet (official: 192 channels, [1, 2, 3, 5], 2 res blocks, attention at 2/4/8, 32 head channels)."""

    channels: int
    channel_mult: FrozenList[int]
    num_res_blocks: Annotated[int, Field(ge=1, le=8)]
    attention_resolutions: FrozenList[int]  # downsampling factors with self-attention
    num_head_channels: int

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _check(self.channels >= 32 and self.channels % 32 == 0, "channels",
               f"must be a positive multiple of 32 (GroupNorm groups), got {self.channels}")
        _check(1 <= len(self.channel_mult) <= 6 and all(m >= 1 for m in self.channel_mult), "channel_mult",
               f"must be 1-6 positive multipliers, got {list(self.channel_mult)}")
        factors = {2**i for i in range(len(self.channel_mult))}
        _check(set(self.attention_resolutions) <= factors, "attention_resolutions",
               f"must be downsampling factors among {sorted(factors)}, got {list(self.attention_resolutions)}")
        _check(self.num_head_channels >= 1 and self.channels % self.num_head_channels == 0,
               "num_head_channels", "must divide channels")
        return self

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)


class DiffusionParams(_Section):
    """The noise schedule (official: T = 1000, scaled-linear betas 0.0015 -> 0.0195, eps-prediction)."""

    timesteps: Annotated[int, Field(ge=2, le=100000)]
    beta_start: float
    beta_end: float
    prediction: Literal["eps", "v"]  # what the UNet predicts: the noise (official) or the velocity v

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _check(0 < self.beta_start < self.beta_end < 1, "beta_start", "need 0 < beta_start < beta_end < 1")
        return self


class TrainParams(_Section):
    """Training of the 3D LDM with Accelerate (official: AdamW 3e-5, wd 0.01, 1000 warm-up steps, fp32)."""

    steps: Annotated[int, Field(ge=1)]  # total optimizer steps; raising it continues from the last checkpoint
    batch_size: Annotated[int, Field(ge=1, le=4096)]  # per process
    grad_accum: Annotated[int, Field(ge=1, le=1024)]
    lr: UnitInterval
    weight_decay: Annotated[float, Field(ge=0.0, lt=1.0)]
    warmup_steps: Annotated[int, Field(ge=0)]
    ema_decay: Annotated[float, Field(ge=0.0, lt=1.0)]
    cfg_dropout: Probability  # probability of replacing the CLAP embedding by the "" embedding
    mixed_precision: Literal["no", "bf16", "fp16"]
    grad_checkpointing: bool
    max_grad_norm: Annotated[float, Field(ge=0.0)]  # 0 = no clipping (official)
    snr_gamma: Annotated[float | None, Field(gt=0.0, le=1000.0)]  # min-SNR-gamma weighting; null = uniform (official)
    splits: FrozenList[str]  # splits trained on (official: train + validation; test is held out)
    checkpoint_every: Annotated[int, Field(ge=1)]
    log_every: Annotated[int, Field(ge=1)]
    num_workers: Annotated[int, Field(ge=0, le=64)]

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _check(len(self.splits) >= 1 and set(self.splits) <= set(SPLITS) and "test" not in self.splits, "splits",
               f"must be a non-empty subset of [train, validation] (test is held out), got {list(self.splits)}")
        return self


class SampleParams(_Section):
    """The `sample` stage: total generation and the 14 arrangement settings on the test split."""

    count: Annotated[int, Field(ge=1, le=100000)]  # segments (= samples) per setting; official: 300 / 150 (text)
    batch_size: Annotated[int, Field(ge=1, le=1024)]
    sampler: str  # a key of mtmusicldm.diffusion.samplers.SAMPLERS (checked in _rules); ddim = official
    steps: Annotated[int, Field(ge=1, le=1000)]  # official: 200
    eta: Annotated[float | None, Field(ge=0.0, le=1.0)]  # null = the sampler's default (DDIM: 1.0, official)
    noise_mode: Literal["fresh", "fixed"]  # inpainting re-noising of the known stems (fresh = official)
    total: bool  # total generation (Table 1)
    arrangement: bool  # the 14 arrangement combinations (Table 3)
    guidance_scale: Annotated[float, Field(ge=0.0)]  # CFG of conditional total generation (paper: 2.0)
    arrangement_guidance_scale: Annotated[float, Field(ge=0.0)]  # official: 1.0
    arrangement_conditioning: Literal["target_mix", "given_mix"]  # official: target_mix
    prompts: FrozenList[str]  # text-conditioned total generation (conditional models; Table 2)
    subtype: Literal["PCM_16", "FLOAT"]  # WAV format (official: PCM_16)
    untrained_reference: bool  # also sample every setting from the untrained model (the tables' ceiling row)
    examples: Annotated[int, Field(ge=0, le=16)]  # listenable long-form examples (total + arrangement) in samples/
    examples_seconds: Annotated[float, Field(gt=0.0, le=600.0)]  # their length

    @model_validator(mode="after")
    def _rules(self) -> Self:
        from mtmusicldm.diffusion.samplers import SAMPLERS  # lazy: `import mtmusicldm.config` stays torch-free

        _check(self.sampler in SAMPLERS, "sampler", f"must be one of {sorted(SAMPLERS)}, got {self.sampler!r}")
        _check(self.total or self.arrangement or bool(self.prompts), "total",
               "nothing to sample: total, arrangement and prompts are all off")
        return self


class EvaluateParams(_Section):
    """The `evaluate` stage: FAD (Tables 1-3) with 95 % intervals, reference rows, coherence metrics."""

    backbone: str  # a key of mtmusicldm.evaluation.embedders.EMBEDDERS; offline/crepe: NOT comparable with FAD
    vggish_weights: str | None  # vggish-10086976.pth (torchvggish release); or vggish_hub_dir, for backbone vggish
    vggish_hub_dir: str | None  # torch hub cache with harritaylor/torchvggish (frechet-audio-distance's loader)
    clap_checkpoint: str | None  # CLAP weights for backbone clap (MusicLDM clap-ckpt.pt)
    crepe_model: Literal["tiny", "full"]  # backbone crepe: network size
    crepe_hop_s: Annotated[float, Field(gt=0.0)]  # backbone crepe: frame hop in seconds
    text_references: dict[str, str]  # Table 2: prompt -> folder of reference clips tagged with it
    coherence: bool  # rhythmic/harmonic coherence of arrangements (real data = the ceiling)
    notes: Literal["off", "single", "all"]  # note-level coherence: off | total + 1-stem arrangements | all
    bootstrap: Annotated[int, Field(ge=10)]  # resamples behind every 95 % interval
    seed: int

    @model_validator(mode="after")
    def _rules(self) -> Self:
        from mtmusicldm.evaluation.embedders import EMBEDDERS  # lazy: `import mtmusicldm.config` stays torch-free

        _check(self.backbone in EMBEDDERS, "backbone", f"must be one of {sorted(EMBEDDERS)}, got {self.backbone!r}")
        if self.backbone == "vggish":
            _check((self.vggish_weights is None) != (self.vggish_hub_dir is None), "vggish_weights",
                   "backbone vggish needs exactly one of vggish_weights (a .pth file) and vggish_hub_dir")
        if self.backbone == "clap":
            _check(self.clap_checkpoint is not None, "clap_checkpoint", "is required for backbone clap")
        return self


class Params(_Section):
    """The whole `params.yaml`."""

    seed: Annotated[int, Field(ge=0, lt=2**63)]
    stems: FrozenList[str]
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

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _check(tuple(self.stems) == STEMS, "stems",
               f"must be exactly {list(STEMS)} (the order of the S axis everywhere), got {list(self.stems)}")
        _check(self.prepare.max_track_seconds * self.audio.sample_rate >= self.audio.segment_samples,
               "prepare.max_track_seconds", "must be at least one segment long")
        latent_t = self.audio.mel_frames // LATENT_DOWNSAMPLE
        _check(latent_t % self.model.downsampling == 0 and 16 % self.model.downsampling == 0,
               "model.channel_mult", f"{len(self.model.channel_mult)} levels downsample by {self.model.downsampling}, "
               f"which must divide the latent time ({latent_t}) and frequency (16) sizes")
        return self


_SECTION_KEYS: dict[type[BaseModel], str] = {
    info.annotation: name for name, info in Params.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, _Section)}
"""Section class -> its key in params.yaml (each class is used once), so errors of `section.replace` name it."""


# ----------------------------------------------------------------------------------------------------------------
# Loading, dumping and errors


def params_from_dict(raw: Mapping[str, Any]) -> Params:
    """Build and validate `Params` from a parsed `params.yaml` mapping.

    Raises:
        ParamsError: naming the first offending dotted key.
    """
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise _params_error(e, Params, "") from None


def params_to_dict(obj: Any) -> Any:
    """Inverse of `params_from_dict` (tuples become lists): for writing resolved params next to outputs.

    `obj` is a section, `Params`, or a mapping/sequence holding them (e.g. the sections a stage hashes).
    """
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, Mapping):
        return {k: params_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [params_to_dict(v) for v in obj]
    return obj


# Our own code: pydantic reports every error, several lines each with documentation URLs, and words a range one
# bound at a time; the contract here is ONE line naming the dotted key first, with the whole allowed range and the
# YAML float hint.
_LOWER, _UPPER = {Ge: "[", Gt: "("}, {Le: "]", Lt: ")"}
_OPERATORS = {Ge: ">=", Gt: ">", Le: "<=", Lt: "<"}
_EXPECTED = {"tuple_type": "expected a list", "dict_type": "expected a mapping", "model_type": "expected a mapping"}


def _params_error(e: ValidationError, model: type[BaseModel], prefix: str) -> ParamsError:
    """The first error of `e` (raised validating `model`, the section at `prefix`) as one `ParamsError`."""
    err = e.errors(include_url=False)[0]
    rule = err.get("ctx", {}).get("error")
    loc = err["loc"] + ((rule.field,) if isinstance(rule, _RuleError) else ())
    if loc[-1:] == ("[key]",):  # a mapping's key (pydantic: the key, then "[key]")
        loc = loc[:-2] + ("<key>",)
    key = prefix
    for part in loc:
        key = f"{key}[{part}]" if isinstance(part, int) and key else f"{key}.{part}" if key else str(part)
    return ParamsError(key or "<top level>", str(rule) if isinstance(rule, _RuleError) else _message(err, model, loc))


def _message(err: Mapping[str, Any], model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    kind, value = err["type"], err["input"]
    if kind == "missing":
        return "missing key"
    if kind == "extra_forbidden":
        parent = _section_at(model, loc[:-1])
        return "unknown key" + (f" (allowed here: {', '.join(parent.model_fields)})" if parent else "")
    if kind == "float_type" and isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
        return f"expected a number, got the string {value!r} (write floats as 1.0e-4)"
    bounds = _bounds_at(model, loc)
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") and bounds:
        low = [(_LOWER[t], v) for t, v in bounds.items() if t in _LOWER]
        high = [(_UPPER[t], v) for t, v in bounds.items() if t in _UPPER]
        if low and high:
            return f"must be in {low[0][0]}{low[0][1]}, {high[0][1]}{high[0][0]}, got {value!r}"
        ((bound, limit),) = bounds.items()
        return f"must be {_OPERATORS[bound]} {limit}, got {value!r}"
    return f"{_EXPECTED.get(kind, err['msg'])}, got {value!r}"


def _section_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The section model at `loc` under `model` (None when `loc` leads into a value, not a section)."""
    for part in loc:
        info = model.model_fields.get(str(part))
        if info is None or not (isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)):
            return None
        model = info.annotation
    return model


def _bounds_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> dict[type, Any]:
    """The range (`Field(ge=..., lt=...)`) declared on the field at `loc`: constraint type -> limit."""
    section = _section_at(model, loc[:-1]) if loc else None
    info = section.model_fields.get(str(loc[-1])) if section else None
    return {type(m): getattr(m, type(m).__name__.lower()) for m in (info.metadata if info else ())
            if type(m) in _OPERATORS}
