"""People walking together: blobs that may hold several people side by side, divided between
their heads where a closer look shows them, else marked as holding a group.

Why: ``blobs.divide`` cuts a blob where its upper body's column profile has two humps with a
deep valley between them: people side by side seen from the side, whose trunks stand apart.
Seen from the front or the back (walking towards or away from the camera), two people
shoulder to shoulder are one wide trunk, and at 40-80 px tall (20-40 at the analysis
height) the masks' 5x9 closing also fills the gap between their heads. A gait signature of
two people enrols a wrong identity, so such a blob is divided where the evidence is clear and
marked where it is not. The evidence, measured per blob on the synthetic ``couples`` scene
(``gaittools.synth.crowd``: two couples touching, one walking towards the camera and one
away, people 40-80 px tall) against its ground truth, with the lateral scenes and
casia-b-mini for single walkers:

- the upper body's width (``upper_width``: median row occupancy of rows 20-50% of the blob's
  height, in heights) on the analysis masks: single walkers seen from the side <= 0.24 (95th
  percentile; casia-b-mini too), from the front 0.33 (median; 95th percentile 0.45), couples
  0.56 (5th percentile 0.42). Free; it picks the blobs worth a closer look (``CANDIDATE``).
- head count from the top profile (each column's highest foreground pixel) of the blob's raw
  foreground at the working resolution (twice the analysis'; ``head_cuts``): two peaks with a
  dip of ``HEAD_DIP`` of the blob's height between them in 79-100% of the couples' blobs 40
  px tall or more (56% below), in 3-4% of single walkers'; the dip lies 0.02 heights (median)
  from the boundary between the two people. The cleaned analysis masks show two heads in 44%
  of the couples' blobs (the closing fills the gap between small heads), the raw ones in
  43-58% of those under 25 px tall (77-100% above).
- HOG (OpenCV's people detector) on the blob's box, upsampled until the body is its window's
  96 px: two detections in under 3% of the couples' blobs (one in 44-83%), ~0.9 ms a blob.
  Not used.
- the pair's history: once both people are tracked apart, the tracker repairs a blob that
  holds both from their predictions, whatever its shape (``tracking._repair_merges``): on the
  couples scene 5-16 of each couple's person's 200 frames, the heads 183-191.
- a ground-plane prior (a person's height from the row of their feet, fitted on the single
  walkers): couples' blobs are 1.09 times that height (median), so a blob's own height is one
  person's; widths over it separate couples (1.52 single widths, median) from single walkers
  (1.13, 90th percentile) about as well as the upper body's width does, which needs no fit
  and no single walker. Not used.
- the width of one person, learned from the scene's single walkers (``single_width``): a
  candidate no closer look could divide, at least ``GROUP`` times that wide, holds a group
  (``group_frames``); the tracks it went to are told so, and never given its box as theirs.

Cost (``benchmarks/extract_speed.py``): none on casia-b-mini (no candidate, the same boxes);
on the ``couples`` scene localise + crop runs at 870 frames per CPU-second instead of 1,480,
and extraction stays 34x cheaper per frame than compute-flow at the cheap preset (45x before).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from gaittools.person.blobs import DIVIDED, PART_WIDTH, UNDIVIDED, WHOLE, WIDE, rows_spanned
from gaittools.person.foreground import frame_thresholds, refined_background
from gaittools.person.packed_masks import unpack_masks
from gaittools.person.tracking import Track

#: Rows (fractions of a blob's height from its top) whose width is the upper body's: below
#: the heads, shoulders and trunk, above the arms' and legs' swing.
BAND = (0.2, 0.5)
#: An undivided blob whose upper body is at least this wide (in its heights) may hold several
#: people side by side: the working-resolution foreground of its box is looked at.
CANDIDATE = 0.36
#: Two heads: the top profile dips at least this much (in the blob's heights) between two
#: peaks that both reach ``HEAD_LEVEL`` of its height (people of unequal heights, at most 30%).
HEAD_DIP = 0.1
HEAD_LEVEL = 0.7
#: ... and at least this many pixels: a dip of one or two rows is a notch in one person's
#: outline as often as the valley between two heads.
MIN_DIP = 3
#: One person's upper-body width when the scene has no single walker to learn it from: the
#: median of single walkers seen from the front (the widest view) at the analysis height.
SINGLE_WIDTH = 0.33
#: An undivided candidate at least this many single widths wide holds a group.
GROUP = 1.5
#: A track is a single walker (teaching ``single_width``) when it was observed in at least
#: ``SINGLE_FRAMES`` frames, at most ``SINGLE_UNDIVIDED`` of them candidates left undivided
#: (a walker seen from the front is a candidate in about a quarter of its frames).
SINGLE_FRAMES = 10
SINGLE_UNDIVIDED = 0.3
#: A track whose boxes hold a group in more than this share of its observed frames is the
#: group's, not a walker's.
GROUP_TRACK = 0.5


def upper_width(region: np.ndarray) -> float:
    """Median row occupancy of a blob's upper body (rows ``BAND`` of its box ``region``, a
    bool mask (h, w)), in its heights: shoulders and trunks, where people side by side seen
    from the front add up, and one walker's stride and arm swing do not reach."""
    h = region.shape[0]
    top = int(BAND[0] * h)
    counts = np.sort(region[top:max(int(BAND[1] * h), top + 1)].sum(axis=1))
    middle = len(counts) // 2  # the median, without np.median's overhead on a dozen rows
    median = counts[middle] if len(counts) % 2 else (counts[middle - 1] + counts[middle]) / 2
    return float(median) / max(h, 1)


