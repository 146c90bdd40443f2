"""Batched dual TV-L1 optical flow in PyTorch, following OpenCV's DualTVL1OpticalFlow.

The solver is OpenCV's (Zach-Pock-Bischof with Wedel's three-case thresholding): a pyramid of
``nscales`` levels; per level ``warps`` linearisations of I1 about the current flow; per warp
up to ``outer_iterations`` x ``inner_iterations`` primal-dual iterations with a median filter on
the flow before each outer iteration; a warp stops when the summed squared flow update drops to
``epsilon**2 * area``.

Each pair in a batch is solved independently and stops independently: inside an outer
iteration a per-pair ``running`` flag lives on the device and masks the updates (no host sync);
the schedule of levels, warps and outer iterations is ``stream.TVL1Stream``'s, which ``tvl1``
feeds one batch (and ``pipelines.flow_batches`` a queue, refilling finished pairs' slots), so
converged pairs stop costing work and there is one implementation of the algorithm.

Two engines run the inner iterations and the median filter: :class:`ReferenceEngine` (plain
torch, any device, the definition) and ``fused.FusedEngine`` (Triton kernels, CUDA only), which
the tests compare against the reference.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from gaittools.flow.imageops import median_filter
from gaittools.flow.params import TVL1Params
from gaittools.flow.stream import InnerEngine, TVL1Stream

#: OpenCV's guard against dividing by a vanishing image gradient (FLT_EPSILON).
GRAD_EPS = float(np.finfo(np.float32).eps)


def primal_dual_step(u: torch.Tensor, p: torch.Tensor, data: torch.Tensor, params: TVL1Params
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One inner iteration for a batch; returns new u, new p and each pair's squared update.

    u is (B, K, H, W) with K = 2 (flow) or 3 (flow and OpenCV's illumination term u3 when
    gamma > 0); p is (B, K, 2, H, W), the x and y dual variables of each component.

    The three-case thresholding step is written as a clamp: the step coefficient is
    -rho / |grad I|^2 limited to [-lambda*theta, lambda*theta], which is what the three cases
    select. Where |grad I|^2 <= FLT_EPSILON OpenCV steps 0 unless |rho| exceeds the bound;
    the clamp may step instead, but by at most lambda*theta*sqrt(FLT_EPSILON) < 2e-5 px.
    """
    l_t = params.lambda_ * params.theta
    taut = params.tau / params.theta
    ix, iy, rho_c, grad = data.unbind(1)
    rho = rho_c + (ix * u[:, 0] + iy * u[:, 1])
    if u.shape[1] == 3:
        rho = rho + params.gamma * u[:, 2]
    coeff = (-rho / grad.clamp_min(GRAD_EPS)).clamp_(-l_t, l_t)
    v = u.clone()
    v[:, 0] += coeff * ix
    v[:, 1] += coeff * iy
    if u.shape[1] == 3:
        v[:, 2] += coeff * params.gamma
    u_new = v.add_(_divergence(p), alpha=params.theta)
    err = (u_new - u).square_().sum(dim=(1, 2, 3))
    grads = _forward_gradient(u_new)
    norm = torch.hypot(grads[:, :, 0], grads[:, :, 1]).mul_(taut).add_(1)
    p_new = grads.mul_(taut).add_(p).div_(norm[:, :, None])
    return u_new, p_new, err


def _divergence(p: torch.Tensor) -> torch.Tensor:
    """Backward-difference divergence of (B, K, 2, H, W) duals, p taken as 0 before the image."""
    px, py = p[:, :, 0], p[:, :, 1]
    div = px.clone()
    div[..., 1:] -= px[..., :-1]
    div_y = py.clone()
    div_y[..., 1:, :] -= py[..., :-1, :]
    return div.add_(div_y)


def _forward_gradient(u: torch.Tensor) -> torch.Tensor:
    """Forward differences (B, K, 2, H, W) of (B, K, H, W), zero in the last column/row."""
    grads = u.new_zeros(u.shape[:2] + (2,) + u.shape[2:])
    torch.sub(u[..., 1:], u[..., :-1], out=grads[:, :, 0, :, :-1])
    torch.sub(u[..., 1:, :], u[..., :-1, :], out=grads[:, :, 1, :-1, :])
    return grads


class ReferenceEngine:
    """The plain-torch definition of the hot loop; runs anywhere torch does."""

    name = "reference"

    def median(self, flow: torch.Tensor, kernel: int) -> torch.Tensor:
        return median_filter(flow, kernel)

    def iterate(self, u: torch.Tensor, p: torch.Tensor, data: torch.Tensor, threshold: float,
                n_iter: int, params: TVL1Params) -> torch.Tensor:
        running = torch.ones(u.shape[0], dtype=torch.bool, device=u.device)
        on_cpu = u.device.type == "cpu"
        check_every = 1 if on_cpu else 10  # a host check is free on the CPU, a sync on a GPU
        for step in range(n_iter):
            if step % check_every == 0 and not bool(running.any()):
                break
            u_new, p_new, err = primal_dual_step(u, p, data, params)
            if on_cpu and bool(running.all()):
                u.copy_(u_new)
                p.copy_(p_new)
            else:
                mask = running[:, None, None, None]
                u.copy_(torch.where(mask, u_new, u))
                p.copy_(torch.where(mask[..., None], p_new, p))
            running = running & (err > threshold)
        return running


