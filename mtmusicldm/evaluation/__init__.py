"""Evaluation: Fréchet audio distance (paper protocol: VGGish per audioldm_eval) and cross-stem coherence.

* `fad`: pure math (`frechet_distance`, `GaussianStats`, `fad_from_embeddings`).
* embedders behind the `AudioEmbedder` protocol, registry `EMBEDDERS` / `make_embedder`:
  "vggish" (paper-comparable with the released torchvggish weights from a local path), "clap" (CLAP-music via
  `mtmusicldm.conditioning.ClapConditioner`), "offline" (deterministic hand-crafted features, no weights).
* `audio_sets`: folders -> embeddings (content-addressed `.npz` cache) -> `fad_dirs`.
* `coherence`: rhythmic / harmonic coherence of a stem with its context vs mismatched pairings.

Importing this package is light: librosa (coherence) and laion-clap (CLAP) load on first use.
"""
from mtmusicldm.evaluation.audio_sets import (
    AUDIO_SUFFIXES,
    AudioSet,
    DirEmbeddings,
    EmbeddingCache,
    FadResult,
    directory_digest,
    embed_dir,
    embed_set,
    fad_dirs,
    list_audio_files,
    load_audio_dir,
    load_audio_set,
)
from mtmusicldm.evaluation.base import AudioEmbedder, EmbedderName, config_digest, state_dict_digest
from mtmusicldm.evaluation.clap_embedder import ClapEmbedder
from mtmusicldm.evaluation.coherence import (
    CoherenceResult,
    coherence_from_scores,
    harmonic_coherence,
    rhythmic_coherence,
)
from mtmusicldm.evaluation.embedders import EMBEDDERS, make_embedder
from mtmusicldm.evaluation.fad import (
    GaussianStats,
    RankDeficientWarning,
    check_sample_count,
    fad_from_embeddings,
    fad_from_stats,
    frechet_distance,
)
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
    "DirEmbeddings",
    "EmbedderName",
    "EmbeddingCache",
    "FadResult",
    "GaussianStats",
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
    "fad_dirs",
    "fad_from_embeddings",
    "fad_from_stats",
    "frechet_distance",
    "harmonic_coherence",
    "list_audio_files",
    "load_audio_dir",
    "load_audio_set",
    "load_vggish_state_dict",
    "make_embedder",
    "offline_features",
    "prepare_vggish_input",
    "rhythmic_coherence",
    "state_dict_digest",
    "vggish_examples",
    "vggish_log_mel",
    "vggish_mel_matrix",
]