def head_cuts(region: np.ndarray) -> list[int]:
    """Columns between the heads of the people in a blob's raw foreground ``region`` (its
    box), left to right; none where it does not clearly show two or more heads.

    The top profile (``top_profile``) is each column's height above the box's bottom; a dip
    between the highest columns on its left and on its right is a valley between two heads
    when it is ``HEAD_DIP`` deep (``MIN_DIP`` pixels at least) and both sides reach
    ``HEAD_LEVEL`` (a raised hand or a bag is one narrow peak, a head dimmed to the wall's grey
    a shallow notch between shoulders). Each side is looked at again, for three or more people.
    """
    h, w = region.shape
    if h < 2:
        return []
    return _valleys(top_profile(region), region, 0, h)


def _valleys(top: np.ndarray, region: np.ndarray, start: int, h: int) -> list[int]:
    """``head_cuts`` of columns ``start:start + len(top)`` of ``region``, given their profile."""
    w = len(top)
    edge = max(1, int(PART_WIDTH * h))  # each side at least a thin person's width
    if w <= 2 * edge:
        return []
    left, right = np.maximum.accumulate(top), np.maximum.accumulate(top[::-1])[::-1]
    depth = np.minimum(left, right) - top
    depth[:edge] = depth[w - edge:] = -1
    c = int(np.argmax(depth))
    if depth[c] < max(HEAD_DIP * h, MIN_DIP) or min(left[c], right[c]) < HEAD_LEVEL * h:
        return []
    lo, hi = c, c  # the middle of a flat valley (the shoulders between two heads)
    while depth[lo - 1] == depth[c]:
        lo -= 1
    while depth[hi + 1] == depth[c]:
        hi += 1
    c = (lo + hi + 1) // 2
    if any(rows_spanned(side) < HEAD_LEVEL * h
           for side in (region[:, start:start + c], region[:, start + c:start + w])):
        return []
    return (_valleys(top[:c], region, start, h) + [start + c]
            + _valleys(top[c:], region, start + c, h))


