"""Foreground: which pixels of each (shrunk) frame differ from the empty scene, cleaned.

Why this way: background subtraction needs no downloaded weights and is cheap. Frames are
shrunk to an analysis height (a person is still ~50 px tall at 120 px); the background is the
dataset's empty-scene image when there is one (CASIA-B's ``SSS-bkgrd-VVV`` clip), else the
per-pixel median of the sequence (a walker covers any pixel only briefly), or OpenCV's
MOG2/KNN. A pixel is foreground when it differs by more than ``threshold`` plus twice the
frame's median difference (so a global exposure change does not turn the whole frame on).
Masks are bit-packed (32 columns a word, ``gaittools.person.packed_masks``) from the threshold on;
the opening and closing are exactly OpenCV's morphology, as whole-sequence numpy operations.
``moving_camera`` tells when background subtraction cannot work at all (a panning camera).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from gaittools.person.packed_masks import column_masks, dilate, erode, pack_masks, unpack_masks

METHODS = ("median", "mog2", "knn")


def median_fraction(packed: np.ndarray, pixels: int) -> float:
    """Median over frames of the foreground fraction of packed masks."""
    return float(np.median(np.bitwise_count(packed).sum(axis=(0, 1)) / pixels))

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


def refined_background(small: np.ndarray, samples: int = 31, threshold: int = 14) -> np.ndarray:
    """The sequence median, recomputed without each sample's foreground.

    The plain median fails where people cover a pixel in nearly half the frames or more
    (several walkers in a row, slow walkers, someone standing): their clothes become
    "background" and their bodies fall apart into pieces. A second pass takes, per pixel, the
    median (the upper one of an even count) of only those samples the first pass called
    background (grown by a few pixels, so body edges count as body); pixels foreground in
    every sample keep the first median.
    """
    idx = np.unique(np.linspace(0, len(small) - 1, min(samples, len(small))).round().astype(int))
    first = median_background(small, samples)
    picked = small[idx]
    diff = cv2.absdiff(picked.reshape(-1, picked.shape[2]), np.tile(first, (len(idx), 1)))
    body = (diff > threshold).reshape(picked.shape).view(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    body = np.stack([cv2.dilate(b, kernel) for b in body]).astype(bool)
    if not body.any():
        return first
    # body samples sort after every background value (a uint16 key above 255), so the k-th
    # background value of a pixel is the k-th of its sorted keys: one sort, no NaN medians
    keys = np.sort(np.where(body, np.uint16(256), picked.astype(np.uint16)), axis=0)
    n = (~body).sum(axis=0)
    second = np.take_along_axis(keys, (np.maximum(n, 1) // 2)[None], axis=0)[0]
    return np.where(n > 0, second, first).astype(np.uint8)


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


def foreground(small: np.ndarray, background: np.ndarray | None, method: str = "median",
               threshold: int = 14, median_samples: int = 31) -> tuple[np.ndarray, str]:
    """Bit-packed foreground (see ``pack_masks``) of every analysis frame (T, h, w), and how
    it was found. ``background``: an empty-scene image at frame or analysis resolution."""
    if method not in METHODS:
        raise ValueError(f"unknown localisation method {method!r}; one of {METHODS}")
    if method in ("mog2", "knn"):
        return pack_masks(_foreground_subtractor(small, background, method)), method
    if background is not None:
        bg = shrink(background[None], small.shape[1])[0]
        if bg.shape != small.shape[1:]:
            raise ValueError(f"background {background.shape} does not match the frames")
        found = "background image"
    else:
        bg = refined_background(small, median_samples, threshold)
        found = "sequence median"
    return _threshold_packed(small, bg, threshold), found


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
        thresholds = frame_thresholds(diff[:n, ::4, ::4].reshape(n, -1), threshold)
        np.greater(diff[:n], thresholds[:, None, None], out=fg[:n])
        blocks.append(pack_masks(fg[:n]))
    return np.concatenate(blocks, axis=2)


def frame_thresholds(sampled: np.ndarray, threshold: int) -> np.ndarray:
    """Each frame's foreground threshold (uint8): ``threshold`` plus twice the median of its
    sampled differences from the background (n, k), so that a global exposure change does not
    turn the whole frame on."""
    level = _row_medians(sampled).astype(np.int16)
    return np.minimum(threshold + 2 * level, 255).astype(np.uint8)


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
