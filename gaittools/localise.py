"""Person localisation: where the walker is in every frame, without downloaded weights.

How, and why this way:

1. Background subtraction on frames shrunk to ``analysis_height`` (120 px: a person is still
   ~50 px tall, and it costs a quarter of full resolution). The background is the dataset's
   empty-scene image when there is one (CASIA-B's ``SSS-bkgrd-VVV`` clip), else the per-pixel
   median of the sequence (a walker covers any pixel only briefly), or OpenCV's MOG2/KNN.
   A pixel is foreground when it differs by more than ``threshold`` plus twice the frame's
   median difference (so a global exposure change does not turn the whole frame on).
2. Morphological opening (speckle) and closing (holes, thin limbs); connected components;
   components whose columns overlap are merged into one candidate (a head separated from the
   trunk, a detached foot); small or short candidates are dropped.
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

import cv2
import numpy as np

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
    fraction = float(np.median(masks.mean(axis=(1, 2))))
    if background is not None and fraction > p.fail_fraction and p.method == "median":
        notes.append(f"empty-scene image does not match ({fraction:.0%} foreground): sequence median")
        masks, method = _foreground(small, None, p)
        fraction = float(np.median(masks.mean(axis=(1, 2))))
    if p.hog and fraction > p.fail_fraction:
        notes.append(f"background model failed ({fraction:.0%} of the frame foreground): HOG")
        return _localise_hog(frames, p, notes, fraction)
    masks = clean_masks(masks)
    per_frame = [candidates(m, p) for m in masks]
    tracks = link_tracks(per_frame, p)
    loc = _from_tracks(tracks, per_frame, T, p, scale, method, fraction, notes)
    loc.centres = _mass_centres(masks, loc.boxes, scale)
    if keep_masks:
        loc.masks = masks
    return loc


# ---------------------------------------------------------------------------- foreground
def shrink(frames: np.ndarray, height: int) -> np.ndarray:
    """Frames resized to ``height`` (INTER_AREA); returned as is when already that small."""
    T, H, W = frames.shape
    if H <= height:
        return frames
    width = max(1, int(round(W * height / H)))
    out = np.empty((T, height, width), np.uint8)
    for t in range(T):
        cv2.resize(frames[t], (width, height), dst=out[t], interpolation=cv2.INTER_AREA)
    return out


def median_background(frames: np.ndarray, samples: int = 60) -> np.ndarray:
    """Per-pixel median of up to ``samples`` evenly spaced frames."""
    idx = np.unique(np.linspace(0, len(frames) - 1, min(samples, len(frames))).round().astype(int))
    stack = np.ascontiguousarray(frames[idx].reshape(len(idx), -1).T)  # pixels x samples
    mid = len(idx) // 2
    return np.partition(stack, mid, axis=1)[:, mid].reshape(frames.shape[1:])


def _foreground(small: np.ndarray, background: np.ndarray | None,
                p: LocaliseParams) -> tuple[np.ndarray, str]:
    if p.method in ("mog2", "knn"):
        return _foreground_subtractor(small, background, p.method), p.method
    if background is not None:
        bg = shrink(background[None], p.analysis_height)[0]
        if bg.shape != small.shape[1:]:
            raise ValueError(f"background {background.shape} does not match the frames")
        method = "background image"
    else:
        bg = median_background(small, p.median_samples)
        method = "sequence median"
    T, h, w = small.shape
    diff = cv2.absdiff(small.reshape(T * h, w), np.tile(bg, (T, 1))).reshape(T, h, w)
    level = np.median(diff[:, ::4, ::4].reshape(T, -1), axis=1).astype(np.int16)
    thresholds = np.minimum(p.threshold + 2 * level, 255).astype(np.uint8)
    return diff > thresholds[:, None, None], method


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


def clean_masks(masks: np.ndarray) -> np.ndarray:
    """Opening removes speckle; closing (taller than wide) joins limbs and fills the trunk."""
    opener = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    closer = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 9))
    out = np.empty_like(masks)
    for t, m in enumerate(masks.view(np.uint8)):
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, opener)
        out[t] = cv2.morphologyEx(m, cv2.MORPH_CLOSE, closer).astype(bool)
    return out


def moving_camera(small: np.ndarray, limit_px: float, step: int = 2, pairs: int = 5) -> bool:
    """True when the scene as a whole shifts between frames.

    Corners tracked with pyramidal Lucas-Kanade over sampled frame pairs; the median corner
    displacement ignores the walker as long as most corners lie on the scene. (Phase
    correlation was tried first: in a plain hall the walker is the strongest texture and it
    reports the walker's motion.)
    """
    T = len(small)
    if T <= step:
        return False
    starts = np.unique(np.linspace(0, T - 1 - step, min(pairs, T - step)).round().astype(int))
    spacing = max(6, small.shape[2] // 20)  # spread corners so the walker holds only a few
    shifts = []
    for t in starts:
        corners = cv2.goodFeaturesToTrack(small[t], maxCorners=60, qualityLevel=0.001,
                                          minDistance=spacing)
        if corners is None or len(corners) < 10:
            continue
        moved, status, _ = cv2.calcOpticalFlowPyrLK(small[t], small[t + step], corners, None,
                                                    winSize=(11, 11), maxLevel=2)
        ok = status.reshape(-1) == 1
        if ok.sum() >= 10:
            shifts.append(float(np.median(np.linalg.norm((moved - corners).reshape(-1, 2)[ok], axis=1))))
    return bool(shifts) and float(np.median(shifts)) > limit_px


# ---------------------------------------------------------------------------- candidates
def candidates(mask: np.ndarray, p: LocaliseParams) -> np.ndarray:
    """Person candidates in one mask: (N, 5) x0, y0, x1, y1, area in mask pixels."""
    h, w = mask.shape
    m = mask.view(np.uint8)
    if cv2.countNonZero(m) < p.min_area * h * w:
        return np.zeros((0, 5), np.float32)
    n, _, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(m, 8, cv2.CV_32S, cv2.CCL_GRANA)
    keep = stats[1:, cv2.CC_STAT_AREA] >= max(4, 0.1 * p.min_area * h * w)
    s = stats[1:][keep]
    if len(s) == 0:
        return np.zeros((0, 5), np.float32)
    boxes = np.stack([s[:, 0], s[:, 1], s[:, 0] + s[:, 2], s[:, 1] + s[:, 3], s[:, 4]], 1).astype(np.float32)
    boxes = _merge_column_overlaps(boxes, gap=max(2.0, 0.02 * w))
    big = (boxes[:, 4] >= p.min_area * h * w) & (boxes[:, 3] - boxes[:, 1] >= p.min_height * h)
    return boxes[big]


def _merge_column_overlaps(boxes: np.ndarray, gap: float) -> np.ndarray:
    """Union boxes whose column ranges overlap (or nearly): parts of one upright body."""
    order = np.argsort(boxes[:, 0])
    merged: list[np.ndarray] = []
    for b in boxes[order]:
        if merged and b[0] <= merged[-1][2] + gap:
            m = merged[-1]
            merged[-1] = np.array([min(m[0], b[0]), min(m[1], b[1]), max(m[2], b[2]),
                                   max(m[3], b[3]), m[4] + b[4]], np.float32)
        else:
            merged.append(b.copy())
    return np.stack(merged)


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
        for tr in sorted(active, key=lambda tr: -len(tr.frames)):
            j = _best_match(tr.last, cands, taken)
            if j is not None:
                taken.add(j)
                tr.frames.append(t)
                tr.boxes.append(cands[j])
        for j in range(len(cands)):
            if j not in taken:
                active.append(Track([t], [cands[j]]))
    return finished + active


def _best_match(box: np.ndarray, cands: np.ndarray, taken: set[int]) -> int | None:
    best, best_cost = None, np.inf
    width = max(box[2] - box[0], 1.0)
    height = max(box[3] - box[1], 1.0)
    for j, c in enumerate(cands):
        if j in taken:
            continue
        iou = box_iou(box[:4], c[:4])
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


def _mass_centres(masks: np.ndarray, boxes: np.ndarray, scale: float) -> np.ndarray:
    """Horizontal centre of mass of the foreground inside each box (frame pixels)."""
    centres = np.full(len(boxes), np.nan, np.float32)
    h, w = masks.shape[1:]
    for t in np.flatnonzero(np.isfinite(boxes[:, 0])):
        x0, y0, x1, y1 = boxes[t] / scale
        c0, c1 = int(max(0, np.floor(x0))), int(min(w, np.ceil(x1)))
        r0, r1 = int(max(0, np.floor(y0))), int(min(h, np.ceil(y1)))
        cols = masks[t, r0:r1, c0:c1].sum(axis=0, dtype=np.int64)
        total = cols.sum()
        centres[t] = ((cols @ np.arange(c0, c1)) / total + 0.5) * scale if total else (x0 + x1) / 2 * scale
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
