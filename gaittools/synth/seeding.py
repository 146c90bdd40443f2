"""Seeded random generators keyed by *what* they are for, not by the order they are drawn in.

Every random choice of the generator comes from a generator derived from (dataset seed, purpose,
identifiers). A subject's gait therefore does not change when more subjects are generated, when
views are added, or when sequences are rendered in another order or in another process.
"""

from __future__ import annotations

import zlib

import numpy as np

#: Purposes of the random streams; a new purpose gets a new number, old numbers never change.
SUBJECT_GAIT = 1
WALK = 2
CAMERA_NOISE = 3
SCENE = 4
SESSION_LIGHT = 5
SUBJECT_LOOK = 6
CROWD = 7


def key_of(text: str) -> int:
    """A stable integer for a string key (Python's hash() is salted per process)."""
    return zlib.crc32(text.encode("utf-8"))


def rng_for(seed: int, purpose: int, *ids: int | str) -> np.random.Generator:
    """The generator for one purpose and identity, derived from the dataset seed."""
    key = tuple(key_of(i) if isinstance(i, str) else int(i) for i in ids)
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(purpose, *key)))
