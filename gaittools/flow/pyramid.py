"""The coarse-to-fine image pyramid, sized and interpolated the way OpenCV's resize does it.

Matching OpenCV's DualTVL1 to a tenth of a pixel needs its exact level sizes (rounded, not
floored), its source-pixel mapping (the scale is the requested factor, not the size ratio) and
its clamped bilinear taps. torch's ``interpolate`` differs on the first two, so the resize is
written out here as two separable gathers.
"""

from __future__ import annotations

import math

import torch

#: OpenCV stops building the pyramid once a level would be narrower or shorter than this.
MIN_LEVEL_SIZE = 16


def level_sizes(height: int, width: int, nscales: int, scale_step: float) -> list[tuple[int, int]]:
    """(height, width) of each pyramid level, finest first.

    A level smaller than 16 px in either direction ends the pyramid (it is not used); the
    finest level is always used, however small.
    """
    sizes = [(height, width)]
    for _ in range(1, nscales):
        prev_h, prev_w = sizes[-1]
        h, w = _cv_round(prev_h * scale_step), _cv_round(prev_w * scale_step)
        if h < MIN_LEVEL_SIZE or w < MIN_LEVEL_SIZE:
            break
        sizes.append((h, w))
    return sizes


def _cv_round(value: float) -> int:
    """Round half to even, as OpenCV's saturate_cast<int>(double) does."""
    return int(round(value))


def _linear_taps(n_src: int, n_dst: int, scale: float, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left/right source indices and right weight for each destination pixel along one axis."""
    dst = torch.arange(n_dst, dtype=torch.float64, device=device)
    pos = ((dst + 0.5) * scale - 0.5).to(torch.float32)
    left = torch.floor(pos)
    frac = pos - left
    left = left.to(torch.int64)
    below = left < 0
    frac = torch.where(below, torch.zeros_like(frac), frac)
    left = torch.where(below, torch.zeros_like(left), left)
    beyond = left >= n_src - 1
    frac = torch.where(beyond, torch.zeros_like(frac), frac)
    left = torch.where(beyond, torch.full_like(left, n_src - 1), left)
    right = torch.clamp(left + 1, max=n_src - 1)
    return left, right, frac


def resize_linear(images: torch.Tensor, size: tuple[int, int],
                  scale: tuple[float, float] | None = None) -> torch.Tensor:
    """Bilinear resize of the last two dims to ``size``, OpenCV INTER_LINEAR style.

    ``scale`` is OpenCV's (fy, fx) when the destination size came from a factor (the pyramid);
    without it the factor is the size ratio (upsampling a flow to the next level).
    """
    src_h, src_w = images.shape[-2:]
    dst_h, dst_w = size
    fy, fx = scale if scale is not None else (dst_h / src_h, dst_w / src_w)
    x0, x1, wx = _linear_taps(src_w, dst_w, 1.0 / fx, images.device)
    y0, y1, wy = _linear_taps(src_h, dst_h, 1.0 / fy, images.device)
    rows = images.index_select(-1, x0) * (1 - wx) + images.index_select(-1, x1) * wx
    wy = wy[:, None]
    return rows.index_select(-2, y0) * (1 - wy) + rows.index_select(-2, y1) * wy


def build_pyramid(images: torch.Tensor, sizes: list[tuple[int, int]], scale_step: float
                  ) -> list[torch.Tensor]:
    """Levels of a (B, H, W) float batch, finest first; each level resizes the one before."""
    levels = [images]
    for size in sizes[1:]:
        levels.append(resize_linear(levels[-1], size, (scale_step, scale_step)))
    return levels


def scaled_epsilon(epsilon: float, height: int, width: int) -> float:
    """OpenCV's stopping threshold on the summed squared update: epsilon**2 * area."""
    return float(epsilon) ** 2 * height * width if math.isfinite(epsilon) else math.inf
