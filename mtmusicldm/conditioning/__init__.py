"""Conditioning: the frozen CLAP embedder (mixture audio or text -> 512-d unit vector) and its RoBERTa plumbing.

Importing this package is cheap: laion-clap and transformers are imported on first use, after the hub has been put
offline unless `online=True` is requested (see `text.configure_hub_mode`).
"""
from mtmusicldm.conditioning.clap import (
    CLAP_EMBED_DIM,
    ClapCheckpointError,
    ClapConditioner,
    build_clap_model,
    draw_crop_offsets,
    extract_clap_state_dict,
    load_clap_state_dict,
    read_checkpoint,
)
from mtmusicldm.conditioning.text import (
    ROBERTA_BASE_HPARAMS,
    check_tokenizer,
    configure_hub_mode,
    empty_prompt_tokens,
    load_roberta_tokenizer,
    roberta_base_config,
    tokenize,
)

__all__ = [
    "CLAP_EMBED_DIM",
    "ROBERTA_BASE_HPARAMS",
    "ClapCheckpointError",
    "ClapConditioner",
    "build_clap_model",
    "check_tokenizer",
    "configure_hub_mode",
    "draw_crop_offsets",
    "empty_prompt_tokens",
    "extract_clap_state_dict",
    "load_clap_state_dict",
    "load_roberta_tokenizer",
    "read_checkpoint",
    "roberta_base_config",
    "tokenize",
]
