"""laion-clap construction plumbing: hub mode, lazy import, model building with an offline RoBERTa tower, tokenizer.

laion-clap builds its `roberta` text tower with `RobertaModel.from_pretrained('roberta-base')`, a hub download, and
tokenizes with `RobertaTokenizer.from_pretrained('roberta-base')`. This module makes both work without a hub:

* `configure_hub_mode(online=False)` sets `HF_HUB_OFFLINE=1` / `TRANSFORMERS_OFFLINE=1` with `os.environ.setdefault`
  before transformers or laion-clap are imported (importing laion-clap online-by-default on a machine without network
  hangs for minutes: its `training/data.py` downloads three tokenizers at import time). An explicit value already in
  the environment wins.
* `roberta_text_tower(...)` is a context manager that, while laion-clap's `create_model` runs, redirects the
  `RobertaModel.from_pretrained('roberta-base')` call inside laion-clap's model module to (a) a local directory or
  (b) a randomly initialised `RobertaModel(roberta_base_config())`. The CLAP checkpoint overwrites every text-tower
  tensor afterwards (strict load), so (b) only needs the right architecture. When `online=True` and no directory is
  given, nothing is patched and laion-clap's own hub call runs unchanged.
* `load_roberta_tokenizer` / `check_tokenizer` / `tokenize`: the official tokenizer call
  (`padding='max_length', truncation=True, max_length=512`) with a guard against the silent trap of transformers 5.x
  offline, which returns a 5-token tokenizer whose special-token ids differ from RoBERTa's.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

logger = logging.getLogger(__name__)

ROBERTA_HUB_ID = "roberta-base"
"""The hub id laion-clap hard-codes for its `roberta` text tower and tokenizer."""

TOKENIZER_MAX_LENGTH = 512
"""Official MusicLDM / MT-MusicLDM tokenizer length (`padding='max_length', truncation=True`)."""

ROBERTA_BASE_HPARAMS: dict[str, Any] = {
    "vocab_size": 50265,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}
"""Hyper-parameters of the hub `roberta-base` config.json (transformers' RobertaConfig defaults differ: 512 positions,
2 token types, layer_norm_eps 1e-12)."""

_PATCH_LOCK = threading.Lock()
_TRUE = {"1", "ON", "YES", "TRUE"}


def configure_hub_mode(*, online: bool) -> None:
    """Make the Hugging Face hub offline unless `online` is requested.

    Sets `HF_HUB_OFFLINE=1` and `TRANSFORMERS_OFFLINE=1` via `os.environ.setdefault` (an explicit value in the
    environment is respected). `huggingface_hub` reads the variable once at import; if it was imported before the
    variable was set, its module constant is aligned with the environment too (logged), otherwise the flag would be
    ignored and laion-clap's import-time downloads would hang.

    Args:
        online: when True, leave the environment and the hub untouched.
    """
    if online:
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    wants_offline = os.environ["HF_HUB_OFFLINE"].upper() in _TRUE
    constants = sys.modules.get("huggingface_hub.constants")
    if wants_offline and constants is not None and not constants.HF_HUB_OFFLINE:
        logger.warning("huggingface_hub was imported before HF_HUB_OFFLINE was set; switching it to offline mode")
        constants.HF_HUB_OFFLINE = True


def roberta_base_config(**overrides: Any) -> RobertaConfig:
    """A `RobertaConfig` with the roberta-base hyper-parameters, built without any download.

    Args:
        **overrides: fields to change (tests use a 1-2 layer tower with a small vocabulary).

    Returns:
        The config; `hidden_size` must stay 768 for CLAP's `text_projection` (768 -> 512).
    """
    from transformers import RobertaConfig

    unknown = set(overrides) - set(ROBERTA_BASE_HPARAMS)
    if unknown:
        raise ValueError(f"unknown RoBERTa hyper-parameters: {sorted(unknown)}")
    return RobertaConfig(**{**ROBERTA_BASE_HPARAMS, **overrides})


def _has_model_files(directory: Path) -> bool:
    return (directory / "config.json").is_file()


@contextlib.contextmanager
def roberta_text_tower(
    clap_model_module: ModuleType,
    *,
    text_model_dir: Path | None = None,
    text_config: RobertaConfig | None = None,
    online: bool = False,
) -> Iterator[None]:
    """Redirect laion-clap's `RobertaModel.from_pretrained('roberta-base')` while the block runs.

    Source of the text tower, first match wins:
      1. `text_config` given: `RobertaModel(text_config)`, random weights.
      2. `text_model_dir` holding a `config.json`: the real `RobertaModel.from_pretrained(text_model_dir)`.
      3. `online=True`: no patch; laion-clap downloads 'roberta-base' itself.
      4. otherwise: `RobertaModel(roberta_base_config())`, random weights.
    Random weights are fine when a CLAP checkpoint is loaded next: it overwrites every text-tower tensor.

    The patch replaces the `RobertaModel` name inside `clap_model_module` only (not transformers itself) and is
    serialised with a lock; it is restored on exit, also on error.

    Args:
        clap_model_module: laion-clap's `clap_module.model` module (the one whose `CLAP` class is instantiated).
        text_model_dir: local directory of a roberta-base model (and/or tokenizer).
        text_config: explicit architecture, used before everything else.
        online: allow laion-clap's own hub download when nothing local is given.
    """
    from transformers import RobertaModel

    if text_config is not None:
        config = text_config

        def build(name: str) -> RobertaModel:
            return RobertaModel(config)

    elif text_model_dir is not None and _has_model_files(Path(text_model_dir)):
        local = Path(text_model_dir)

        def build(name: str) -> RobertaModel:
            return RobertaModel.from_pretrained(str(local), local_files_only=not online)

    elif online:
        yield
        return
    else:
        if text_model_dir is not None:
            logger.info("%s has no config.json: building the text tower from the roberta-base config", text_model_dir)

        def build(name: str) -> RobertaModel:
            return RobertaModel(roberta_base_config())

    class _RobertaRedirect:
        """Stands in for `transformers.RobertaModel` inside laion-clap during `create_model`."""

        @staticmethod
        def from_pretrained(name: str, *args: Any, **kwargs: Any) -> RobertaModel:
            if name != ROBERTA_HUB_ID or args or kwargs:
                raise RuntimeError(f"unexpected RobertaModel.from_pretrained({name!r}, ...) call inside laion-clap")
            return build(name)

    with _PATCH_LOCK:
        original = clap_model_module.RobertaModel
        clap_model_module.RobertaModel = _RobertaRedirect
        try:
            yield
        finally:
            clap_model_module.RobertaModel = original


def import_laion_clap(*, online: bool = False) -> tuple[ModuleType, ModuleType]:
    """Import laion-clap after putting the hub offline (unless `online`).

    Returns:
        (laion_clap.clap_module.factory, laion_clap.training.data).
    """
    configure_hub_mode(online=online)
    import laion_clap.clap_module.factory as factory
    import laion_clap.training.data as data

    return factory, data


def build_clap_model(
    amodel: str = "HTSAT-base",
    *,
    text_model_dir: Path | None = None,
    text_config: RobertaConfig | None = None,
    online: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build laion-clap's CLAP (`tmodel='roberta'`, no fusion, fp32) on the CPU with random audio weights.

    Args:
        amodel: laion-clap audio config name ("HTSAT-base" official, "HTSAT-tiny" for fast tests).
        text_model_dir: local roberta-base directory (see `roberta_text_tower` for the precedence).
        text_config: explicit RoBERTa architecture (hidden_size 768), e.g. a tiny one for tests.
        online: let laion-clap download 'roberta-base' when nothing local is given.

    Returns:
        (model in eval mode with requires_grad False, laion-clap model config dict with "audio_cfg").
    """
    factory, _ = import_laion_clap(online=online)
    model_module = importlib.import_module(factory.CLAP.__module__)  # where laion-clap's CLAP looks up RobertaModel
    with roberta_text_tower(model_module, text_model_dir=text_model_dir, text_config=text_config, online=online):
        model, model_cfg = factory.create_model(
            amodel, "roberta", precision="fp32", device=torch.device("cpu"), enable_fusion=False
        )
    model.eval().requires_grad_(False)
    return model, model_cfg


