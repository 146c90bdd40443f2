"""The flow stage's records in the store: what a sequence feeds TV-L1, and how flow is written.

Shared by both compute-flow paths (``pipelines.compute_flow``: OpenCV on Dask workers;
``pipelines.flow_batches``: batched torch TV-L1), so that they plan, read, check, write and
record failures by one set of rules. See ``pipelines.compute_flow`` for the stage as a whole.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gaittools import __version__
from gaittools.store import Store

STAGE = "flow"
#: Largest finite float16; flow beyond it would be stored as Inf.
FLOAT16_MAX = float(np.finfo(np.float16).max)


class FlowInputError(ValueError):
    """A sequence whose stored arrays cannot be used for flow (shape, dtype, unreadable)."""


class DeviceFailure(RuntimeError):
    """The device (or the engine) failed on a batch: the run stops rather than mark every
    sequence failed (a sticky CUDA error would fail all the batches after it)."""


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


# ---------------------------------------------------------------------------- planning
def plan(store: Store, overwrite: bool = False, limit: int | None = None, shard: tuple[int, int] | None = None,
         ) -> tuple[list[SeqPlan], list[tuple[str, str]]]:
    """Sequences to compute and those skipped with why (already done, no input array).

    ``shard`` = (k, n): every n-th sequence of the store's sorted ids from the k-th on, so n
    hosts running compute-flow --gpu --shard k/n on one shared store split it without overlap."""
    todo: list[SeqPlan] = []
    skipped: list[tuple[str, str]] = []
    seq_ids = store.seq_ids()
    if shard is not None:
        seq_ids = seq_ids[shard[0] - 1::shard[1]]
    for seq_id in seq_ids:
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
