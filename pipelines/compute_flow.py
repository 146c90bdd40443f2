"""``compute-flow``: TV-L1 flow of every sequence of a store, cropped like ``gray``, into the store.

Two paths, one set of rules:

- CPU (default): OpenCV DualTVL1, one Dask task per sequence on single-threaded workers
  (``pipelines.cluster``); a sequence's pairs are independent of the others', so the cores
  simply share the sequences.
- ``--gpu`` (or ``--device cpu``): our batched torch TV-L1 (``pipelines.flow_batches``): pairs
  of many sequences share one batch so that short sequences still fill the GPU.

Planning, reading, checking and writing a sequence (the rules below) live in
``pipelines.flow_io``, which both paths import (re-exported here for callers).

Both read a sequence's ``frames`` (or, for stores imported from silhouette pickles, which have
no frames, its ``gray`` crops), compute flow t -> t+1, crop it with frame t's window to the
crop's pixel scale (``gaittools.flow.crop``), refuse NaN/Inf, and write ``flow`` float16 with
``Store.add_arrays`` (atomic). A sequence counts as done when its attributes say so (they are
written after the array), so a killed run resumes cleanly: done sequences are skipped unless
``overwrite``, failed or interrupted ones are computed again. Failures are recorded per
sequence (stage ``flow``) and never stop the others; the manifest is refreshed at the end.

The track sequences ``<video>.t<k>`` of one video share its frames (``gaittools.store.zarr_store``): the
plan makes them one unit, whose pairs (those some track has a window for) go through TV-L1
once; each track's flow is then cropped with its own windows and written as its own array,
exactly as if it had been computed alone. The summary counts pairs stored and pairs computed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from gaittools.flow.crop import crop_flow
from gaittools.store.manifest import refresh_manifest
from gaittools.store.zarr_store import Store
from pipelines.flow_io import (STAGE, DeviceFailure, FlowInputError, SeqPlan, SeqResult, SequenceInput, has_flow, plan,
                               read_input, record_failure, write_flow)
from gaittools.cli.progress import Meter, Progress, Summary

__all__ = ["STAGE", "DeviceFailure", "FlowInputError", "FlowRun", "SeqPlan", "SeqResult", "SequenceInput", "compute_flow",
           "has_flow", "parse_params", "plan", "read_input", "record_failure", "write_flow"]


@dataclass
class FlowRun:
    """Options of one compute-flow run (what the command line sets)."""

    gpu: bool = False
    device: str | None = None
    scheduler: str | None = None
    workers: int | None = None
    batch_size: int | None = None  # None: chosen from free memory
    engine: str = "auto"  # torch path: TV-L1 inner engine, auto | reference | fused
    cuda_graphs: bool = False  # torch path: replay the fused inner loop from CUDA graphs
    refill: bool | str = True  # torch path: the stream's schedule (True: "cohorts"; False: "batch"; or a name)
    readers: int = 4
    overwrite: bool = False
    limit: int | None = None
    shard: tuple[int, int] | None = None  # (k, n): only the k-th of n shares of the sequences, 1-based
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def uses_torch(self) -> bool:
        return self.gpu or self.device is not None


# ---------------------------------------------------------------------------- CPU path
def opencv_sequence(store_path: str, seq_id: str, params: Mapping[str, Any], tracks: tuple[str, ...] = ()
                    ) -> SeqResult:
    """Dask task: OpenCV DualTVL1 over one unit's pairs (a sequence, or the ``tracks`` sharing
    video ``seq_id``'s frames: each pair once), cropped per sequence and written."""
    from pipelines.cluster import limit_native_threads

    limit_native_threads()
    store = Store(store_path)
    try:
        inp = read_input(store, seq_id, tracks)
        start = time.perf_counter()
        todo = np.flatnonzero(inp.pairs_with_window())
        full = np.zeros((inp.n_pairs, 2, *inp.images.shape[1:]), np.float32)
        if len(todo):
            full[todo] = opencv_pairs(inp.images, params, todo)
        if inp.windows is None:
            flow = full
        else:  # (T-1, K, 2, S, S): each sequence's crop of the one full-frame flow
            flow = np.stack([crop_flow(full, inp.windows[:, k], inp.crop_size)[0]
                             for k in range(inp.windows.shape[1])], axis=1)
        seconds = time.perf_counter() - start
        return write_flow(store, inp, flow, backend="opencv-dualtvl1", params=_params(params).as_dict(),
                          device="cpu", seconds=seconds)
    except Exception as exc:  # one bad sequence must not stop the others
        return record_failure(store, tracks or seq_id, exc)


