"""Decoding: a video file or a folder of frame images -> gray frames at the working height.

Why a working height (240 by default): every later stage (localisation, crops, flow windows)
works in these pixels, so datasets recorded at 320x240 (CASIA-B) and 640x480 (TUM-GAID) give
boxes and windows on one scale. Frames are resized with INTER_AREA, which averages instead of
skipping pixels when shrinking.

Every problem is a ``VideoError`` whose message starts with the file it is about, so a run over
thousands of files can report each bad one and go on: missing, zero-byte, not a video (OpenCV
cannot open it), decodes to no frames, truncated (fewer frames than the container declares),
unreadable frame image, frames of different sizes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gaittools.sources.layouts import FRAME_SUFFIXES

DEFAULT_WORKING_HEIGHT = 240
#: Frame folders carry no rate; TUM-GAID and generic folders are assumed at this fps unless told.
DEFAULT_FOLDER_FPS = 25.0
#: FFmpeg decoder threads per video. One: extract-frames runs one worker process per core, and
#: on CASIA-B's MPEG-4 clips FFmpeg's frame threads cost ~35% more CPU for no gain in wall
#: time even on an idle machine (benchmarks/extract_speed.py).
DECODER_THREADS = 1
#: A container may declare one or two frames more than it holds (rounding in its header);
#: fewer decoded frames than this fraction of the declared count means a truncated file.
TRUNCATION_TOLERANCE = 0.95


class VideoError(ValueError):
    """A video or frame folder that cannot be decoded; the message names the file."""


@dataclass
class Decoded:
    """Gray frames at the working height and how they relate to the source."""

    frames: np.ndarray  # uint8 (T, H, W)
    fps: float
    source_size: tuple[int, int]  # (width, height) of the source
    scale: float  # working pixels per source pixel

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])


def decode(path: str | os.PathLike[str], working_height: int | None = DEFAULT_WORKING_HEIGHT,
           fps: float | None = None, max_frames: int | None = None) -> Decoded:
    """Decode a video file or a frame folder; ``working_height=None`` keeps the source size."""
    path = Path(path)
    if path.is_dir():
        return decode_folder(path, working_height, fps, max_frames)
    return decode_video(path, working_height, fps, max_frames)


def decode_video(path: Path, working_height: int | None = DEFAULT_WORKING_HEIGHT,
                 fps: float | None = None, max_frames: int | None = None) -> Decoded:
    """Decode every frame of a video file (or the first ``max_frames``)."""
    _check_file(path)
    cap = open_capture(path)
    try:
        if not cap.isOpened():
            raise VideoError(f"{path}: not a readable video (OpenCV could not open it)")
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        source_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        frames, size = _read_all(cap, path, working_height, max_frames, declared)
    finally:
        cap.release()
    if not len(frames):
        raise VideoError(f"{path}: no frames could be decoded (empty or corrupt video)")
    if max_frames is None and declared > 0 and len(frames) < TRUNCATION_TOLERANCE * declared:
        raise VideoError(
            f"{path}: truncated or corrupt: decoded {len(frames)} of the {declared} frames "
            f"its header declares"
        )
    rate = fps or (source_fps if 0 < source_fps < 1000 else DEFAULT_FOLDER_FPS)
    return Decoded(frames, rate, size, frames.shape[1] / size[1])


def open_capture(path: Path, threads: int = DECODER_THREADS) -> cv2.VideoCapture:
    """An FFmpeg capture with ``threads`` decoder threads (any backend if FFmpeg refuses it)."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads])
    if cap.isOpened():
        return cap
    cap.release()
    return cv2.VideoCapture(str(path))


def _read_all(cap: cv2.VideoCapture, path: Path, working_height: int | None,
              max_frames: int | None, declared: int) -> tuple[np.ndarray, tuple[int, int]]:
    """All frames, gray at the working height, written straight into one (T, H, W) array.

    Why not a list and ``np.stack``: converting into a preallocated array (sized from the
    container's declared count, doubled if it lied) saves a copy and an allocation per frame.
    (Taking gray from the luma plane with BGR conversion off was tried: it saves nothing,
    because mapping Y to OpenCV's gray with cv2.LUT costs more than cvtColor.)
    """
    out = np.empty((0, 0, 0), np.uint8)
    size = (0, 0)
    n = 0
    image = None  # one decode buffer, reused
    while max_frames is None or n < max_frames:
        ok, image = cap.read(image)
        if not ok or image is None:
            break
        if n == 0:
            size = (image.shape[1], image.shape[0])
            expected = min(declared, max_frames) if max_frames else declared
            out = np.empty((max(expected, 1), *working_shape(size, working_height)), np.uint8)
        elif (image.shape[1], image.shape[0]) != size:
            raise VideoError(f"{path}: frame {n} is {image.shape[1]}x{image.shape[0]}, "
                             f"the first was {size[0]}x{size[1]}")
        if n == len(out):
            out = np.concatenate([out, np.empty_like(out)])
        if out.shape[1:] == image.shape[:2]:
            to_gray(image, out=out[n])
        else:
            to_working(to_gray(image), working_height, out=out[n])
        n += 1
    return out[:n], size


def decode_folder(folder: Path, working_height: int | None = DEFAULT_WORKING_HEIGHT,
                  fps: float | None = None, max_frames: int | None = None) -> Decoded:
    """Decode a folder of frame images in name order (``0001.png``, ``0002.png``, ...)."""
    files = frame_files(folder)
    if not files:
        raise VideoError(f"{folder}: no frame images ({', '.join(FRAME_SUFFIXES)})")
    files = files[:max_frames] if max_frames else files
    frames: list[np.ndarray] = []
    size = (0, 0)
    for f in files:
        image = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) if f.stat().st_size else None
        if image is None:
            raise VideoError(f"{f}: not a readable image (empty or corrupt frame)")
        if not frames:
            size = (image.shape[1], image.shape[0])
        elif (image.shape[1], image.shape[0]) != size:
            raise VideoError(f"{f}: {image.shape[1]}x{image.shape[0]}, the first frame of "
                             f"{folder} was {size[0]}x{size[1]}")
        frames.append(to_working(image, working_height))
    return Decoded(np.stack(frames), fps or DEFAULT_FOLDER_FPS, size, frames[0].shape[0] / size[1])


def frame_files(folder: Path) -> list[Path]:
    """The frame images directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file())


def to_gray(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """One-channel copy of a BGR, BGRA or gray image (into ``out`` when given)."""
    if image.ndim == 2:
        if out is None:
            return image
        out[...] = image
        return out
    code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(image, code) if out is None else cv2.cvtColor(image, code, dst=out)


def working_shape(size: tuple[int, int], working_height: int | None) -> tuple[int, int]:
    """(height, width) of a (width, height) source at the working height, aspect kept."""
    w, h = size
    if working_height is None or h == working_height:
        return h, w
    return working_height, max(1, int(round(w * working_height / h)))


def to_working(gray: np.ndarray, working_height: int | None, out: np.ndarray | None = None) -> np.ndarray:
    """Resize to ``working_height`` keeping the aspect ratio (a copy at that height)."""
    h, w = working_shape((gray.shape[1], gray.shape[0]), working_height)
    if out is None:
        out = np.empty((h, w), np.uint8)
    if (h, w) == gray.shape[:2]:
        out[...] = gray
    else:
        cv2.resize(gray, (w, h), dst=out, interpolation=cv2.INTER_AREA)
    return out


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if not path.is_file():
        raise VideoError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
