"""The dual TV-L1 schedule as a stream: pairs enter and leave a running solver one by one.

Why: solved as a fixed batch, every pair walks the pyramid with the others, and a pair that
converges early waits for the slowest; the batch takes no new pairs until all are done. One
slow pair then runs alone for most of a batch's steps (seen: 175 of 259), which on a GPU is a
launch of kernels over one pair. Here each pair carries its own place in the schedule, so the
slots of finished pairs are refilled from the queue while slow pairs keep going.

The schedule per pair is OpenCV's DualTVL1 (see ``tvl1_torch``): for each level, coarse to
fine, duals p start at zero; for each of ``warps`` warps the data term is linearised about the
current flow, then up to ``outer_iterations`` outer steps (median filter + a block of
``inner_iterations`` inner iterations) run, the warp ending early when the pair's last update
fell below ``epsilon**2 * area``; after the level the flow is upsampled to the next one.

The stream keeps one *pool* per level size (H, W): the stacked state of the pairs at that level
(u, p, the linearised data, the level's frames) and, on the host, each pair's warp and outer
step. One *tick* runs one outer step, through the engine, on every pair of one pool (whatever
their warp), then moves each pair on: next outer step, next warp (re-linearised), next level
(upsampled flow into the next pool), or out (finished). ``tvl1_torch.tvl1`` is this stream fed
one batch: there is one implementation of the algorithm.

Which pairs enter and which pool ticks (``schedule``). A tick's cost on a GPU is mostly its
launches, whatever the pairs in it, so fewer ticks for the same pair-steps is the aim; where
the device is full, ticks much smaller than its fill are the waste. "cohorts" (the default):
new pairs are admitted together, once a quarter of the capacity is free (``COHORT_FREE``),
and while more pairs are to come the coarsest pool holding at least half as many pairs as the
fullest (``WAVE_SHARE``) ticks. A cohort then walks the pyramid as one wave, and a level's
slow tail is left to wait for the next wave reaching its level instead of running alone.
"eager" admits each freed slot at once and ticks the fullest pool: new pairs start at the
coarsest level one by one, and the fullest-pool rule splits a cohort over the levels, so
launch-bound it takes more ticks than the batch schedule. "batch" (``refill=False``) admits
only into an empty stream: the classic batch solver, kept for comparison. When nothing more
is coming (``drain``, and ``tvl1``'s batch), every schedule ticks the coarsest pool, which lets
late pairs catch up with the pairs ahead and share their ticks; per level that is the longest
pair's steps. A pool left waiting ``STARVE_TICKS`` ticks runs next, so no pair waits for the
end of the input. Each pair's arithmetic does not depend on which others share its tick
(every operation is per pair), so a pair's flow is the same whatever the schedule.

Counted, not timed (``benchmarks/stream_schedule.py``: each pair's convergence recorded with
the real solver, every schedule replayed through this stream), on 447 real CASIA-B silhouette
pairs (nm-01 of subjects 001-009, 64x64, OpenCV's defaults, 19,686 pair-steps) through 64
slots; costs launch-bound / full with a quarter of the slots (tick = max(1, pairs / 16)) /
full with an eighth: batch 1,160 / 1,890 / 2,983; eager 1,328 (+14%) / 1,443 (-24%) / 2,592
(-13%); cohorts 1,035 (-11%) / 1,439 (-24%) / 2,594 (-13%). On a generated mix (5% slow
pairs) cohorts take 41% fewer ticks than batches, eager 25%. With 256 slots cohorts still win
everywhere (-13% launch-bound); with 32 or fewer slots they lose launch-bound (+3% at 32),
since a quarter of so few slots is a small cohort. A GPU holding thousands of 64x64 pairs has
many slots; ``benchmarks/gpu_suite.py`` measures the schedules.

A tick is transactional: it computes on copies and commits only on success, so a tick that
fails (out of memory) can be retried, e.g. in smaller chunks (``max_tick_pairs``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from gaittools.flow.imageops import centred_gradient, remap_cubic
from gaittools.flow.params import TVL1Params
from gaittools.flow.pyramid import build_pyramid, level_sizes, resize_linear, scaled_epsilon


#: A pool that has not run for this many ticks runs next (a bound on any pair's wait).
STARVE_TICKS = 64

#: Admission and pool order (see the module docstring): "cohorts" (the default), "eager", "batch".
SCHEDULES = ("cohorts", "eager", "batch")
DEFAULT_SCHEDULE = "cohorts"
#: "cohorts": new pairs are admitted only when this share of the capacity is free (or none is held).
COHORT_FREE = 0.25
#: "cohorts": while more pairs are to come, the coarsest pool holding at least this share of the
#: fullest pool's pairs ticks; smaller pools (a level's slow tail) wait for the next cohort.
WAVE_SHARE = 0.5


def schedule_name(refill: bool | str) -> str:
    """The schedule a caller's ``refill`` names: True the default, False "batch", or a name."""
    if refill is True:
        return DEFAULT_SCHEDULE
    if refill is False:
        return "batch"
    if refill not in SCHEDULES:
        raise ValueError(f"unknown TV-L1 stream schedule {refill!r}: use one of {', '.join(SCHEDULES)}")
    return refill


