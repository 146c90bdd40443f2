"""Person localisation: where the walker is in every frame, without downloaded weights.

How, and why this way:

1. Background subtraction on frames shrunk to ``analysis_height`` (120 px: a person is still
   ~50 px tall, and it costs a quarter of full resolution). The background is the dataset's
   empty-scene image when there is one (CASIA-B's ``SSS-bkgrd-VVV`` clip), else the per-pixel
   median of the sequence (a walker covers any pixel only briefly), or OpenCV's MOG2/KNN.
   A pixel is foreground when it differs by more than ``threshold`` plus twice the frame's
   median difference (so a global exposure change does not turn the whole frame on).
2. Morphological opening (speckle) and closing (holes, thin limbs); runs of occupied columns,
   those a few columns apart merged, are the candidates (a head separated from the trunk, a
   detached foot: parts of an upright body share columns; the same as merging connected
   components whose columns overlap); small or short candidates are dropped. Masks are
   bit-packed (32 columns a word) from the threshold on, so morphology, column runs, boxes
   and centres of mass are whole-sequence numpy operations and popcounts: no per-frame
   OpenCV calls or Python, exactly OpenCV's morphology (``gaittools.packed_masks``, tested).
3. Candidates are linked over time into tracks (overlap or nearby centre, gaps up to
   ``max_gap`` frames). The longest track is the walker; ``n_tracks`` says how many tracks
   were long enough to count, so a sequence with several people can be flagged.
4. The walker's boxes get short gaps filled by interpolation and are smoothed with a centred
   moving average (scale jitter would become crop jitter). Frames outside the track: NaN.
5. Fallback when the background model fails (moving camera: the scene shifts between frames,
   or most of the frame is "foreground"): OpenCV's HOG people detector with its built-in SVM,
   then the same tracking. HOG boxes are shrunk to the body (the 64x128 window carries a
   margin) and the horizontal centre is the box centre (no mask).

Outputs are in frame pixels; a box is ``x0, y0, x1, y1`` with ``x1``, ``y1`` exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from gaittools.packed_masks import (BIT_PLANES, BITS, WORD, column_masks, dilate, erode, pack_masks,
                                    unpack_masks)

METHODS = ("median", "mog2", "knn")


@dataclass(frozen=True)
class LocaliseParams:
    """Tuning of localisation; the defaults suit 25-30 fps walking clips of 240-480 px."""

    method: str = "median"
    analysis_height: int = 120
    threshold: int = 14
    min_area: float = 0.002  # of the analysis frame's area
    min_height: float = 0.1  # of the frame's height
    min_track: int = 5  # frames for a track to count as a person
    max_gap: int = 3  # frames a track may miss and still continue
    smooth: int = 5  # frames of the centred moving average of boxes
    median_samples: int = 31  # frames sampled for the median background
    moving_camera_px: float = 1.0  # median global shift (analysis px per 2 frames) -> HOG
    fail_fraction: float = 0.3  # median foreground fraction above which -> HOG
    hog: bool = True  # allow the HOG fallback


@dataclass
class Localisation:
    """The walker per frame. ``masks`` (analysis resolution) only with ``keep_masks``."""

    boxes: np.ndarray  # float32 (T, 4) frame pixels, NaN where nobody
    centres: np.ndarray  # float32 (T,) horizontal centre of mass, frame pixels, NaN where nobody
    n_tracks: int
    method: str
    foreground_fraction: float
    mask_scale: float  # frame pixels per mask pixel
    masks: np.ndarray | None = None  # bool (T, h, w) cleaned foreground of every frame
    notes: list[str] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """Fraction of frames with the walker found."""
        return float(np.isfinite(self.boxes[:, 0]).mean()) if len(self.boxes) else 0.0


# ---------------------------------------------------------------------------- entry point
def localise(frames: np.ndarray, background: np.ndarray | None = None,
             params: LocaliseParams | None = None, keep_masks: bool = False) -> Localisation:
    """Find the walker in gray frames (T, H, W); ``background`` is an empty-scene image (H, W)."""
    p = params or LocaliseParams()
    if p.method not in METHODS:
        raise ValueError(f"unknown localisation method {p.method!r}; one of {METHODS}")
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W), got {frames.dtype} {frames.shape}")
    T, H, W = frames.shape
    if T == 0:
        return _nobody(0, "empty", 0.0, 1.0)
    small = shrink(frames, p.analysis_height)
    scale = H / small.shape[1]
    notes: list[str] = []
    if p.hog and moving_camera(small, p.moving_camera_px):
        notes.append("camera moves: HOG people detector")
        return _localise_hog(frames, p, notes)
    masks, method = _foreground(small, background, p)
    fraction = _median_fraction(masks, small.shape[1] * small.shape[2])
    if background is not None and fraction > p.fail_fraction and p.method == "median":
        notes.append(f"empty-scene image does not match ({fraction:.0%} foreground): sequence median")
        masks, method = _foreground(small, None, p)
        fraction = _median_fraction(masks, small.shape[1] * small.shape[2])
    if p.hog and fraction > p.fail_fraction:
        notes.append(f"background model failed ({fraction:.0%} of the frame foreground): HOG")
        return _localise_hog(frames, p, notes, fraction)
    w = small.shape[2]
    masks = clean_packed(masks, w)
    per_frame = frame_candidates(masks, w, p)
    tracks = link_tracks(per_frame, p)
    loc = _from_tracks(tracks, per_frame, T, p, scale, method, fraction, notes)
    loc.centres = _mass_centres(masks, w, loc.boxes, scale)
    if keep_masks:
        loc.masks = unpack_masks(masks, w)
    return loc


def _median_fraction(packed: np.ndarray, pixels: int) -> float:
    """Median over frames of the foreground fraction of packed masks."""
    return float(np.median(np.bitwise_count(packed).sum(axis=(0, 1)) / pixels))


# ---------------------------------------------------------------------------- foreground
def shrink(frames: np.ndarray, height: int) -> np.ndarray:
    """Frames resized to ``height`` (INTER_AREA); returned as is when already that small.

    When both sides shrink by the same whole factor (240 -> 120), the frames are resized as
    one tall (T*H, W) image: INTER_AREA then averages blocks that never straddle two frames,
    so the result is exactly the per-frame one, for one call instead of T.
    """
    T, H, W = frames.shape
    if H <= height:
        return frames
    width = max(1, int(round(W * height / H)))
    if H % height == 0 and W == width * (H // height) and frames.flags.c_contiguous:
        tall = cv2.resize(frames.reshape(T * H, W), (width, T * height), interpolation=cv2.INTER_AREA)
        return tall.reshape(T, height, width)
    out = np.empty((T, height, width), np.uint8)
    for t in range(T):
        cv2.resize(frames[t], (width, height), dst=out[t], interpolation=cv2.INTER_AREA)
    return out


def median_background(frames: np.ndarray, samples: int = 60) -> np.ndarray:
    """Per-pixel median of up to ``samples`` evenly spaced frames.

    A selection network (min/max over whole frames) instead of a per-pixel partition: numpy
    partitions each pixel's short list separately, the network does ~150 vector operations.
    The result is the same order statistic, so exactly what a sort would give.
    """
    idx = np.unique(np.linspace(0, len(frames) - 1, min(samples, len(frames))).round().astype(int))
    wires = [np.array(frames[i]) for i in idx]
    mid = len(idx) // 2
    for a, b in _median_network(len(idx)):
        low = np.minimum(wires[a], wires[b])
        np.maximum(wires[a], wires[b], out=wires[b])
        wires[a] = low
    return wires[mid]


@lru_cache(maxsize=None)
def _median_network(n: int) -> tuple[tuple[int, int], ...]:
    """Comparators (low, high) of Batcher's odd-even merge sort for ``n`` wires, pruned to
    those that decide wire ``n // 2`` (after them it holds the median, the upper one for even n).
    Wires past ``n`` would hold +inf, so comparators touching them are left out."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    needed, kept = {n // 2}, []
    for a, b in reversed(pairs):
        if a in needed or b in needed:
            needed |= {a, b}
            kept.append((a, b))
    return tuple(reversed(kept))