def top_profile(region: np.ndarray) -> np.ndarray:
    """Each column's height above the bottom of ``region`` (a bool mask) at its highest
    foreground pixel that has another below it, less peaks narrower than ~6% of the height
    (a grey opening of the profile): the raw foreground's single-pixel specks above a head
    are neither a head nor the top of one."""
    h = region.shape[0]
    stacked = region[:-1] & region[1:]
    top = np.where(stacked.any(axis=0), h - stacked.argmax(axis=0), 0).astype(np.float32)
    k = max(2, round(0.06 * h))
    kernel = np.ones((1, k), np.uint8)  # anchors at either end: no shift for an even k
    low = cv2.erode(top[None], kernel, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    return cv2.dilate(low, kernel, anchor=(k - 1, 0), borderType=cv2.BORDER_REPLICATE)[0]


def split_at(region: np.ndarray, cuts: list[int], origin: tuple[int, int], scale: float) -> np.ndarray:
    """Rows of ``blobs.frame_blobs`` (analysis pixels, flag ``DIVIDED``) for the people of a
    region (at ``scale`` times the analysis resolution, its top-left pixel at ``origin``) cut at
    columns: each part's box spans its rows and columns holding two foreground pixels or more
    (the raw foreground's single-pixel specks do not stretch it)."""
    bounds = [0, *cuts, region.shape[1]]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        part = region[:, a:b]
        rows, cols = np.flatnonzero(part.sum(axis=1) >= 2), np.flatnonzero(part.sum(axis=0) >= 2)
        if len(rows) == 0 or len(cols) == 0:
            continue
        x, y = origin[0] + a, origin[1]
        out.append([(x + cols[0]) / scale, (y + rows[0]) / scale, (x + cols[-1] + 1) / scale,
                    (y + rows[-1] + 1) / scale, part.sum() / scale ** 2, DIVIDED])
    return np.array(out, np.float64).reshape(-1, 6)


class CloserLook:
    """The raw foreground of a blob's box at the frames' own resolution (``scale`` times the
    analysis masks'), for the few blobs that need it: each frame thresholded as the analysis
    masks are (``foreground.frame_thresholds``), against the empty-scene image when there is
    one, else the sequence's refined median at that resolution. Both are computed on the
    first look, so a sequence without candidates never pays for them."""

    def __init__(self, frames: np.ndarray, scale: float, background: np.ndarray | None,
                 threshold: int, samples: int) -> None:
        self.frames, self.scale, self.threshold, self.samples = frames, scale, threshold, samples
        self.background = background
        self.thresholds: np.ndarray | None = None

    def region(self, t: int, box: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """The foreground of analysis box ``box`` (x0, y0, x1, y1) in frame ``t`` at the frames'
        resolution, and its top-left pixel there."""
        if self.thresholds is None:
            if self.background is None:
                self.background = refined_background(self.frames, self.samples, self.threshold)
            sampled = self.frames[:, ::4, ::4]
            diff = cv2.absdiff(sampled.reshape(-1, sampled.shape[2]),
                               np.tile(self.background[::4, ::4], (len(sampled), 1)))
            self.thresholds = frame_thresholds(diff.reshape(len(sampled), -1), self.threshold)
        H, W = self.frames.shape[1:]
        x0, y0 = (max(0, int(np.floor(v * self.scale))) for v in box[:2])
        x1, y1 = min(W, int(np.ceil(box[2] * self.scale))), min(H, int(np.ceil(box[3] * self.scale)))
        diff = cv2.absdiff(self.frames[t, y0:y1, x0:x1], self.background[y0:y1, x0:x1])
        return diff > self.thresholds[t], (x0, y0)


def divide_groups(per_frame: list[np.ndarray], packed: np.ndarray, w: int,
                  look: Callable[[int, np.ndarray], tuple[np.ndarray, tuple[int, int]]] | None,
                  scale: float) -> list[np.ndarray]:
    """``frame_blobs``' candidates with the blobs that may hold people side by side (wide,
    undivided, an upper body ``CANDIDATE`` wide on the cleaned masks ``packed``) divided between
    their heads on a closer look (``look(t, box)``: the raw foreground of the box at ``scale``
    times the analysis resolution; None: no closer look), or flagged ``UNDIVIDED``. Other
    blobs are as they were, and so are blobs cut by the frame's edge: a partial body's top
    need not be its head (the legs of a walker leaving the frame are two peaks)."""
    out = list(per_frame)
    h = packed.shape[1]
    for t, blobs in enumerate(per_frame):
        wide = (blobs[:, 5] == WHOLE) & (blobs[:, 2] - blobs[:, 0] > WIDE * (blobs[:, 3] - blobs[:, 1]))
        wide &= (blobs[:, 0] > 0) & (blobs[:, 1] > 0) & (blobs[:, 2] < w) & (blobs[:, 3] < h)
        if not wide.any():
            continue
        mask = unpack_masks(packed[:, :, t:t + 1], w)[0]
        rows = []
        for blob, check in zip(blobs, wide):
            x0, y0, x1, y1 = (int(v) for v in blob[:4])
            if not check or upper_width(mask[y0:y1, x0:x1]) < CANDIDATE:
                rows.append(blob[None].astype(np.float64))
                continue
            people = np.zeros((0, 6))
            if look is not None:
                region, origin = look(t, blob)
                cuts = head_cuts(region)
                people = split_at(region, cuts, origin, scale) if cuts else people
            if len(people) >= 2:
                rows.append(people)
            else:
                rows.append(np.r_[blob[:5], UNDIVIDED][None].astype(np.float64))
        found = np.concatenate(rows)
        out[t] = found[np.argsort(found[:, 0], kind="stable")].astype(np.float32)
    return out


def group_frames(tracks: list[Track], packed: np.ndarray, w: int) -> list[list[int]]:
    """For each track, the frames whose box holds a group: an ``UNDIVIDED`` blob whose upper
    body is at least ``GROUP`` times as wide as one person's (``single_width``).

    One person's width is learned from the scene's single walkers, so that its blur, clothes
    and bags count; it never falls below ``SINGLE_WIDTH`` (a person seen from the front), so
    a scene of walkers seen from the side does not make one walking towards the camera a group.
    """
    if not any(tr.undivided for tr in tracks):
        return [[] for _ in tracks]
    masks = unpack_masks(packed, w)

    def width(t: int, box: np.ndarray) -> float:
        x0, y0, x1, y1 = (int(v) for v in box[:4])
        return upper_width(masks[t, y0:y1, x0:x1])

    one = single_width(tracks, width)
    out = []
    for tr in tracks:
        box_at = dict(zip(tr.frames, tr.boxes))
        out.append([t for t in tr.undivided if width(t, box_at[t]) >= GROUP * one])
    return out


def single_width(tracks: list[Track], width: Callable[[int, np.ndarray], float]) -> float:
    """One person's upper-body width in this scene (``upper_width``, in heights): the widest of
    its single walkers' (tracks of ``SINGLE_FRAMES`` observed frames or more, at most
    ``SINGLE_UNDIVIDED`` of them undivided candidates) median widths, at least ``SINGLE_WIDTH``.
    The widest, not the median, because one person's width depends on the view: walkers seen
    from the side are half as wide as those seen from the front."""
    learned = []
    for tr in tracks:
        seen = [(t, b) for t, b, o in zip(tr.frames, tr.boxes, tr.observed) if o]
        if len(seen) >= SINGLE_FRAMES and len(tr.undivided) <= SINGLE_UNDIVIDED * len(seen):
            learned.append(float(np.median([width(t, b) for t, b in seen])))
    return max([SINGLE_WIDTH, *learned])