def _as_batch(images, name: str) -> torch.Tensor:
    """(B, H, W) float32 tensor from a tensor or array of (B, H, W) or (H, W) on 0-255."""
    tensor = torch.as_tensor(images) if not isinstance(images, torch.Tensor) else images
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim != 3:
        raise ValueError(f"{name} must be (B, H, W) or (H, W), got shape {tuple(tensor.shape)}")
    if tensor.shape[-1] < 1 or tensor.shape[-2] < 1 or tensor.shape[0] < 1:
        raise ValueError(f"{name} is empty: shape {tuple(tensor.shape)}")
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must be real intensities on 0-255, got {tensor.dtype}")
    return tensor.to(torch.float32).contiguous()


def pick_engine(device: torch.device, params: TVL1Params, engine: str = "auto",
                cuda_graphs: bool = False) -> InnerEngine:
    """The engine for ``engine`` = "reference", "fused", or "auto" (fused on CUDA if it can).

    ``cuda_graphs``: the fused engine replays each block of inner iterations from a captured
    CUDA graph (``fused.GraphedFusedEngine``, named "fused-graphs"). It needs CUDA and the
    fused engine: refused on other devices and with "reference"; with "auto" falling back to
    the reference (warned), the reference runs, and its name says so.
    """
    if engine not in ("auto", "reference", "fused"):
        raise ValueError(f"unknown engine {engine!r}: use auto, reference or fused")
    if cuda_graphs and (device.type != "cuda" or engine == "reference"):
        why = f"a CUDA device (got {device})" if device.type != "cuda" else "the fused engine (got reference)"
        raise RuntimeError(f"CUDA graphs of the TV-L1 inner loop need {why}")
    if engine == "reference" or (engine == "auto" and device.type != "cuda"):
        return ReferenceEngine()
    reason = _fused_unavailable(device, params)
    if reason is None:
        from gaittools.flow import fused

        return fused.GraphedFusedEngine() if cuda_graphs else fused.FusedEngine()
    if engine == "fused":
        raise RuntimeError(f"the fused TV-L1 engine cannot run: {reason}")
    warnings.warn(f"TV-L1 falls back to the plain-torch engine on {device}: {reason}",
                  RuntimeWarning, stacklevel=3)
    return ReferenceEngine()


def _fused_unavailable(device: torch.device, params: TVL1Params) -> str | None:
    try:
        from gaittools.flow import fused  # lazy: imports triton
    except ImportError as exc:
        return f"triton cannot be imported ({exc})"
    return fused.unavailable_reason(device, params)


def tvl1(I0, I1, params: TVL1Params | None = None, *, engine: str | InnerEngine = "auto") -> torch.Tensor:
    """Dual TV-L1 flow from I0 to I1 for a batch of gray frame pairs.

    I0 and I1 are (B, H, W) (or (H, W)) tensors or arrays, uint8 or float on the 0-255 scale,
    on the CPU or a CUDA device. Returns float32 flow (B, 2, H, W) on the same device:
    channel 0 is dx, channel 1 is dy, so that I1(x + flow) ~ I0(x).
    ``engine``: "auto" (fused Triton kernels on CUDA, the reference elsewhere), "reference"
    or "fused"; or an engine from ``pick_engine`` (a caller that must know, and report, which
    engine ran picks it once: "auto" may fall back to the reference with a warning).
    """
    params = params or TVL1Params()
    frames0 = _as_batch(I0, "I0")
    frames1 = _as_batch(I1, "I1")
    if frames0.shape != frames1.shape:
        raise ValueError(f"I0 and I1 differ in shape: {tuple(frames0.shape)} vs {tuple(frames1.shape)}")
    if frames0.device != frames1.device:
        raise ValueError(f"I0 is on {frames0.device} but I1 is on {frames1.device}")
    runner = pick_engine(frames0.device, params, engine) if isinstance(engine, str) else engine
    batch, height, width = frames0.shape
    stream = TVL1Stream(params, runner, frames0.device, capacity=batch * height * width)
    flow = torch.empty(batch, 2, height, width, device=frames0.device)
    with torch.no_grad():
        stream.admit(frames0, frames1, list(range(batch)))
        while len(stream):
            done = stream.tick()
            if done:  # one copy per tick, not per pair
                flow[[index for index, _ in done]] = torch.stack([pair_flow for _, pair_flow in done])
    return flow
