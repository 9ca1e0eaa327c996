"""Datasets: the synthetic band generator and the Slakh-family readers (4 stems in `mtmusicldm.STEMS` order).

Re-exports are resolved lazily (PEP 562), so importing a sibling such as `mtmusicldm.data.shards` does not pull in
scipy/yaml/soundfile through these modules.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "mtmusicldm.data.slakh": ("SCANNERS", "LoadedTrack", "SkippedTrack", "TrackError", "TrackSource",
                              "babyslakh_split", "classify_stem", "load_track", "scan_babyslakh", "scan_msdm",
                              "scan_slakh_redux", "scan_source"),
    "mtmusicldm.data.synthetic": ("BandTrack", "SongPlan", "generate_band_dataset", "plan_song",
                                  "render_band_track"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'mtmusicldm.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
