"""Batched torch TV-L1 over a store: many sequences' frame pairs per batch, one engine per device.

Why batching across sequences: one pair of 320x240 frames is far too little work for a GPU, and a
sequence has only ~100 pairs; filling a batch from many sequences is what keeps the device busy.
Why threads around the device loop: reading (Zarr decompression), stacking pairs into batches
and writing results are CPU work; done in reader, batcher and writer threads, they overlap with
the TV-L1 kernels instead of leaving the GPU waiting between batches.

Pipeline of one engine::

    next_seq() -> reader threads -> ready sequences -> batcher thread -> chunks (2 ahead)
        -> device loop: upload into the TV-L1 stream's free slots, tick, crop finished pairs
           on the device, download crops
        -> per-sequence buffers -> writer threads: NaN/Inf check, float16, Store.add_arrays

Why a stream (``gaittools.flow.stream``) rather than one ``tvl1`` call per batch: a batch takes
no new pairs until its slowest pair is done, so a slow pair ran alone for most of a batch's
steps (seen: 175 of 259); the stream refills finished pairs' slots from the queue, a cohort at a time.

Several devices: one process per device (spawned), all pulling sequences from one queue, so a
slow device simply takes fewer. Memory: the stream's capacity (pairs held at once) comes from
the device's free memory and a measured per-pixel cost; a tick that runs out of memory changes
nothing, and is run again in halves, with the capacity halved.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gaittools.flow.params import TVL1Params
from gaittools.flow.stream import StreamDataError, StreamStats, TVL1Stream, schedule_name
from gaittools.flow.tvl1_torch import pick_engine, tvl1
from gaittools.flow.crop import crop_flow_torch
from gaittools.store.zarr_store import Store
from pipelines.flow_io import DeviceFailure, SeqPlan, SeqResult, SequenceInput, read_input, record_failure, write_flow

#: Largest batch ever formed (pairs); beyond it a batch only costs host memory.
MAX_BATCH = 8192
#: Fraction of the device's free memory a batch may plan to use.
MEMORY_FRACTION = 0.7
#: Pixels per batch on CPU (where memory is not the limit, cache and latency are).
CPU_PIXELS_PER_BATCH = 4_000_000
BACKEND = "torch-tvl1"

Report = Callable[[SeqResult], None]


@dataclass
class EngineStats:
    """What the device loop did: the numbers behind a speed or GPU-utilisation claim."""

    device: str
    engine: str = ""  # the TV-L1 engine that ran: "reference" or "fused"
    pairs: int = 0
    batches: int = 0  # chunks of pairs admitted into the stream
    largest_batch: int = 0  # most pairs in one tick (one engine call)
    oom_halvings: int = 0
    kernel_seconds: float = 0.0  # inside TV-L1 + crop on the device (CUDA events on GPUs)
    wall_seconds: float = 0.0
    stream: StreamStats = field(default_factory=StreamStats)  # the TV-L1 stream's counted work

    @property
    def busy_fraction(self) -> float:
        return self.kernel_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def merge(self, other: EngineStats) -> EngineStats:
        engines = ",".join(sorted({e for e in (self.engine, other.engine) if e}))
        return EngineStats(
            f"{self.device},{other.device}", engines, self.pairs + other.pairs, self.batches + other.batches,
            max(self.largest_batch, other.largest_batch), self.oom_halvings + other.oom_halvings,
            self.kernel_seconds + other.kernel_seconds, max(self.wall_seconds, other.wall_seconds),
            self.stream.merged(other.stream),
        )

    def format(self) -> str:
        rate = self.pairs / self.wall_seconds if self.wall_seconds > 0 else 0.0
        work = self.stream
        return (
            f"[compute-flow] torch TV-L1 ({self.engine or '?'} engine) on {self.device}: {self.pairs} pairs in {work.ticks} "
            f"ticks ({work.pairs_per_tick:.1f} pairs per tick, largest {self.largest_batch}, slot occupancy "
            f"{work.occupancy:.0%}), "
            f"{rate:.1f} pairs/s, TV-L1 busy {self.busy_fraction:.0%} of {self.wall_seconds:.1f} s, "
            f"{self.oom_halvings} out-of-memory halvings"
        )


@dataclass
class _SeqState:
    """A sequence whose pairs are being computed; written once every pair has come back."""

    inp: SequenceInput
    out: np.ndarray  # (T-1, *inp.flow_shape) float32
    valid: np.ndarray  # (T-1,) bool
    remaining: int
    seconds: float = 0.0
    failed: bool = False


@dataclass
class _Batch:
    """Pairs of one shape, stacked for upload, and where each result goes."""

    kind: str  # "frames" (crop with windows) or "gray"
    crop_size: int
    i0: Any  # (B, H, W) uint8 (torch, pinned on CUDA)
    i1: Any
    windows: np.ndarray | None  # (B, K, 4): the windows of the K sequences sharing each pair
    owners: list[tuple[_SeqState, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.owners)

    def split(self, n: int) -> tuple[_Batch, _Batch]:
        """The first ``n`` pairs and the rest (a chunk admitted into the room there is)."""
        w = self.windows
        return (
            _Batch(self.kind, self.crop_size, self.i0[:n], self.i1[:n], None if w is None else w[:n], self.owners[:n]),
            _Batch(self.kind, self.crop_size, self.i0[n:], self.i1[n:], None if w is None else w[n:], self.owners[n:]),
        )


class _PairBudget:
    """Bounds the pairs read but not yet computed, so read-ahead cannot fill host memory."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._cond = threading.Condition()

    def acquire(self, n: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.used == 0 or self.used + n <= self.limit)
            self.used += n

    def release(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()


_END = object()


class BatchedFlow:
    """One device's engine: reads, batches, computes, crops and writes sequences."""

    def __init__(
        self, store_path: str, device: str, params: dict, batch_size: int | None = None, readers: int = 4,
        writers: int = 2, engine: str = "auto", cuda_graphs: bool = False, refill: bool | str = True,
    ):
        self.store = Store(store_path)
        self.device = torch.device(device)
        if self.device.type == "cuda":  # events, streams and empty_cache act on the current device
            torch.cuda.set_device(self.device)
        self.params = TVL1Params(**params)
        self.runner = pick_engine(self.device, self.params, engine, cuda_graphs)  # once: "auto" may fall back
        self.fixed_batch = batch_size
        self.schedule = schedule_name(refill)  # the stream's admission and pool order; False: "batch", to compare
        self.readers, self.writers = max(1, readers), max(1, writers)
        self.stats = EngineStats(str(self.device), self.runner.name)
        self._caps: dict[tuple[int, int], int] = {}
        self._bytes_per_pixel: float | None = None
        self._lock = threading.Lock()
        self._oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

    # ------------------------------------------------------------------ batch size
    def batch_cap(self, height: int, width: int) -> int:
        """Pairs per batch at this frame size: --batch-size, or what free memory allows."""
        with self._lock:
            key = (height, width)
            if key not in self._caps:
                self._caps[key] = self.fixed_batch or self._auto_batch(height, width)
            return self._caps[key]

    def _auto_batch(self, height: int, width: int) -> int:
        if self.device.type != "cuda":
            return int(np.clip(CPU_PIXELS_PER_BATCH // (height * width), 1, MAX_BATCH))
        if self._bytes_per_pixel is None:
            self._bytes_per_pixel = self._measure_bytes_per_pixel()
        free, _ = torch.cuda.mem_get_info(self.device)
        per_pair = self._bytes_per_pixel * height * width
        return int(np.clip(MEMORY_FRACTION * free // per_pair, 1, MAX_BATCH))

    def _measure_bytes_per_pixel(self, n: int = 4, size: tuple[int, int] = (120, 160)) -> float:
        """Peak device memory of a small TV-L1 batch per pair-pixel (pyramid, duals, warps...)."""
        gen = torch.Generator(device="cpu").manual_seed(0)
        i0 = torch.randint(0, 256, (n, *size), generator=gen).float().to(self.device)
        i1 = torch.roll(i0, 1, dims=2)
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        tvl1(i0, i1, self.params, engine=self.runner)
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device) - base
        del i0, i1
        torch.cuda.empty_cache()
        return 1.25 * max(peak, 1) / (n * size[0] * size[1])  # margin for allocator fragmentation

    # ------------------------------------------------------------------ run
    def run(self, next_seq: Callable[[], SeqPlan | None], report: Report) -> EngineStats:
        """Compute every sequence ``next_seq`` hands out (until it returns None); report each."""
        start = time.perf_counter()
        ready: queue.Queue = queue.Queue()
        batches: queue.Queue = queue.Queue(maxsize=2)
        budget = _PairBudget(limit=4 * self._budget_pairs())
        report_lock = threading.Lock()

        def safe_report(result: SeqResult) -> None:
            with report_lock:
                report(result)

        readers = [threading.Thread(target=self._reader, args=(next_seq, ready, budget, safe_report), daemon=True)
                   for _ in range(self.readers)]
        for t in readers:
            t.start()
        closer = threading.Thread(target=lambda: ([t.join() for t in readers], ready.put(_END)), daemon=True)
        closer.start()
        batcher = threading.Thread(target=self._batcher, args=(ready, batches, budget), daemon=True)
        batcher.start()
        with ThreadPoolExecutor(self.writers, thread_name_prefix="flow-writer") as writer:
            self._device_loop(batches, writer, budget, safe_report)
        batcher.join()
        self.stats.wall_seconds = time.perf_counter() - start
        return self.stats

    def _budget_pairs(self) -> int:
        return self.fixed_batch or (MAX_BATCH if self.device.type == "cuda" else 1024)

    # ------------------------------------------------------------------ threads
    def _reader(self, next_seq: Callable[[], SeqPlan | None], ready: queue.Queue, budget: _PairBudget,
                report: Report) -> None:
        while (item := next_seq()) is not None:
            budget.acquire(item.n_pairs)
            try:
                inp = read_input(self.store, item.seq_id, item.tracks)
            except Exception as exc:  # one unreadable sequence must not stop the others
                budget.release(item.n_pairs)
                report(record_failure(self.store, item.seq_ids, exc))
                continue
            if inp.n_pairs != item.n_pairs:  # planned from metadata; the data decides
                budget.release(item.n_pairs)
                budget.acquire(inp.n_pairs)
            ready.put(inp)

    def _batcher(self, ready: queue.Queue, batches: queue.Queue, budget: _PairBudget) -> None:
        """Group pairs by (kind, H, W, S); emit a batch when a group fills, the rest at the end."""
        groups: dict[tuple, deque] = {}
        if self.device.type == "cuda":  # the current device is per thread; the memory probe runs here
            torch.cuda.set_device(self.device)
        try:
            while True:
                try:
                    inp = ready.get(timeout=0.5)
                except queue.Empty:  # reading is slow or the read-ahead budget is full
                    key = max(groups, key=lambda k: len(groups[k]), default=None)
                    if key is not None and groups[key] and batches.empty():  # the device would idle: go
                        batches.put(("batch", self._stack(key, groups[key], self.batch_cap(key[1], key[2]))))
                    continue
                if inp is _END:
                    break
                keep = inp.pairs_with_window()
                state = _SeqState(inp, np.zeros((inp.n_pairs, *inp.flow_shape), np.float32), keep, int(keep.sum()))
                if state.remaining == 0:  # no pairs, or nobody in any frame: zero flow, no TV-L1
                    batches.put(("empty", state))
                    continue
                key = (inp.source, *inp.images.shape[1:], inp.crop_size, inp.flow_shape)  # flow_shape: K windows
                group = groups.setdefault(key, deque())
                group.extend((state, int(t)) for t in np.flatnonzero(keep))
                cap = self.batch_cap(*inp.images.shape[1:])
                while len(group) >= cap:
                    batches.put(("batch", self._stack(key, group, cap)))
            for key, group in groups.items():
                while group:
                    batches.put(("batch", self._stack(key, group, self.batch_cap(key[1], key[2]))))
        except BaseException as exc:  # never leave the device loop waiting forever
            batches.put(("error", exc))
        batches.put(("end", None))

    def _stack(self, key: tuple, group: deque, cap: int) -> _Batch:
        owners = [group.popleft() for _ in range(min(cap, len(group)))]
        i0 = torch.from_numpy(np.stack([s.inp.images[t] for s, t in owners]))
        i1 = torch.from_numpy(np.stack([s.inp.images[t + 1] for s, t in owners]))
        if self.device.type == "cuda":
            i0, i1 = i0.pin_memory(), i1.pin_memory()
        windows = np.stack([s.inp.windows[t] for s, t in owners]) if key[0] == "frames" else None
        return _Batch(key[0], key[3], i0, i1, windows, owners)

    def _device_loop(self, batches: queue.Queue, writer: ThreadPoolExecutor, budget: _PairBudget,
                     report: Report) -> None:
        """Keep the stream's slots filled from the chunk queue and tick it until all is done."""
        stream = TVL1Stream(self.params, self.runner, self.device, capacity=1, schedule=self.schedule)
        pending: deque[_Batch] = deque()
        ended = False
        while True:
            ended = self._refill(stream, pending, batches, ended, writer, budget, report)
            if len(stream):
                self._tick(stream, writer, budget, report, more=bool(pending) or not ended)
            elif ended and not pending:
                break
        self.stats.stream = stream.stats

    def _refill(self, stream: TVL1Stream, pending: deque, batches: queue.Queue, ended: bool,
                writer: ThreadPoolExecutor, budget: _PairBudget, report: Report) -> bool:
        """Admit queued pairs into the free slots; returns whether the queue has ended.

        Waits for the queue only when the stream is empty; otherwise takes what is there.
        """
        while True:
            if not pending:
                if ended:
                    return True
                try:
                    kind, payload = batches.get(block=not len(stream))
                except queue.Empty:
                    return False
                if kind == "end":
                    ended = True
                elif kind == "error":
                    raise RuntimeError(f"batching failed: {payload!r}") from payload
                elif kind == "empty":
                    writer.submit(self._write, payload, budget, report)
                else:
                    pending.append(payload)
                continue
            chunk = pending[0]
            h, w = chunk.i0.shape[1:]
            stream.capacity = self.batch_cap(h, w) * h * w
            fit = min(stream.admissible(h, w), len(chunk))
            if fit == 0:
                return ended
            part, rest = chunk.split(fit)
            if not self._admit(stream, part, budget, report):
                return ended  # out of memory: the capacity was halved, the chunk waits
            if len(rest):
                pending[0] = rest
            else:
                pending.popleft()

    def _admit(self, stream: TVL1Stream, part: _Batch, budget: _PairBudget, report: Report) -> bool:
        """Upload a chunk's pairs (those of sequences not failed) into the stream.

        False when the device ran out of memory (nothing was admitted; the capacity is halved).
        """
        keep = [i for i, (state, _) in enumerate(part.owners) if not state.failed]
        if not keep:
            return True
        tags = [(part.owners[i][0], part.owners[i][1], None if part.windows is None else part.windows[i])
                for i in keep]
        index = slice(None) if len(keep) == len(part) else torch.as_tensor(keep)  # a slice keeps pinned memory
        try:
            i0 = part.i0[index].to(self.device, non_blocking=True).float()
            i1 = part.i1[index].to(self.device, non_blocking=True).float()
            stream.admit(i0, i1, tags)
        except self._oom:
            if not len(stream) and len(keep) == 1:
                raise DeviceFailure(f"compute-flow stopped: one pair of {tuple(part.i0.shape[1:])} does not fit "
                                    f"in the memory of {self.device}") from None
            oom = True
        except ValueError as exc:  # about these frames: give up on their sequences only
            self._fail([state for state, _, _ in tags], exc, budget, report)
            return True
        except Exception as exc:
            raise self._device_failure(exc, len(keep)) from exc
        else:
            oom = False
        if oom:  # out of the except block: its traceback held the failed attempt's tensors
            self._halve(stream)
            return False
        self.stats.batches += 1
        return True

    def _tick(self, stream: TVL1Stream, writer: ThreadPoolExecutor, budget: _PairBudget, report: Report,
              more: bool) -> None:
        """One tick of the stream; finished pairs are cropped on the device and delivered."""
        timer = _Timer(self.device)
        try:
            finished = stream.tick(more)
            crops = self._crop(finished)
        except self._oom:
            if stream.max_tick_pairs == 1:
                raise DeviceFailure(f"compute-flow stopped: one pair per tick does not fit in the memory of "
                                    f"{self.device}") from None
            oom = True
        except StreamDataError as exc:  # about those pairs' frames: give up on their sequences only
            self._fail([state for state, _, _ in exc.tags], exc.cause, budget, report)
            return
        except Exception as exc:  # the device or the engine, not the data (a sticky CUDA error fails every tick)
            raise self._device_failure(exc, stream.last_tick_pairs) from exc
        else:
            oom = False
        if oom:  # the tick changed nothing: run it again in halves
            self._halve(stream, tick_pairs=stream.last_tick_pairs)
            return
        seconds = timer.stop()
        self.stats.kernel_seconds += seconds
        call = min(stream.last_tick_pairs, stream.max_tick_pairs or stream.last_tick_pairs)
        self.stats.largest_batch = max(self.stats.largest_batch, call)
        for (state, t, _), crop in zip((tag for tag, _ in finished), crops):
            self.stats.pairs += 1
            if state.failed:
                continue
            state.out[t] = crop
            # a tick serves pairs of many sequences: charge each pair the run's mean so far
            state.seconds += self.stats.kernel_seconds / self.stats.pairs
            state.remaining -= 1
            if state.remaining == 0:
                writer.submit(self._write, state, budget, report)

    def _crop(self, finished: list) -> list[np.ndarray]:
        """Crops (inp.flow_shape: K windows of (2, S, S) for frames) of finished pairs' flows,
        cropped with their windows on the device."""
        out: list[np.ndarray | None] = [None] * len(finished)
        groups: dict[tuple, list[int]] = {}
        for i, ((state, _, _), flow) in enumerate(finished):
            groups.setdefault((state.inp.source, state.inp.crop_size, tuple(flow.shape), state.inp.flow_shape),
                              []).append(i)
        for (source, crop_size, _, _), members in groups.items():
            flow = torch.stack([finished[i][1] for i in members])
            if source == "frames":
                windows = np.stack([finished[i][0][2] for i in members])
                flow, _ = crop_flow_torch(flow, windows, crop_size)
            for i, crop in zip(members, flow.float().cpu().numpy()):
                out[i] = crop
        return out  # type: ignore[return-value]

    def _halve(self, stream: TVL1Stream, tick_pairs: int | None = None) -> None:
        """After running out of memory: halve the capacity and the pairs of one tick."""
        self._free_memory()
        with self._lock:
            self._caps = {key: max(1, cap // 2) for key, cap in self._caps.items()}
        if tick_pairs:
            stream.max_tick_pairs = max(1, min(stream.max_tick_pairs or tick_pairs, tick_pairs) // 2)
        self.stats.oom_halvings += 1

    def _fail(self, states: list[_SeqState], exc: BaseException, budget: _PairBudget, report: Report) -> None:
        for state in {id(s): s for s in states}.values():
            if not state.failed:
                state.failed = True
                budget.release(state.inp.n_pairs)
                report(record_failure(self.store, state.inp.seq_ids, exc))

    def _device_failure(self, exc: BaseException, n_pairs: int) -> DeviceFailure:
        return DeviceFailure(
            f"compute-flow stopped: TV-L1 on {self.device} failed on a tick of {n_pairs} pairs "
            f"({type(exc).__name__}: {exc}). This is not about the data: no sequence was marked failed, "
            "and a rerun resumes where this one stopped.")

    def _free_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _write(self, state: _SeqState, budget: _PairBudget, report: Report) -> None:
        try:
            report(write_flow(self.store, state.inp, state.out, backend=BACKEND, params=self.params.as_dict(),
                              device=str(self.device), seconds=state.seconds, engine=self.runner.name))
        except Exception as exc:
            report(record_failure(self.store, state.inp.seq_ids, exc))
        finally:
            budget.release(state.inp.n_pairs)


class _Timer:
    """Device time of the work queued between start and stop (CUDA events; wall time on CPU)."""

    def __init__(self, device: Any):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.start_event = torch.cuda.Event(enable_timing=True)
            self.end_event = torch.cuda.Event(enable_timing=True)
            self.start_event.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            self.end_event.record()
            self.end_event.synchronize()
            return self.start_event.elapsed_time(self.end_event) / 1000.0
        return time.perf_counter() - self.t0


# ---------------------------------------------------------------------------- devices
def expand_devices(device: str | list[str]) -> list[str]:
    """``"cuda"`` -> every visible GPU; anything else as given (a list runs one engine each)."""
    if isinstance(device, list):
        return device
    if device == "cuda":
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cuda"]
    return [device]


def run_torch(
    store_path: str, todo: list[SeqPlan], device: str | list[str], params: dict, batch_size: int | None,
    readers: int, report: Report, engine: str = "auto", cuda_graphs: bool = False, refill: bool | str = True,
) -> EngineStats:
    """Run the batched engine on one device in this process, or one process per device."""
    devices = expand_devices(device)
    if len(devices) == 1:
        seqs: queue.Queue = queue.Queue()
        for item in todo:
            seqs.put(item)
        for _ in range(max(1, readers)):
            seqs.put(None)
        return BatchedFlow(store_path, devices[0], params, batch_size, readers, engine=engine,
                           cuda_graphs=cuda_graphs, refill=refill).run(seqs.get, report)
    return _run_processes(store_path, todo, devices, params, batch_size, readers, report, engine, cuda_graphs,
                          refill)


def _run_processes(
    store_path: str, todo: list[SeqPlan], devices: list[str], params: dict, batch_size: int | None,
    readers: int, report: Report, engine: str = "auto", cuda_graphs: bool = False, refill: bool | str = True,
) -> EngineStats:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    seqs, results = ctx.Queue(), ctx.Queue()
    for item in todo:
        seqs.put(item)
    for _ in range(len(devices) * max(1, readers)):
        seqs.put(None)
    threads = max(1, torch.get_num_threads() // len(devices))
    procs = [ctx.Process(target=_device_worker, args=(store_path, d, params, batch_size, readers, threads, seqs,
                                                      results, engine, cuda_graphs, refill), daemon=True)
             for d in devices]
    for p in procs:
        p.start()
    reported: set[str] = set()
    aborted: list[str] = []
    total = EngineStats("")
    finished = 0
    while finished < len(procs):
        try:
            kind, payload = results.get(timeout=1.0)
        except queue.Empty:
            if all(not p.is_alive() for p in procs) and results.empty():
                break  # a worker died without saying so
            continue
        if kind == "result":
            reported.update(payload.seq_ids)
            report(payload)
        elif kind == "abort":
            aborted.append(payload)
        else:
            finished += 1
            total = payload if not total.device else total.merge(payload)
    for p in procs:
        p.join(timeout=10)
    if aborted:
        raise DeviceFailure(aborted[0])
    store = Store(store_path)
    dead = ", ".join(f"{d} (exit {p.exitcode})" for d, p in zip(devices, procs) if p.exitcode)
    for item in todo:  # sequences a crashed worker took with it
        if item.seq_ids[0] not in reported:
            report(record_failure(store, item.seq_ids, RuntimeError(f"device worker died: {dead or 'unknown'}")))
    return total


def _device_worker(store_path: str, device: str, params: dict, batch_size: int | None, readers: int,
                   threads: int, seqs: Any, results: Any, engine: str = "auto", cuda_graphs: bool = False,
                   refill: bool | str = True) -> None:
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    else:  # several CPU engines share the cores instead of each taking all of them
        torch.set_num_threads(threads)
    try:
        flow = BatchedFlow(store_path, device, params, batch_size, readers, engine=engine, cuda_graphs=cuda_graphs,
                           refill=refill)
        stats = flow.run(seqs.get, lambda r: results.put(("result", r)))
    except DeviceFailure as exc:
        results.put(("abort", str(exc)))
        stats = EngineStats(f"{device} (failed: {exc!r})")
    except BaseException as exc:  # still tell the parent this worker is done
        stats = EngineStats(f"{device} (failed: {exc!r})")
    results.put(("stats", stats))
