"""The streaming TV-L1 schedule: each pair's flow is what ``tvl1`` gives it alone, bit for bit
on the CPU, while freed slots are refilled from the queue; the work is counted, not timed."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from gaittools.flow import TVL1Params, tvl1
from gaittools.flow.pyramid import level_sizes
from gaittools.flow.stream import StreamDataError, TVL1Stream, pair_chunks, schedule_name, stream_pairs
from gaittools.flow.tvl1_torch import ReferenceEngine
from conftest import need_data
from flow_helpers import moved_pair, rotation, texture, translation

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: A short schedule (36 outer steps at most per pair) keeps these tests to seconds.
FAST = TVL1Params(nscales=3, warps=2, outer_iterations=6)


def _as_tensors(frames0, frames1) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(np.asarray(frames0, np.float32)), torch.as_tensor(np.asarray(frames1, np.float32))


def _noise_pair(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two unrelated textures: no flow explains them, so the pair runs to the outer limit."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    return texture(x, y, seed).astype(np.float32), texture(x, y, seed + 100).astype(np.float32)


def _still_pair(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The same frame twice (a background-only pair): one outer step per warp."""
    frame = moved_pair(size, size, translation(0, 0), seed=seed)[0]
    return frame, frame.copy()


@pytest.fixture(scope="module")
def silhouettes() -> np.ndarray:
    """Real CASIA-B crops (OpenGait silhouettes, 64x64) of one walk."""
    with open(need_data("casia-b-sil-090", "001", "nm-01", "090", "090.pkl"), "rb") as f:
        return np.asarray(pickle.load(f), np.float32)


def _run(pairs: list[tuple[np.ndarray, np.ndarray]], capacity_pairs: int, chunk: int = 3,
         refill: bool | str = True, params: TVL1Params = FAST) -> tuple[dict, TVL1Stream]:
    """Stream the pairs (grouped into chunks of one size, in order) with room for ``capacity_pairs``."""
    stream = TVL1Stream(params, ReferenceEngine(), "cpu", capacity=capacity_pairs * max(a.size for a, _ in pairs),
                        schedule=refill)
    chunks = []
    for start in range(0, len(pairs), chunk):
        group = pairs[start:start + chunk]
        shapes = {a.shape for a, _ in group}
        for shape in sorted(shapes):
            members = [i for i in range(start, start + len(group)) if pairs[i][0].shape == shape]
            f0, f1 = _as_tensors([pairs[i][0] for i in members], [pairs[i][1] for i in members])
            chunks.append((f0, f1, members))
    out = {}
    for tag, flow in stream_pairs(stream, chunks):
        assert tag not in out, f"pair {tag} came out twice"
        out[tag] = flow.numpy().copy()
    return out, stream


def test_streamed_flow_equals_each_pair_alone(silhouettes):
    """Real crops and generated pairs of two sizes and mixed difficulty, refilled through a
    stream of 3 slots: each pair's flow is bit for bit its flow from ``tvl1`` alone (every
    operation is per pair, so the schedule cannot change a pair's arithmetic)."""
    pairs = [(silhouettes[t], silhouettes[t + 1]) for t in (12, 20, 28, 36)]
    pairs += [moved_pair(40, 44, translation(0.7, 1.1), seed=2)[:2], _noise_pair(40, 7),
              moved_pair(40, 44, rotation(-3.0, 20, 22), seed=3)[:2], _still_pair(40, 5)]
    pairs = [pairs[i] for i in (0, 4, 1, 5, 6, 2, 3, 7)]  # sizes interleaved in the queue
    out, stream = _run(pairs, capacity_pairs=3, chunk=2)
    assert sorted(out) == list(range(len(pairs)))
    assert list(out) != sorted(out), "the test must see pairs finish out of input order"
    for i, (a, b) in enumerate(pairs):
        alone = tvl1(a, b, FAST, engine="reference")[0].numpy()
        assert out[i].shape == (2, *a.shape)
        assert np.array_equal(out[i], alone), (i, np.abs(out[i] - alone).max())
    assert stream.stats.pairs_in == stream.stats.pairs_out == len(pairs) and len(stream) == 0
    assert stream.held_pixels == 0


