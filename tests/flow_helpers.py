"""Shared test inputs for the flow tests: smooth analytic textures under known motions."""

from __future__ import annotations

import numpy as np
from conftest import DATA

MIDDLEBURY = DATA / "middlebury"


def texture(x: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """A smooth random texture on 0-255 defined everywhere, so it can be sampled at any motion."""
    rng = np.random.default_rng(seed)
    out = np.full(np.broadcast(x, y).shape, 128.0)
    for _ in range(12):
        wavelength = rng.uniform(7, 24)
        angle = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        k = 2 * np.pi / wavelength
        out += 12 * np.sin(k * (np.cos(angle) * x + np.sin(angle) * y) + phase)
    return np.clip(out, 0, 255)


def moved_pair(height: int, width: int, motion, seed: int = 0):
    """(I0, I1, true flow (2, H, W)) where I1(x + flow(x)) = I0(x) for flow = motion(x, y)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = motion(x, y)
    u, v = np.broadcast_to(u, x.shape), np.broadcast_to(v, x.shape)
    frame0 = texture(x, y, seed)
    # I1(p) = I0(q) with p = q + flow(q); for these smooth motions invert by fixed-point iteration.
    qx, qy = x.copy(), y.copy()
    for _ in range(30):
        du, dv = motion(qx, qy)
        qx, qy = x - du, y - dv
    frame1 = texture(qx, qy, seed)
    return frame0.astype(np.float32), frame1.astype(np.float32), np.stack([u, v]).astype(np.float32)


def translation(dx: float, dy: float):
    return lambda x, y: (np.full_like(x, dx), np.full_like(y, dy))


def rotation(degrees: float, cx: float, cy: float):
    a = np.deg2rad(degrees)

    def motion(x, y):
        rx = np.cos(a) * (x - cx) - np.sin(a) * (y - cy) + cx
        ry = np.sin(a) * (x - cx) + np.cos(a) * (y - cy) + cy
        return rx - x, ry - y

    return motion


def epe(flow: np.ndarray, truth: np.ndarray, border: int = 0) -> float:
    if border:
        flow = flow[:, border:-border, border:-border]
        truth = truth[:, border:-border, border:-border]
    return float(np.sqrt(((np.asarray(flow, np.float64) - truth) ** 2).sum(axis=0)).mean())
