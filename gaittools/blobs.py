"""Blobs: person candidates in every frame's cleaned foreground, as 2D connected components.

Why components and not runs of occupied columns (what this replaced): two people at
different depths share image columns whenever one passes in front of or behind the other;
column runs made them one box, several times taller than wide. A connected component keeps
them apart as long as their pixels do not touch.

One upright body can fall apart into several components (a head above a dark collar, a foot
below the trouser hem, an arm piece beside the trunk). Parts are merged back when

- they are *stacked*: their columns overlap by at least half of the narrower one and their
  rows overlap by at most a third of the shorter one (head over trunk, foot under leg); two
  people side by side overlap in rows, so they stay apart;
- or one is a *fragment*: smaller than ``FRAGMENT`` of the other and within a few pixels of
  its box (an arm or hand piece); a whole second person is not that much smaller, even at a
  greater depth.

What this cannot do is split one component that holds several people (their pixels touch):
the tracker does that (``gaittools.tracking``), with the boxes it predicts for them.
"""

from __future__ import annotations

import cv2
import numpy as np

from gaittools.packed_masks import BIT_PLANES, BITS, WORD, column_masks, unpack_masks

#: A component smaller than this fraction of a neighbour's area, near its box, is part of it.
FRAGMENT = 0.15
#: Components smaller than this fraction of ``min_area`` are noise, dropped before merging.
NOISE = 0.05


def frame_blobs(packed: np.ndarray, w: int, min_area: float, min_height: float) -> list[np.ndarray]:
    """Person candidates of every frame of cleaned packed masks (words, h, T), each (N, 5)
    float32 x0, y0, x1, y1 (exclusive), area in mask pixels, ordered by x0.

    ``min_area`` (of the frame's area) and ``min_height`` (of its height) drop candidates
    too small to be a person, after merging the parts of one body.
    """
    words, h, T = packed.shape
    out = [np.zeros((0, 5), np.float32) for _ in range(T)]
    counts = np.bitwise_count(packed).sum(axis=(0, 1))
    least = min_area * h * w
    busy = np.flatnonzero(counts >= least)
    if len(busy) == 0:
        return out
    # one labelling for all busy frames: stacked as one tall image with an empty row between
    # frames, so no component spans two frames (one OpenCV call instead of one per frame)
    tall = np.zeros((len(busy), h + 1, w), np.uint8)
    tall[:, :h] = unpack_masks(packed[:, :, busy], w)
    _, _, stats, _ = cv2.connectedComponentsWithStats(tall.reshape(-1, w), connectivity=8)
    stats = stats[1:]
    stats = stats[stats[:, 4] >= max(2.0, NOISE * least)]
    frame = stats[:, 1] // (h + 1)
    y0 = stats[:, 1] - frame * (h + 1)
    boxes = np.stack([stats[:, 0], y0, stats[:, 0] + stats[:, 2], y0 + stats[:, 3], stats[:, 4]],
                     1).astype(np.float64)
    order = np.argsort(frame, kind="stable")
    frame, boxes = frame[order], boxes[order]
    cut = np.flatnonzero(np.diff(frame)) + 1
    gap = max(2.0, 0.02 * w)
    for k, part in zip(frame[np.r_[0, cut]] if len(frame) else [], np.split(boxes, cut)):
        part = merge_parts(part, gap)
        keep = (part[:, 4] >= least) & (part[:, 3] - part[:, 1] >= min_height * h)
        out[busy[k]] = part[keep][np.argsort(part[keep, 0], kind="stable")].astype(np.float32)
    return out


def merge_parts(boxes: np.ndarray, gap: float) -> np.ndarray:
    """Boxes (N, 5: x0, y0, x1, y1, area) with the parts of one body merged (see the module
    docstring), repeated until nothing merges (a merged box can reach further parts)."""
    boxes = [list(b) for b in boxes]
    merged = True
    while merged and len(boxes) > 1:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if _same_body(boxes[i], boxes[j], gap):
                    a, b = boxes[i], boxes.pop(j)
                    boxes[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]),
                                a[4] + b[4]]
                    merged = True
                    break
            if merged:
                break
    return np.array(boxes, np.float64).reshape(-1, 5)


def _same_body(a: list[float], b: list[float], gap: float) -> bool:
    cols = min(a[2], b[2]) - max(a[0], b[0])
    rows = min(a[3], b[3]) - max(a[1], b[1])
    narrow = min(a[2] - a[0], b[2] - b[0])
    short = min(a[3] - a[1], b[3] - b[1])
    tall = max(a[3] - a[1], b[3] - b[1])
    if cols >= 0.5 * narrow and rows <= short / 3 and rows > -max(gap, 0.5 * tall):
        return True  # stacked: head over trunk, foot under leg
    small, big = (a, b) if a[4] < b[4] else (b, a)
    return small[4] < FRAGMENT * big[4] and cols > -gap and rows > -gap


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes x0, y0, x1, y1 (extra columns ignored)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, >=4) with every box of ``b`` (M, >=4): (N, M)."""
    a, b = np.asarray(a, np.float64)[:, None, :4], np.asarray(b, np.float64)[None, :, :4]
    inter = (np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
             * np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None))
    union = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
             + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def mass_centres(packed: np.ndarray, w: int, boxes: np.ndarray, scale: float) -> np.ndarray:
    """Horizontal centre of mass of the foreground inside each box (frame pixels); the box
    centre where the box holds no foreground.

    All frames at once on packed masks: a column x's bits are summed as popcounts, and the sum
    of x over set bits as sum_k 2^k * popcount(bits whose index has bit k set).
    """
    words, h, T = packed.shape
    centres = np.full(len(boxes), np.nan, np.float32)
    idx = np.flatnonzero(np.isfinite(boxes[:, 0]))
    if len(idx) == 0:
        return centres
    b = boxes[idx] / scale
    c0, c1 = np.maximum(0, np.floor(b[:, 0])).astype(int), np.minimum(w, np.ceil(b[:, 2])).astype(int)
    r0, r1 = np.maximum(0, np.floor(b[:, 1])).astype(int), np.minimum(h, np.ceil(b[:, 3])).astype(int)
    ys = np.arange(h)
    in_rows = (ys >= r0[:, None]) & (ys < r1[:, None])
    bits = packed[:, :, idx] & column_masks(c0, c1, words)[:, None, :]
    bits &= np.where(in_rows.T, ~WORD(0), WORD(0))
    per_word = np.bitwise_count(bits).sum(axis=1, dtype=np.int64)  # (words, n)
    total = per_word.sum(axis=0)
    moment = BITS * np.arange(words) @ per_word
    for k, plane in enumerate(BIT_PLANES):
        moment += np.bitwise_count(bits & plane).sum(axis=(0, 1), dtype=np.int64) << k
    with np.errstate(divide="ignore", invalid="ignore"):
        mass = (moment / total + 0.5) * scale
    centres[idx] = np.where(total > 0, mass, (b[:, 0] + b[:, 2]) / 2 * scale)
    return centres