def test_batch_call_is_the_stream_with_default_settings(silhouettes):
    """``tvl1`` on a batch (OpenCV's defaults) equals the pairs one by one: the same stream."""
    f0, f1 = silhouettes[30:33], silhouettes[31:34]
    together = tvl1(f0, f1).numpy()
    for i in range(len(f0)):
        assert np.array_equal(together[i], tvl1(f0[i], f1[i])[0].numpy()), i


def test_refilling_beats_the_batch_schedule_when_a_few_pairs_are_slow():
    """A few slow pairs in a queue of quick ones: the same pair-steps (the same work per pair),
    but the batch schedule runs each batch as long as its slow pair, mostly alone, while the
    stream refills the slots the quick pairs free."""
    size, capacity = 24, 6
    slow = {0, 20, 40}
    pairs = [_noise_pair(size, k) if k in slow else _still_pair(size, k) for k in range(60)]
    batched, batch = _run(pairs, capacity_pairs=capacity, chunk=capacity, refill=False)
    streamed, stream = _run(pairs, capacity_pairs=capacity, chunk=capacity, refill=True)
    for i in range(len(pairs)):
        assert np.array_equal(batched[i], streamed[i]), i
    # the batch schedule fills an empty stream from several chunks: the same batches
    assert _run(pairs, capacity_pairs=capacity, chunk=2, refill="batch")[1].stats.ticks == batch.stats.ticks
    levels = len(level_sizes(size, size, FAST.nscales, FAST.scale_step))
    slow_steps = levels * FAST.warps * FAST.outer_iterations  # every level, warp and outer step
    quick_steps = levels * FAST.warps  # one outer step per warp
    pair_steps = len(slow) * slow_steps + (len(pairs) - len(slow)) * quick_steps
    assert stream.stats.pair_steps == batch.stats.pair_steps == pair_steps
    # The batch schedule: a batch with a slow pair lasts as long as it, the others as a quick one.
    n_batches = len(pairs) // capacity
    assert batch.stats.ticks == len(slow) * slow_steps + (n_batches - len(slow)) * quick_steps
    assert stream.stats.ticks <= 0.7 * batch.stats.ticks, (stream.stats.as_dict(), batch.stats.as_dict())
    assert stream.stats.occupancy > batch.stats.occupancy + 0.2
    assert stream.stats.pairs_per_tick == pytest.approx(stream.stats.occupancy * capacity)


def test_cohorts_never_cost_more_ticks_than_batches_and_less_when_the_device_is_full():
    """The default schedule's claim, counted on a fixed generated mix (5% slow pairs) through
    64 slots: the real stream's schedule with each pair's convergence flags replayed (the
    benchmark's replay). Launch-bound (a tick costs 1): no more ticks than the batch schedule
    and fewer than refilling pair by pair ("eager"), which splits the slots over the levels;
    full with a quarter or an eighth of the slots: well below the batch schedule."""
    from benchmarks.stream_schedule import generated_mix, replay

    params = TVL1Params(nscales=3, warps=2, outer_iterations=6)
    mix = generated_mix(300, len(level_sizes(32, 32, params.nscales, params.scale_step)), params, seed=0)
    stats = {s: replay(mix, (32, 32), params, 64, s).stats for s in ("batch", "eager", "cohorts")}
    assert len({st.pair_steps for st in stats.values()}) == 1
    batch, eager, cohorts = stats["batch"], stats["eager"], stats["cohorts"]
    assert cohorts.ticks <= batch.ticks and cohorts.ticks < eager.ticks, {s: st.ticks for s, st in stats.items()}
    assert cohorts.cost(16) < 0.75 * batch.cost(16) and cohorts.cost(8) < 0.9 * batch.cost(8)
    assert sum(n * c for n, c in cohorts.tick_pairs.items()) == cohorts.pair_steps


def test_a_schedule_is_named_or_a_refill_flag():
    assert schedule_name(True) == "cohorts" and schedule_name(False) == "batch" and schedule_name("eager") == "eager"
    with pytest.raises(ValueError, match="unknown TV-L1 stream schedule 'fifo'"):
        schedule_name("fifo")