def load_roberta_tokenizer(text_model_dir: Path | None = None, *, online: bool = False) -> RobertaTokenizer:
    """Load the roberta-base BPE tokenizer from a local directory or (online only) from the hub.

    Args:
        text_model_dir: directory with `vocab.json` + `merges.txt` (or `tokenizer.json`).
        online: allow the hub id 'roberta-base' when no directory is given.

    Returns:
        The tokenizer, validated by `check_tokenizer` against the roberta-base special-token ids.

    Raises:
        FileNotFoundError: offline without a directory, or the directory does not exist.
    """
    configure_hub_mode(online=online)
    from transformers import RobertaTokenizer

    if text_model_dir is None:
        if not online:
            raise FileNotFoundError(
                "no RoBERTa tokenizer available offline: pass tokenizer=..., or text_model_dir= a local roberta-base "
                "directory (vocab.json + merges.txt), or online=True to use the hub id 'roberta-base'"
            )
        tokenizer = RobertaTokenizer.from_pretrained(ROBERTA_HUB_ID)
    else:
        directory = Path(text_model_dir)
        if not directory.is_dir():
            raise FileNotFoundError(f"tokenizer directory {directory} does not exist")
        tokenizer = RobertaTokenizer.from_pretrained(str(directory), local_files_only=not online)
    check_tokenizer(tokenizer)
    return tokenizer