class InnerEngine(Protocol):
    """What runs the hot loop: the median filter and a block of inner iterations."""

    #: "reference" or "fused": what actually ran, for the store's attributes and reports.
    name: str

    def median(self, flow: torch.Tensor, kernel: int) -> torch.Tensor:
        """k x k median of each plane of (B, 2, H, W), replicated border."""

    def iterate(self, u: torch.Tensor, p: torch.Tensor, data: torch.Tensor, threshold: float,
                n_iter: int, params: TVL1Params) -> torch.Tensor:
        """Run up to ``n_iter`` iterations in place on u (B, K, H, W) and p (B, K, 2, H, W).

        ``data`` is (B, 4, H, W): I1wx, I1wy, rho_c, |grad I1w|^2. Returns a (B,) bool tensor:
        the pairs whose last update was still above ``threshold`` (not converged).
        """


def linearise(frame0: torch.Tensor, sources: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Warp I1 and its gradient by u; return (B, 4, H, W): I1wx, I1wy, rho_c, |grad|^2."""
    warped = remap_cubic(sources, u[:, :2])
    i1w, ix, iy = warped.unbind(1)
    rho_c = i1w - ix * u[:, 0] - iy * u[:, 1] - frame0
    return torch.stack((ix, iy, rho_c, ix * ix + iy * iy), 1).contiguous()


def outer_step(u: torch.Tensor, p: torch.Tensor, data: torch.Tensor, threshold: float,
               params: TVL1Params, runner: InnerEngine) -> torch.Tensor:
    """Median-filter the flow, then run a block of inner iterations; in place on u and p."""
    if params.median_filtering > 1:
        u[:, :2] = runner.median(u[:, :2].contiguous(), params.median_filtering)
    return runner.iterate(u, p, data, threshold, params.inner_iterations, params)


def level_sources(frame1: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W): I1 and its centred gradient, what each warp of a level samples."""
    grad_x, grad_y = centred_gradient(frame1)
    return torch.stack((frame1, grad_x, grad_y), 1)


@dataclass
class StreamStats:
    """The work a stream did, counted (not timed): what refilling is meant to improve.

    ``ticks``: outer steps run (each a median and a block of inner iterations over one pool);
    ``pair_steps``: pairs summed over ticks (the same for any schedule of the same pairs);
    ``occupancy``: mean over ticks of the share of the capacity that worked in the tick (the
    ticked pairs' pixels, at full size, over the capacity): a batch solver's falls as its
    pairs finish and the slow ones run on alone; a refilled stream's stays up.
    ``tick_pairs``: how many ticks ran each number of pairs (what ``cost`` prices).
    """

    ticks: int = 0
    pair_steps: int = 0
    pairs_in: int = 0
    pairs_out: int = 0
    occupancy_sum: float = 0.0
    max_held_pixels: int = 0
    tick_pairs: Counter[int] = field(default_factory=Counter)

    def cost(self, full_pairs: float | None = None) -> float:
        """The ticks priced by a device model: a tick of up to ``full_pairs`` pairs costs 1
        (its launches), a larger one proportionally more (the device is full); None: every
        tick costs 1 (launch-bound), i.e. the tick count."""
        if full_pairs is None:
            return float(self.ticks)
        return sum(count * max(1.0, pairs / full_pairs) for pairs, count in self.tick_pairs.items())

    @property
    def pairs_per_tick(self) -> float:
        return self.pair_steps / self.ticks if self.ticks else 0.0

    @property
    def occupancy(self) -> float:
        return self.occupancy_sum / self.ticks if self.ticks else 0.0

    def merged(self, other: StreamStats) -> StreamStats:
        """Both streams' counts together (one stream per device of a run)."""
        return StreamStats(self.ticks + other.ticks, self.pair_steps + other.pair_steps,
                           self.pairs_in + other.pairs_in, self.pairs_out + other.pairs_out,
                           self.occupancy_sum + other.occupancy_sum,
                           max(self.max_held_pixels, other.max_held_pixels), self.tick_pairs + other.tick_pairs)

    def as_dict(self) -> dict[str, float]:
        return {"ticks": self.ticks, "pair_steps": self.pair_steps, "pairs_per_tick": round(self.pairs_per_tick, 2),
                "occupancy": round(self.occupancy, 3)}


@dataclass
class _Pool:
    """The pairs at one level size, stacked; counters on the host."""

    height: int
    width: int
    u: torch.Tensor  # (N, K, H, W)
    p: torch.Tensor  # (N, K, 2, H, W)
    data: torch.Tensor  # (N, 4, H, W)
    frame0: torch.Tensor  # (N, H, W)
    sources: torch.Tensor  # (N, 3, H, W)
    level: np.ndarray  # (N,) pyramid level index (0 = finest)
    warp: np.ndarray  # (N,)
    outer: np.ndarray  # (N,) outer steps done in the current warp
    pairs: list[_PairInfo] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)


