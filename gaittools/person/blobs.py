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

A component that holds several people (their pixels touch: walkers side by side, or two
who enter together) is *divided* by its shape (``divide``): when it is much wider than one
upright body of its height, the column occupancy of its upper half (heads and trunks, above
the legs whose strides overlap) has one hump per person; it is cut at the deepest valley
between two humps of comparable height, where each side spans most of the blob's height
(an arm held out is a low hump of a few rows, not a person), again on each side for three or
more. This needs no history, so it works from the first frame, before any track exists; the
tracker still repairs merges of established tracks from their predictions
(``gaittools.person.tracking``), e.g. people at different depths, whose humps differ too much.
Only blobs wider than ``WIDE`` heights are looked at, so it costs nothing on single walkers.
(OpenCV's HOG people detector could say the same, but costs about as much per blob as the
whole tracker per frame, and misses bodies under ~100 px.) People shoulder to shoulder seen
from the front are one wide trunk, with no valley in this profile: ``gaittools.person.groups``
divides them between their heads on a closer look, or flags them ``UNDIVIDED``.
"""

from __future__ import annotations

import cv2
import numpy as np

from gaittools.person.packed_masks import BIT_PLANES, BITS, WORD, column_masks, unpack_masks

#: A component smaller than this fraction of a neighbour's area, near its box, is part of it.
FRAGMENT = 0.15
#: Components smaller than this fraction of ``min_area`` are noise, dropped before merging.
NOISE = 0.05
#: A blob wider than this many of its heights may hold several people (one walker at full
#: stride, arms swinging: up to ~0.6 in side view; the profile test below decides).
WIDE = 0.5
#: Rows of a blob (from its top) whose column occupancy shows heads and trunks.
UPPER = 0.5
#: A cut needs humps on both sides at least ``HUMP`` of the highest, and a valley at most
#: ``VALLEY`` of the lower hump.
HUMP = 0.5
VALLEY = 0.4
#: Each side of a cut spans at least this fraction of the blob's height and width.
PART_HEIGHT = 0.8
PART_WIDTH = 0.15
#: A candidate's flag (column 5): a blob as found; one person of a divided blob; a blob that
#: may hold several people side by side that no evidence could divide
#: (``gaittools.person.groups``).
WHOLE, DIVIDED, UNDIVIDED = 0, 1, 2


def frame_blobs(packed: np.ndarray, w: int, min_area: float, min_height: float) -> list[np.ndarray]:
    """Person candidates of every frame of cleaned packed masks (words, h, T), each (N, 6)
    float32 x0, y0, x1, y1 (exclusive), area in mask pixels, and ``DIVIDED`` where the
    candidate is one person of a divided blob (else ``WHOLE``), ordered by x0.

    ``min_area`` (of the frame's area) and ``min_height`` (of its height) drop candidates
    too small to be a person, after merging the parts of one body.
    """
    words, h, T = packed.shape
    out = [np.zeros((0, 6), np.float32) for _ in range(T)]
    counts = np.bitwise_count(packed).sum(axis=(0, 1))
    least = min_area * h * w
    busy = np.flatnonzero(counts >= least)
    if len(busy) == 0:
        return out
    # one labelling for all busy frames: stacked as one tall image with an empty row between
    # frames, so no component spans two frames (one OpenCV call instead of one per frame)
    tall = np.zeros((len(busy), h + 1, w), np.uint8)
    tall[:, :h] = unpack_masks(packed[:, :, busy], w)
    # BBDT (block-based decision trees): the same labels and stats as OpenCV's default
    # algorithm in the same order, ~3x faster on these sparse masks (was a fifth of localise)
    _, _, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(tall.reshape(-1, w), 8, cv2.CV_32S,
                                                                   cv2.CCL_BBDT)
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
        if (part[:, 2] - part[:, 0] > WIDE * (part[:, 3] - part[:, 1])).any():
            part = np.concatenate([divide(b, tall[k]) for b in part])
        else:  # the usual case: nobody to divide
            part = np.concatenate([part, np.zeros((len(part), 1))], axis=1)
        keep = (part[:, 4] >= least) & (part[:, 3] - part[:, 1] >= min_height * h)
        out[busy[k]] = part[keep][np.argsort(part[keep, 0], kind="stable")].astype(np.float32)
    return out


def divide(box: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A blob (x0, y0, x1, y1, area) of ``mask`` (h, w) as rows of ``frame_blobs``: itself
    (flag 0), or its people (flag 1) where it is a wide blob that holds several (see the
    module docstring).

    A person's upper body ends at the cut; its legs may reach past it, up to the neighbour's
    trunk. Between two trunks the lower body is cut again where its column occupancy has a
    valley (the two strides do not overlap); where it has none (they interleave), both
    people's boxes take the legs between the trunks.
    """
    x0, y0, x1, y1 = (int(v) for v in box[:4])
    region = mask[y0:y1, x0:x1]
    height = y1 - y0
    parts = _cut(region, height) if x1 - x0 > WIDE * height else []
    if len(parts) < 2:
        return np.r_[box[:5], WHOLE][None]
    upper = max(1, int(UPPER * height))
    profile, legs = region[:upper].sum(axis=0), _smooth(region[upper:].sum(axis=0), height)
    trunks = []
    for c0, c1 in parts:
        strong = np.flatnonzero(profile[c0:c1] >= HUMP * profile[c0:c1].max())
        trunks.append((c0 + strong[0], c0 + strong[-1] + 1))
    reach = [[0, region.shape[1]] for _ in parts]  # columns of each person's lower body
    for k in range(len(parts) - 1):
        a, b = trunks[k][1], trunks[k + 1][0]
        reach[k][1], reach[k + 1][0] = b, a
        if b - a > 2 and legs[a:b].min() <= VALLEY * legs[a:b].max():
            reach[k][1] = reach[k + 1][0] = a + int(np.argmin(legs[a:b]))
    out = []
    for (c0, c1), (lo, hi) in zip(parts, reach):
        own = np.zeros(region.shape, bool)
        own[:upper, c0:c1] = region[:upper, c0:c1]
        own[upper:, lo:hi] = region[upper:, lo:hi]
        rows, cols = np.flatnonzero(own.any(axis=1)), np.flatnonzero(own.any(axis=0))
        out.append([x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1,
                    region[:, c0:c1].sum(), DIVIDED])
    return np.array(out, np.float64)


def _smooth(profile: np.ndarray, height: int) -> np.ndarray:
    """A column profile averaged over ~6% of the body height (a leg's or a neck's width)."""
    k = max(1, round(0.06 * height))
    return np.convolve(profile.astype(np.float64), np.ones(k) / k, mode="same")


def _cut(region: np.ndarray, height: int) -> list[tuple[int, int]]:
    """Column ranges of the people in a blob's ``region`` (rows of the blob, its columns)."""
    w = region.shape[1]
    if w <= WIDE * height:
        return [(0, w)]
    profile = _smooth(region[:max(1, int(UPPER * height))].sum(axis=0), height)
    left, right = np.maximum.accumulate(profile), np.maximum.accumulate(profile[::-1])[::-1]
    hump = np.minimum(left, right)
    edge = max(1, int(PART_WIDTH * height))
    ok = (hump >= HUMP * profile.max()) & (profile <= VALLEY * hump)
    ok[:edge] = ok[w - edge:] = False
    depth = profile - hump
    for c in np.argsort(depth, kind="stable"):  # deepest valleys first
        if not ok[c]:
            break
        lo, hi = c, c  # the middle of a flat valley (a gap between two people)
        while lo > edge and depth[lo - 1] == depth[c]:
            lo -= 1
        while hi < w - edge - 1 and depth[hi + 1] == depth[c]:
            hi += 1
        c = (lo + hi + 1) // 2
        sides = region[:, :c], region[:, c:]
        if all(rows_spanned(s) >= PART_HEIGHT * height for s in sides):
            return _cut(sides[0], height) + [(c + a, c + b) for a, b in _cut(sides[1], height)]
    return [(0, w)]


def rows_spanned(region: np.ndarray) -> int:
    """Rows from a mask's first foreground row to its last (0 when it has none)."""
    rows = np.flatnonzero(region.any(axis=1))
    return int(rows[-1] - rows[0] + 1) if len(rows) else 0


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


def inside_fraction(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fraction of the area of each box of ``a`` (..., >=4) inside the box of ``b`` (..., >=4)
    it is paired with (numpy broadcasting); NaN where either is NaN (compares False)."""
    inter = (np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
             * np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None))
    return inter / np.maximum((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]), 1e-9)


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
