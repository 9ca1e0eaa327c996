"""Adapters for the official MT-MusicLDM code and checkpoints (karchkha/mt-musicldm): configs, key names, weights."""
from mtmusicldm.official.unet import ema_key, ema_to_unet_state_dict, infer_unet_config, load_unet
from mtmusicldm.official.unet import official_key_map, official_to_ours, ours_to_official, unet_config_from_official
from mtmusicldm.official.vae import load_vae, official_vae_key_map
from mtmusicldm.official.hifigan import load_hifigan, official_hifigan_key_map
