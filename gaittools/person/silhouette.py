"""The walker's silhouette, normalised as OpenGait's pretreatment does: ``sil`` (T, S, S) 0/255.

Silhouette methods (GaitSet, GaitPart, GaitGL, GaitBase) train on binary masks cropped to the
body's rows, scaled to height S, and cut S wide around the body's horizontal centre. In frame
coordinates that is a square window as high as the mask's rows, centred on that column, so
the normalisation is ``gaittools.person.crop.crop_window`` (the one crop function) on the mask,
thresholded back to 0/255.

Decisions:
- The mask is made at the working resolution, not taken from localisation's masks: those are
  at half height (120 px) and closed with a 5x9 kernel to join limbs into one candidate, which
  fills the gap between the legs and fattens the body (median IoU 0.81-0.85 against CASIA-B's
  own silhouettes, 0.85-0.87 with the full-resolution mask; benchmarks/silhouette_iou.py).
- The foreground rule is localisation's (a pixel differs from the background by more than
  ``threshold`` plus twice the frame's median difference), followed by an opening (3x3 cross)
  against speckle, no closing. Only the tracked person's box, widened by ``BOX_MARGIN``, is
  kept: other people and background noise elsewhere stay out.
- The centre is the column that splits the mask's mass in half (OpenGait's rule), not the mean
  column: a swinging leg pulls the mean toward it, the half-mass column barely moves. On the
  CASIA-B walks it gives the higher IoU.
- Frames without the person (NaN box), or with fewer than ``MIN_FILL`` of the box's pixels
  set, are all zeros, so ``sil`` keeps the frame indexing of ``frames``, ``boxes`` and ``gray``.
- HOG localisation (moving camera) has no background model: every frame is zeros, with a note.
"""

from __future__ import annotations

import cv2
import numpy as np

from gaittools.person.crop import DEFAULT_SIZE, crop_window
from gaittools.person.foreground import median_background
from gaittools.person.localise import LocaliseParams

#: Fraction of the box's width (each side) and height (top and bottom) added around the tracked
#: box: boxes are smoothed over frames, so a swinging foot or arm reaches outside them.
BOX_MARGIN = (0.25, 0.1)
#: A mask covering less than this fraction of its box is noise, not a person: zeros.
MIN_FILL = 0.02
#: Opening kernel against single-pixel speckle (the 3x3 cross).
_OPEN = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def normalise_silhouette(mask: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
    """One 2-D mask (bool, or uint8 where nonzero is foreground) -> uint8 (size, size) 0/255.

    The mask's rows become the crop's height; the window is square, centred on the half-mass
    column (``half_mass_column``) as OpenGait places it; what falls outside the mask's frame is
    zero. An empty mask gives zeros.
    """
    fg = np.asarray(mask) != 0
    rows = np.flatnonzero(fg.any(axis=1))
    if len(rows) == 0:
        return np.zeros((size, size), np.uint8)
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    side = y1 - y0
    # OpenGait finds the half-mass column on the resized band and centres the cut on that
    # column's left edge: the same centre, quantised to whole output pixels
    centre = np.floor(half_mass_column(fg[y0:y1]) * size / side) * side / size
    x0 = int(np.floor(centre - side / 2 + 0.5))
    patch = crop_window(fg.astype(np.uint8) * 255, np.array([x0, y0, x0 + side, y1]), size)
    return np.where(patch > 127, 255, 0).astype(np.uint8)


def normalise_silhouettes(masks: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Masks (T, h, w) -> uint8 (T, size, size) 0/255, frame by frame (``normalise_silhouette``)."""
    out = np.zeros((len(masks), size, size), np.uint8)
    for t, mask in enumerate(masks):
        out[t] = normalise_silhouette(mask, size)
    return out


def half_mass_column(mask: np.ndarray) -> float:
    """The x that splits the mask's mass in half (pixel-centre coordinates: column i spans
    [i, i+1); the crossing column is interpolated linearly)."""
    mass = np.asarray(mask, np.float64).sum(axis=0)
    cum = np.cumsum(mass)
    i = int(np.searchsorted(cum, cum[-1] / 2, side="right"))
    before = cum[i - 1] if i > 0 else 0.0
    return i + (cum[-1] / 2 - before) / mass[i]


def person_mask(frame: np.ndarray, background: np.ndarray, box: np.ndarray,
                threshold: int = LocaliseParams.threshold) -> np.ndarray:
    """bool mask of the foreground inside ``box`` (x0, y0, x1, y1, frame pixels) widened by
    ``BOX_MARGIN``, cut to that region (nothing outside it belongs to the person); an empty
    (0, 0) mask where the region is empty or holds too little foreground to be a person."""
    H, W = frame.shape
    x0, y0, x1, y1 = np.asarray(box, np.float64)
    bw, bh = x1 - x0, y1 - y0
    mx, my = BOX_MARGIN
    c0, c1 = max(0, int(x0 - mx * bw)), min(W, int(np.ceil(x1 + mx * bw)))
    r0, r1 = max(0, int(y0 - my * bh)), min(H, int(np.ceil(y1 + my * bh)))
    if c1 <= c0 or r1 <= r0:
        return np.zeros((0, 0), bool)
    diff = cv2.absdiff(frame, background)
    level = float(np.median(diff[::4, ::4]))
    fg = (diff[r0:r1, c0:c1] > min(threshold + 2 * level, 255)).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, _OPEN)
    return fg > 0 if fg.sum() >= MIN_FILL * bw * bh else np.zeros((0, 0), bool)


def sequence_silhouettes(frames: np.ndarray, tracks: list[np.ndarray], background: np.ndarray | None,
                         localisation: str, size: int = DEFAULT_SIZE) -> tuple[list[np.ndarray], list[str]]:
    """The ``sil`` arrays of the sequences of one video, one per track, and notes: ``frames``
    uint8 (T, H, W), ``tracks`` each tracked person's boxes (T, 4), ``background`` the
    empty-scene image the localisation used (its method ``localisation``: "background image"
    uses it, other background models use the sequence median, computed once for all tracks)."""
    T = len(frames)
    if localisation == "hog":
        return [np.zeros((T, size, size), np.uint8) for _ in tracks], [
            "no silhouettes: HOG localisation has no background model (sil is all zeros)"]
    out = [np.zeros((T, size, size), np.uint8) for _ in tracks]
    if T == 0 or not any(np.isfinite(boxes[:, 0]).any() for boxes in tracks):
        return out, []
    if localisation != "background image" or background is None:
        background = median_background(frames, LocaliseParams.median_samples)
    for sil, boxes in zip(out, tracks):
        for t in np.flatnonzero(np.isfinite(boxes[:, 0])):
            sil[t] = normalise_silhouette(person_mask(frames[t], background, boxes[t]), size)
    return out, []
