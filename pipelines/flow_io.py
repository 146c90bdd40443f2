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

from gaittools.store.zarr_store import Store, flow_attributes

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
    """One unit to compute: a sequence, or a video whose track sequences share its frames
    (``tracks``), so that each of its frame pairs goes through TV-L1 once for all of them."""

    seq_id: str  # the sequence, or the video of ``tracks``
    source: str  # "frames" or "gray"
    n_pairs: int  # of the frames (each track stores as many)
    tracks: tuple[str, ...] = ()  # sequences sharing the video's frames; () = just seq_id

    @property
    def seq_ids(self) -> tuple[str, ...]:
        """The sequences whose flow this unit writes."""
        return self.tracks or (self.seq_id,)


@dataclass
class SequenceInput:
    """What TV-L1 needs for one unit (a sequence, or the tracks of one video), read and checked."""

    seq_id: str
    source: str  # "frames": crop with windows; "gray": flow is already in crop pixels
    images: np.ndarray  # (T, H, W) uint8
    windows: np.ndarray | None  # (T, K, 4) float32 for "frames": one column per sequence of seq_ids
    crop_size: int
    seq_ids: tuple[str, ...] = ()  # the K sequences written; () = just seq_id

    def __post_init__(self) -> None:
        self.seq_ids = self.seq_ids or (self.seq_id,)

    @property
    def n_pairs(self) -> int:
        return max(0, self.images.shape[0] - 1)

    @property
    def flow_shape(self) -> tuple[int, ...]:
        """Shape of one pair's cropped flow: (K, 2, S, S) for frames, (2, S, S) for gray."""
        crop = (2, self.crop_size, self.crop_size)
        return crop if self.windows is None else (self.windows.shape[1], *crop)

    def track_pairs(self) -> np.ndarray | None:
        """(T-1, K) bool: pairs each sequence keeps (a finite window); None for gray."""
        if self.windows is None:
            return None
        return np.isfinite(self.windows[: self.n_pairs]).all(axis=2)

    def pairs_with_window(self) -> np.ndarray:
        """(T-1,) bool: pairs whose flow some sequence keeps, computed once. Frames with nobody get
        zero flow without TV-L1 (CASIA-B clips spend a third of their frames before the walker
        enters or after he leaves)."""
        kept = self.track_pairs()
        return np.ones(self.n_pairs, bool) if kept is None else kept.any(axis=1)


@dataclass
class SeqResult:
    """The outcome of one unit, as reported to the progress display: ``seq_ids`` each stored
    ``n_pairs`` pairs, for ``computed`` pairs through TV-L1."""

    seq_id: str
    ok: bool
    n_pairs: int = 0
    error: str = ""
    source: str = ""
    seconds: float = 0.0
    seq_ids: tuple[str, ...] = ()
    computed: int = 0

    def __post_init__(self) -> None:
        self.seq_ids = self.seq_ids or (self.seq_id,)


# ---------------------------------------------------------------------------- planning
def plan(store: Store, overwrite: bool = False, limit: int | None = None, shard: tuple[int, int] | None = None,
         ) -> tuple[list[SeqPlan], list[tuple[str, str]]]:
    """Units to compute and the sequences skipped with why (already done, no input array).

    Tracks that share a video's frames and need flow make one unit. ``limit`` counts
    sequences. ``shard`` = (k, n): every n-th unit in sorted order from the k-th on, so n hosts
    running compute-flow --gpu --shard k/n on one shared store split it without overlap (a
    video's tracks stay on one host)."""
    skipped: list[tuple[str, str]] = []
    units: dict[str, list[str]] = {}  # unit id -> sequences
    sources: dict[str, tuple[str, int]] = {}
    for seq_id in store.seq_ids():
        if not overwrite and has_flow(store, seq_id):
            skipped.append((seq_id, "flow already computed (use --overwrite to redo)"))
            continue
        video = store.frames_video(seq_id)
        try:
            frames = _array_shape(store, seq_id, "frames")
            source = "frames" if frames is not None or video is not None else "gray"
            shape = (frames if source == "frames" else _array_shape(store, seq_id, "gray")) or (() if video else None)
        except FlowInputError:  # unreadable metadata: planned as empty, fails (recorded) when read
            source, shape = "frames", (0,)
        if shape is None:
            skipped.append((seq_id, "has neither frames nor gray"))
            continue
        unit = seq_id if video is None else f"{video}/"  # "/" never ends a sequence id
        units.setdefault(unit, []).append(seq_id)
        sources[unit] = (source, max(0, int(shape[0]) - 1) if shape else 0)
    ordered = sorted(units)
    if shard is not None:
        ordered = ordered[shard[0] - 1::shard[1]]
    todo: list[SeqPlan] = []
    n_seqs = 0
    for unit in ordered:
        seqs = units[unit][: None if limit is None else max(0, limit - n_seqs)]
        if not seqs:
            break
        n_seqs += len(seqs)
        source, n_pairs = sources[unit]
        shared = unit.endswith("/")
        todo.append(SeqPlan(unit[:-1] if shared else unit, source, n_pairs, tuple(seqs) if shared else ()))
    return todo, skipped


