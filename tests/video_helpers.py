"""Decoding a whole test video as colour frames, the way a user's cv2 would see it."""

from pathlib import Path

import cv2
import numpy as np


def read_video(path: Path) -> np.ndarray:
    """All frames of ``path`` as (T, H, W, 3) BGR uint8; (0,) when nothing decodes."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return np.stack(frames) if frames else np.zeros((0,), np.uint8)
