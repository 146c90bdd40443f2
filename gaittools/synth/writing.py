"""Writing clips to disk the way the real datasets ship them, atomically.

A clip is written under a hidden partial name and renamed into place only when complete, so an
interrupted run never leaves a truncated video or a half-filled frame folder under a real name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np

FOURCC = "MJPG"


def write_avi(path: Path, frames: np.ndarray, fps: float) -> None:
    """Write BGR frames (T, H, W, 3) as an MJPG .avi that cv2.VideoCapture decodes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*FOURCC), float(fps), (w, h))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot open a {FOURCC} video writer for {w}x{h}")
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame))
    finally:
        writer.release()
    os.replace(partial, path)


def frame_name(index: int) -> str:
    """TUM-GAID-style frame file name: 1-based, four digits (0001.png)."""
    return f"{index + 1:04d}.png"


def write_frame_folder(folder: Path, frames: np.ndarray) -> None:
    """Write frames as NNNN.png into folder, replacing the folder as a whole."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(f".{folder.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    for t, frame in enumerate(frames):
        if not cv2.imwrite(str(partial / frame_name(t)), frame):
            raise OSError(f"{partial / frame_name(t)}: cv2.imwrite failed")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)


def write_parquet(path: Path, table) -> None:
    """Write a pandas DataFrame as parquet via a partial file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    table.to_parquet(partial, index=False)
    os.replace(partial, path)
