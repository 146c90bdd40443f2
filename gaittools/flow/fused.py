"""Fused TV-L1 inner iterations and median filter as Triton kernels (CUDA).

Why: the hot loop of TV-L1 is a dozen elementwise passes per iteration; in eager torch each
pass reads and writes whole planes. Here one iteration is two kernels, each touching every
plane once:

* ``_primal_kernel``: thresholding step, divergence of p and the new u (in place), and each
  block's sum of the pair's squared update in ``partial[pair, block]``;
* ``_dual_kernel``: forward gradient of the new u and Chambolle's dual step (p in place); its
  first block of each pair also sums ``partial[pair, :]`` into ``err[step + 1, pair]``.

The stopping error is reduced in a fixed order (block sums, then the blocks in index order), not
with a float ``atomic_add``, whose order changes from run to run: a pair near its threshold
would otherwise stop at different iterations, and give different flow, on identical input.
``step`` and ``n_pairs`` are not specialised on (``do_not_specialize``): Triton would compile a
new kernel for step 1 and for every multiple of 16, and again as the running batch shrinks.

Both read ``err[step, pair]`` first and do nothing (all loads and stores masked off) for a pair
that has stopped: convergence costs no host sync and a stopped pair costs no memory traffic.
u is updated in place safely because the primal step reads only its own pixel of u, and p
because the dual step reads only its own pixel of p.

This module imports triton; import it lazily (``tvl1_torch.pick_engine`` does). The plain-torch
definition is ``tvl1_torch.primal_dual_step`` and ``imageops.median_filter_torch``, which
``tests/test_flow_fused.py`` compares these kernels against (on CUDA, or on the CPU under
Triton's interpreter, ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from gaittools.flow.params import TVL1Params

#: Same guard as the reference (FLT_EPSILON), see ``tvl1_torch.primal_dual_step``.
GRAD_EPS = 1.1920928955078125e-07
BLOCK = 1024
MEDIAN_BLOCK = 64
#: Inner iterations between the (rare) host checks that every pair has stopped.
SYNC_EVERY = 10


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def unavailable_reason(device: torch.device, params: TVL1Params) -> str | None:
    """Why the fused engine cannot run here, or None when it can."""
    if device.type != "cuda" and not _interpreted():
        return f"it needs a CUDA device (got {device})"
    if params.gamma != 0:
        return "it implements gamma = 0 only"
    if params.median_filtering > 1 and params.median_filtering ** 2 > 64:
        return f"its median kernel handles up to 7x7 (got {params.median_filtering})"
    return None


def check_frame_size(height: int, width: int) -> None:
    """Pixel blocks go on grid axis 1, which CUDA limits to 65535 blocks."""
    if triton.cdiv(height * width, MEDIAN_BLOCK) > 65535:
        raise ValueError(f"frames of {width}x{height} are too large for the fused kernels "
                         f"(at most {65535 * MEDIAN_BLOCK} pixels); use engine='reference'")


@triton.jit(do_not_specialize=["step", "n_pairs"])
def _primal_kernel(u_ptr, p_ptr, data_ptr, err_ptr, part_ptr, step, n_pairs, n_blocks, height, width,
                   threshold, l_t, theta, grad_eps, BLOCK: tl.constexpr):
    pair = tl.program_id(0)  # pairs on axis 0: its limit is 2**31 - 1, axis 1's is 65535
    pid = tl.program_id(1)
    area = height * width
    running = tl.load(err_ptr + step * n_pairs + pair) > threshold
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    live = offs < tl.where(running, area, 0)  # a stopped pair touches no memory
    x = offs % width
    y = offs // width
    has_left = live & (x > 0)
    has_up = live & (y > 0)
    u_base = u_ptr + pair.to(tl.int64) * 2 * area
    p_base = p_ptr + pair.to(tl.int64) * 4 * area
    d_base = data_ptr + pair.to(tl.int64) * 4 * area

    u1 = tl.load(u_base + offs, mask=live, other=0.0)
    u2 = tl.load(u_base + area + offs, mask=live, other=0.0)
    ix = tl.load(d_base + offs, mask=live, other=0.0)
    iy = tl.load(d_base + area + offs, mask=live, other=0.0)
    rho_c = tl.load(d_base + 2 * area + offs, mask=live, other=0.0)
    grad = tl.load(d_base + 3 * area + offs, mask=live, other=0.0)

    rho = rho_c + (ix * u1 + iy * u2)
    coeff = -rho / tl.maximum(grad, grad_eps)
    coeff = tl.minimum(tl.maximum(coeff, -l_t), l_t)

    p11 = tl.load(p_base + offs, mask=live, other=0.0)
    p11_left = tl.load(p_base + offs - 1, mask=has_left, other=0.0)
    p12 = tl.load(p_base + area + offs, mask=live, other=0.0)
    p12_up = tl.load(p_base + area + offs - width, mask=has_up, other=0.0)
    p21 = tl.load(p_base + 2 * area + offs, mask=live, other=0.0)
    p21_left = tl.load(p_base + 2 * area + offs - 1, mask=has_left, other=0.0)
    p22 = tl.load(p_base + 3 * area + offs, mask=live, other=0.0)
    p22_up = tl.load(p_base + 3 * area + offs - width, mask=has_up, other=0.0)

    new1 = (u1 + coeff * ix) + theta * ((p11 - p11_left) + (p12 - p12_up))
    new2 = (u2 + coeff * iy) + theta * ((p21 - p21_left) + (p22 - p22_up))
    change = (new1 - u1) * (new1 - u1) + (new2 - u2) * (new2 - u2)
    change = tl.where(live, change, 0.0)
    tl.store(u_base + offs, new1, mask=live)
    tl.store(u_base + area + offs, new2, mask=live)
    tl.store(part_ptr + pair.to(tl.int64) * n_blocks + pid, tl.sum(change, axis=0))


@triton.jit(do_not_specialize=["step", "n_pairs"])
def _dual_kernel(u_ptr, p_ptr, err_ptr, part_ptr, step, n_pairs, n_blocks, height, width, threshold, taut,
                 BLOCK: tl.constexpr, BLOCKS: tl.constexpr):
    pair = tl.program_id(0)  # pairs on axis 0: its limit is 2**31 - 1, axis 1's is 65535
    pid = tl.program_id(1)
    area = height * width
    running = tl.load(err_ptr + step * n_pairs + pair) > threshold
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    live = offs < tl.where(running, area, 0)  # a stopped pair touches no memory
    x = offs % width
    y = offs // width
    has_right = live & (x < width - 1)
    has_down = live & (y < height - 1)
    u_base = u_ptr + pair.to(tl.int64) * 2 * area
    p_base = p_ptr + pair.to(tl.int64) * 4 * area

    u1 = tl.load(u_base + offs, mask=live, other=0.0)
    u1x = tl.where(has_right, tl.load(u_base + offs + 1, mask=has_right, other=0.0) - u1, 0.0)
    u1y = tl.where(has_down, tl.load(u_base + offs + width, mask=has_down, other=0.0) - u1, 0.0)
    u2 = tl.load(u_base + area + offs, mask=live, other=0.0)
    u2x = tl.where(has_right, tl.load(u_base + area + offs + 1, mask=has_right, other=0.0) - u2, 0.0)
    u2y = tl.where(has_down, tl.load(u_base + area + offs + width, mask=has_down, other=0.0) - u2,
                   0.0)
    norm1 = 1.0 + taut * tl.sqrt_rn(u1x * u1x + u1y * u1y)
    norm2 = 1.0 + taut * tl.sqrt_rn(u2x * u2x + u2y * u2y)

    p11 = tl.load(p_base + offs, mask=live, other=0.0)
    p12 = tl.load(p_base + area + offs, mask=live, other=0.0)
    p21 = tl.load(p_base + 2 * area + offs, mask=live, other=0.0)
    p22 = tl.load(p_base + 3 * area + offs, mask=live, other=0.0)
    tl.store(p_base + offs, (p11 + taut * u1x) / norm1, mask=live)
    tl.store(p_base + area + offs, (p12 + taut * u1y) / norm1, mask=live)
    tl.store(p_base + 2 * area + offs, (p21 + taut * u2x) / norm2, mask=live)
    tl.store(p_base + 3 * area + offs, (p22 + taut * u2y) / norm2, mask=live)
    if pid == 0:  # the pair's error, summed over blocks in index order (deterministic)
        blocks = tl.arange(0, BLOCKS)
        parts = tl.load(part_ptr + pair.to(tl.int64) * n_blocks + blocks, mask=blocks < n_blocks, other=0.0)
        tl.store(err_ptr + (step + 1) * n_pairs + pair, tl.sum(parts, axis=0))


@triton.jit
def _median_kernel(src_ptr, dst_ptr, height, width, KERNEL: tl.constexpr, SLOTS: tl.constexpr,
                   BLOCK: tl.constexpr):
    """k x k median with a replicated border: drop the smallest tap k*k // 2 times.

    The taps sit in a (BLOCK, SLOTS) tile padded with +inf; each round removes one occurrence
    of the row minimum, so the minimum left after k*k // 2 rounds is the median.
    """
    plane = tl.program_id(0)
    pid = tl.program_id(1)
    area = height * width
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    inside = offs < area
    x = offs % width
    y = offs // width
    slot = tl.arange(0, SLOTS)
    dy = slot // KERNEL - KERNEL // 2
    dx = slot % KERNEL - KERNEL // 2
    row = tl.minimum(tl.maximum(y[:, None] + dy[None, :], 0), height - 1)
    col = tl.minimum(tl.maximum(x[:, None] + dx[None, :], 0), width - 1)
    real = (slot < KERNEL * KERNEL)[None, :] & inside[:, None]
    base = src_ptr + plane.to(tl.int64) * area
    values = tl.load(base + row * width + col, mask=real, other=float("inf"))
    for _ in tl.static_range((KERNEL * KERNEL) // 2):
        lowest = tl.argmin(values, axis=1)
        values = tl.where(slot[None, :] == lowest[:, None], float("inf"), values)
    median = tl.min(values, axis=1)
    tl.store(dst_ptr + plane.to(tl.int64) * area + offs, median, mask=inside)


class FusedEngine:
    """The inner loop as Triton kernels; same contract as ``tvl1_torch.ReferenceEngine``."""

    name = "fused"

    def median(self, flow: torch.Tensor, kernel: int) -> torch.Tensor:
        if kernel <= 1:
            return flow
        src = flow.contiguous()
        batch, channels, height, width = src.shape
        check_frame_size(height, width)
        out = torch.empty_like(src)
        slots = 1 << math.ceil(math.log2(kernel * kernel))
        grid = (batch * channels, triton.cdiv(height * width, MEDIAN_BLOCK))
        _median_kernel[grid](src, out, height, width, KERNEL=kernel, SLOTS=slots,
                             BLOCK=MEDIAN_BLOCK)
        return out

    def iterate(self, u: torch.Tensor, p: torch.Tensor, data: torch.Tensor, threshold: float,
                n_iter: int, params: TVL1Params) -> torch.Tensor:
        _check_inputs(u, p, data)
        batch = u.shape[0]
        err = torch.zeros(n_iter + 1, batch, dtype=torch.float32, device=u.device)
        err[0] = math.inf
        partial = torch.zeros(batch, _n_blocks(u), dtype=torch.float32, device=u.device)
        for step in range(n_iter):
            if step and step % SYNC_EVERY == 0 and not bool((err[step] > threshold).any()):
                break  # every pair stopped; later rows stay 0, so all report converged
            _launch_step(u, p, data, err, partial, step, threshold, params)
        return err[n_iter] > threshold


def _check_inputs(u: torch.Tensor, p: torch.Tensor, data: torch.Tensor) -> None:
    if u.shape[1] != 2:
        raise ValueError("the fused engine implements gamma = 0 (two flow components) only")
    for name, tensor in (("u", u), ("p", p), ("data", data)):
        if not tensor.is_contiguous() or tensor.dtype != torch.float32:
            raise ValueError(f"fused engine needs contiguous float32 {name}")


def _n_blocks(u: torch.Tensor) -> int:
    return triton.cdiv(u.shape[2] * u.shape[3], BLOCK)


def _launch_step(u: torch.Tensor, p: torch.Tensor, data: torch.Tensor, err: torch.Tensor, partial: torch.Tensor,
                 step: int, threshold: float, params: TVL1Params) -> None:
    """One inner iteration: the primal then the dual kernel, no host work but the launches."""
    batch, _, height, width = u.shape
    n_blocks = partial.shape[1]
    grid = (batch, n_blocks)
    _primal_kernel[grid](u, p, data, err, partial, step, batch, n_blocks, height, width, threshold,
                         params.lambda_ * params.theta, params.theta, GRAD_EPS, BLOCK=BLOCK)
    _dual_kernel[grid](u, p, err, partial, step, batch, n_blocks, height, width, threshold,
                       params.tau / params.theta, BLOCK=BLOCK, BLOCKS=triton.next_power_of_2(n_blocks))


def graph_bucket(n_pairs: int) -> int:
    """Pairs a graph is captured for: the next power of two (few graphs for any pool size)."""
    return 1 << max(0, (n_pairs - 1).bit_length())


class GraphBlock:
    """A block of ``n_iter`` inner iterations on static buffers of ``bucket`` pairs.

    Why: at 64x64 a block is 2 x 30 launches of tiny kernels, so its time is launch overhead;
    replaying a captured CUDA graph submits them at once. A graph replays fixed work on fixed
    addresses, so the pairs are copied into static buffers, padded to the bucket: a padded
    pair starts stopped (``err[0] = 0``), so the kernels skip it and it costs no memory
    traffic. No host check breaks the loop early (a capture cannot sync); stopped pairs cost
    nothing anyway. ``capture=False`` runs the same launches eagerly (the Triton interpreter
    on a CPU tests this class that way; only a GPU can capture).
    """

    def __init__(self, bucket: int, height: int, width: int, n_iter: int, threshold: float, params: TVL1Params,
                 device: torch.device, capture: bool = True):
        zeros = dict(dtype=torch.float32, device=device)
        self.bucket, self.n_iter, self.threshold, self.params = bucket, n_iter, threshold, params
        self.u = torch.zeros(bucket, 2, height, width, **zeros)
        self.p = torch.zeros(bucket, 2, 2, height, width, **zeros)
        self.data = torch.zeros(bucket, 4, height, width, **zeros)
        self.err = torch.zeros(n_iter + 1, bucket, **zeros)
        self.partial = torch.zeros(bucket, _n_blocks(self.u), **zeros)
        self.graph = None
        if capture:
            self._capture()

    def _launch(self) -> None:
        for step in range(self.n_iter):
            _launch_step(self.u, self.p, self.data, self.err, self.partial, step, self.threshold, self.params)

    def _capture(self) -> None:
        # Warm up on a side stream first: Triton compiles and loads its kernels on first use,
        # which a capture forbids (torch.cuda.graphs docs: warm up before capturing).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._launch()  # err[0] is 0: every pair stopped, so this only compiles
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):  # the launches allocate nothing: no pool to share
            self._launch()

    def run(self, u: torch.Tensor, p: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        """``FusedEngine.iterate`` on these pairs (at most ``bucket``), in place on u and p."""
        n = u.shape[0]
        self.u[:n].copy_(u)
        self.p[:n].copy_(p)
        self.data[:n].copy_(data)
        self.err[0, :n] = math.inf
        self.err[0, n:] = 0.0
        if self.graph is not None:
            self.graph.replay()
        else:
            self._launch()
        u.copy_(self.u[:n])
        p.copy_(self.p[:n])
        return self.err[self.n_iter, :n] > self.threshold


class GraphedFusedEngine(FusedEngine):
    """The fused engine with each block of inner iterations replayed from a CUDA graph.

    Behind a flag (``pick_engine(..., cuda_graphs=True)``, ``compute-flow --cuda-graphs``)
    until ``benchmarks/gpu_suite.py`` has measured it against the plain fused engine. One
    graph per (pool size bucket, level size); the flow is the fused engine's, bit for bit
    (the same kernels in the same order; padded pairs never touch the others). Memory: each
    graph keeps static buffers for its bucket (at most twice the pairs of the largest tick).
    """

    name = "fused-graphs"

    def __init__(self, capture: bool = True):
        self.capture = capture
        self.blocks: dict[tuple, GraphBlock] = {}

    def iterate(self, u: torch.Tensor, p: torch.Tensor, data: torch.Tensor, threshold: float,
                n_iter: int, params: TVL1Params) -> torch.Tensor:
        _check_inputs(u, p, data)
        _, _, height, width = u.shape
        key = (graph_bucket(u.shape[0]), height, width, n_iter, threshold, params)
        block = self.blocks.get(key)
        if block is None:
            block = self.blocks[key] = GraphBlock(key[0], height, width, n_iter, threshold, params, u.device,
                                                  self.capture)
        return block.run(u, p, data)
