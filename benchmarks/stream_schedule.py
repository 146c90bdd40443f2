"""The TV-L1 stream's schedules counted, not timed: which admission policy to make the default.

Why counted: no GPU has been lent to the project, and what a schedule costs on one depends on
whether the device is launch-bound or full. A pair's arithmetic does not depend on the
schedule (each pair's flow is bit for bit its flow alone), so neither do its convergence
flags: each pair's sequence of "still running" flags is recorded once with the real solver,
then every schedule is replayed through the real ``TVL1Stream`` (admission, pools, pick
rule, levels) with those flags in place of the arithmetic. Each replay's ticks are priced by
three device models (``StreamStats.cost``): launch-bound (every tick costs 1), full with a
quarter of the slots (a tick costs max(1, pairs / (slots/4))) and full with an eighth.

Pairs: real CASIA-B silhouette pairs (consecutive frames of ``--walk`` over subjects 001...,
``--pairs`` of them, OpenCV's default settings) and a generated mix (convergence flags drawn:
few slow pairs, running every warp to the outer limit, among many quick ones).

    python -m benchmarks.stream_schedule --slots 32 64 256
"""

from __future__ import annotations

import argparse
import pickle
import time
from collections.abc import Hashable
from pathlib import Path

import numpy as np
import torch

from gaittools.flow.params import TVL1Params
from gaittools.flow.pyramid import level_sizes
from gaittools.flow.stream import SCHEDULES, TVL1Stream, pair_chunks, stream_pairs
from gaittools.flow.tvl1_torch import ReferenceEngine

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "casia-b-sil-090"

Traces = dict[Hashable, list[bool]]