@dataclass
class _PairInfo:
    """What stays with a pair from admission to exit."""

    tag: Hashable
    pixels: int  # finest-level area: what the pair holds of the capacity
    pyramid0: list[torch.Tensor]  # (H_l, W_l) per level, finest first; levels passed are dropped
    pyramid1: list[torch.Tensor]


class StreamDataError(ValueError):
    """A tick failed on its pairs' data; they were dropped from the stream (``tags``)."""

    def __init__(self, tags: list[Hashable], cause: Exception):
        super().__init__(f"{cause} (TV-L1 stream dropped {len(tags)} pairs)")
        self.tags, self.cause = tags, cause


class TVL1Stream:
    """Pairs go in with ``admit``, ``tick`` advances the schedule and returns finished flows.

    ``capacity``: pixels (finest-level area summed over the held pairs) the stream may hold;
    ``room(h, w)`` says how many pairs of that size fit now (one always fits an empty stream).
    ``max_tick_pairs`` caps the pairs of one engine call (a tick runs a pool in chunks).
    ``schedule``: when pairs are admitted (``admissible``) and which pool ticks; one of
    ``SCHEDULES`` (or a ``refill`` bool, see ``schedule_name``).
    """

    def __init__(self, params: TVL1Params, runner: InnerEngine, device: torch.device | str,
                 capacity: int, max_tick_pairs: int | None = None, schedule: bool | str = DEFAULT_SCHEDULE):
        self.params, self.runner = params, runner
        self.schedule = schedule_name(schedule)
        self._admitting = False  # admission opened since the last tick (see ``admissible``)
        self.device = torch.device(device)
        self.capacity = int(capacity)
        self.max_tick_pairs = max_tick_pairs
        self.n_comp = 3 if params.gamma > 0 else 2
        self.pools: dict[tuple[int, int], _Pool] = {}
        self.held_pixels = 0
        self.stats = StreamStats()
        self._last_run: dict[tuple[int, int], int] = {}
        #: Pairs of the pool the last (or failing) tick ran: what a caller halves after running out of memory.
        self.last_tick_pairs = 0

    def __len__(self) -> int:
        return sum(len(pool) for pool in self.pools.values())

    def room(self, height: int, width: int) -> int:
        """Pairs of ``height`` x ``width`` that fit in the free capacity now."""
        free = (self.capacity - self.held_pixels) // (height * width)
        return max(int(free), 0) if self.held_pixels else max(int(free), 1)

    def admissible(self, height: int, width: int) -> int:
        """Pairs of ``height`` x ``width`` the schedule admits now: the room, or 0 if it waits.

        "batch": into a stream that was empty; "eager": whenever there is room; "cohorts": once a
        quarter of the capacity (``COHORT_FREE``) is free, so new pairs enter together. Once open,
        admission stays open (to the room) until the next tick: chunks admitted in between
        fill the stream as one.
        """
        if not self._admitting:
            free = self.capacity - self.held_pixels
            self._admitting = (not self.held_pixels or self.schedule == "eager"
                               or self.schedule == "cohorts" and free >= COHORT_FREE * self.capacity)
        return self.room(height, width) if self._admitting else 0

    def admit(self, frames0: torch.Tensor, frames1: torch.Tensor, tags: list[Hashable]) -> None:
        """Take (B, H, W) float32 pairs (on the stream's device) into the coarsest level."""
        batch, height, width = frames0.shape
        if len(tags) != batch:
            raise ValueError(f"admit: {batch} pairs but {len(tags)} tags")
        sizes = level_sizes(height, width, self.params.nscales, self.params.scale_step)
        pyr0 = build_pyramid(frames0, sizes, self.params.scale_step)
        pyr1 = build_pyramid(frames1, sizes, self.params.scale_step)
        infos = [_PairInfo(tag, height * width, [lvl[b] for lvl in pyr0], [lvl[b] for lvl in pyr1])
                 for b, tag in enumerate(tags)]
        coarse_h, coarse_w = sizes[-1]
        u = torch.zeros(batch, self.n_comp, coarse_h, coarse_w, device=frames0.device)
        self._enter(infos, np.full(batch, len(sizes) - 1), u, pyr0[-1], pyr1[-1])
        self.held_pixels += batch * height * width
        self.stats.pairs_in += batch
        self.stats.max_held_pixels = max(self.stats.max_held_pixels, self.held_pixels)

    def tick(self, more: bool = False) -> list[tuple[Hashable, torch.Tensor]]:
        """One outer step of one pool; returns (tag, flow (2, H, W)) of the pairs it finished.

        ``more``: more pairs will be admitted (the pool order then keeps cohorts together and
        lets slow tails wait for the next; ignored by the "batch" schedule).
        """
        if not self.pools:
            return []
        self._admitting = False
        key = self._pick(more)
        pool = self.pools[key]
        self.last_tick_pairs = len(pool)
        try:
            u, p, still = self._outer_steps(pool)
        except ValueError as exc:  # about these pairs' data: drop them, let the caller fail them
            del self.pools[key]
            self.held_pixels -= sum(info.pixels for info in pool.pairs)
            raise StreamDataError([info.tag for info in pool.pairs], exc) from exc
        self._last_run[key] = self.stats.ticks
        self.stats.ticks += 1
        self.stats.pair_steps += len(pool)
        self.stats.tick_pairs[len(pool)] += 1
        self.stats.occupancy_sum += sum(info.pixels for info in pool.pairs) / max(self.capacity, 1)
        return self._advance(key, pool, u, p, still)

    def drain(self) -> Iterator[tuple[Hashable, torch.Tensor]]:
        """Tick until every held pair has come out."""
        while self.pools:
            yield from self.tick()

    # ------------------------------------------------------------------ internals
    def _pick(self, more: bool) -> tuple[int, int]:
        """The pool to tick: a starving one; else, with ``more``, the fullest ("eager") or the
        coarsest of those holding ``WAVE_SHARE`` of the fullest's pairs ("cohorts"); else the coarsest."""
        for key in self.pools:
            self._last_run.setdefault(key, self.stats.ticks)
        starving = [k for k in self.pools if self.stats.ticks - self._last_run[k] >= STARVE_TICKS]
        if starving:
            return min(starving, key=lambda k: self._last_run[k])
        candidates = list(self.pools)
        if more and self.schedule == "eager":
            return max(candidates, key=lambda k: (len(self.pools[k]), -k[0] * k[1]))
        if more and self.schedule == "cohorts":
            fullest = max(len(pool) for pool in self.pools.values())
            candidates = [k for k in candidates if len(self.pools[k]) >= WAVE_SHARE * fullest]
        return min(candidates, key=lambda k: (k[0] * k[1], k))

    def _outer_steps(self, pool: _Pool) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """One outer step of every pair of the pool on copies (in chunks of max_tick_pairs)."""
        threshold = scaled_epsilon(self.params.epsilon, pool.height, pool.width)
        n = len(pool)
        chunk = self.max_tick_pairs or n
        if chunk >= n:
            u, p = pool.u.clone(), pool.p.clone()
            still = outer_step(u, p, pool.data, threshold, self.params, self.runner)
            return u, p, still.cpu().numpy()
        us, ps, stills = [], [], []
        for start in range(0, n, chunk):
            part = slice(start, start + chunk)
            u, p = pool.u[part].clone(), pool.p[part].clone()
            stills.append(outer_step(u, p, pool.data[part], threshold, self.params, self.runner).cpu().numpy())
            us.append(u)
            ps.append(p)
        return torch.cat(us), torch.cat(ps), np.concatenate(stills)

    def _advance(self, key: tuple[int, int], pool: _Pool, u: torch.Tensor, p: torch.Tensor, still: np.ndarray
                 ) -> list[tuple[Hashable, torch.Tensor]]:
        """Commit a tick: count it, re-linearise new warps, move finished levels on."""
        outer = pool.outer + 1
        warp = pool.warp.copy()
        ended = ~still | (outer >= self.params.outer_iterations)
        warp[ended] += 1
        outer[ended] = 0
        data = pool.data
        relin = np.flatnonzero(ended & (warp < self.params.warps))
        if len(relin):
            index = torch.from_numpy(relin).to(u.device)
            data = data.clone()
            data[index] = linearise(pool.frame0[index], pool.sources[index], u[index])
        done = warp >= self.params.warps
        out: list[tuple[Hashable, torch.Tensor]] = []
        if done.any():
            out = self._leave(pool, u, np.flatnonzero(done))
        keep = np.flatnonzero(~done)
        if len(keep) == len(pool):
            pool.u, pool.p, pool.data, pool.warp, pool.outer = u, p, data, warp, outer
        elif len(keep) == 0:
            del self.pools[key]
        else:
            index = torch.from_numpy(keep).to(u.device)
            self.pools[key] = _Pool(pool.height, pool.width, u[index], p[index], data[index], pool.frame0[index],
                                    pool.sources[index], pool.level[keep], warp[keep], outer[keep],
                                    [pool.pairs[i] for i in keep])
        return out

    def _leave(self, pool: _Pool, u: torch.Tensor, rows: np.ndarray) -> list[tuple[Hashable, torch.Tensor]]:
        """Pairs done with their level: out if it was the finest, else upsampled to the next."""
        out = []
        levels = pool.level[rows]
        finished = rows[levels == 0]
        for i in finished:
            info = pool.pairs[i]
            out.append((info.tag, u[i, :2]))
            self.held_pixels -= info.pixels
        self.stats.pairs_out += len(finished)
        moving = rows[levels > 0]
        groups: dict[tuple[int, int], list[int]] = {}
        for i in moving:  # pairs of different frame sizes may share a level size, not the next
            nxt = pool.pairs[i].pyramid0[pool.level[i] - 1]
            groups.setdefault(tuple(nxt.shape), []).append(int(i))
        for size, members in groups.items():
            index = torch.as_tensor(members, device=u.device)
            up = resize_linear(u[index], size).contiguous()
            up[:, :2] /= self.params.scale_step
            infos = [pool.pairs[i] for i in members]
            nxt_level = pool.level[members] - 1
            frames0 = torch.stack([info.pyramid0[lvl] for info, lvl in zip(infos, nxt_level)])
            frames1 = torch.stack([info.pyramid1[lvl] for info, lvl in zip(infos, nxt_level)])
            for info, lvl in zip(infos, nxt_level):  # passed levels are not needed again
                info.pyramid0[lvl + 1] = info.pyramid1[lvl + 1] = None  # type: ignore[call-overload]
            self._enter(infos, nxt_level, up, frames0, frames1)
        return out

    def _enter(self, infos: list[_PairInfo], level: np.ndarray, u: torch.Tensor, frame0: torch.Tensor,
               frame1: torch.Tensor) -> None:
        """Start a level for these pairs: fresh duals, first linearisation; join its pool."""
        batch, height, width = frame0.shape
        sources = level_sources(frame1)
        p = torch.zeros(batch, u.shape[1], 2, height, width, device=u.device)
        data = linearise(frame0, sources, u)
        zeros = np.zeros(batch, np.int64)
        new = _Pool(height, width, u, p, data, frame0, sources, np.asarray(level, np.int64), zeros, zeros.copy(),
                    list(infos))
        old = self.pools.get((height, width))
        if old is not None:
            new = _Pool(height, width, torch.cat([old.u, u]), torch.cat([old.p, p]), torch.cat([old.data, data]),
                        torch.cat([old.frame0, frame0]), torch.cat([old.sources, sources]),
                        np.concatenate([old.level, new.level]), np.concatenate([old.warp, new.warp]),
                        np.concatenate([old.outer, new.outer]), old.pairs + new.pairs)
        self.pools[(height, width)] = new


