"""Crops: the walker's square window in each frame, resized to S x S gray (uint8).

Two modes, both giving a square window in frame pixels:

- ``person`` (OpenGait's 64x64 pretreatment, on gray frames): the window's height is the
  track's body height - the median box height over the clip around the frame (``REACH``
  frames either side), so the body spans the crop's height at a steady scale: one box
  stretched by a merge or a floor reflection, or shortened by a partial body entering the
  frame, does not change it. The window stands on the box's bottom (the feet). It is centred
  horizontally on the body's horizontal centre of mass (of the foreground), not on the box,
  because swinging arms and legs move the box's centre but not the body's.
- ``frame`` (GaitCopy's): the whole frame is resized to height S and a window S wide is cut,
  centred on the walker; no vertical alignment, so the body's size and height in the crop
  follow its distance to the camera. In frame pixels the window is H x H (H the frame height).

The window's bounds are whole pixels (``x1``, ``y1`` exclusive) so that the crop is exactly
``resize(pad(frame)[y0:y1, x0:x1], (S, S), INTER_AREA)``, where pad() fills outside the frame
with 0 (a window inside the frame is resized from a view, without the padded copy).
compute-flow can apply the same window to flow fields and get aligned crops.
"""

from __future__ import annotations

import cv2
import numpy as np

from gaittools.person.series import REACH, rolling_median

CROP_MODES = ("person", "frame")
DEFAULT_SIZE = 64


def windows_for(boxes: np.ndarray, centres: np.ndarray, frame_shape: tuple[int, int],
                mode: str = "person") -> np.ndarray:
    """Square crop windows (T, 4) float32 in frame pixels, NaN where there is no box.

    ``boxes`` (T, 4) are one person's boxes over consecutive frames (one track), ``centres``
    (T,) their horizontal centres of mass (NaN: the box centre). This and ``crop_frames``
    are the one way a person is cropped: gray frames, and silhouettes (masks) with the same
    windows, so both come out aligned at the same scale.
    """
    if mode not in CROP_MODES:
        raise ValueError(f"unknown crop mode {mode!r}; one of {CROP_MODES}")
    H = frame_shape[0]
    boxes = np.asarray(boxes, np.float64)
    cx = np.where(np.isfinite(centres), centres, (boxes[:, 0] + boxes[:, 2]) / 2)
    if mode == "person":
        y1 = np.round(boxes[:, 3])
        side = np.maximum(np.round(rolling_median(boxes[:, 3] - boxes[:, 1], REACH)), 1)
        y0 = y1 - side
    else:
        y0 = np.zeros(len(boxes))
        side = np.full(len(boxes), float(H))
    x0 = np.round(cx - side / 2)
    windows = np.stack([x0, y0, x0 + side, y0 + side], axis=1)
    windows[~np.isfinite(boxes[:, 0])] = np.nan
    return windows.astype(np.float32)


def crop_window(frame: np.ndarray, window: np.ndarray, size: int = DEFAULT_SIZE,
                interpolation: int = cv2.INTER_AREA, out: np.ndarray | None = None) -> np.ndarray:
    """One window (x0, y0, x1, y1, whole pixels) of a 2-D array resized to size x size
    (written into ``out`` when given).

    Works for any dtype OpenCV resizes (uint8 frames, float32 flow components). A window
    inside the frame is resized straight from a view of it; only one that sticks out gets the
    zero-padded copy (the same pixels either way, so the same crop).
    """
    x0, y0, x1, y1 = map(int, np.asarray(window).tolist())
    H, W = frame.shape[:2]
    if x0 >= 0 and y0 >= 0 and x1 <= W and y1 <= H:
        patch = frame[y0:y1, x0:x1]
    else:
        patch = np.zeros((y1 - y0, x1 - x0, *frame.shape[2:]), frame.dtype)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    return cv2.resize(patch, (size, size), dst=out, interpolation=interpolation)


def crop_frames(frames: np.ndarray, windows: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
    """uint8 (T, S, S) crops; all-zero where the window is NaN (nobody)."""
    out = np.zeros((len(frames), size, size), np.uint8)
    in_place = frames.dtype == np.uint8 and frames.ndim == 3  # else OpenCV would not use out[t]
    for t in np.flatnonzero(np.isfinite(windows[:, 0])):
        if in_place:
            crop_window(frames[t], windows[t], size, out=out[t])
        else:
            out[t] = crop_window(frames[t], windows[t], size)
    return out


def resize_crops(crops: np.ndarray, size: int) -> np.ndarray:
    """Square crops (T, s, s) resized to (T, size, size); for imported 64x64 silhouettes."""
    if crops.shape[1:] == (size, size):
        return crops
    interp = cv2.INTER_AREA if size < crops.shape[1] else cv2.INTER_LINEAR
    out = np.empty((len(crops), size, size), crops.dtype)
    for t, c in enumerate(crops):
        out[t] = cv2.resize(c, (size, size), interpolation=interp)
    return out
