"""Pinhole cameras placed around the walking path, one per CASIA-B view angle.

The walker always walks along the world +x axis through the origin. A camera at view angle
``a`` stands at distance ``distance`` in the direction (cos a, sin a) from the origin and looks
at it: ``000`` sees the walker approach, ``090`` is lateral (the walker moves right to left in
the image, as in CASIA-B), ``180`` sees the back. World axes: x walking direction, y left of
the walker, z up, metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Default camera distance (m) and height (m); with FOCAL_PER_ROW the walker is about half the
#: frame height tall at the path centre, like CASIA-B's 320x240 clips.
DISTANCE = 6.0
HEIGHT = 1.0
FOCAL_PER_ROW = 1.85


@dataclass(frozen=True)
class Camera:
    """World-to-image projection: R rows are the camera's right, down and forward axes."""

    rotation: np.ndarray   # (3, 3)
    centre: np.ndarray     # (3,)
    focal: float           # pixels
    width: int
    height: int

    @property
    def principal(self) -> tuple[float, float]:
        return (self.width - 1) / 2.0, (self.height - 1) / 2.0

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) -> camera coordinates (..., 3), z = depth along the axis."""
        return (points - self.centre) @ self.rotation.T

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (..., 3) -> pixel coordinates (..., 2) and depth (...)."""
        cam = self.to_camera(points)
        depth = np.maximum(cam[..., 2], 1e-3)
        cx, cy = self.principal
        uv = np.stack([self.focal * cam[..., 0] / depth + cx,
                       self.focal * cam[..., 1] / depth + cy], axis=-1)
        return uv, depth

    def pixel_rays(self, scale: int = 1) -> np.ndarray:
        """Unit world directions (H*scale, W*scale, 3) through pixel centres (supersampled)."""
        cx, cy = self.principal
        xs = (np.arange(self.width * scale) + 0.5) / scale - 0.5
        ys = (np.arange(self.height * scale) + 0.5) / scale - 0.5
        u, v = np.meshgrid((xs - cx) / self.focal, (ys - cy) / self.focal)
        rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ self.rotation
        return rays / np.linalg.norm(rays, axis=-1, keepdims=True)


def look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation whose rows are right, down, forward for a camera with a level horizon."""
    forward = target - centre
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


def view_camera(view: int | str, size: tuple[int, int], distance: float = DISTANCE,
                height: float = HEIGHT, aim: float | None = None,
                focal_per_row: float = FOCAL_PER_ROW) -> Camera:
    """The camera for a view angle in degrees (CASIA-B convention), for an image size (W, H).

    ``aim``: the height (m) of the point above the path's centre it looks at; None looks
    level (at its own height), as CASIA-B's cameras do. A camera mounted high and aimed at
    the floor sees the ground plane as street cameras do: farther people smaller and higher
    in the frame. ``focal_per_row`` widens (smaller) or narrows the field of view."""
    angle = np.radians(float(view))
    centre = np.array([distance * np.cos(angle), distance * np.sin(angle), height])
    target = np.array([0.0, 0.0, height if aim is None else aim])
    width, rows = size
    return Camera(look_at(centre, target), centre, focal_per_row * rows, int(width), int(rows))