def has_flow(store: Store, seq_id: str) -> bool:
    """Done means attributes written, which ``add_arrays`` does only after the array is in place."""
    return bool(store.attrs_of(seq_id).get(STAGE)) and _array_shape(store, seq_id, "flow") is not None


def _array_shape(store: Store, seq_id: str, name: str) -> tuple[int, ...] | None:
    """An array's shape from its Zarr v3 metadata alone (no chunk read): cheap for 10^4 ids."""
    meta_path = store.array_path(seq_id, name) / "zarr.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise FlowInputError(f"{meta_path}: unreadable array metadata ({exc})") from exc
    return tuple(int(n) for n in meta.get("shape", ()))


# ---------------------------------------------------------------------------- one sequence
def read_input(store: Store, seq_id: str, tracks: tuple[str, ...] = ()) -> SequenceInput:
    """Read and check one unit's TV-L1 input; a clear FlowInputError if unusable.

    ``tracks``: sequences sharing the frames of video ``seq_id`` (``SeqPlan.tracks``); their
    frames are read once and their windows side by side."""
    seq_ids = tracks or (seq_id,)
    first = store.path / "sequences" / seq_ids[0]
    arrays = store.arrays_of(seq_ids[0])
    try:
        if "frames" in arrays:
            images = store.read(seq_ids[0], "frames")
            source = "frames"
        elif store.frames_video(seq_ids[0]) is not None:
            raise FlowInputError(f"{first}: its shared frames {store.array_path(seq_ids[0], 'frames')} are "
                                 "missing; extract the video again (extract-frames --overwrite)")
        elif "gray" in arrays and not tracks:
            images, source = store.read(seq_id, "gray"), "gray"
        else:
            raise FlowInputError(f"{first}: has neither frames nor gray")
    except FlowInputError:
        raise
    except Exception as exc:  # zarr/codec errors on damaged chunks
        raise FlowInputError(f"{first}: cannot read its arrays ({type(exc).__name__}: {exc})") from exc
    name = f"{store.array_path(seq_ids[0], source)}"
    if images.dtype != np.uint8 or images.ndim != 3:
        raise FlowInputError(f"{name}: expected uint8 (T, H, W), got {images.dtype} {images.shape}")
    windows, crop_sizes = [], set()
    for one in seq_ids:
        windows.append(_track_windows(store, one, images.shape[0]) if source == "frames" else None)
        crop_sizes.add(_crop_size(store, one, source, images.shape[0]))
    if len(crop_sizes) > 1:
        raise FlowInputError(f"{name}: the sequences sharing these frames have crops of sizes {sorted(crop_sizes)}")
    stacked = np.stack(windows, axis=1) if source == "frames" else None
    return SequenceInput(seq_id, source, images, stacked, crop_sizes.pop(), tuple(tracks))


def _track_windows(store: Store, seq_id: str, n_frames: int) -> np.ndarray:
    """A sequence's crop windows (T, 4), checked against its frames."""
    where = store.path / "sequences" / seq_id
    if "windows" not in store.arrays_of(seq_id):
        raise FlowInputError(f"{where}: has frames but no windows to crop the flow with")
    try:
        windows = np.asarray(store.read(seq_id, "windows"), np.float32)
    except Exception as exc:  # zarr/codec errors on damaged chunks
        raise FlowInputError(f"{where}: cannot read its arrays ({type(exc).__name__}: {exc})") from exc
    if windows.shape != (n_frames, 4):
        raise FlowInputError(f"{where}/windows: expected ({n_frames}, 4) to match frames, got {windows.shape}")
    return windows


