"""``compute-flow``: TV-L1 flow of every sequence of a store, cropped like ``gray``, into the store.

Two paths, one set of rules:

- CPU (default): OpenCV DualTVL1, one Dask task per sequence on single-threaded workers
  (``pipelines.cluster``); a sequence's pairs are independent of the others', so the cores
  simply share the sequences.
- ``--gpu`` (or ``--device cpu``): our batched torch TV-L1 (``pipelines.flow_batches``): pairs
  of many sequences share one batch so that short sequences still fill the GPU.

Both read a sequence's ``frames`` (or, for stores imported from silhouette pickles, which have
no frames, its ``gray`` crops), compute flow t -> t+1, crop it with frame t's window to the
crop's pixel scale (``gaittools.flow_crop``), refuse NaN/Inf, and write ``flow`` float16 with
``Store.add_arrays`` (atomic). A sequence counts as done when its attributes say so (they are
written after the array), so a killed run resumes cleanly: done sequences are skipped unless
``overwrite``, failed or interrupted ones are computed again. Failures are recorded per
sequence (stage ``flow``) and never stop the others; the manifest is refreshed at the end.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TextIO

import numpy as np

from gaittools import __version__
from gaittools.flow_crop import crop_flow
from gaittools.manifest import refresh_manifest
from gaittools.store import Store
from pipelines.progress import Progress, Summary

STAGE = "flow"
#: Largest finite float16; flow beyond it would be stored as Inf.
FLOAT16_MAX = float(np.finfo(np.float16).max)


class FlowInputError(ValueError):
    """A sequence whose stored arrays cannot be used for flow (shape, dtype, unreadable)."""


@dataclass(frozen=True)
class SeqPlan:
    """One sequence to compute: which array feeds TV-L1 and how many pairs it has."""

    seq_id: str
    source: str  # "frames" or "gray"
    n_pairs: int


@dataclass
class SequenceInput:
    """What TV-L1 needs for one sequence, read from the store and checked."""

    seq_id: str
    source: str  # "frames": crop with windows; "gray": flow is already in crop pixels
    images: np.ndarray  # (T, H, W) uint8
    windows: np.ndarray | None  # (T, 4) float32 for "frames"
    crop_size: int

    @property
    def n_pairs(self) -> int:
        return max(0, self.images.shape[0] - 1)

    def pairs_with_window(self) -> np.ndarray:
        """(T-1,) bool: pairs whose flow is kept. Frames with nobody get zero flow without TV-L1
        (CASIA-B clips spend a third of their frames before the walker enters or after he leaves)."""
        if self.windows is None:
            return np.ones(self.n_pairs, bool)
        return np.isfinite(self.windows[: self.n_pairs]).all(axis=1)


@dataclass
class SeqResult:
    """The outcome of one sequence, as reported to the progress display."""

    seq_id: str
    ok: bool
    n_pairs: int = 0
    error: str = ""
    source: str = ""
    seconds: float = 0.0


@dataclass
class FlowRun:
    """Options of one compute-flow run (what the command line sets)."""

    gpu: bool = False
    device: str | None = None
    scheduler: str | None = None
    workers: int | None = None
    batch_size: int | None = None  # None: chosen from free memory
    readers: int = 4
    overwrite: bool = False
    limit: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def uses_torch(self) -> bool:
        return self.gpu or self.device is not None


# ---------------------------------------------------------------------------- planning
def plan(store: Store, overwrite: bool = False, limit: int | None = None) -> tuple[list[SeqPlan], list[tuple[str, str]]]:
    """Sequences to compute and those skipped with why (already done, no input array)."""
    todo: list[SeqPlan] = []
    skipped: list[tuple[str, str]] = []
    for seq_id in store.seq_ids():
        if limit is not None and len(todo) >= limit:
            break
        if not overwrite and has_flow(store, seq_id):
            skipped.append((seq_id, "flow already computed (use --overwrite to redo)"))
            continue
        try:
            source = "frames" if _array_shape(store, seq_id, "frames") is not None else "gray"
            shape = _array_shape(store, seq_id, source)
        except FlowInputError:  # unreadable metadata: planned as empty, fails (recorded) when read
            source, shape = "frames", (0,)
        if shape is None:
            skipped.append((seq_id, "has neither frames nor gray"))
            continue
        todo.append(SeqPlan(seq_id, source, max(0, int(shape[0]) - 1) if shape else 0))
    return todo, skipped


def has_flow(store: Store, seq_id: str) -> bool:
    """Done means attributes written, which ``add_arrays`` does only after the array is in place."""
    return bool(store.attrs_of(seq_id).get(STAGE)) and _array_shape(store, seq_id, "flow") is not None


def _array_shape(store: Store, seq_id: str, name: str) -> tuple[int, ...] | None:
    """An array's shape from its Zarr v3 metadata alone (no chunk read): cheap for 10^4 ids."""
    meta_path = store.path / "sequences" / seq_id / name / "zarr.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise FlowInputError(f"{meta_path}: unreadable array metadata ({exc})") from exc
    return tuple(int(n) for n in meta.get("shape", ()))