def check_tokenizer(tokenizer: Any, config: RobertaConfig | None = None) -> None:
    """Refuse tokenizers whose ids do not fit the text tower.

    transformers 5.x offline silently returns a 5-token tokenizer with `<pad>=0, <s>=2` (RoBERTa: `<s>=0, <pad>=1,
    </s>=2`); fed to CLAP it would give a wrong unconditional "" embedding without any error.

    Args:
        tokenizer: a Hugging Face tokenizer.
        config: the text tower's config (default: roberta-base's ids and vocabulary size).

    Raises:
        ValueError: special-token ids differ from the config's, or the vocabulary exceeds the embedding table.
    """
    bos = ROBERTA_BASE_HPARAMS["bos_token_id"] if config is None else config.bos_token_id
    pad = ROBERTA_BASE_HPARAMS["pad_token_id"] if config is None else config.pad_token_id
    eos = ROBERTA_BASE_HPARAMS["eos_token_id"] if config is None else config.eos_token_id
    vocab = ROBERTA_BASE_HPARAMS["vocab_size"] if config is None else config.vocab_size
    got = (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id)
    if got != (bos, pad, eos):
        raise ValueError(
            f"tokenizer special ids (bos, pad, eos) = {got}, expected {(bos, pad, eos)} as in roberta-base; "
            f"an empty offline tokenizer (len {len(tokenizer)}) looks like this: load a real one from a local directory"
        )
    if len(tokenizer) > vocab:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the text tower embeds only {vocab}")


def tokenize(tokenizer: Any, texts: Sequence[str], *, max_length: int = TOKENIZER_MAX_LENGTH) -> dict[str, Tensor]:
    """Official CLAP tokenization: pad to `max_length`, truncate, return tensors.

    Args:
        tokenizer: a RoBERTa tokenizer.
        texts: B prompts ("" is the unconditional prompt).
        max_length: padded length (512 as in MusicLDM).

    Returns:
        {"input_ids": [B, max_length] int64, "attention_mask": [B, max_length] int64}.
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a sequence of str")
    if len(texts) == 0:
        raise ValueError("texts is empty")
    encoded = tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {
        "input_ids": encoded["input_ids"].to(torch.long),
        "attention_mask": encoded["attention_mask"].to(torch.long),
    }


def empty_prompt_tokens(config: RobertaConfig, *, max_length: int = TOKENIZER_MAX_LENGTH) -> dict[str, Tensor]:
    """Tokens of the unconditional prompt "" without a tokenizer: `<s> </s> <pad> ...` (what RoBERTa's BPE gives).

    Lets the classifier-free guidance token be computed offline from the checkpoint alone.

    Returns:
        {"input_ids": [1, max_length], "attention_mask": [1, max_length]} int64.
    """
    input_ids = torch.full((1, max_length), config.pad_token_id, dtype=torch.long)
    input_ids[0, :2] = torch.tensor([config.bos_token_id, config.eos_token_id])
    attention_mask = torch.zeros((1, max_length), dtype=torch.long)
    attention_mask[0, :2] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}
