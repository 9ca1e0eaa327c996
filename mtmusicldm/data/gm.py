"""General MIDI facts used by the band generator, the Slakh reader and params validation (one home).

Slakh2100 (and this project) assigns a stem to a class by its MIDI program family: Piano 0-7, Guitar 24-31,
Bass 32-39; drums are stems flagged `is_drum` (percussion channel), whose kit is a bank-128 preset.
"""
from __future__ import annotations

__all__ = ["CLASS_PROGRAMS", "DRUM_KITS", "EXTRA_FAMILIES", "FAMILIES", "GM_NAMES"]

CLASS_PROGRAMS: dict[str, range] = {"piano": range(0, 8), "guitar": range(24, 32), "bass": range(32, 40)}
"""General MIDI program family of each pitched stem class."""

DRUM_KITS: tuple[int, ...] = (0, 8, 16, 24, 25, 32, 40)
"""General MIDI drum kits (bank 128): Standard, Room, Power, Electronic, TR-808, Jazz, Brush."""

GM_NAMES: dict[int, str] = dict(zip([*range(8), *range(16, 20), *range(24, 40), 48, 49, 80, 81, 88, 89], (
    "Acoustic Grand Piano|Bright Acoustic Piano|Electric Grand Piano|Honky-tonk Piano|Electric Piano 1|"
    "Electric Piano 2|Harpsichord|Clavinet|Drawbar Organ|Percussive Organ|Rock Organ|Church Organ|"
    "Acoustic Guitar (nylon)|Acoustic Guitar (steel)|Electric Guitar (jazz)|Electric Guitar (clean)|"
    "Electric Guitar (muted)|Overdriven Guitar|Distortion Guitar|Guitar Harmonics|Acoustic Bass|"
    "Electric Bass (finger)|Electric Bass (pick)|Fretless Bass|Slap Bass 1|Slap Bass 2|Synth Bass 1|Synth Bass 2|"
    "String Ensemble 1|String Ensemble 2|Lead 1 (square)|Lead 2 (sawtooth)|Pad 1 (new age)|Pad 2 (warm)"
).split("|")))
"""General MIDI names of the programs the band generator draws."""

# family -> (Slakh inst_class, GM programs); extra families are ignored by the 4-stem reader.
FAMILIES: dict[str, tuple[str, range | tuple[int, ...]]] = {
    "bass": ("Bass", CLASS_PROGRAMS["bass"]), "guitar": ("Guitar", CLASS_PROGRAMS["guitar"]),
    "piano": ("Piano", CLASS_PROGRAMS["piano"]), "organ": ("Organ", range(16, 20)), "strings": ("Strings", (48, 49)),
    "lead": ("Synth Lead", (80, 81)), "pad": ("Synth Pad", (88, 89))}
EXTRA_FAMILIES = ("organ", "strings", "lead", "pad")