def stream_pairs(stream: TVL1Stream, chunks: Iterable[tuple[torch.Tensor, torch.Tensor, list[Hashable]]]
                 ) -> Iterator[tuple[Hashable, torch.Tensor]]:
    """Solve every pair of ``chunks`` ((I0, I1, tags) of one size each), yielding (tag, flow).

    Pairs are admitted as the stream's schedule allows (``admissible``; "batch" only into an
    empty stream, the batch solver's schedule, kept for comparison). A chunk larger than what
    is admitted is split; its rest waits.
    """
    pending: list[tuple[torch.Tensor, torch.Tensor, list[Hashable]]] = []
    source = iter(chunks)
    exhausted = False
    while True:
        while not exhausted or pending:
            if not pending:
                nxt = next(source, None)
                if nxt is None:
                    exhausted = True
                    break
                pending.append(nxt)
            f0, f1, tags = pending[0]
            fit = min(stream.admissible(*f0.shape[1:]), len(tags))
            if fit == 0:
                break
            stream.admit(f0[:fit], f1[:fit], list(tags[:fit]))
            pending[0] = (f0[fit:], f1[fit:], list(tags[fit:]))
            if fit == len(tags):
                pending.pop(0)
        if not len(stream):
            return
        yield from stream.tick(more=bool(pending) or not exhausted)


def pair_chunks(frames0: torch.Tensor, frames1: torch.Tensor, size: int
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[Any]]]:
    """(I0, I1, pair indices) chunks of ``size`` pairs of a batch, for ``stream_pairs``."""
    for start in range(0, frames0.shape[0], size):
        stop = min(start + size, frames0.shape[0])
        yield frames0[start:stop], frames1[start:stop], list(range(start, stop))
