"""Where clips start in a sequence, and which frames a bounded walk keeps: the rules shared by
training, evaluation, export and identify.

A clip is ``clip_len`` consecutive frames that all hold the person, and clips start every
``step`` frames inside each run of such frames (GaitCopy: 25 frames, step 5). Training asks for
``extra=1`` more valid frame because its flow clip ``flow[t:t+L]`` needs frame ``t+L`` too;
flow-free inference needs none.

A walk (a set network's input) is every frame that holds the person; one longer than a bound
keeps ``spread_indices``: frames evenly spread over the whole walk.
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


def spread_indices(count: int, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` of ``count`` frames, evenly spread over all of them.

    Why spread and not the first ``limit``: a set network pools a maximum over its frames, so
    what matters is that the kept frames cover every pose of the gait cycle, and frames spread
    over a whole walk do (training draws its frames from the whole walk too). Every frame is
    kept when ``count <= limit``."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if count <= limit:
        return np.arange(count)
    return np.round(np.linspace(0, count - 1, limit)).astype(np.int64)
