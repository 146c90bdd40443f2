"""People in frames where background subtraction fails (a moving camera): OpenCV's HOG
people detector with its built-in linear SVM (no downloaded weights).

The default detector's 64x128 window holds a body about 32 wide and 96 tall, so its boxes are
shrunk to the body; small frames are enlarged first, because bodies shorter than the window
are missed. Overlapping detections are suppressed by score.
"""

from __future__ import annotations

import cv2
import numpy as np

from gaittools.person.blobs import box_iou

#: The default people detector's 64x128 window holds a body about 32 wide and 96 tall.
HOG_BODY_SHRINK = (0.25, 0.125)


def hog_detections(frames: np.ndarray) -> list[np.ndarray]:
    """Body boxes (N, 5: x0, y0, x1, y1, score x area) of every gray frame (T, H, W)."""
    H = frames.shape[1]
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    up = max(1.0, 256.0 / H)  # bodies shorter than the 128 px window are missed otherwise
    per_frame = []
    for f in frames:
        img = cv2.resize(f, None, fx=up, fy=up, interpolation=cv2.INTER_LINEAR) if up > 1 else f
        rects, weights = hog.detectMultiScale(img, winStride=(8, 8), padding=(8, 8), scale=1.05)
        per_frame.append(_hog_boxes(np.asarray(rects, np.float32).reshape(-1, 4) / up,
                                    np.asarray(weights, np.float32).reshape(-1)))
    return per_frame


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
