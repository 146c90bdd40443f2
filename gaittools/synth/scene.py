"""The static hall the walker crosses, and what the camera adds to every frame.

The hall is ray-cast once per camera: a box room with a tiled floor and walls carrying panel
seams, marker columns and a skirting band, so that the background is textured (optical flow and
background subtraction meet real structure) but perfectly still. Per frame the camera adds a
mild global illumination flicker and sensor noise; each (subject, view) session also gets its own
small exposure and white-balance offset, shared by that session's empty-scene clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from gaittools.synth.camera import DISTANCE, FOCAL_PER_ROW, HEIGHT, Camera, view_camera

ROOM_HALF_X = 10.0   # along the walking direction
ROOM_HALF_Y = 9.0
ROOM_CEILING = 4.5


@dataclass(frozen=True)
class HallStyle:
    """Colours (BGR, 0..1) and pattern sizes of one hall."""

    wall: tuple[float, float, float]
    floor: tuple[float, float, float]
    marker: tuple[float, float, float]
    ceiling: tuple[float, float, float]
    tile: float
    marker_spacing: float


STYLES: dict[str, HallStyle] = {
    # A pale green hall with green marker columns, after the look of CASIA-B's recordings.
    "casia-b": HallStyle(wall=(0.70, 0.80, 0.74), floor=(0.62, 0.72, 0.70),
                         marker=(0.30, 0.55, 0.25), ceiling=(0.80, 0.85, 0.83), tile=0.6,
                         marker_spacing=3.0),
    # A grey-blue corridor with darker panels for the TUM-GAID layout.
    "tum-gaid": HallStyle(wall=(0.72, 0.68, 0.62), floor=(0.45, 0.47, 0.50),
                          marker=(0.35, 0.30, 0.55), ceiling=(0.85, 0.85, 0.85), tile=0.45,
                          marker_spacing=2.2),
}


def _value_noise(a: np.ndarray, b: np.ndarray, table: np.ndarray, cell: float) -> np.ndarray:
    """Smooth periodic noise at world coordinates (a, b): bilinear lookup into a random table."""
    n = table.shape[0]
    fa, fb = a / cell, b / cell
    ia, ib = np.floor(fa).astype(np.int64), np.floor(fb).astype(np.int64)
    wa, wb = fa - ia, fb - ib
    t00, t10 = table[ia % n, ib % n], table[(ia + 1) % n, ib % n]
    t01, t11 = table[ia % n, (ib + 1) % n], table[(ia + 1) % n, (ib + 1) % n]
    return (t00 * (1 - wa) + t10 * wa) * (1 - wb) + (t01 * (1 - wa) + t11 * wa) * wb


def _floor_texture(x: np.ndarray, y: np.ndarray, style: HallStyle, tables: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Tiles with grout lines and per-tile shade, plus two painted marker strips."""
    ts = style.tile
    ix, iy = np.floor(x / ts).astype(np.int64), np.floor(y / ts).astype(np.int64)
    shade = 1.0 + 0.06 * tables[0][ix % 64, iy % 64] + 0.05 * _value_noise(x, y, tables[1], 1.3)
    gx, gy = x / ts - ix, y / ts - iy
    grout = (np.minimum(gx, 1 - gx) < 0.03) | (np.minimum(gy, 1 - gy) < 0.03)
    shade = np.where(grout, shade * 0.80, shade)
    strip = (np.abs(np.abs(y) - 1.6) < 0.08) & ((np.floor(x / 0.3) % 2) == 0)
    colour = np.where(strip[..., None], np.array(style.marker), np.array(style.floor))
    return colour, shade


