"""Middlebury flow colour coding (Baker et al., IJCV 2011): hue = direction, saturation = speed.

The 55-colour wheel runs red -> yellow -> green -> cyan -> blue -> magenta -> red with segment
lengths 15, 6, 4, 11, 13, 6, chosen so that equal angle steps look like equal colour steps.
Flow pointing right (+x) is red, zero flow is white, and flow at the normalising magnitude is
fully saturated; beyond it colours are darkened to 75%.
"""

from __future__ import annotations

import numpy as np

from gaittools.flow.flo import known_mask

_SEGMENTS = ((15, (255, 0, 0), (255, 255, 0)),     # red -> yellow
             (6, (255, 255, 0), (0, 255, 0)),      # yellow -> green
             (4, (0, 255, 0), (0, 255, 255)),      # green -> cyan
             (11, (0, 255, 255), (0, 0, 255)),     # cyan -> blue
             (13, (0, 0, 255), (255, 0, 255)),     # blue -> magenta
             (6, (255, 0, 255), (255, 0, 0)))      # magenta -> red


def colour_wheel() -> np.ndarray:
    """(55, 3) float RGB wheel on 0-255, each segment ramping linearly (floored like the C code)."""
    rows = []
    for length, start, end in _SEGMENTS:
        steps = np.arange(length)[:, None]
        start_arr, end_arr = np.array(start, float), np.array(end, float)
        rows.append(start_arr + np.floor(255 * steps / length) / 255 * (end_arr - start_arr))
    return np.concatenate(rows)


def flow_to_color(flow, max_flow: float | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) picture of a (2, H, W) flow; unknown/NaN pixels are black.

    ``max_flow`` is the magnitude shown fully saturated; by default the largest known
    magnitude in this flow (so the picture uses the whole wheel).
    """
    array = np.asarray(flow, dtype=np.float64)
    if array.ndim != 3 or array.shape[0] != 2:
        raise ValueError(f"flow must be (2, H, W), got shape {array.shape}")
    known = known_mask(array)
    u = np.where(known, array[0], 0.0)
    v = np.where(known, array[1], 0.0)
    radius = np.sqrt(u * u + v * v)
    scale = max_flow if max_flow is not None else (radius.max() if radius.size else 0.0)
    scale = scale if scale > 0 else 1.0
    u, v, radius = u / scale, v / scale, radius / scale
    wheel = colour_wheel()
    n_colours = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi
    position = (angle + 1) / 2 * (n_colours - 1)
    k0 = np.floor(position).astype(int)
    k1 = (k0 + 1) % n_colours
    frac = (position - k0)[..., None]
    colour = ((1 - frac) * wheel[k0] + frac * wheel[k1]) / 255
    inside = (radius <= 1)[..., None]
    colour = np.where(inside, 1 - radius[..., None] * (1 - colour), colour * 0.75)
    colour = np.where(known[..., None], colour, 0.0)
    return np.clip(np.floor(255 * colour), 0, 255).astype(np.uint8)