# ---------------------------------------------------------------------------- one sequence
def read_input(store: Store, seq_id: str) -> SequenceInput:
    """Read and check one sequence's TV-L1 input; a clear FlowInputError if unusable."""
    where = store.path / "sequences" / seq_id
    arrays = store.arrays_of(seq_id)
    try:
        if "frames" in arrays:
            images = store.read(seq_id, "frames")
            if "windows" not in arrays:
                raise FlowInputError(f"{where}: has frames but no windows to crop the flow with")
            windows = np.asarray(store.read(seq_id, "windows"), np.float32)
            source = "frames"
        elif "gray" in arrays:
            images, windows, source = store.read(seq_id, "gray"), None, "gray"
        else:
            raise FlowInputError(f"{where}: has neither frames nor gray")
        gray_shape = _array_shape(store, seq_id, "gray")
    except FlowInputError:
        raise
    except Exception as exc:  # zarr/codec errors on damaged chunks
        raise FlowInputError(f"{where}: cannot read its arrays ({type(exc).__name__}: {exc})") from exc
    name = f"{where}/{source}"
    if images.dtype != np.uint8 or images.ndim != 3:
        raise FlowInputError(f"{name}: expected uint8 (T, H, W), got {images.dtype} {images.shape}")
    if windows is not None and windows.shape != (images.shape[0], 4):
        raise FlowInputError(f"{where}/windows: expected ({images.shape[0]}, 4) to match frames, got {windows.shape}")
    if gray_shape is None or len(gray_shape) != 3 or gray_shape[1] != gray_shape[2]:
        raise FlowInputError(f"{where}/gray: expected (T, S, S) crops to align flow with, got {gray_shape}")
    if gray_shape[0] != images.shape[0]:
        raise FlowInputError(f"{where}: gray has {gray_shape[0]} frames but {source} has {images.shape[0]}")
    return SequenceInput(seq_id, source, images, windows, int(gray_shape[1]))


def write_flow(
    store: Store, inp: SequenceInput, flow: np.ndarray, valid: np.ndarray | None, *, backend: str,
    params: Mapping[str, Any], device: str, seconds: float, **extra: Any,
) -> None:
    """Check crop-aligned flow (T-1, 2, S, S) and write it atomically with its attributes."""
    expected = (inp.n_pairs, 2, inp.crop_size, inp.crop_size)
    if flow.shape != expected:
        raise ValueError(f"{inp.seq_id}: flow has shape {flow.shape}, expected {expected}")
    _refuse_non_finite(inp.seq_id, flow)
    if np.abs(flow).max(initial=0.0) > FLOAT16_MAX:
        raise ValueError(f"{inp.seq_id}: flow beyond float16's range (max |flow| {np.abs(flow).max():.3g})")
    flow16 = flow.astype(np.float16)
    magnitude = np.hypot(flow[:, 0], flow[:, 1])
    kept = magnitude if valid is None else magnitude[valid]  # pairs with nobody in view are zero by design
    n_valid = inp.n_pairs if valid is None else int(valid.sum())
    mean_magnitude = float(kept.mean()) if kept.size else 0.0
    attrs = {
        "backend": backend,
        "params": dict(params),
        "device": device,
        "seconds": round(float(seconds), 4),
        "mean_magnitude": mean_magnitude,
        "n_pairs": inp.n_pairs,
        "n_pairs_with_window": n_valid,
        "input": inp.source,
        "crop_size": inp.crop_size,
        "units": "crop pixels, t -> t+1, cropped with windows[t]" if inp.source == "frames" else "crop pixels, t -> t+1",
        "dtype": "float16",
        "tool_version": __version__,
        **extra,
    }
    store.add_arrays(inp.seq_id, {"flow": flow16}, {STAGE: attrs})


def _refuse_non_finite(seq_id: str, flow: np.ndarray) -> None:
    finite = np.isfinite(flow)
    if not finite.all():
        bad_pairs = np.flatnonzero(~finite.reshape(len(flow), -1).all(axis=1))
        raise ValueError(f"{seq_id}: TV-L1 produced NaN/Inf in pairs {bad_pairs[:10].tolist()}; nothing written")


def record_failure(store: Store, seq_id: str, exc: BaseException, source: str = "") -> SeqResult:
    """Record why a sequence failed (manifest: status_flow failed) and make its report."""
    error = str(exc) if isinstance(exc, (FlowInputError, ValueError)) else f"{type(exc).__name__}: {exc}"
    where = source or str(store.path / "sequences" / seq_id)
    try:
        store.record_failure(seq_id, STAGE, where, error)
    except OSError as write_exc:  # the report still says why, even if the record cannot be kept
        error += f" (and the failure record could not be written: {write_exc})"
    return SeqResult(seq_id, False, error=error, source=where)