def _wall_texture(u: np.ndarray, z: np.ndarray, style: HallStyle, tables: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Panels with seams, a skirting band and columns of square markers."""
    shade = 1.0 + 0.05 * _value_noise(u, z, tables[2], 0.9) + 0.03 * tables[0][
        np.floor(u / 1.5).astype(np.int64) % 64, 7]
    seam = np.abs((u / 1.5) - np.round(u / 1.5)) * 1.5 < 0.015
    shade = np.where(seam, shade * 0.85, shade)
    shade = np.where(z < 0.15, shade * 0.7, shade)
    column = np.abs(u / style.marker_spacing - np.round(u / style.marker_spacing)) \
        * style.marker_spacing < 0.1
    squares = column & (z > 0.8) & (z < 2.5) & ((np.floor(z / 0.2) % 2) == 0)
    colour = np.where(squares[..., None], np.array(style.marker), np.array(style.wall))
    return colour, shade


def _ray_cast(camera: Camera, style: HallStyle, tables: np.ndarray, scale: int) -> np.ndarray:
    """Colour (H*scale, W*scale, 3) float of the first room surface along each pixel ray."""
    d = camera.pixel_rays(scale)
    c = camera.centre
    big = np.float64(1e9)
    with np.errstate(divide="ignore", invalid="ignore"):
        cand = np.stack([
            np.where(d[..., 2] < 0, -c[2] / d[..., 2], big),
            np.where(d[..., 2] > 0, (ROOM_CEILING - c[2]) / d[..., 2], big),
            np.where(d[..., 0] > 0, (ROOM_HALF_X - c[0]) / d[..., 0], big),
            np.where(d[..., 0] < 0, (-ROOM_HALF_X - c[0]) / d[..., 0], big),
            np.where(d[..., 1] > 0, (ROOM_HALF_Y - c[1]) / d[..., 1], big),
            np.where(d[..., 1] < 0, (-ROOM_HALF_Y - c[1]) / d[..., 1], big),
        ])
    surface = np.argmin(cand, axis=0)
    dist = np.take_along_axis(cand, surface[None], 0)[0]
    p = c + d * dist[..., None]
    out = np.empty(d.shape, np.float64)
    fl = surface == 0
    col, sh = _floor_texture(p[fl, 0], p[fl, 1], style, tables)
    out[fl] = col * sh[:, None]
    out[surface == 1] = style.ceiling
    for idx, along in ((2, 1), (3, 1), (4, 0), (5, 0)):
        m = surface == idx
        col, sh = _wall_texture(p[m, along] + 50.0 * idx, p[m, 2], style, tables)
        out[m] = col * sh[:, None]
    light = 1.0 - 0.018 * np.clip(dist - 4.0, 0, 20)   # the far end of the hall is dimmer
    return out * light[..., None]


@lru_cache(maxsize=32)
def hall_background(view: str, size: tuple[int, int], layout: str, scene_seed: int,
                    distance: float = DISTANCE, height: float = HEIGHT, aim: float | None = None,
                    focal_per_row: float = FOCAL_PER_ROW) -> np.ndarray:
    """The empty hall (H, W, 3) uint8 BGR seen from a view (``view_camera``'s placement);
    cached per process (it is static)."""
    style = STYLES[layout]
    tables = np.random.default_rng(scene_seed).uniform(-1.0, 1.0, size=(3, 64, 64))
    camera = view_camera(view, size, distance, height, aim, focal_per_row)
    colour = _ray_cast(camera, style, tables, scale=2)
    img = cv2.resize(colour.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    img *= (1.0 - 0.12 * r2)[..., None]
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    return np.clip(img * 255.0, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class CameraEffects:
    """Per-frame gain (flicker x session exposure) and the session's white balance (tint).

    The tint is constant over a session, so callers apply it once to the background and to the
    person's colours (``tinted``); per frame only the gain and the noise remain (one
    saturating cv2.addWeighted).
    """

    gains: np.ndarray       # (T,) overall gain per frame
    tint: np.ndarray        # (3,) BGR white balance of the session

    def tinted(self, image: np.ndarray) -> np.ndarray:
        return np.clip(image * self.tint, 0, 255).astype(image.dtype)

    def apply(self, frame: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
        """The frame as the camera records it (uint8 BGR)."""
        noise = cv2.cvtColor(sensor_noise(rng, frame.shape[:2]), cv2.COLOR_GRAY2BGR)
        return cv2.addWeighted(frame, float(self.gains[t]), noise, 1.0, -7.0)


def sensor_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Noise 0..14 (mean 7, sd ~3.2 grey levels), triangular: the sum of two 3-bit uniforms.

    Drawn as random 32-bit words viewed as bytes, several times faster than a normal draw;
    noise is a large share of the generation time. One channel: luminance noise.
    """
    n = int(np.prod(shape))
    words = rng.integers(0, 2**32, size=(n + 3) // 4, dtype=np.uint32)
    raw = words.view(np.uint8)[:n].reshape(shape)
    return (raw & 7) + ((raw >> 4) & 7)


def camera_effects(session_rng: np.random.Generator, flicker_rng: np.random.Generator,
                   n_frames: int, fps: float) -> CameraEffects:
    """Session exposure/tint from the session stream; a mild flicker from the clip's stream."""
    exposure = session_rng.uniform(0.92, 1.06)
    tint = 1.0 + session_rng.uniform(-0.03, 0.03, size=3)
    t = np.arange(n_frames) / fps
    freq, phase = flicker_rng.uniform(0.5, 3.0), flicker_rng.uniform(0, 2 * np.pi)
    flicker = 1.0 + 0.015 * np.sin(2 * np.pi * freq * t + phase) \
        + 0.006 * flicker_rng.standard_normal(n_frames)
    return CameraEffects(exposure * flicker, tint)
