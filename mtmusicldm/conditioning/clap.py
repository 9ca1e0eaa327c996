"""Frozen CLAP conditioner (laion-clap HTSAT + RoBERTa): mixture audio or text -> 512-d unit vector.

Behaviour follows MT-MusicLDM's `CLAPAudioEmbeddingClassifierFreev2` (official spec §5):
* audio: 16 kHz -> 48 kHz with `torchaudio.functional.resample` at its defaults (sinc, Hann window, width 6,
  rolloff 0.99), exactly what the official code calls, so embeddings match it; then one 10 s clip per item
  (`rand_trunc`: random offset in [0, len - 480000]; shorter input: laion-clap's `repeatpad`), laion-clap's
  `get_audio_features` and the model's `get_audio_embedding` (HTSAT "embedding" -> audio_projection -> L2 norm).
  The random offset comes from an explicit `torch.Generator` instead of numpy's global RNG.
* text: RoBERTa `pooler_output` -> text_projection -> L2 norm (`get_text_embedding`).
* unconditional token: the text embedding of "" (cached: deterministic in eval mode).
Deviation: the model always runs in eval mode (the official module stayed in train mode during fitting, §5).

`ClapConditioner` is deliberately *not* an `nn.Module`: assigning it to a trained module registers nothing, so the
CLAP weights never enter a trained state dict or an optimizer.

Offline: laion-clap is imported lazily; unless `online=True`, `HF_HUB_OFFLINE`/`TRANSFORMERS_OFFLINE` default to 1
first (see `text.configure_hub_mode`), and the RoBERTa tower is built from a config (see `text.build_clap_model`).
"""
from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import Tensor, nn

from mtmusicldm.conditioning.text import (
    build_clap_model,
    check_tokenizer,
    empty_prompt_tokens,
    import_laion_clap,
    load_roberta_tokenizer,
    tokenize,
)
from mtmusicldm.geometry import SAMPLE_RATE

if TYPE_CHECKING:
    from transformers import RobertaConfig

__all__ = [  # build_clap_model / import_laion_clap live in text.py (construction plumbing), re-exported here
    "CLAP_EMBED_DIM", "ClapCheckpointError", "ClapConditioner", "build_clap_model", "draw_crop_offsets",
    "extract_clap_state_dict", "import_laion_clap", "load_clap_state_dict", "read_checkpoint",
]  # fmt: skip

CLAP_EMBED_DIM = 512
"""Joint audio/text embedding size (FiLM conditioning vector of the UNet)."""

POSITION_IDS_KEY = "text_branch.embeddings.position_ids"
"""Persistent in transformers 4.26 (official checkpoints), non-persistent in transformers >= 4.31."""

LDM_PREFIX = "cond_stage_model.model."
"""Prefix of the CLAP tensors inside an MT-MusicLDM Lightning checkpoint."""

Crop = Literal["random", "start", "center"]
GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


class ClapCheckpointError(ValueError):
    """A CLAP state dict does not match the model (missing, unexpected or mis-shaped tensors)."""


# ------------------------------------------------------------------------------------------------- checkpoints


