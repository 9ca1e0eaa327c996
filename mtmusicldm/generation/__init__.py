"""Generation and arrangement on a trained model: noise -> latents -> log-mel -> audio.

* :func:`generate` (total generation, paper Table 1/2) and :func:`arrange` (arrangement / inpainting, Table 3,
  official spec 8) of any length; inputs longer than one segment go to the windowed long form.
* Modules: :mod:`~.model` (what a model must offer), :mod:`~.seeds` (per-item random streams),
  :mod:`~.codec_io` (audio <-> scaled latents, output policy, files), :mod:`~.masks` (stem x time masks,
  waveform replacement), :mod:`~.conditioning` (CFG token, CLAP of given mixtures), :mod:`~.segment` (one
  segment), :mod:`~.longform` (windowed latent continuation), :mod:`~.api` (the two entry points).
"""
from mtmusicldm.generation.api import arrange, generate
from mtmusicldm.generation.codec_io import mix_stems, postprocess, write_stems
from mtmusicldm.generation.conditioning import embed_mixture
from mtmusicldm.generation.longform import load_stems, plan_windows
from mtmusicldm.generation.masks import stack_given, time_mask
from mtmusicldm.generation.model import GenerationModel, segment_samples

__all__ = [
    "GenerationModel",
    "arrange",
    "embed_mixture",
    "generate",
    "load_stems",
    "mix_stems",
    "plan_windows",
    "postprocess",
    "segment_samples",
    "stack_given",
    "time_mask",
    "write_stems",
]
