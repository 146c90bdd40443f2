"""Middlebury ``.flo`` files: float32 tag 202021.25, int32 width, int32 height, H x W x 2 (u, v).

Arrays here are channel-first (2, H, W), like :func:`gaittools.flow.tvl1`'s output per pair.
Writes are atomic (temporary file + rename) so a crash never leaves a half-written flow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

FLO_TAG = np.float32(202021.25)
#: Ground-truth components at or above this magnitude mean "unknown".
UNKNOWN_FLOW_THRESHOLD = 1e9
_MAX_SIDE = 1 << 20


class FloError(ValueError):
    """A .flo file that cannot be read or a flow that cannot be written."""


def read_flo(path: str | os.PathLike) -> np.ndarray:
    """Flow (2, H, W) float32 from a .flo file; unknown values are returned as stored."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FloError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(raw) < 12:
        raise FloError(f"{path}: not a .flo file (only {len(raw)} bytes)")
    tag = np.frombuffer(raw, "<f4", 1, 0)[0]
    if tag != FLO_TAG:
        raise FloError(f"{path}: not a .flo file (tag {tag!r}, expected 202021.25)")
    width, height = (int(v) for v in np.frombuffer(raw, "<i4", 2, 4))
    if not (0 < width < _MAX_SIDE and 0 < height < _MAX_SIDE):
        raise FloError(f"{path}: implausible size {width}x{height}")
    expected = 12 + 8 * width * height
    if len(raw) != expected:
        raise FloError(f"{path}: truncated or padded: {len(raw)} bytes, expected {expected} "
                       f"for {width}x{height}")
    data = np.frombuffer(raw, "<f4", 2 * width * height, 12).reshape(height, width, 2)
    return np.ascontiguousarray(data.transpose(2, 0, 1), dtype=np.float32)


def write_flo(path: str | os.PathLike, flow) -> Path:
    """Write flow (2, H, W) to ``path`` atomically; returns the path."""
    path = Path(path)
    array = np.asarray(flow, dtype=np.float32)
    if array.ndim != 3 or array.shape[0] != 2 or 0 in array.shape:
        hint = " (transpose an (H, W, 2) array with .transpose(2, 0, 1))" if (
            array.ndim == 3 and array.shape[-1] == 2) else ""
        raise FloError(f"{path}: flow must be (2, H, W), got shape {array.shape}{hint}")
    height, width = array.shape[1:]
    header = FLO_TAG.astype("<f4").tobytes() + np.array([width, height], "<i4").tobytes()
    body = np.ascontiguousarray(array.transpose(1, 2, 0)).astype("<f4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(header + body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def known_mask(flow: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose ground truth is known (finite and below 1e9 in magnitude)."""
    finite = np.isfinite(flow).all(axis=0)
    return finite & (np.abs(np.nan_to_num(flow)).max(axis=0) < UNKNOWN_FLOW_THRESHOLD)


def endpoint_error(flow: np.ndarray, reference: np.ndarray) -> float:
    """Average end-point error of (2, H, W) ``flow`` against ``reference`` over known pixels."""
    flow = np.asarray(flow, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if flow.shape != reference.shape:
        raise ValueError(f"flow shape {flow.shape} differs from reference shape {reference.shape}")
    mask = known_mask(reference)
    if not mask.any():
        raise ValueError("reference flow has no known pixels")
    diff = flow[:, mask] - reference[:, mask]
    return float(np.sqrt((diff ** 2).sum(axis=0)).mean())