# ---------------------------------------------------------------------------- CPU path
def opencv_sequence(store_path: str, seq_id: str, params: Mapping[str, Any]) -> SeqResult:
    """Dask task: OpenCV DualTVL1 over one sequence's pairs, cropped and written."""
    from pipelines.cluster import limit_native_threads

    limit_native_threads()
    store = Store(store_path)
    try:
        inp = read_input(store, seq_id)
        start = time.perf_counter()
        todo = np.flatnonzero(inp.pairs_with_window())
        full = np.zeros((inp.n_pairs, 2, *inp.images.shape[1:]), np.float32)
        if len(todo):
            full[todo] = opencv_pairs(inp.images, params, todo)
        flow, valid = crop_flow(full, inp.windows, inp.crop_size) if inp.source == "frames" else (full, None)
        seconds = time.perf_counter() - start
        write_flow(store, inp, flow, valid, backend="opencv-dualtvl1", params=_params(params).as_dict(),
                   device="cpu", seconds=seconds)
        return SeqResult(seq_id, True, inp.n_pairs, seconds=seconds)
    except Exception as exc:  # one bad sequence must not stop the others
        return record_failure(store, seq_id, exc)


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
    """``Progress`` counting sequences, with the rate and ETA in frame pairs (what costs)."""

    def __init__(self, name: str, total: int, total_pairs: int, stream: TextIO | None = None, interval: float = 2.0):
        super().__init__(name, total, unit="sequences", stream=stream, interval=interval)
        self.total_pairs = total_pairs

    def line(self) -> str:
        elapsed = max(self.elapsed, 1e-9)
        pairs = self.summary.frames
        rate = pairs / elapsed
        eta = _clock((self.total_pairs - pairs) / rate) if rate > 0 else "?"
        failed = f"  ({len(self.summary.failed)} failed)" if self.summary.failed else ""
        return (
            f"[{self.name}] {len(self.summary.done) + len(self.summary.failed)}/{self.total} sequences  "
            f"{pairs}/{self.total_pairs} pairs  {rate:.1f} pairs/s  ETA {eta}{failed}"
        )

    def report(self, result: SeqResult) -> None:
        if result.ok:
            self.done(result.seq_id, frames=result.n_pairs)
        else:
            self.failed(result.seq_id, result.source, result.error)


def _clock(seconds: float) -> str:
    seconds = int(round(max(0.0, seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


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
    store = Store(store_path)
    store.clean_staging()  # what killed runs left; never read as data
    todo, skipped = plan(store, run.overwrite, run.limit)
    progress = PairProgress("compute-flow", len(todo), sum(p.n_pairs for p in todo), stream=stream)
    for seq_id, why in skipped:
        progress.skip(seq_id, why)
    stats = None
    if todo:
        if run.uses_torch:
            from pipelines.flow_batches import run_torch

            stats = run_torch(str(store.path), todo, device, params, run.batch_size, run.readers, progress.report)
            print(stats.format(), file=stream, flush=True)
        else:
            _run_opencv(str(store.path), todo, params, run, progress.report)
    summary = progress.finish()
    if summary.seconds > 0 and summary.frames:
        print(f"[compute-flow] {summary.frames / summary.seconds:.1f} pairs/s on {device} "
              f"({'torch' if run.uses_torch else 'opencv'})", file=stream, flush=True)
    refresh_manifest(store)
    return FlowReport(summary, stats)


def _run_opencv(store_path: str, todo: list[SeqPlan], params: dict, run: FlowRun, report: Callable[[SeqResult], None]) -> None:
    from pipelines.cluster import dask_client, in_process

    if in_process(run.workers, run.scheduler):
        for item in todo:
            report(opencv_sequence(store_path, item.seq_id, params))
        return
    from distributed import as_completed

    with dask_client(scheduler=run.scheduler, workers=run.workers) as client:
        # Longest sequences first: the last tasks are short, so the cores finish together.
        ordered = sorted(todo, key=lambda p: -p.n_pairs)
        run_tag = time.time_ns()  # a joined cluster may still hold results of an earlier run's keys
        futures = {client.submit(opencv_sequence, store_path, p.seq_id, params, key=f"flow-{p.seq_id}-{run_tag}",
                                 pure=False, retries=0): p for p in ordered}
        for fut in as_completed(futures):
            item = futures[fut]
            try:
                report(fut.result())
            except Exception as exc:  # a worker died: the task's own handler never ran
                report(record_failure(Store(store_path), item.seq_id, exc))


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


class DeviceUnavailable(RuntimeError):
    """The asked-for torch device is not on this machine."""
