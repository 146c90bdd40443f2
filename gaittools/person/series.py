"""Per-frame box series: gap filling, smoothing, robust rolling statistics, outlier repair.

Boxes are (T, 4) float arrays x0, y0, x1, y1 with NaN rows where nobody is there.
"""

from __future__ import annotations

import numpy as np

#: Frames either side of the rolling median of a track's box heights (one 25-frame clip).
REACH = 12
#: A box whose height is further than this from the rolling median is an outlier (a merge
#: with someone else, a reflection on the floor, a partial body at the frame's edge).
OUTLIER = 0.2


def fill_gaps(boxes: np.ndarray, max_gap: int) -> np.ndarray:
    """Linearly interpolate runs of at most ``max_gap`` NaN frames inside a track."""
    out = boxes.copy()
    valid = np.flatnonzero(np.isfinite(boxes[:, 0]))
    for a, b in zip(valid[:-1], valid[1:]):
        if 1 < b - a <= max_gap + 1:
            w = (np.arange(a + 1, b) - a) / (b - a)
            out[a + 1:b] = boxes[a] * (1 - w[:, None]) + boxes[b] * w[:, None]
    return out


def smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average within each run of valid frames (shorter at run ends)."""
    if window <= 1:
        return boxes
    out = boxes.copy()
    valid = np.isfinite(boxes[:, 0])
    edges = np.flatnonzero(np.diff(np.r_[0, valid.astype(np.int8), 0]))
    kernel = np.ones(window)
    for start, stop in zip(edges[::2], edges[1::2]):
        run = boxes[start:stop].astype(np.float64)
        half, n = (window - 1) // 2, len(run)  # "same" alignment, also for runs < window
        counts = np.convolve(np.ones(n), kernel)[half:half + n]
        for k in range(4):
            out[start:stop, k] = np.convolve(run[:, k], kernel)[half:half + n] / counts
    return out

def rolling_median(values: np.ndarray, reach: int = REACH) -> np.ndarray:
    """Median of the finite values within ``reach`` frames either side (NaN where none)."""
    values = np.asarray(values, np.float64)
    padded = np.pad(values, reach, constant_values=np.nan)
    # np.nanmedian's value without its masked-array path (a tenth of localise's time): sorted
    # windows hold their n finite values first, NaN last
    ordered = np.sort(np.lib.stride_tricks.sliding_window_view(padded, 2 * reach + 1), axis=1)
    n = np.isfinite(ordered).sum(axis=1)
    rows = np.arange(len(ordered))
    lo, hi = ordered[rows, np.maximum(n - 1, 0) // 2], ordered[rows, n // 2]
    return np.where(n > 0, (lo + hi) / 2, np.nan)


def repair_outliers(boxes: np.ndarray, reach: int = REACH, tol: float = OUTLIER
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Boxes whose height is more than ``tol`` away from the rolling median height get their
    top and bottom from the rolling medians of the tops and bottoms of the other boxes (a
    merge raises the top, a floor reflection lowers the bottom, a body entering the frame
    shows only part of itself); columns are kept. Returns the boxes and the outlier flags."""
    boxes = np.asarray(boxes, np.float64).copy()
    height = boxes[:, 3] - boxes[:, 1]
    ref = rolling_median(height, reach)
    flagged = np.isfinite(height) & (np.abs(height - ref) > tol * ref)
    if flagged.any():
        clean = np.where(flagged[:, None], np.nan, boxes)
        for k in (1, 3):
            fix = rolling_median(clean[:, k], reach)
            use = flagged & np.isfinite(fix)
            boxes[use, k] = fix[use]
    return boxes, flagged
