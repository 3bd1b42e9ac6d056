"""Independent random streams derived from a run's seed, one per purpose.

Every random draw of a run (the data order of each epoch, the augmentation, the pruning
sample, random keep-scores (the layerwise baselines' positions too), the ablations'
permutations and fresh weights) comes from `generator(seed, stream, *keys)`. A stream is named, and
the name (not a small integer that an epoch number or another stream could also take) is
what separates it: the seed is the `SeedSequence` entropy and `(tag of the name, *keys)` its
spawn key, so two different (stream, keys) never share a sequence.

Example:

>>> order = generator(0, "data_order", 3).permutation(10)  # epoch 3 of seed 0
"""

from __future__ import annotations

import zlib

import numpy as np

STREAMS = (
    "data_order",  # key: epoch
    "augmentation",  # key: epoch
    "pruning_data",
    "scores",  # seeded scorers (random keep-scores)
    "shuffle",
    "reinit",
    "growth",  # key: iteration (the weights SET grows at random)
)
# How many keys each stream takes: a fixed count, so that keys never run into one another.
_KEYS = {"data_order": 1, "augmentation": 1, "growth": 1}


def _tag(stream: str) -> int:
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; known: {', '.join(STREAMS)}")
    return zlib.crc32(stream.encode())


def seed_sequence(seed: int, stream: str, *keys: int) -> np.random.SeedSequence:
    """The `SeedSequence` of `stream` (with its keys, e.g. the epoch) for a run's `seed`."""
    if len(keys) != _KEYS.get(stream, 0):
        raise ValueError(f"stream {stream!r} takes {_KEYS.get(stream, 0)} keys, got {keys}")
    return np.random.SeedSequence(int(seed), spawn_key=(_tag(stream), *map(int, keys)))


def generator(seed: int, stream: str, *keys: int) -> np.random.Generator:
    """A NumPy generator on `stream` (see `seed_sequence`)."""
    return np.random.default_rng(seed_sequence(seed, stream, *keys))


def key31(seed: int, stream: str, *keys: int) -> int:
    """A 31-bit integer key of `stream`, for APIs that take an int seed (TF, TFDS)."""
    return int(seed_sequence(seed, stream, *keys).generate_state(1)[0] >> 1)