def test_capacity_is_respected_and_an_oversized_pair_still_runs():
    pairs = [moved_pair(32, 32, translation(0.4 * k, -0.3), seed=k)[:2] for k in range(7)]
    out, stream = _run(pairs, capacity_pairs=2, chunk=4)
    assert len(out) == 7 and stream.stats.max_held_pixels == 2 * 32 * 32
    lone = TVL1Stream(FAST, ReferenceEngine(), "cpu", capacity=100)  # smaller than one pair
    assert lone.room(32, 32) == 1
    f0, f1 = _as_tensors([pairs[0][0]], [pairs[0][1]])
    lone.admit(f0, f1, ["a"])
    assert lone.room(32, 32) == 0
    ((tag, flow),) = list(lone.drain())
    assert tag == "a" and np.array_equal(flow.numpy(), out[0])


class _SmallMemory(ReferenceEngine):
    """The reference engine on a device that runs out of memory above ``limit`` pairs."""

    def __init__(self, limit: int):
        self.limit, self.failures = limit, 0

    def iterate(self, u, p, data, threshold, n_iter, params):
        if u.shape[0] > self.limit:
            self.failures += 1
            raise torch.OutOfMemoryError("out of memory (simulated)")
        return super().iterate(u, p, data, threshold, n_iter, params)


def test_a_failed_tick_changes_nothing_and_runs_again_in_chunks():
    """Out of memory mid-tick (after the median filter ran): retried in smaller chunks, the
    flow is still each pair's own, because a tick commits only when it succeeds."""
    pairs = [moved_pair(28, 30, translation(0.5 + 0.3 * k, 0.2), seed=k)[:2] for k in range(5)]
    engine = _SmallMemory(limit=2)
    stream = TVL1Stream(FAST, engine, "cpu", capacity=5 * 28 * 30)
    f0, f1 = _as_tensors([a for a, _ in pairs], [b for _, b in pairs])
    stream.admit(f0, f1, list(range(5)))
    out = {}
    while len(stream):
        try:
            out.update((tag, flow.numpy()) for tag, flow in stream.tick())
        except torch.OutOfMemoryError:
            stream.max_tick_pairs = engine.limit
    assert engine.failures >= 1
    expected = tvl1(f0, f1, FAST, engine="reference").numpy()
    for i in range(5):
        assert np.array_equal(out[i], expected[i]), i


class _Refuses(ReferenceEngine):
    def iterate(self, u, p, data, threshold, n_iter, params):
        if u.shape[-1] == 40:
            raise ValueError("frames of 40 px are refused (simulated)")
        return super().iterate(u, p, data, threshold, n_iter, params)


def test_a_data_error_names_its_pairs_and_the_others_finish():
    stream = TVL1Stream(TVL1Params(nscales=1, warps=1, outer_iterations=2), _Refuses(), "cpu", capacity=10_000)
    good, bad = moved_pair(24, 24, translation(1, 0), seed=1), moved_pair(40, 40, translation(1, 0), seed=2)
    stream.admit(*_as_tensors([good[0]], [good[1]]), ["good"])
    stream.admit(*_as_tensors([bad[0], bad[0]], [bad[1], bad[1]]), ["bad-1", "bad-2"])
    done, failed = [], []
    while len(stream):
        try:
            done += [tag for tag, _ in stream.tick()]
        except StreamDataError as exc:
            failed += exc.tags
            assert "40 px are refused" in str(exc)
    assert done == ["good"] and sorted(failed) == ["bad-1", "bad-2"] and stream.held_pixels == 0
    with pytest.raises(ValueError, match="3 pairs but 1 tags"):
        stream.admit(*_as_tensors([good[0]] * 3, [good[1]] * 3), ["x"])


def test_pair_chunks_cover_a_batch_in_order():
    f0 = torch.zeros(7, 20, 20)
    chunks = list(pair_chunks(f0, f0, 3))
    assert [tags for _, _, tags in chunks] == [[0, 1, 2], [3, 4, 5], [6]]