def _foreground(small: np.ndarray, background: np.ndarray | None,
                p: LocaliseParams) -> tuple[np.ndarray, str]:
    """Bit-packed foreground (see ``pack_masks``) of every analysis frame, and how it was found."""
    if p.method in ("mog2", "knn"):
        return pack_masks(_foreground_subtractor(small, background, p.method)), p.method
    if background is not None:
        bg = shrink(background[None], p.analysis_height)[0]
        if bg.shape != small.shape[1:]:
            raise ValueError(f"background {background.shape} does not match the frames")
        method = "background image"
    else:
        bg = median_background(small, p.median_samples)
        method = "sequence median"
    return _threshold_packed(small, bg, p.threshold), method


#: Frames per block of ``_threshold_packed``: its two scratch arrays stay in a core's cache.
_BLOCK = 16


def _threshold_packed(small: np.ndarray, bg: np.ndarray, threshold: int) -> np.ndarray:
    """Packed masks of ``|small[t] - bg| > threshold + 2 * median difference of frame t``
    (median over every 4th pixel of every 4th row), a block of frames at a time: difference,
    median, comparison and packing reuse two small scratch arrays instead of writing and
    re-reading whole-sequence temporaries, and the background is tiled for one block (16
    frames), not for all T."""
    T, h, w = small.shape
    diff = np.empty((min(_BLOCK, T), h, w), np.uint8)
    fg = np.empty(diff.shape, bool)
    bgs = np.tile(bg, (len(diff), 1))  # one block's worth of background rows
    blocks = []
    for start in range(0, T, _BLOCK):
        n = min(_BLOCK, T - start)
        block = np.ascontiguousarray(small[start:start + n]).reshape(n * h, w)
        cv2.absdiff(block, bgs[:n * h], dst=diff[:n].reshape(n * h, w))
        level = _row_medians(diff[:n, ::4, ::4].reshape(n, -1)).astype(np.int16)
        thresholds = np.minimum(threshold + 2 * level, 255).astype(np.uint8)
        np.greater(diff[:n], thresholds[:, None, None], out=fg[:n])
        blocks.append(pack_masks(fg[:n]))
    return np.concatenate(blocks, axis=2)


