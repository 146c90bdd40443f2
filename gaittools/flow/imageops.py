"""Per-warp image operations of TV-L1: gradients, bicubic warping, median filtering.

They run once per warp or outer iteration, not per inner iteration, so plain batched torch is
fast enough on both CPU and GPU; each mirrors the OpenCV call the reference solver makes
(centredGradient, remap INTER_CUBIC with a zero border, medianBlur with a replicated border).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gaittools.flow.selection import median_select

#: Keys' cubic convolution parameter used by OpenCV's INTER_CUBIC.
CUBIC_A = -0.75


def centred_gradient(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred differences of (B, H, W) images; one-sided halves at the borders.

    OpenCV's border rule 0.5 * (I[1] - I[0]) is exactly a centred difference over a
    replicated border, which is how it is computed here.
    """
    padded = F.pad(images[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    dx = 0.5 * (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2])
    dy = 0.5 * (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1])
    return dx, dy


def _cubic_weights(frac: torch.Tensor) -> list[torch.Tensor]:
    """The four Keys weights (a = -0.75) for taps at -1, 0, 1, 2 around the sample."""
    a = CUBIC_A
    t0 = frac + 1
    w0 = ((a * t0 - 5 * a) * t0 + 8 * a) * t0 - 4 * a
    w1 = ((a + 2) * frac - (a + 3)) * frac * frac + 1
    t2 = 1 - frac
    w2 = ((a + 2) * t2 - (a + 3)) * t2 * t2 + 1
    w3 = 1 - w0 - w1 - w2
    return [w0, w1, w2, w3]


def _split_positions(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer cell and fraction of sample positions.

    OpenCV 4.x quantised remap positions to 1/32 pixel; OpenCV 5 (installed here, checked by
    tests/test_flow_tvl1.py against cv2.remap) samples at the exact position, as done here.
    """
    cell = torch.floor(pos)
    return cell.to(torch.int64), pos - cell


def remap_cubic(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample (B, C, H, W) images at x + flow with bicubic taps; outside the image reads 0.

    The zero border is OpenCV's default for remap and matters: near the border the data term
    sees dark pixels, which the thresholding step then limits, and matching OpenCV there keeps
    the two backends within a tenth of a pixel.
    """
    batch, channels, height, width = images.shape
    xs = torch.arange(width, device=images.device, dtype=torch.float32)
    ys = torch.arange(height, device=images.device, dtype=torch.float32)[:, None]
    cell_x, frac_x = _split_positions(xs + flow[:, 0])
    cell_y, frac_y = _split_positions(ys + flow[:, 1])
    weights_x = _cubic_weights(frac_x)
    weights_y = _cubic_weights(frac_y)
    flat = images.reshape(batch, channels, height * width)
    out = torch.zeros_like(images)
    for j in range(4):
        row = cell_y + (j - 1)
        row_ok = (row >= 0) & (row < height)
        row_base = row.clamp(0, height - 1) * width
        row_sum = torch.zeros_like(images)
        for i in range(4):
            col = cell_x + (i - 1)
            ok = row_ok & (col >= 0) & (col < width)
            index = (row_base + col.clamp(0, width - 1)).reshape(batch, 1, height * width)
            taps = torch.gather(flat, 2, index.expand(batch, channels, height * width))
            weight = torch.where(ok, weights_x[i], torch.zeros_like(weights_x[i]))
            row_sum += taps.reshape(batch, channels, height, width) * weight[:, None]
        out += row_sum * weights_y[j][:, None]
    return out


def median_filter(flow: torch.Tensor, kernel: int) -> torch.Tensor:
    """k x k median of each (H, W) plane of a (B, C, H, W) tensor over a replicated border.

    On the CPU, for k = 3 or 5, this is OpenCV's medianBlur itself (what DualTVL1 calls, and
    ~100x faster than torch here); elsewhere it is :func:`median_filter_torch`.
    """
    if kernel <= 1:
        return flow
    if flow.device.type == "cpu" and kernel in (3, 5) and flow.dtype == torch.float32:
        return _median_filter_opencv(flow, kernel)
    return median_filter_torch(flow, kernel)


def _median_filter_opencv(flow: torch.Tensor, kernel: int) -> torch.Tensor:
    import cv2

    planes = flow.detach().contiguous().numpy().reshape(-1, *flow.shape[-2:])
    out = np.stack([cv2.medianBlur(plane, kernel) for plane in planes])
    return torch.from_numpy(out.reshape(flow.shape))


def median_filter_torch(flow: torch.Tensor, kernel: int) -> torch.Tensor:
    """The same median in plain torch (any device): forgetful selection over shifted views."""
    if kernel <= 1:
        return flow
    radius = kernel // 2
    height, width = flow.shape[-2:]
    padded = F.pad(flow, (radius, radius, radius, radius), mode="replicate")
    views = [padded[..., i:i + height, j:j + width] for i in range(kernel) for j in range(kernel)]
    return median_select(views, torch.minimum, torch.maximum)
