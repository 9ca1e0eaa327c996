"""Listenable examples of the sample stage (`samples/examples/`): longer than a segment, through the long-form path.

The evaluation settings use one segment per item (2.56 s in the embedded profile); these are for listening:

* `generate_<k>/`: total generation of `sample.examples_seconds` (windowed latent continuation, item seed
  `sequence_seed(seed, name_key("examples/generate"), k)`).
* `arrange_<k>/`: guitar and piano generated for the bass and drums of a real test excerpt of the same length,
  made of consecutive test segments of one track (the test split is cut on a fixed grid, so consecutive chunks
  are contiguous audio); the excerpts are the test tracks with the longest runs of chunks where bass and drums play.

Each folder holds `{bass,drums,guitar,piano,mix}.wav` (given stems: the real audio, bit for bit) and the examples
are listed in `samples/examples/examples.json`.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mtmusicldm.config import SampleParams
from mtmusicldm.generation import arrange, generate, write_stems
from mtmusicldm.ldm import MTMusicLDM
from mtmusicldm.utils.fs import write_json
from mtmusicldm.utils.rng import name_key, sequence_seed

GIVEN, GENERATED = ("bass", "drums"), ("guitar", "piano")
_KEY = re.compile(r"^(?P<track>.+)_c(?P<chunk>\d+)_v00$")


def excerpts(keys: Sequence[str], silent: dict[str, list[bool]], stems: Sequence[str], chunks: int,
             count: int) -> list[list[str]]:
    """Up to `count` runs of `chunks` consecutive test keys of one track whose given stems are not silent: the first
    such run of each track, tracks in sorted order."""
    by_track: dict[str, dict[int, str]] = {}
    for key in keys:
        m = _KEY.match(key)
        if m and not any(silent[key][stems.index(s)] for s in GIVEN):
            by_track.setdefault(m["track"], {})[int(m["chunk"])] = key
    runs = []
    for track, found in sorted(by_track.items()):
        for start in sorted(found):
            if all(start + i in found for i in range(chunks)):
                runs.append((track, [found[start + i] for i in range(chunks)]))
                break
    return [run for _, run in runs[:count]]


def write_examples(out: Path, model: MTMusicLDM, sample: SampleParams, seed: int, stems: Sequence[str],
                   excerpt_audio: Sequence[torch.Tensor], sr: int) -> list[dict[str, Any]]:
    """Generate and write the examples under `out` (= `samples/examples`); returns their records.

    Args:
        excerpt_audio: `[S, n]` real stems of each arrangement excerpt (`n` = the examples' length).
    """
    knobs = dict(sampler=sample.sampler, steps=sample.steps, eta=sample.eta, batch_size=1)
    n = int(round(sample.examples_seconds * sr))
    records = []
    for k in range(sample.examples):
        wav = generate(model, 1, seed=[sequence_seed(seed, name_key("examples/generate"), k)],
                       seconds=sample.examples_seconds, **knobs)[0]
        records.append(_write(out / f"generate_{k}", wav, stems, sr, sample.subtype, "total generation", list(stems)))
    for k, audio in enumerate(excerpt_audio):
        given = {s: audio[stems.index(s), :n] for s in GIVEN}
        wav = arrange(model, given, generate=list(GENERATED), seed=[sequence_seed(seed, name_key("examples/arrange"), k)],
                      **knobs)[0]
        records.append(_write(out / f"arrange_{k}", wav, stems, sr, sample.subtype,
                              f"{' + '.join(GENERATED)} for the real {' + '.join(GIVEN)}", list(GENERATED)))
    write_json(out / "examples.json", {"seconds": sample.examples_seconds, "examples": records})
    return records


def _write(folder: Path, wav: torch.Tensor, stems: Sequence[str], sr: int, subtype: str, what: str,
           generated: list[str]) -> dict[str, Any]:
    write_stems(folder, wav, stems, sr, subtype)
    return {"folder": folder.name, "what": what, "generated": generated, "seconds": round(wav.shape[-1] / sr, 3)}