def opencv_pairs(images: np.ndarray, params: Mapping[str, Any], pairs: np.ndarray) -> np.ndarray:
    """Full-frame flow (len(pairs), 2, H, W) float32 from images[t] to images[t+1], t in pairs."""
    from gaittools.flow.opencv_backend import opencv_tvl1

    return np.asarray(opencv_tvl1(images[pairs], images[pairs + 1], _params(params)), np.float32)


def _params(params: Mapping[str, Any]) -> Any:
    from gaittools.flow.params import TVL1Params

    return TVL1Params(**dict(params))


def parse_params(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["warps=3", "inner_iterations=10"]`` -> typed TVL1Params overrides (checked)."""
    from gaittools.flow.params import TVL1Params

    types = {f.name: f.type for f in fields(TVL1Params)}
    out: dict[str, Any] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key == "lambda":
            key = "lambda_"
        if not sep or key not in types:
            raise ValueError(f"--tvl1 {item!r}: expected NAME=VALUE with NAME one of {sorted(types)}")
        out[key] = int(value) if types[key] in (int, "int") else float(value)
    TVL1Params(**out)  # validates values now rather than in every worker
    return out


# ---------------------------------------------------------------------------- orchestration
class PairProgress(Progress):
    """``Progress`` counting sequences, with the rate and ETA in frame pairs (what costs).

    The tracks of one video share its pairs: each sequence counts the pairs it stores, and
    ``computed`` the pairs that went through TV-L1 (once per video)."""

    def __init__(self, name: str, todo: list[SeqPlan], stream: TextIO | None = None, interval: float = 2.0):
        super().__init__(name, sum(len(p.seq_ids) for p in todo), unit="sequences", stream=stream,
                         interval=interval)
        self.total_pairs = sum(p.n_pairs * len(p.seq_ids) for p in todo)
        self.pairs = Meter(sum(p.n_pairs for p in todo))  # the frames' pairs: what TV-L1 may run on
        self.summary.work_unit = "pairs"
        self.summary.computed = 0

    def line(self) -> str:
        failed = f"  ({len(self.summary.failed)} failed)" if self.summary.failed else ""
        return (
            f"[{self.name}] {len(self.summary.done) + len(self.summary.failed)}/{self.total} sequences  "
            f"{self.summary.frames}/{self.total_pairs} pairs stored, {self.summary.computed} computed  "
            f"{self.pairs.rate:.1f} pairs/s  ETA {self.pairs.eta()}{failed}"
        )

    def report(self, result: SeqResult) -> None:
        self.pairs.update(self.pairs.amount + result.n_pairs)
        self.summary.computed = (self.summary.computed or 0) + result.computed
        for seq_id in result.seq_ids:
            if result.ok:
                self.done(seq_id, frames=result.n_pairs)
            else:
                self.failed(seq_id, result.source, result.error)


@dataclass
class FlowReport:
    """What a run did: the per-sequence summary, and the torch engine's numbers if it ran."""

    summary: Summary
    engine: Any = None  # pipelines.flow_batches.EngineStats

    @property
    def ok(self) -> bool:
        return self.summary.ok


def compute_flow(store_path: str, run: FlowRun, stream: TextIO | None = None) -> FlowReport:
    """Compute the flow of every sequence of the store that needs it.

    Refuses a torch path on a device that is not there before touching the store.
    """
    stream = stream if stream is not None else sys.stderr
    device = resolve_device(run) if run.uses_torch else "cpu"
    params = dict(run.params)
    _params(params)  # bad parameters fail here, once
    if run.uses_torch and (run.engine == "fused" or run.cuda_graphs):
        _check_fused(device, params, run.engine, run.cuda_graphs)
    store = Store(Path(store_path).resolve())  # workers of a joined cluster have another working directory
    store.clean_staging()  # what killed runs left; never read as data
    todo, skipped = plan(store, run.overwrite, run.limit, run.shard)
    progress = PairProgress("compute-flow", todo, stream=stream)
    for seq_id, why in skipped:
        progress.skip(seq_id, why)
    stats = None
    if todo:
        if run.uses_torch:
            from pipelines.flow_batches import run_torch

            try:
                stats = run_torch(str(store.path), todo, device, params, run.batch_size, run.readers,
                                  progress.report, engine=run.engine, cuda_graphs=run.cuda_graphs,
                                  refill=run.refill)
            finally:  # a device failure stops the run; what was written is in the manifest
                refresh_manifest(store)
            print(stats.format(), file=stream, flush=True)
        else:
            _run_opencv(str(store.path), todo, params, run, progress.report)
    summary = progress.finish()
    if summary.seconds > 0 and summary.computed:
        how = f"torch, {stats.engine} engine" if stats is not None else ("torch" if run.uses_torch else "opencv")
        print(f"[compute-flow] {summary.computed / summary.seconds:.1f} computed pairs/s on {device} ({how})",
              file=stream, flush=True)
    refresh_manifest(store)
    return FlowReport(summary, stats)


def _run_opencv(store_path: str, todo: list[SeqPlan], params: dict, run: FlowRun, report: Callable[[SeqResult], None]) -> None:
    from pipelines.cluster import dask_client, in_process

    if in_process(run.workers, run.scheduler):
        for item in todo:
            report(opencv_sequence(store_path, item.seq_id, params, item.tracks))
        return
    from distributed import as_completed

    with dask_client(scheduler=run.scheduler, workers=run.workers, must_see={"store": store_path}) as client:
        # Longest sequences first: the last tasks are short, so the cores finish together.
        ordered = sorted(todo, key=lambda p: -p.n_pairs)
        run_tag = time.time_ns()  # a joined cluster may still hold results of an earlier run's keys
        futures = {client.submit(opencv_sequence, store_path, p.seq_id, params, p.tracks,
                                 key=f"flow-{p.seq_id}-{run_tag}", pure=False, retries=0): p for p in ordered}
        for fut in as_completed(futures):
            item = futures[fut]
            try:
                report(fut.result())
            except Exception as exc:  # a worker died: the task's own handler never ran
                report(record_failure(Store(store_path), item.seq_ids, exc))


def resolve_device(run: FlowRun) -> str:
    """The torch device to use; a clear error when CUDA is asked for and absent."""
    import torch

    wanted = run.device or "cuda"
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise DeviceUnavailable(
            f"--gpu needs a CUDA GPU, but {why} (torch {torch.__version__}). Use `--device cpu` to run "
            "the batched torch TV-L1 on the CPU, or drop --gpu for OpenCV DualTVL1 on CPU workers."
        )
    if wanted not in ("cpu", "cuda") and not wanted.startswith("cuda:"):
        raise DeviceUnavailable(f"--device {wanted!r}: expected cpu, cuda or cuda:N")
    return wanted


def _check_fused(device: str, params: Mapping[str, Any], engine: str = "fused", cuda_graphs: bool = False) -> None:
    """``--engine fused`` or ``--cuda-graphs`` where they cannot run is refused before the store
    is touched."""
    import torch

    from gaittools.flow.tvl1_torch import pick_engine

    try:
        pick_engine(torch.device(device), _params(params), engine, cuda_graphs)
    except RuntimeError as exc:
        asked = f"--engine {engine}" + (" --cuda-graphs" if cuda_graphs else "")
        raise DeviceUnavailable(f"{asked} on {device}: {exc}") from exc


class DeviceUnavailable(RuntimeError):
    """The asked-for torch device is not on this machine."""
