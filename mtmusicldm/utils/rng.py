"""Every seed-derivation rule of the project, in one place.

Randomness is always an argument (a seed or a generator); these functions turn a base seed and a few keys into
the seed of one independent random stream, so a stream depends only on its keys, never on batching, ordering or
the number of processes. Two algorithms are in use, each kept exactly as the outputs it produced were made
(renaming one onto the other would change every sample, latent and training run made so far):

* :func:`sequence_seed` (numpy ``SeedSequence`` over integer keys): generation and arrangement (per item, window,
  purpose and stem), the sample stage's item seeds.
* :func:`hash_seed` (sha256 of the ``repr`` of the keys, any hashable mix of ints and strings): the training loop
  (initialisation, data stream, timesteps, noise, CFG dropout) and the latent training stream.
  :func:`hash_seed_joined` is the same digest over ``str`` keys joined by NUL bytes: the encode stage's
  per-sample posterior and CLAP-crop streams.

:func:`numpy_rng` builds a numpy generator from integer keys (the data generator and segment offsets), and
:func:`name_key` turns a name into an integer key (CRC-32) for :func:`sequence_seed` and :func:`numpy_rng`.

This module imports neither torch nor anything heavy: data-preparation workers use it.
"""
from __future__ import annotations

import hashlib
import zlib
from typing import Any

import numpy as np

__all__ = ["SEED_BITS", "hash_seed", "hash_seed_joined", "name_key", "numpy_rng", "sequence_seed"]

SEED_BITS = 63
"""Every derived seed is in ``[0, 2**63)``: a valid ``torch.Generator.manual_seed`` on every platform."""


def sequence_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed from ``(seed, *keys)`` via numpy ``SeedSequence`` (stable across platforms and versions).

    ``SeedSequence`` pads its entropy with zeros, so trailing zero keys do not change the seed
    (``sequence_seed(s, k) == sequence_seed(s, k, 0)``); keys that differ elsewhere always do.

    Raises:
        ValueError: a negative seed or key.
    """
    if seed < 0 or any(k < 0 for k in keys):
        raise ValueError(f"seeds and keys must be >= 0, got {seed}, {keys}")
    hi, lo = np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(2, dtype=np.uint32)
    return ((int(hi) << 32) | int(lo)) & ((1 << SEED_BITS) - 1)


def _digest_seed(text: str) -> int:
    """The first 8 bytes of ``sha256(text)``, little-endian, shifted to 63 bits."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> (64 - SEED_BITS)


def hash_seed(*parts: Any) -> int:
    """A 63-bit seed from ``sha256(repr(parts))`` (stable across processes, platforms and Python versions).

    Args:
        parts: ints and strings (their ``repr`` is hashed, so ``1`` and ``"1"`` give different seeds).
    """
    return _digest_seed(repr(parts))


def hash_seed_joined(*parts: Any) -> int:
    """A 63-bit seed from ``sha256`` of ``str(part)`` joined by NUL bytes (``1`` and ``"1"`` are the same key)."""
    return _digest_seed("\x00".join(map(str, parts)))


def name_key(name: str) -> int:
    """An integer key for a name: CRC-32 of its UTF-8 bytes."""
    return zlib.crc32(name.encode("utf-8"))


def numpy_rng(*keys: int) -> np.random.Generator:
    """``np.random.default_rng(SeedSequence(keys))``: a PCG64 stream that depends only on the integer keys."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))
