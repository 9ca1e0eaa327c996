"""SoundFont rendering of the embedded band: General MIDI presets of any SF2 file, played by TinySoundFont.

Slakh2100 was made by rendering Lakh MIDI stem by stem through sample-based virtual instruments. This module plays
the composer's notes the same way: each stem alone, through one preset of a SoundFont, with `tinysoundfont` (the
self-contained TinySoundFont C synth in a manylinux wheel; no system library, no download). The default SoundFont is
the General MIDI set that the `pretty_midi` wheel ships, `TimGM6mb.sf2` (sampled pianos, guitars, basses and eight
drum kits); any SF2 file works (e.g. Debian's `fluid-soundfont-gm`: /usr/share/sounds/sf2/FluidR3_GM.sf2).

Rendering is deterministic: the same notes, preset and SoundFont file give the same samples.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

__all__ = ["DRUM_BANK", "SoundFont", "SoundFontError", "default_soundfont_path", "load_soundfont",
           "render_notes"]

DRUM_BANK = 128  # General MIDI percussion kits live in bank 128 of an SF2 file
_MAX_VOICES = 256


class SoundFontError(ValueError):
    """A SoundFont that cannot be used: missing, not an SF2 file, unloadable, or lacking an instrument family."""


class MidiNote(Protocol):
    """What `render_notes` reads of a note (`pretty_midi.Note` fits): seconds, MIDI pitch, velocity 1-127."""

    start: float
    end: float
    pitch: int
    velocity: int


def default_soundfont_path() -> Path:
    """pretty_midi's bundled General MIDI SoundFont (`pretty_midi/TimGM6mb.sf2`)."""
    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or spec.origin is None:
        raise SoundFontError("the default SoundFont is pretty_midi's TimGM6mb.sf2, but pretty_midi is not installed "
                             "(pip install pretty_midi), or set synthetic.soundfont to an SF2 file")
    return Path(spec.origin).parent / "TimGM6mb.sf2"


@dataclass(frozen=True)
class SoundFont:
    """A loaded SF2 file.

    Attributes:
        path: the file.
        sha256: hash of its bytes (part of every generated track's fingerprint).
        presets: `(bank, program) -> preset name` for banks 0 (melodic) and 128 (drum kits).
    """

    path: Path
    sha256: str
    presets: Mapping[tuple[int, int], str]
    data: bytes = field(repr=False)

    def has(self, program: int, is_drum: bool) -> bool:
        return (DRUM_BANK if is_drum else 0, program) in self.presets

    def preset_name(self, program: int, is_drum: bool) -> str:
        return self.presets[(DRUM_BANK if is_drum else 0, program)]

    def resolve(self, program: int, family: Sequence[int], is_drum: bool, what: str) -> tuple[int, str | None]:
        """The program to play for `program`: itself if present, else the family's first available one.

        Args:
            program: the requested General MIDI program (drums: kit number in bank 128).
            family: the programs of its family, in order (e.g. Piano 0-7; drums: the kits to try).
            is_drum: drum kit (bank 128) or melodic preset (bank 0).
            what: family name for messages.

        Returns:
            (program used, None) or (fallback program, a note saying what was missing).

        Raises:
            SoundFontError: no program of the family exists in this SoundFont.
        """
        if self.has(program, is_drum):
            return program, None
        bank = DRUM_BANK if is_drum else 0
        available = [p for p in family if self.has(p, is_drum)]
        if not available:  # drums: any kit will do
            available = sorted(p for b, p in self.presets if is_drum and b == DRUM_BANK)
        if not available:
            raise SoundFontError(f"{self.path}: the SoundFont has no {what} preset (bank {bank}, programs "
                                 f"{list(family)})")
        return available[0], f"preset {bank}:{program} is missing from {self.path.name}; played {bank}:{available[0]}"


def load_soundfont(path: str | Path | None = None) -> SoundFont:
    """Read and check an SF2 file (None = `default_soundfont_path()`).

    Raises:
        SoundFontError: the file does not exist, is not a RIFF `sfbk` (SF2) file, or TinySoundFont cannot load it.
    """
    path = default_soundfont_path() if path is None else Path(path).expanduser()
    if not path.is_file():
        raise SoundFontError(f"{path}: no such SoundFont file")
    stat = path.stat()
    return _load(path.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load(path: Path, size: int, mtime_ns: int) -> SoundFont:
    data = path.read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise SoundFontError(f"{path}: not a SoundFont 2 file (no RIFF 'sfbk' header)")
    try:
        synth = _synth(data)
    except Exception as err:  # the binding raises plain Exceptions for malformed files
        raise SoundFontError(f"{path}: TinySoundFont cannot load it ({err})") from None
    presets = {(bank, p): name for bank in (0, DRUM_BANK) for p in range(128)
               if (name := synth.get_preset_name(bank, p)) != "<None>"}
    if not presets:
        raise SoundFontError(f"{path}: the SoundFont has no presets in bank 0 or 128")
    return SoundFont(path=path, sha256=hashlib.sha256(data).hexdigest(), presets=presets, data=data)


def _synth(data: bytes) -> object:
    from tinysoundfont import _tinysoundfont as tsf

    return tsf.SoundFont(data)


def _fresh_synth(sf: SoundFont, sample_rate: int) -> object:
    """A new synth for every stem (~10 ms): `tsf_reset` only fades voices out quickly, so a reused synth would
    leak the previous stem's release tails into the next one."""
    from tinysoundfont import _tinysoundfont as tsf

    synth = tsf.SoundFont(sf.data)
    synth.set_output(tsf.OutputMode.Mono, sample_rate, 0.0)
    synth.set_max_voices(_MAX_VOICES)
    return synth


def render_notes(sf: SoundFont, notes: Sequence[MidiNote], *, program: int, is_drum: bool, sample_rate: int,
                 n_samples: int) -> np.ndarray:
    """Play `notes` on one preset, alone, and return the mono float32 `[n_samples]` signal.

    Events are placed at `round(t * sample_rate)`; at one instant note-offs come before note-ons. A note-off
    releases every sounding voice of its pitch, so notes of one pitch must not overlap (MIDI semantics; the band
    writer truncates them). Tails past `n_samples` are cut, as the track ends there.

    Args:
        sf: the SoundFont; `program` must exist in it (see `SoundFont.resolve`).
        notes: seconds, pitch, velocity 1-127.
        program: General MIDI program (drums: kit number, bank 128).
        is_drum: play on a percussion channel.
        sample_rate: Hz.
        n_samples: output length.
    """
    if not sf.has(program, is_drum):
        raise SoundFontError(f"{sf.path}: no preset {DRUM_BANK if is_drum else 0}:{program}")
    synth = _fresh_synth(sf, sample_rate)
    synth.channel_set_bank(0, DRUM_BANK if is_drum else 0)
    synth.channel_set_preset_number(0, program, is_drum)
    events = sorted([(int(round(x.start * sample_rate)), 1, int(x.pitch), int(x.velocity)) for x in notes]
                    + [(int(round(x.end * sample_rate)), 0, int(x.pitch), 0) for x in notes])
    out = np.zeros(n_samples, dtype=np.float32)
    pos = 0
    for at, on, pitch, velocity in events:
        at = min(at, n_samples)
        if at > pos:
            synth.render(memoryview(out[pos:at]).cast("B"))
            pos = at
        if on:
            synth.channel_note_on(0, pitch, velocity / 127.0)
        else:
            synth.channel_note_off(0, pitch)
    if pos < n_samples:
        synth.render(memoryview(out[pos:]).cast("B"))
    return out