def _row_medians(values: np.ndarray) -> np.ndarray:
    """``np.median(values, axis=1)`` of uint8 rows, from per-row histograms (one bincount
    instead of one partition per row)."""
    T, n = values.shape
    hist = np.bincount((values + np.arange(T, dtype=np.int64)[:, None] * 256).ravel(),
                       minlength=256 * T).reshape(T, 256)
    cum = hist.cumsum(axis=1)

    def kth(k: int) -> np.ndarray:  # k-th smallest (0-based) of each row
        return (cum <= k).sum(axis=1)

    if n % 2:
        return kth(n // 2).astype(np.float64)
    return (kth(n // 2 - 1) + kth(n // 2)) / 2


def _foreground_subtractor(small: np.ndarray, background: np.ndarray | None, method: str) -> np.ndarray:
    sub = (cv2.createBackgroundSubtractorMOG2(detectShadows=True) if method == "mog2"
           else cv2.createBackgroundSubtractorKNN(detectShadows=True))
    if background is not None:
        bg = shrink(background[None], small.shape[1])[0]
        for _ in range(20):
            sub.apply(bg, learningRate=-1)
    else:  # warm up on the sequence's median so a walker present from frame 0 stands out
        bg = median_background(small)
        for _ in range(20):
            sub.apply(bg, learningRate=-1)
    return np.stack([sub.apply(f) == 255 for f in small])  # 127 = shadow, not the body


# ---------------------------------------------------------------------------- cleaning
#: cv2.getStructuringElement(MORPH_ELLIPSE, (3, 3)) (a cross) and (5, 9), as unions of centred
#: rectangles (half-width, half-height); tests check they are the same kernels.
OPEN_KERNEL = ((1, 0), (0, 1))
CLOSE_KERNEL = ((2, 2), (1, 3), (0, 4))


def clean_packed(packed: np.ndarray, w: int) -> np.ndarray:
    """Opening (3x3 cross: speckle) then closing (5x9 ellipse, taller than wide: joins limbs,
    fills the trunk), frame by frame, on packed masks; exactly OpenCV's morphologyEx with
    those ellipse kernels and its default border."""
    valid = column_masks(np.zeros(1, int), np.array([w]), len(packed))[:, :, None]
    opened = dilate(erode(packed, OPEN_KERNEL, valid), OPEN_KERNEL, valid)
    return erode(dilate(opened, CLOSE_KERNEL, valid), CLOSE_KERNEL, valid)


def clean_masks(masks: np.ndarray) -> np.ndarray:
    """``clean_packed`` for bool (T, h, w) masks."""
    return unpack_masks(clean_packed(pack_masks(masks), masks.shape[2]), masks.shape[2])


def moving_camera(small: np.ndarray, limit_px: float, step: int = 2, pairs: int = 5) -> bool:
    """True when the scene as a whole shifts between frames.

    Corners tracked with pyramidal Lucas-Kanade over sampled frame pairs; the median corner
    displacement ignores the walker as long as most corners lie on the scene. (Phase
    correlation was tried first: in a plain hall the walker is the strongest texture and it
    reports the walker's motion.) The answer is the median pair shift against ``limit_px``;
    pairs stop as soon as a strict majority of the possible pairs agrees (3 of 5 for a still
    camera), which cannot change that median's side of the limit.
    """
    T = len(small)
    if T <= step:
        return False
    starts = np.unique(np.linspace(0, T - 1 - step, min(pairs, T - step)).round().astype(int))
    spacing = max(6, small.shape[2] // 20)  # spread corners so the walker holds only a few
    shifts = []
    for done, t in enumerate(starts, 1):
        shift = _pair_shift(small[t], small[t + step], spacing)
        if shift is not None:
            shifts.append(shift)
        left = len(starts) - done
        moving = sum(s > limit_px for s in shifts)
        if moving > len(shifts) - moving + left or len(shifts) - moving > moving + left:
            break
    return bool(shifts) and float(np.median(shifts)) > limit_px


def _pair_shift(first: np.ndarray, second: np.ndarray, spacing: int) -> float | None:
    """Median displacement of corners of ``first`` tracked into ``second``; None when there
    are too few corners to tell."""
    corners = cv2.goodFeaturesToTrack(first, maxCorners=60, qualityLevel=0.001, minDistance=spacing)
    if corners is None or len(corners) < 10:
        return None
    moved, status, _ = cv2.calcOpticalFlowPyrLK(first, second, corners, None, winSize=(11, 11), maxLevel=2)
    ok = status.reshape(-1) == 1
    if ok.sum() < 10:
        return None
    return float(np.median(np.linalg.norm((moved - corners).reshape(-1, 2)[ok], axis=1)))


# ---------------------------------------------------------------------------- candidates
def frame_candidates(packed: np.ndarray, w: int, p: LocaliseParams) -> list[np.ndarray]:
    """Person candidates of every frame of cleaned packed masks, each (N, 5) float32
    x0, y0, x1, y1, area in mask pixels, ordered by x0.

    A candidate is a run of occupied columns, runs at most ``max(2, 0.02 w)`` empty columns
    apart merged: the parts of one upright body (a head separated from the trunk, a detached
    foot) share columns. This is what merging the column ranges of connected components gives,
    since a component occupies a contiguous range of columns, without labelling components.
    The one difference: components used to be dropped first when smaller than
    ``max(4, 0.1 * min_area * h * w)`` pixels; after the opening (and the closing, which only
    adds) every component has at least 5 pixels, except remnants cut by the frame's edge (4 at
    an edge, 3 in a corner), so at the default ``min_area`` only a 3-pixel corner remnant could
    differ. Small or short candidates are dropped. All frames at once, no per-frame Python.
    """
    words, h, T = packed.shape
    out = [np.zeros((0, 5), np.float32) for _ in range(T)]
    counts = np.bitwise_count(packed).sum(axis=(0, 1))
    busy = np.flatnonzero(counts >= p.min_area * h * w)
    occupied = unpack_masks(np.bitwise_or.reduce(packed[:, :, busy], axis=1)[:, None], w)[:, 0]
    row, x0, x1 = _merged_runs(occupied, max(2.0, 0.02 * w))
    inside = packed[:, :, busy[row]] & column_masks(x0, x1, words)[:, None, :]
    area = np.bitwise_count(inside).sum(axis=(0, 1))
    rows = (inside != 0).any(axis=0)  # (h, runs)
    y0 = rows.argmax(axis=0)
    y1 = h - rows[::-1].argmax(axis=0)
    boxes = np.stack([x0, y0, x1, y1, area], 1).astype(np.float32)
    big = (boxes[:, 4] >= p.min_area * h * w) & (boxes[:, 3] - boxes[:, 1] >= p.min_height * h)
    for t, part in zip(*_split_by(busy[row[big]], boxes[big])):
        out[t] = part
    return out


def _merged_runs(occupied: np.ndarray, gap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of True in each row of ``occupied`` (N, w), runs at most ``gap`` apart merged:
    row index, first and one-past-last column of each, in row then column order."""
    n, w = occupied.shape
    stride = w + int(gap) + 1  # empty columns between rows: runs never merge across them
    padded = np.zeros((n, stride), bool)
    padded[:, :w] = occupied
    edges = np.flatnonzero(np.diff(np.r_[False, padded.ravel(), False]))
    starts, stops = edges[::2], edges[1::2]
    if len(starts) == 0:
        return starts, starts, starts
    first = np.flatnonzero(np.r_[True, starts[1:] - stops[:-1] > gap])
    x0, x1 = starts[first], stops[np.r_[first[1:] - 1, len(stops) - 1]]
    row = x0 // stride
    return row, x0 - row * stride, x1 - row * stride


def _split_by(keys: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Distinct sorted ``keys`` and the rows of each (rows already grouped by key)."""
    if len(keys) == 0:
        return keys, []
    cut = np.flatnonzero(np.diff(keys)) + 1
    return keys[np.r_[0, cut]], np.split(rows, cut)


# ---------------------------------------------------------------------------- tracking
@dataclass
class Track:
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)

    @property
    def last(self) -> np.ndarray:
        return self.boxes[-1]

    def score(self) -> tuple[int, float]:
        return len(self.frames), float(sum(b[4] for b in self.boxes))


def link_tracks(per_frame: list[np.ndarray], p: LocaliseParams) -> list[Track]:
    """Greedy frame-to-frame linking: best overlap or nearest centre within a body width."""
    active: list[Track] = []
    finished: list[Track] = []
    for t, cands in enumerate(per_frame):
        still = []
        for tr in active:
            (finished if t - tr.frames[-1] > p.max_gap + 1 else still).append(tr)
        active = still
        taken: set[int] = set()
        if len(cands):
            # the geometry in Python floats, without numpy's per-scalar overhead; boxes hold
            # whole mask pixels (or float32 HOG boxes), so only the last bits of an IoU can
            # differ from float32 arithmetic, which matters only at an exact tie
            rows = cands[:, :4].tolist()
            for tr in sorted(active, key=lambda tr: -len(tr.frames)):
                j = _best_match(tr.last[:4].tolist(), rows, taken)
                if j is not None:
                    taken.add(j)
                    tr.frames.append(t)
                    tr.boxes.append(cands[j])
        for j in range(len(cands)):
            if j not in taken:
                active.append(Track([t], [cands[j]]))
    return finished + active


def _best_match(box: list[float], cands: list[list[float]], taken: set[int]) -> int | None:
    best, best_cost = None, np.inf
    width = max(box[2] - box[0], 1.0)
    height = max(box[3] - box[1], 1.0)
    for j, c in enumerate(cands):
        if j in taken:
            continue
        iou = box_iou(box, c)
        dist = abs((box[0] + box[2]) - (c[0] + c[2])) / 2
        if iou > 0.1 or dist < max(width, 0.5 * height):
            cost = dist - 100 * iou
            if cost < best_cost:
                best, best_cost = j, cost
    return best


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _from_tracks(tracks: list[Track], per_frame: list[np.ndarray], T: int, p: LocaliseParams,
                 scale: float, method: str, fraction: float, notes: list[str]) -> Localisation:
    real = [tr for tr in tracks if len(tr.frames) >= p.min_track]
    if not real:
        return _nobody(T, method, fraction, scale, notes)
    best = max(real, key=Track.score)
    boxes = np.full((T, 4), np.nan, np.float32)
    boxes[best.frames] = np.stack(best.boxes)[:, :4]
    boxes = smooth_boxes(fill_gaps(boxes, p.max_gap), p.smooth) * scale
    if len(real) > 1:
        notes.append(f"{len(real)} tracks seen; kept the longest ({len(best.frames)} frames)")
    return Localisation(boxes.astype(np.float32), np.full(T, np.nan, np.float32), len(real),
                        method, fraction, scale, notes=notes)


def _nobody(T: int, method: str, fraction: float, scale: float,
            notes: list[str] | None = None) -> Localisation:
    return Localisation(np.full((T, 4), np.nan, np.float32), np.full(T, np.nan, np.float32), 0,
                        method, fraction, scale, notes=list(notes or []))


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
        counts = np.convolve(np.ones(len(run)), kernel, mode="same")
        for k in range(4):
            out[start:stop, k] = np.convolve(run[:, k], kernel, mode="same") / counts
    return out


def _mass_centres(packed: np.ndarray, w: int, boxes: np.ndarray, scale: float) -> np.ndarray:
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


# ---------------------------------------------------------------------------- HOG fallback
#: The default people detector's 64x128 window holds a body about 32 wide and 96 tall.
HOG_BODY_SHRINK = (0.25, 0.125)


def _localise_hog(frames: np.ndarray, p: LocaliseParams, notes: list[str],
                  fraction: float = float("nan")) -> Localisation:
    T, H, _ = frames.shape
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    up = max(1.0, 256.0 / H)  # bodies shorter than the 128 px window are missed otherwise
    per_frame = []
    for f in frames:
        img = cv2.resize(f, None, fx=up, fy=up, interpolation=cv2.INTER_LINEAR) if up > 1 else f
        rects, weights = hog.detectMultiScale(img, winStride=(8, 8), padding=(8, 8), scale=1.05)
        per_frame.append(_hog_boxes(np.asarray(rects, np.float32).reshape(-1, 4) / up,
                                    np.asarray(weights, np.float32).reshape(-1)))
    tracks = link_tracks(per_frame, p)
    loc = _from_tracks(tracks, per_frame, T, p, 1.0, "hog", fraction, notes)
    loc.centres = ((loc.boxes[:, 0] + loc.boxes[:, 2]) / 2).astype(np.float32)
    return loc


def _hog_boxes(rects: np.ndarray, weights: np.ndarray, min_weight: float = 0.3) -> np.ndarray:
    keep = weights >= min_weight
    rects, weights = rects[keep], weights[keep]
    if len(rects) == 0:
        return np.zeros((0, 5), np.float32)
    x, y, w, h = rects.T
    sx, sy = HOG_BODY_SHRINK
    boxes = np.stack([x + sx * w, y + sy * h, x + (1 - sx) * w, y + (1 - sy) * h, weights * w * h], 1)
    return _suppress(boxes.astype(np.float32))


def _suppress(boxes: np.ndarray, overlap: float = 0.3) -> np.ndarray:
    """Non-maximum suppression by score (column 4)."""
    kept: list[np.ndarray] = []
    for b in boxes[np.argsort(-boxes[:, 4])]:
        if all(box_iou(b, k) < overlap for k in kept):
            kept.append(b)
    return np.stack(kept)