class RecordingStream(TVL1Stream):
    """The real solver, keeping each pair's "still running" flag of every outer step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.traces: Traces = {}

    def _outer_steps(self, pool):
        u, p, still = super()._outer_steps(pool)
        for info, flag in zip(pool.pairs, still):
            self.traces.setdefault(info.tag, []).append(bool(flag))
        return u, p, still


class ReplayStream(TVL1Stream):
    """The stream's schedule with recorded flags in place of the arithmetic (u and p stay as they are)."""

    def __init__(self, traces: Traces, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.traces, self.done = traces, {tag: 0 for tag in traces}

    def _outer_steps(self, pool):
        still = []
        for info in pool.pairs:
            still.append(self.traces[info.tag][self.done[info.tag]])
            self.done[info.tag] += 1
        return pool.u, pool.p, np.array(still)


def record(frames0: torch.Tensor, frames1: torch.Tensor, params: TVL1Params) -> Traces:
    """Each pair's flags from the real solver (reference engine, batches of 64)."""
    stream = RecordingStream(params, ReferenceEngine(), "cpu", capacity=64 * frames0[0].numel(), schedule="batch")
    with torch.no_grad():
        for _ in stream_pairs(stream, pair_chunks(frames0, frames1, 64)):
            pass
    return stream.traces


def replay(traces: Traces, size: tuple[int, int], params: TVL1Params, slots: int, schedule: str) -> TVL1Stream:
    """Run ``schedule`` over the pairs of ``traces`` (in tag order) with ``slots`` pairs of room."""
    stream = ReplayStream(traces, params, ReferenceEngine(), "cpu", capacity=slots * size[0] * size[1],
                          schedule=schedule)
    frames = torch.zeros(len(traces), *size)
    tags = sorted(traces)
    chunks = ((frames[i:i + slots], frames[i:i + slots], tags[i:i + slots]) for i in range(0, len(tags), slots))
    for _ in stream_pairs(stream, chunks):
        pass
    if any(stream.done[tag] != len(trace) for tag, trace in traces.items()):
        raise RuntimeError("replay: a pair's schedule differs from its recorded one")
    return stream


def generated_mix(n_pairs: int, levels: int, params: TVL1Params, slow_share: float = 0.05, seed: int = 0
                  ) -> Traces:
    """Flags of ``n_pairs`` pairs: a ``slow_share`` runs every warp of every level to the outer
    limit, the others converge after 1 or 2 outer steps per warp."""
    rng = np.random.default_rng(seed)
    traces: Traces = {}
    for pair in range(n_pairs):
        slow = rng.random() < slow_share
        flags: list[bool] = []
        for _ in range(levels * params.warps):
            steps = params.outer_iterations if slow else int(rng.integers(1, 3))
            flags += [True] * (steps - 1) + [steps == params.outer_iterations]
        traces[pair] = flags
    return traces


def casia_pairs(walk: str, n_pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_pairs`` consecutive-frame pairs of ``walk`` (view 090), subject after subject."""
    frames0, frames1 = [], []
    for path in sorted(DATA.glob(f"*/{walk}/090/090.pkl")):
        with open(path, "rb") as f:
            frames = np.asarray(pickle.load(f), np.float32)
        frames0 += list(frames[:-1])
        frames1 += list(frames[1:])
        if len(frames0) >= n_pairs:
            break
    if not frames0:
        raise SystemExit(f"{DATA}: no */{walk}/090/090.pkl (see ../shared/data/README.md)")
    return torch.as_tensor(np.stack(frames0[:n_pairs])), torch.as_tensor(np.stack(frames1[:n_pairs]))


def compare(traces: Traces, size: tuple[int, int], params: TVL1Params, slots: int) -> list[dict]:
    """One row per schedule: ticks and priced costs, and each as a share of the batch schedule's."""
    rows = []
    for schedule in ("batch", *[s for s in SCHEDULES if s != "batch"]):
        stats = replay(traces, size, params, slots, schedule).stats
        rows.append({"schedule": schedule, "pair_steps": stats.pair_steps, "launch": stats.cost(None),
                     "full/4": stats.cost(slots / 4), "full/8": stats.cost(slots / 8)})
    for row in rows:
        for model in ("launch", "full/4", "full/8"):
            row[model + " vs batch"] = row[model] / rows[0][model] - 1
    return rows


def table(title: str, rows: list[dict]) -> str:
    lines = [f"{title} ({rows[0]['pair_steps']:,} pair-steps)",
             f"{'schedule':10s} {'launch-bound':>18s} {'full at 1/4':>18s} {'full at 1/8':>18s}"]
    for row in rows:
        cells = [f"{row[m]:8,.0f} ({row[m + ' vs batch']:+6.1%})" for m in ("launch", "full/4", "full/8")]
        lines.append(f"{row['schedule']:10s} " + " ".join(f"{c:>18s}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--walk", default="nm-01", help="CASIA-B walk whose pairs are counted (default nm-01)")
    parser.add_argument("--pairs", type=int, default=447, help="real pairs (default 447)")
    parser.add_argument("--mix-pairs", type=int, default=600, help="pairs of the generated mix (default 600)")
    parser.add_argument("--slots", type=int, nargs="+", default=[64], help="stream capacities, in pairs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    params = TVL1Params()
    start = time.perf_counter()
    frames0, frames1 = casia_pairs(args.walk, args.pairs)
    size = tuple(frames0.shape[1:])
    real = record(frames0, frames1, params)
    print(f"recorded {len(real)} real pairs of {args.walk} ({size[0]}x{size[1]}, OpenCV's defaults) "
          f"in {time.perf_counter() - start:.0f} s")
    mix = generated_mix(args.mix_pairs, len(level_sizes(*size, params.nscales, params.scale_step)), params)
    for slots in args.slots:
        print(f"\n== {slots} slots: cost of the ticks, and vs the batch schedule ==")
        print(table(f"CASIA-B {args.walk}, {len(real)} pairs", compare(real, size, params, slots)))
        print(table(f"generated mix, {len(mix)} pairs, 5% slow", compare(mix, size, params, slots)))


if __name__ == "__main__":
    main()