def _crop_size(store: Store, seq_id: str, source: str, n_frames: int) -> int:
    """The crop size S of a sequence's gray (T, S, S), which its flow is aligned with."""
    where = store.path / "sequences" / seq_id
    gray_shape = _array_shape(store, seq_id, "gray")
    if gray_shape is None or len(gray_shape) != 3 or gray_shape[1] != gray_shape[2]:
        raise FlowInputError(f"{where}/gray: expected (T, S, S) crops to align flow with, got {gray_shape}")
    if gray_shape[0] != n_frames:
        raise FlowInputError(f"{where}: gray has {gray_shape[0]} frames but {source} has {n_frames}")
    return int(gray_shape[1])


def write_flow(
    store: Store, inp: SequenceInput, flow: np.ndarray, *, backend: str, params: Mapping[str, Any], device: str,
    seconds: float, **extra: Any,
) -> SeqResult:
    """Check crop-aligned flow and write it atomically with its attributes, per sequence.

    ``flow``: (T-1, *inp.flow_shape), i.e. (T-1, K, 2, S, S) for frames (sequence k's flow is
    ``flow[:, k]``) or (T-1, 2, S, S) for gray. All checks pass before anything is written.
    """
    expected = (inp.n_pairs, *inp.flow_shape)
    if flow.shape != expected:
        raise ValueError(f"{inp.seq_id}: flow has shape {flow.shape}, expected {expected}")
    _refuse_non_finite(inp.seq_id, flow)
    if np.abs(flow).max(initial=0.0) > FLOAT16_MAX:
        raise ValueError(f"{inp.seq_id}: flow beyond float16's range (max |flow| {np.abs(flow).max():.3g})")
    kept = inp.track_pairs()
    per_seq = [flow] if kept is None else [flow[:, k] for k in range(len(inp.seq_ids))]
    computed = int(inp.pairs_with_window().sum())
    for k, (seq_id, one) in enumerate(zip(inp.seq_ids, per_seq)):
        valid = None if kept is None else kept[:, k]
        attrs = flow_attributes(one, valid, source=inp.source, crop_size=inp.crop_size, backend=backend,
                                params=params, device=device, seconds=float(seconds) / len(inp.seq_ids), **extra)
        if len(inp.seq_ids) > 1:  # its pairs were computed once for every track of the video
            attrs["shared_with"] = [s for s in inp.seq_ids if s != seq_id]
        store.add_arrays(seq_id, {"flow": one.astype(np.float16)}, {STAGE: attrs})
    return SeqResult(inp.seq_id, True, inp.n_pairs, seconds=seconds, seq_ids=inp.seq_ids, computed=computed)


def _refuse_non_finite(seq_id: str, flow: np.ndarray) -> None:
    finite = np.isfinite(flow)
    if not finite.all():
        bad_pairs = np.flatnonzero(~finite.reshape(len(flow), -1).all(axis=1))
        raise ValueError(f"{seq_id}: TV-L1 produced NaN/Inf in pairs {bad_pairs[:10].tolist()}; nothing written")


def record_failure(store: Store, seq_ids: str | tuple[str, ...], exc: BaseException, source: str = "") -> SeqResult:
    """Record why a unit's sequences failed (manifest: status_flow failed) and make its report."""
    ids = (seq_ids,) if isinstance(seq_ids, str) else tuple(seq_ids)
    error = str(exc) if isinstance(exc, (FlowInputError, ValueError)) else f"{type(exc).__name__}: {exc}"
    where = source or str(store.path / "sequences" / ids[0])
    try:
        for seq_id in ids:
            store.record_failure(seq_id, STAGE, where, error)
    except OSError as write_exc:  # the report still says why, even if the record cannot be kept
        error += f" (and the failure record could not be written: {write_exc})"
    return SeqResult(ids[0], False, error=error, source=where, seq_ids=ids)
