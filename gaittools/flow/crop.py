"""Crop full-frame flow to the person's crop windows, in crop pixels.

Why a separate step: TV-L1 needs the whole working frame (the person's motion relative to a
still background, no window edges inside the flow's support), but the store keeps flow
aligned with ``gray``: ``flow[t]`` covers the same window as ``gray[t]`` and is measured in
that crop's pixels. So flow t -> t+1 is cut out with frame t's window and resampled to S x S,
and its components are rescaled by S / window width (dx) and S / window height (dy).

Resampling is written as two small weight matrices per window (rows of crop pixels, columns
of frame pixels), so the same maths runs as numpy matmuls on CPU and as batched torch matmuls
on the GPU, right after TV-L1, without sending full-frame flow back to the host.

Coordinates: a window ``x0, y0, x1, y1`` is in continuous frame coordinates where frame pixel
``i`` covers ``[i, i + 1)`` (the ``cv2.resize`` convention); crop pixel ``j`` covers
``[x0 + j w / S, x0 + (j + 1) w / S)``. Downsampling averages the frame pixels a crop pixel
covers (area weights, like ``cv2.INTER_AREA``); upsampling interpolates linearly. Parts of a
window outside the frame get zero flow (nothing is known there). For the whole-pixel windows of
``gaittools.person.crop`` this is exactly ``crop_window``'s pad-and-INTER_AREA, so flow[t] and gray[t]
are resampled alike (tested).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def axis_weights(lo: Any, hi: Any, n_src: int, size: int, xp: Any = np) -> Any:
    """Resampling weights (N, size, n_src) float32 taking a frame axis to ``size`` crop pixels.

    ``lo``/``hi`` (N,) are the window's edges on this axis, as arrays of ``xp`` (numpy, or
    torch to build the weights where the flow lives); rows of windows with non-finite or empty
    extent are all zero.
    """
    ok = xp.isfinite(lo) & xp.isfinite(hi) & (hi > lo)
    lo = xp.where(ok, lo, xp.zeros_like(lo))  # NaN-free for the maths below
    step = xp.where(ok, (hi - lo) / size, xp.ones_like(lo))[:, None, None]
    lo = lo[:, None, None]
    j = _arange(xp, size, lo)[None, :, None]
    src = _arange(xp, n_src, lo)[None, None, :]
    a = lo + j * step  # (N, size, 1): start of each crop pixel's footprint in the frame
    b = a + step
    # Area weights: overlap of the footprint [a, b) with each frame pixel [i, i + 1).
    area = (xp.minimum(b, src + 1) - xp.maximum(a, src)).clip(0) / step
    # Linear weights at the footprint centre, for windows smaller than the crop: borders are
    # replicated within the frame, and centres outside it get nothing.
    centre = (a + b) / 2
    inside = (centre >= 0) & (centre < n_src)
    linear = (1 - xp.abs(src - (centre - 0.5).clip(0, n_src - 1))).clip(0) * inside
    weights = xp.where(step < 1, linear, area)
    return weights * ok[:, None, None]


def crop_weights(windows: Any, height: int, width: int, size: int, xp: Any = np) -> tuple[Any, Any, Any]:
    """Row weights (N, S, H), column weights (N, S, W) and a validity mask (N,) for windows.

    ``windows`` (N, 4) float32 of ``xp``; a window is valid when finite and non-empty.
    """
    x0, y0, x1, y1 = (windows[:, k] for k in range(4))
    valid = xp.isfinite(windows).all(1) & (x1 > x0) & (y1 > y0)
    wy = axis_weights(y0, y1, height, size, xp) * valid[:, None, None]
    wx = axis_weights(x0, x1, width, size, xp) * valid[:, None, None]
    return wy, wx, valid


def flow_scales(windows: Any, size: int, xp: Any = np) -> Any:
    """(N, 2) factors taking (dx, dy) in frame pixels to crop pixels; 0 for invalid windows."""
    extent = xp.stack([windows[:, 2] - windows[:, 0], windows[:, 3] - windows[:, 1]], 1)
    ok = xp.isfinite(extent) & (extent > 0)
    return xp.where(ok, size / xp.where(ok, extent, xp.ones_like(extent)), xp.zeros_like(extent))


def crop_flow(flow: np.ndarray, windows: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop-aligned flow (T-1, 2, S, S) float32 and a mask (T-1,) of pairs with a window.

    ``flow`` (T-1, 2, H, W) is full-frame flow t -> t+1 in frame pixels; ``windows`` (T, 4)
    (or (T-1, 4)) the crop windows of the frames; pair t uses ``windows[t]``. Pairs whose
    window is NaN get zero flow and ``mask[t] = False``.
    """
    flow = np.asarray(flow, np.float32)
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (T-1, 2, H, W), got {flow.shape}")
    n_pairs, _, height, width = flow.shape
    windows = _pair_windows(windows, n_pairs)
    wy, wx, valid = crop_weights(windows, height, width, size)
    out = np.matmul(np.matmul(wy[:, None], flow), np.swapaxes(wx, 1, 2)[:, None])
    out *= flow_scales(windows, size)[:, :, None, None]
    return out.astype(np.float32, copy=False), np.asarray(valid)


def crop_flow_torch(flow: Any, windows: np.ndarray, size: int) -> tuple[Any, np.ndarray]:
    """``crop_flow`` for a torch flow batch (B, 2, H, W) on any device; windows (B, 4) numpy.

    The same maths as ``crop_flow``, with the weights built and applied on the flow's device,
    so full-frame flow never leaves the GPU. Windows (B, K, 4) crop each pair K times (the K
    tracks that share a video's frames): crops (B, K, 2, S, S), mask (B, K).
    """
    import torch

    windows = np.asarray(windows, np.float32)
    if windows.ndim == 3:
        out = torch.zeros((len(flow), windows.shape[1], 2, size, size), dtype=torch.float32, device=flow.device)
        valid = np.zeros(windows.shape[:2], bool)
        for k in range(windows.shape[1]):  # only the pairs this track keeps: no full-frame copies of the rest
            rows = np.flatnonzero(np.isfinite(windows[:, k]).all(axis=1))
            if len(rows):
                index = torch.from_numpy(rows).to(flow.device)
                out[index, k], valid[rows, k] = crop_flow_torch(flow.index_select(0, index), windows[rows, k], size)
        return out, valid
    n_pairs, _, height, width = flow.shape
    windows = torch.from_numpy(_pair_windows(windows, n_pairs)).to(flow.device)
    wy, wx, valid = crop_weights(windows, height, width, size, xp=torch)
    out = torch.matmul(torch.matmul(wy[:, None], flow.float()), wx.transpose(1, 2)[:, None])
    out = out * flow_scales(windows, size, xp=torch)[:, :, None, None]
    return out, valid.cpu().numpy()


def _arange(xp: Any, n: int, like: Any) -> Any:
    if xp is np:
        return np.arange(n, dtype=np.float32)
    return xp.arange(n, dtype=like.dtype, device=like.device)


def _pair_windows(windows: np.ndarray, n_pairs: int) -> np.ndarray:
    windows = np.asarray(windows, np.float32)
    if windows.ndim != 2 or windows.shape[1] != 4 or windows.shape[0] < n_pairs:
        raise ValueError(f"windows must be (T, 4) with T >= {n_pairs} (pairs), got {windows.shape}")
    return np.ascontiguousarray(windows[:n_pairs])
