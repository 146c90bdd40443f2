"""Drawing a walk: project the capsules, paint them far to near over the hall, film it.

Capsules are drawn as filled 2D capsules (two discs and the quadrilateral between their
tangents) with sub-pixel precision (cv2 ``shift``), so that slow motion moves edges smoothly
instead of in whole-pixel jumps. Order is by depth per frame (painter's algorithm). Parts on
the far side of the body are shaded darker and every part gets a highlight band, which keeps
the limbs distinguishable in grey frames. The person mask is painted with the same shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gaittools.synth.body import Capsule
from gaittools.synth.camera import Camera
from gaittools.synth.scene import CameraEffects

SHIFT = 4
ONE = 1 << SHIFT
NEAR = 0.3   # m: parts closer to the camera than this are not drawn


@dataclass(frozen=True)
class RenderedClip:
    """A clip as the camera recorded it, before any video compression.

    ``masks[t]`` is the renderer's person mask (True on person pixels, including bags and
    coats); ``boxes[t]`` its tight box x0, y0, x1, y1 with x1/y1 exclusive (one past the last
    person pixel), clipped to the image, NaN where no person pixel is visible.
    """

    frames: np.ndarray   # (T, H, W, 3) uint8 BGR
    masks: np.ndarray    # (T, H, W) bool
    boxes: np.ndarray    # (T, 4) float32


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight box (x0, y0, x1 exclusive, y1 exclusive) of a mask, NaN if it is empty."""
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    if w == 0 or h == 0:
        return np.full(4, np.nan, np.float32)
    return np.array([x, y, x + w, y + h], np.float32)


def _outline(uv0: np.ndarray, uv1: np.ndarray, r0: np.ndarray, r1: np.ndarray, limit: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fixed-point discs and tangent quads of 2D capsules, for all capsules and frames at once.

    Returns centres c0, c1 (..., 2), radii q0, q1 (...), quads (..., 4, 2) and whether the
    capsule is long enough to need its quad (else it is drawn as one disc).
    """
    d = uv1 - uv0
    length = np.hypot(d[..., 0], d[..., 1])
    n = np.stack([-d[..., 1], d[..., 0]], -1) / np.maximum(length, 1e-9)[..., None]
    quad = np.stack([uv0 + n * r0[..., None], uv1 + n * r1[..., None],
                     uv1 - n * r1[..., None], uv0 - n * r0[..., None]], -2)

    def fixed(p: np.ndarray) -> np.ndarray:
        return np.rint(np.clip(p, -limit, limit) * ONE).astype(np.int32)

    radius = lambda r: np.maximum(np.rint(r * ONE), 1).astype(np.int32)  # noqa: E731
    return fixed(uv0), fixed(uv1), radius(r0), radius(r1), fixed(quad), length > 0.25


def _fill(canvas: np.ndarray, c0, c1, q0: int, q1: int, quad, long: bool, caps: tuple[bool, bool],
          colour, line: int) -> None:
    """Fill one 2D capsule from its precomputed fixed-point outline (a disc if it is short)."""
    if long:
        cv2.fillConvexPoly(canvas, quad, colour, line, SHIFT)
        if caps[0]:
            cv2.circle(canvas, c0, q0, colour, -1, line, SHIFT)
        if caps[1]:
            cv2.circle(canvas, c1, q1, colour, -1, line, SHIFT)
    else:
        cv2.circle(canvas, c0, max(q0, q1), colour, -1, line, SHIFT)


def paint_person(background: np.ndarray, camera: Camera, capsules: list[Capsule],
                 reference: np.ndarray, tint: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Clean frames (T, H, W, 3) and masks (T, H, W) of the capsules over the background
    (one image (H, W, 3), or one per frame (T, H, W, 3) to paint over earlier people).

    ``reference`` (T, 3) is the body centre; parts deeper than it are shaded darker.
    ``tint`` (3,) is the camera's white balance, applied to the capsule colours.
    """
    n_frames = len(reference)
    a = np.stack([c.a for c in capsules])          # (N, T, 3)
    b = np.stack([c.b for c in capsules])
    uv_a, da = camera.project(a)
    uv_b, db = camera.project(b)
    _, dref = camera.project(reference)
    ra = np.array([c.ra for c in capsules])[:, None] * camera.focal / da
    rb = np.array([c.rb for c in capsules])[:, None] * camera.focal / db
    mid = (da + db) / 2
    shade = np.clip(1.0 - 1.6 * (mid - dref[None]), 0.65, 1.1)             # (N, T)
    colours = np.array([c.colour for c in capsules])[:, None, :] * shade[..., None]
    if tint is not None:
        colours = colours * tint
    glows = np.clip(colours * 1.18 + 8, 0, 255).tolist()
    colours = np.clip(colours, 0, 255).tolist()
    visible = ((camera.to_camera(a)[..., 2] > NEAR) & (camera.to_camera(b)[..., 2] > NEAR)).tolist()
    limit = 8.0 * max(camera.width, camera.height)
    body = [x.tolist() if x.ndim < 4 else list(x) for x in _outline(uv_a, uv_b, ra, rb, limit)]
    light = np.array([-0.3, -0.35])
    glow = [x.tolist() if x.ndim < 4 else list(x) for x in _outline(
        uv_a + light * ra[..., None], uv_b + light * rb[..., None], 0.45 * ra, 0.45 * rb, limit)]
    big = (np.minimum(ra, rb) >= 2.5).tolist()   # highlights only where they show
    caps = [(c.cap_a, c.cap_b) for c in capsules]
    order = np.argsort(-mid, axis=0, kind="stable").T.tolist()              # (T, N)
    h, w = background.shape[-3:-1]
    frames = np.empty((n_frames, h, w, 3), np.uint8)
    masks = np.zeros((n_frames, h, w), np.uint8)
    for t in range(n_frames):
        img, mask = (background[t] if background.ndim == 4 else background).copy(), masks[t]
        for i in order[t]:
            if not visible[i][t]:
                continue
            parts = [x[i][t] for x in body]
            _fill(img, *parts, caps[i], colours[i][t], cv2.LINE_AA)
            _fill(mask, *parts, caps[i], 255, cv2.LINE_8)
            if big[i][t]:
                _fill(img, *[x[i][t] for x in glow], caps[i], glows[i][t], cv2.LINE_AA)
        frames[t] = img
    return frames, masks.astype(bool)


def film(clean: np.ndarray, effects: CameraEffects, rng: np.random.Generator) -> np.ndarray:
    """Add the camera's flicker and noise to clean frames."""
    return np.stack([effects.apply(f, t, rng) for t, f in enumerate(clean)])
