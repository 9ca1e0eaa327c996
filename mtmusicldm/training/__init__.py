"""Training of the 3D LDM: the Accelerate loop, EMA and resumable checkpoints."""
from mtmusicldm.training.checkpoint import (
    CheckpointError,
    check_frozen,
    clean_incomplete,
    find_latest,
    load_checkpoint,
    params_hashes,
    read_state,
    save_checkpoint,
)
from mtmusicldm.training.ema import ema_decay_at, ema_update
from mtmusicldm.training.loop import (
    NonFiniteLossError,
    TrainResult,
    apply_train_params,
    train,
    unet_config_from_params,
)

__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "TrainResult",
    "apply_train_params",
    "check_frozen",
    "clean_incomplete",
    "ema_decay_at",
    "ema_update",
    "find_latest",
    "load_checkpoint",
    "params_hashes",
    "read_state",
    "save_checkpoint",
    "train",
    "unet_config_from_params",
]