def _summarise(keys: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return f"{len(keys)}: [{shown}{', ...' if len(keys) > limit else ''}]"


def extract_clap_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """Pull the CLAP tensors out of any supported checkpoint layout.

    Accepted: MusicLDM's `clap-ckpt.pt` (optional "state_dict" wrapper, optional "module." prefix on every key), an
    MT-MusicLDM Lightning checkpoint or its state dict (keys under "cond_stage_model.model."), or a bare state dict.

    Args:
        checkpoint: the object returned by `torch.load`, or a state dict.

    Returns:
        A new dict of CLAP keys (e.g. "audio_branch.bn0.weight") -> tensors.
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"expected a checkpoint dict, got {type(checkpoint).__name__}")
    wrapped = "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping)
    state = checkpoint["state_dict"] if wrapped else checkpoint
    keys = list(state)
    if any(k.startswith(LDM_PREFIX) for k in keys):
        state = {k[len(LDM_PREFIX):]: v for k, v in state.items() if k.startswith(LDM_PREFIX)}
    elif keys and all(k.startswith("module.") for k in keys):
        state = {k[len("module."):]: v for k, v in state.items()}
    elif any(k.startswith("module.") for k in keys):
        raise ClapCheckpointError("some but not all keys start with 'module.': cannot tell which prefix to strip")
    not_tensors = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise ClapCheckpointError(f"non-tensor entries in the CLAP state dict {_summarise(not_tensors)}")
    return dict(state)


def load_clap_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Strictly load CLAP tensors, reconciling `text_branch.embeddings.position_ids` across transformers versions.

    The buffer is dropped when the checkpoint has it but the model does not (after checking it is `arange`), and
    taken from the model when the model has it persistent but the checkpoint does not.

    Raises:
        ClapCheckpointError: listing missing keys, unexpected keys and shape mismatches.
    """
    expected = model.state_dict()
    state = dict(state_dict)
    if POSITION_IDS_KEY in state and POSITION_IDS_KEY not in expected:
        position_ids = state.pop(POSITION_IDS_KEY)
        reference = torch.arange(position_ids.shape[-1]).expand(position_ids.shape)
        if not torch.equal(position_ids.cpu().long(), reference):
            raise ClapCheckpointError(f"{POSITION_IDS_KEY} in the checkpoint is not arange({position_ids.shape[-1]})")
    elif POSITION_IDS_KEY in expected and POSITION_IDS_KEY not in state:
        state[POSITION_IDS_KEY] = expected[POSITION_IDS_KEY].clone()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_summarise(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_summarise(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {_summarise(mismatched)}")
    if problems:
        raise ClapCheckpointError("CLAP state dict does not match the model: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def read_checkpoint(path: Path, *, weights_only: bool = True) -> Any:
    """`torch.load` on the CPU; zip checkpoints are memory-mapped (a full MT-MusicLDM checkpoint is ~7-12 GB).

    Args:
        path: checkpoint file.
        weights_only: torch's safe unpickler; set False only for trusted files holding other Python objects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLAP checkpoint {path} not found")
    return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=zipfile.is_zipfile(path))


# ------------------------------------------------------------------------------------------------- audio clips


def draw_crop_offsets(n_items: int, overflow: int, crop: Crop, generator: GeneratorArg = None) -> list[int]:
    """Start offsets of the 10 s clip for each item.

    Args:
        n_items: batch size B.
        overflow: input length minus clip length (<= 0: no crop, offsets 0).
        crop: "random" (uniform in [0, overflow], official `rand_trunc`), "start" (0) or "center" (overflow // 2).
        generator: one generator for the batch (B draws in order), one per item (a sequence of B; item k then
            does not depend on the batch it is in), or None for torch's default generator.

    Returns:
        B offsets in [0, max(overflow, 0)].
    """
    if crop not in ("random", "start", "center"):
        raise ValueError(f"crop must be 'random', 'start' or 'center', got {crop!r}")
    if isinstance(generator, Sequence) and len(generator) != n_items:
        raise ValueError(f"got {len(generator)} generators for {n_items} items")
    if overflow <= 0 or crop == "start":
        return [0] * n_items
    if crop == "center":
        return [overflow // 2] * n_items
    if generator is None or isinstance(generator, torch.Generator):
        device = generator.device if generator is not None else "cpu"
        return torch.randint(0, overflow + 1, (n_items,), generator=generator, device=device).tolist()
    return [int(torch.randint(0, overflow + 1, (1,), generator=g, device=g.device)) for g in generator]


# ------------------------------------------------------------------------------------------------- conditioner


class ClapConditioner:
    """Frozen laion-clap CLAP producing 512-d L2-normalised audio/text embeddings (not an `nn.Module`).

    Args:
        model: a laion-clap `CLAP` (roberta text tower, no fusion); frozen and put in eval mode here.
        model_cfg: laion-clap model config; `model_cfg["audio_cfg"]` gives clip length and sample rate.
        tokenizer: RoBERTa tokenizer; loaded lazily from `text_model_dir` (or the hub when `online`) if None.
        text_model_dir: local roberta-base directory for the lazy tokenizer.
        online: allow hub downloads for the lazy tokenizer.
        sample_rate: rate of the waveforms passed to `embed_audio` (16 kHz in MT-MusicLDM).
        max_batch: largest number of clips or prompts per forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        model_cfg: Mapping[str, Any],
        *,
        tokenizer: Any | None = None,
        text_model_dir: Path | None = None,
        online: bool = False,
        sample_rate: int = SAMPLE_RATE,
        max_batch: int = 16,
    ) -> None:
        if getattr(model, "text_branch_type", None) != "roberta":
            raise ValueError("ClapConditioner needs a laion-clap CLAP model with a roberta text tower")
        if model_cfg["enable_fusion"]:
            raise ValueError("fusion CLAP models are not supported (MT-MusicLDM uses enable_fusion=False)")
        self._model = model.eval().requires_grad_(False)
        self.audio_cfg: dict[str, Any] = dict(model_cfg["audio_cfg"])
        self.sample_rate = int(sample_rate)
        self.max_batch = int(max_batch)
        self._text_model_dir = text_model_dir
        self._online = online
        self._tokenizer = tokenizer
        if tokenizer is not None:
            check_tokenizer(tokenizer, model.text_branch.config)
        self._uncond: Tensor | None = None
        _, data = import_laion_clap(online=online)
        self._get_audio_features = data.get_audio_features

    # ---- construction

    @classmethod
    def build(
        cls,
        amodel: str = "HTSAT-base",
        *,
        state_dict: Mapping[str, Any] | None = None,
        text_model_dir: Path | None = None,
        text_config: RobertaConfig | None = None,
        tokenizer: Any | None = None,
        device: str | torch.device = "cpu",
        online: bool = False,
        sample_rate: int = SAMPLE_RATE,
    ) -> ClapConditioner:
        """Build the model (`build_clap_model`), load `state_dict` strictly if given, move it to `device`.

        Without a state dict the weights are random (tests, shape checks). `state_dict` may have any layout accepted
        by `extract_clap_state_dict`. Other arguments: see `build_clap_model` and the class docstring.
        """
        clap_state = None if state_dict is None else extract_clap_state_dict(state_dict)
        model, model_cfg = build_clap_model(
            amodel, text_model_dir=text_model_dir, text_config=text_config, online=online
        )
        if clap_state is not None:
            load_clap_state_dict(model, clap_state)
        conditioner = cls(
            model, model_cfg, tokenizer=tokenizer, text_model_dir=text_model_dir, online=online, sample_rate=sample_rate
        )
        return conditioner.to(device)

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, Any],
        *,
        amodel: str = "HTSAT-base",
        text_model_dir: Path | None = None,
        text_config: RobertaConfig | None = None,
        tokenizer: Any | None = None,
        device: str | torch.device = "cpu",
        online: bool = False,
        sample_rate: int = SAMPLE_RATE,
    ) -> ClapConditioner:
        """Conditioner from CLAP tensors: a clap-ckpt.pt dict, an MT-MusicLDM state dict or a bare CLAP state dict."""
        return cls.build(
            amodel, state_dict=state_dict, text_model_dir=text_model_dir, text_config=text_config,
            tokenizer=tokenizer, device=device, online=online, sample_rate=sample_rate,
        )  # fmt: skip

    @classmethod
    def from_checkpoint(
        cls,
        path: Path,
        *,
        amodel: str = "HTSAT-base",
        text_model_dir: Path | None = None,
        text_config: RobertaConfig | None = None,
        tokenizer: Any | None = None,
        device: str | torch.device = "cpu",
        online: bool = False,
        sample_rate: int = SAMPLE_RATE,
        weights_only: bool = True,
    ) -> ClapConditioner:
        """Load MusicLDM's `clap-ckpt.pt` (music_audioset_epoch_15_esc_90.14.pt) or an MT-MusicLDM checkpoint file.

        For faithful MT-MusicLDM inference prefer the LDM checkpoint: its CLAP `bn0` running statistics may differ
        from `clap-ckpt.pt` (the official module trained in train mode, spec §5).
        """
        return cls.build(
            amodel, state_dict=read_checkpoint(path, weights_only=weights_only), text_model_dir=text_model_dir,
            text_config=text_config, tokenizer=tokenizer, device=device, online=online, sample_rate=sample_rate,
        )  # fmt: skip

    # ---- state

    @property
    def model(self) -> nn.Module:
        """The wrapped laion-clap model (frozen, eval mode)."""
        return self._model

    @property
    def device(self) -> torch.device:
        return next(self._model.parameters()).device

    @property
    def tokenizer(self) -> Any:
        """RoBERTa tokenizer, loaded on first use."""
        if self._tokenizer is None:
            tokenizer = load_roberta_tokenizer(self._text_model_dir, online=self._online)
            check_tokenizer(tokenizer, self._model.text_branch.config)
            self._tokenizer = tokenizer
        return self._tokenizer

    def to(self, device: str | torch.device) -> ClapConditioner:
        """Move the model (in place) and return self."""
        self._model.to(device)
        self._uncond = None
        return self

    @property
    def clip_samples(self) -> int:
        """Samples per CLAP clip at the CLAP rate (480000 = 10 s at 48 kHz)."""
        return int(self.audio_cfg["clip_samples"])

    # ---- audio

    def _resample(self, wav: Tensor) -> Tensor:
        if wav.ndim != 2:
            raise ValueError(f"expected a waveform batch [B, samples], got shape {tuple(wav.shape)}")
        if wav.shape[0] == 0 or wav.shape[1] == 0:
            raise ValueError(f"empty waveform batch {tuple(wav.shape)}")
        wav = wav.to(self.device, torch.float32)
        target = int(self.audio_cfg["sample_rate"])
        return wav if self.sample_rate == target else AF.resample(wav, self.sample_rate, target)

    def _features(self, clip: Tensor, longer: bool) -> dict[str, Tensor]:
        """laion-clap's per-item input dict; `clip` is at most one clip long (longer ones were cropped by us)."""
        features = self._get_audio_features(
            {}, clip, self.clip_samples, "rand_trunc", "repeatpad", audio_cfg=self.audio_cfg
        )  # (sample, audio_data, max_len, data_truncating, data_filling)
        features["longer"] = torch.tensor([longer])  # as official rand_trunc; unused without fusion
        return features

    def _embed_clips(self, items: list[dict[str, Tensor]]) -> Tensor:
        """`get_audio_embedding` in chunks of `max_batch`: [N, 512] unit vectors."""
        self._model.eval()
        step = self.max_batch
        return torch.cat([self._model.get_audio_embedding(items[i : i + step]) for i in range(0, len(items), step)])

    def prepare_audio(self, wav: Tensor, *, generator: GeneratorArg = None, crop: Crop = "random") -> Tensor:
        """Resample to the CLAP rate and cut/repeat-pad each item to one clip.

        Args:
            wav: [B, samples] mono waveforms at `sample_rate`.
            generator: crop randomness (see `draw_crop_offsets`).
            crop: "random" (official), "start" or "center"; ignored when the input is not longer than a clip.

        Returns:
            [B, clip_samples] waveforms at the CLAP rate, exactly what HTSAT sees.
        """
        with torch.inference_mode():
            items = self._prepare(wav, generator, crop)
            clips = torch.stack([item["waveform"] for item in items])
        return clips.clone()

    def _prepare(self, wav: Tensor, generator: GeneratorArg, crop: Crop) -> list[dict[str, Tensor]]:
        wav48 = self._resample(wav)  # [B, samples * 48k / sr]
        overflow = wav48.shape[1] - self.clip_samples
        offsets = draw_crop_offsets(wav48.shape[0], overflow, crop, generator)
        return [
            self._features(row[offset : offset + self.clip_samples], overflow > 0)
            for row, offset in zip(wav48, offsets)
        ]

    def embed_audio(self, wav_16k: Tensor, *, generator: GeneratorArg = None, crop: Crop = "random") -> Tensor:
        """CLAP audio embedding of one 10 s clip per item (official conditioning path).

        Args:
            wav_16k: [B, samples] mixture waveforms at `sample_rate` (16 kHz), any length.
            generator: crop randomness; same generator state -> same embeddings.
            crop: clip placement when the input is longer than 10 s ("random" as in training).

        Returns:
            [B, 512] L2-normalised float32 embeddings on `device` (ordinary tensors, usable in autograd graphs).
        """
        with torch.inference_mode():
            embedding = self._embed_clips(self._prepare(wav_16k, generator, crop))
        return embedding.clone()

    def embed_audio_long(self, wav_16k: Tensor, *, hop_s: float = 10.0) -> Tensor:
        """Embedding of a long reference: mean of the unit embeddings of 10 s windows, re-normalised.

        Our extension (not in the official code). Windows start every `hop_s` seconds; when they do not reach the
        end, one more window ends exactly at the end. Inputs up to 10 s give the same result as `embed_audio`.

        Args:
            wav_16k: [B, samples] waveforms at `sample_rate`, any length (e.g. 60 s).
            hop_s: window hop in seconds (> 0).

        Returns:
            [B, 512] L2-normalised embeddings.
        """
        if hop_s <= 0:
            raise ValueError(f"hop_s must be > 0, got {hop_s}")
        with torch.inference_mode():
            wav48 = self._resample(wav_16k)
            hop = max(1, round(hop_s * int(self.audio_cfg["sample_rate"])))
            length, clip = wav48.shape[1], self.clip_samples
            starts = list(range(0, max(length - clip, 0) + 1, hop))
            if length > clip and starts[-1] != length - clip:
                starts.append(length - clip)
            items = [self._features(row[s : s + clip], False) for row in wav48 for s in starts]
            windows = self._embed_clips(items).view(wav48.shape[0], len(starts), -1)  # [B, W, 512]
            embedding = F.normalize(windows.mean(dim=1), dim=-1)
        return embedding.clone()

    # ---- text

    def embed_text(self, texts: Sequence[str]) -> Tensor:
        """CLAP text embedding (RoBERTa pooler_output -> text_projection -> L2 norm).

        Args:
            texts: B prompts.

        Returns:
            [B, 512] L2-normalised float32 embeddings on `device`.
        """
        tokens = tokenize(self.tokenizer, texts)
        self._model.eval()
        with torch.inference_mode():
            chunks = [
                self._model.get_text_embedding({k: v[i : i + self.max_batch] for k, v in tokens.items()})
                for i in range(0, len(texts), self.max_batch)
            ]
            embedding = torch.cat(chunks)
        return embedding.clone()

    def uncond_embedding(self, batch: int) -> Tensor:
        """Classifier-free guidance token: the text embedding of "" repeated, [batch, 512] (cached).

        The "" tokens are built from the text tower's special ids (`empty_prompt_tokens`), so no tokenizer is needed;
        they equal RoBERTa's tokenization of "" and the result equals `embed_text([""])`.
        """
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if self._uncond is None:
            self._model.eval()
            with torch.inference_mode():
                uncond = self._model.get_text_embedding(empty_prompt_tokens(self._model.text_branch.config))[0]
            self._uncond = uncond.clone()
        return self._uncond.unsqueeze(0).repeat(batch, 1)
