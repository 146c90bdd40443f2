"""Where clips start in a sequence: the one rule shared by training, evaluation and identify.

A clip is ``clip_len`` consecutive frames that all hold the person, and clips start every
``step`` frames inside each run of such frames (GaitCopy: 25 frames, step 5). Training asks for
``extra=1`` more valid frame because its flow clip ``flow[t:t+L]`` needs frame ``t+L`` too;
flow-free inference needs none.
"""

from __future__ import annotations

import numpy as np


def valid_runs(valid: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of every run of True in ``valid``, end exclusive."""
    v = np.concatenate([[False], np.asarray(valid, bool), [False]])
    edges = np.flatnonzero(v[1:] != v[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def clip_starts(valid: np.ndarray, clip_len: int, step: int, extra: int = 0) -> list[int]:
    """Starts of clips of ``clip_len`` (+ ``extra``) valid frames, every ``step`` in each run."""
    need = clip_len + extra
    return [s for start, end in valid_runs(valid) for s in range(start, end - need + 1, step)]


def longest_run(valid: np.ndarray) -> int:
    """Length of the longest run of valid frames (to say why a video has no clip)."""
    return max((end - start for start, end in valid_runs(valid)), default=0)
