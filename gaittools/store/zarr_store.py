"""The Zarr v3 store: one self-describing group per sequence, written atomically.

Layout::

    STORE/zarr.json                       root attrs: store format, dataset, tool version
    STORE/sequences/<seq_id>/             one group per finished sequence
        frames  uint8  (T, H, W)          gray frames at the working resolution (sequences
                                          named after their video; see "shared frames")
        boxes   float32 (T, 4)            x0, y0, x1, y1 in frame pixels, NaN where nobody
        gray    uint8  (T, S, S)          person-centred crops
        sil     uint8  (T, S, S)          silhouettes 0/255 (extract-frames; absent in older stores)
        flow    float16 (T-1, 2, S, S)    TV-L1 flow t -> t+1 in crop pixels (compute-flow)
    STORE/videos/<video_id>/              the frames that the track sequences of one video share
        frames  uint8  (T, H, W)          attrs: tracks (their seq ids), complete (all written)
    STORE/failures/<seq_id>.json          why a sequence failed (removed once it succeeds)
    STORE/manifest.parquet                one row per sequence (gaittools.store.manifest)
    STORE/.staging/                       work in progress; never read as data

Why staging and rename: a sequence group appears under ``sequences/`` only by an atomic
``rename`` of a fully written directory, so a killed run, a full disk or a crashing worker
never leaves a half-written sequence that a resume would mistake for a finished one.
Arrays added later (``flow``) are staged the same way and renamed into the group before the
group's attributes say so. The store is a local directory (or a shared filesystem that all
Dask workers see); rename-based atomicity is what limits it to that.

Shared frames (format 2): a video with several walkers becomes several track sequences
``<video_id>.t<k>``, which all need the same working-resolution frames. They are stored once,
in ``videos/<video_id>/``, and each track names its video in its attribute ``frames_video``;
``Store.array_path`` is the one place that resolves it, so ``read``/``arrays_of`` show a
track's ``frames`` as if it held them. Why a per-video group rather than "the first track holds
them": deleting or re-extracting any one track then never takes the others' frames with it,
and the group is also where a video records which tracks it made and whether all were
written. A sequence named after its video (``longest`` mode: CASIA-B, TUM-GAID; a video with
nobody walking) keeps its frames in its own group as before, so those stores are unchanged.
Order of writes (``write_video``): any old sequences of the video are deleted, the video group
is renamed into place, the tracks are written one by one, and only then is the group marked
``complete``. A kill at any point leaves every present track pointing at frames that exist and
were written with it; a video that is not ``complete`` is extracted again by a resumed run.
Format 1 stores (frames in every track) are still read; a writer upgrades the stamp to 2.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from gaittools import __version__
from gaittools.store.zarr_files import write_array, write_group

STORE_FORMAT = 2
#: Formats this version reads: 1 differs only in lacking shared frames (``videos/``).
READABLE_FORMATS = (1, 2)
SEQUENCES = "sequences"
VIDEOS = "videos"
#: The attribute by which a track sequence names the video group holding its frames.
FRAMES_VIDEO = "frames_video"
STAGING = ".staging"
FAILURES = "failures"

#: Frames per chunk along time for each array; whole frames per chunk spatially. Readers take
#: whole sequences (compute-flow, training), and every chunk is a file: creating a file costs
#: 0.1-1 ms on network and sandboxed file systems, so most sequences get one chunk per array.
TIME_CHUNKS: dict[str, int] = {"frames": 128, "boxes": 4096, "gray": 128, "sil": 128, "flow": 32}
#: zstd level per array (default 3); ``None`` stores an array uncompressed. Frames are the bulk
#: of a store and can be decoded again from the source: level 1 compresses them 3-4x faster
#: than level 3 for ~12% more bytes (CASIA-B), and extract-frames can store them raw
#: (``--frames-codec none``: twice the bytes, no compression time).
ZSTD_LEVELS: dict[str, int | None] = {"frames": 1}


class StoreError(RuntimeError):
    """A store that cannot be used as asked (missing, other format, other dataset)."""


class Store:
    """A gaittools store on the local filesystem."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        root_meta = self.path / "zarr.json"
        if not root_meta.is_file():
            raise StoreError(f"{self.path}: not a gaittools store (no zarr.json); create it first")
        attrs = _read_group_attrs(self.path)
        fmt = attrs.get("gaittools_store_format")
        if fmt is None:
            raise StoreError(f"{self.path}: a Zarr group but not a gaittools store")
        if fmt not in READABLE_FORMATS:
            raise StoreError(
                f"{self.path}: store format {fmt} was written by gaittools "
                f"{attrs.get('created_by', '?')}; this gaittools {__version__} reads format "
                f"{STORE_FORMAT}. Rebuild the store with this version (--overwrite into a new path)."
            )
        self.attrs: dict[str, Any] = attrs

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, path: str | os.PathLike[str], dataset: str, **attrs: Any) -> Store:
        """Open the store at ``path``, creating it if absent; refuse one of another dataset."""
        path = Path(path)
        if (path / "zarr.json").is_file():
            store = cls(path)
            if store.dataset != dataset:
                raise StoreError(
                    f"{path}: holds dataset {store.dataset!r}, not {dataset!r}; use another path"
                )
            if store.attrs.get("gaittools_store_format") != STORE_FORMAT:  # a writer may share frames
                store._update_root_attrs({"gaittools_store_format": STORE_FORMAT})
            return store
        if path.exists() and any(path.iterdir()):
            raise StoreError(f"{path}: exists, is not empty and is not a gaittools store")
        # Built beside the target and renamed into place, so a kill never leaves a root
        # without its gaittools attributes (which would be refused forever after).
        path.parent.mkdir(parents=True, exist_ok=True)
        stage = path.with_name(f".{path.name}.creating.{uuid.uuid4().hex[:12]}")
        try:
            write_group(stage, _jsonable(
                {"gaittools_store_format": STORE_FORMAT, "dataset": dataset, "created_by": __version__, **attrs}
            ))
            write_group(stage / SEQUENCES, {})
            os.rename(stage, path)  # replaces an empty directory, fails on a non-empty one
        except OSError:
            if not (path / "zarr.json").is_file():
                raise
            # another process created it at the same moment: use theirs
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return cls.create(path, dataset)  # now exists: checks the dataset of whoever made it

    @property
    def dataset(self) -> str:
        return str(self.attrs.get("dataset", ""))

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.parquet"

    # ------------------------------------------------------------------ reading
    def seq_ids(self) -> list[str]:
        """Ids of every finished sequence, sorted. Listing the directory scales to 10^5 ids."""
        seq_dir = self.path / SEQUENCES
        if not seq_dir.is_dir():
            return []
        return sorted(
            e.name for e in os.scandir(seq_dir) if e.is_dir() and (Path(e.path) / "zarr.json").is_file()
        )

    def __contains__(self, seq_id: str) -> bool:
        return (self._seq_path(seq_id) / "zarr.json").is_file()

    def __iter__(self) -> Iterator[str]:
        return iter(self.seq_ids())

    def group(self, seq_id: str) -> zarr.Group:
        """The sequence's Zarr group, read-only."""
        if seq_id not in self:
            raise KeyError(f"{self.path}: no sequence {seq_id!r}")
        return zarr.open_group(str(self._seq_path(seq_id)), mode="r")

    def attrs_of(self, seq_id: str) -> dict[str, Any]:
        """The sequence's attributes (how it was made), without opening its arrays."""
        if seq_id not in self:
            raise KeyError(f"{self.path}: no sequence {seq_id!r}")
        return _read_group_attrs(self._seq_path(seq_id))

    def arrays_of(self, seq_id: str) -> list[str]:
        """Names of the arrays a sequence holds (its shared ``frames`` included)."""
        p = self._seq_path(seq_id)
        names = {e.name for e in os.scandir(p) if e.is_dir() and (Path(e.path) / "zarr.json").is_file()}
        if "frames" not in names and (self.array_path(seq_id, "frames") / "zarr.json").is_file():
            names.add("frames")
        return sorted(names)

    def frames_video(self, seq_id: str) -> str | None:
        """The video whose shared frames a track sequence uses; None when it holds its own
        (or none: silhouette imports)."""
        video = self.attrs_of(seq_id).get(FRAMES_VIDEO)
        return str(video) if video else None

    def array_path(self, seq_id: str, name: str) -> Path:
        """Where a sequence's array lives: the one resolution of shared frames (module doc)."""
        if name == "frames":
            video = self.frames_video(seq_id)
            if video is not None:
                return self._video_path(video) / "frames"
        return self._seq_path(seq_id) / name

    def read(self, seq_id: str, name: str) -> np.ndarray:
        """One whole array of a sequence as numpy (shared frames resolved)."""
        path = self.array_path(seq_id, name)
        if not (path / "zarr.json").is_file():
            raise KeyError(f"{self.path}: sequence {seq_id!r} has no array {name!r}")
        return zarr.open_array(str(path), mode="r")[...]

    def video_attrs(self, video_id: str) -> dict[str, Any] | None:
        """A shared-frames video group's attributes (tracks, complete), None if there is none."""
        path = self._video_path(video_id)
        return _read_group_attrs(path) if (path / "zarr.json").is_file() else None

    def videos_done(self) -> set[str]:
        """Ids of videos whose extraction finished: a sequence under the video's own id, a
        ``complete`` video group, or (format 1) a track with no video group."""
        seq_ids = self.seq_ids()
        vdir = self.path / VIDEOS
        groups = {e.name for e in os.scandir(vdir) if e.is_dir()} if vdir.is_dir() else set()
        done = {v for v in groups if (self.video_attrs(v) or {}).get("complete")}
        for seq_id in seq_ids:
            video = track_video(seq_id)
            if video is None:
                done.add(seq_id)
            elif video not in groups:
                done.add(video)
        return done

    # ------------------------------------------------------------------ writing
    def write_sequence(
        self, seq_id: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any], overwrite: bool = False,
        zstd_levels: Mapping[str, int | None] | None = None,
    ) -> None:
        """Write a whole sequence atomically: it appears complete or not at all.

        ``zstd_levels`` overrides ``ZSTD_LEVELS`` per array name; ``None`` stores it raw.
        """
        target = self._seq_path(seq_id)
        if target.exists() and not overwrite:
            raise StoreError(f"{self.path}: sequence {seq_id!r} exists (use overwrite)")
        stage = self._stage_dir(seq_id)
        try:
            for name, data in arrays.items():
                _write_array(stage / name, name, data, zstd_levels)
            write_group(stage, _jsonable({**attrs, "store_format": STORE_FORMAT, "tool_version": __version__}))
            _fsync_tree(stage)
            self._swap_in(stage, target)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        self.clear_failure(seq_id)

    def add_arrays(
        self, seq_id: str, arrays: Mapping[str, np.ndarray], attrs_update: Mapping[str, Any]
    ) -> None:
        """Add or replace arrays of a finished sequence, then record how they were made.

        Each array is staged, then renamed into the group; the attribute update comes last,
        so attributes never describe an array that is not fully there.
        """
        seq_path = self._seq_path(seq_id)
        if not (seq_path / "zarr.json").is_file():
            raise KeyError(f"{self.path}: no sequence {seq_id!r}")
        stage = self._stage_dir(seq_id)
        try:
            for name, data in arrays.items():
                _write_array(stage / name, name, data)
            _fsync_tree(stage)
            for name in arrays:
                self._swap_in(stage / name, seq_path / name)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        self.update_attrs(seq_id, attrs_update)
        self.clear_failure(seq_id)

    def update_attrs(self, seq_id: str, update: Mapping[str, Any]) -> None:
        """Merge ``update`` into a sequence's attributes with an atomic file replace."""
        _update_group_attrs(self._seq_path(seq_id), update)

    def write_video(
        self, video_id: str, sequences: Sequence[tuple[str, Mapping[str, np.ndarray], Mapping[str, Any]]],
        overwrite: bool = False, zstd_levels: Mapping[str, int | None] | None = None,
    ) -> None:
        """Write every sequence one video made, its frames stored once (module doc).

        ``sequences``: (seq_id, arrays, attrs) each, all with the same ``frames`` (or none).
        A single sequence named ``video_id`` keeps its frames (``write_sequence``); tracks get
        them from ``videos/<video_id>``. Whatever the video made before is replaced when
        ``overwrite`` or when that earlier write never completed (a killed run).
        """
        ids = [seq_id for seq_id, _, _ in sequences]
        before = self.video_attrs(video_id)
        stale = set((before or {}).get("tracks", [])) | ({video_id} if video_id in self else set())
        if overwrite and before is None:  # format 1: tracks held their own frames, no group listed them
            stale |= {seq_id for seq_id in self.seq_ids() if track_video(seq_id) == video_id}
        if not overwrite and ((before or {}).get("complete") or video_id in self):
            raise StoreError(f"{self.path}: video {video_id!r} exists (use overwrite)")
        for seq_id in sorted(stale):  # first: no old track may point at the new frames
            self.delete_sequence(seq_id)
        self._delete_video(video_id)
        if ids == [video_id]:
            _, arrays, attrs = sequences[0]
            self.write_sequence(video_id, arrays, attrs, overwrite=True, zstd_levels=zstd_levels)
            return
        frames = sequences[0][1].get("frames")
        if frames is None or any(a.get("frames") is not frames for _, a, _ in sequences):
            raise ValueError(f"{video_id}: the tracks of a video must share one frames array")
        stage = self._stage_dir(video_id, "video")
        try:
            _write_array(stage / "frames", "frames", frames, zstd_levels)
            write_group(stage, {"tracks": ids, "complete": False, "store_format": STORE_FORMAT,
                                "tool_version": __version__})
            _fsync_tree(stage)
            (self.path / VIDEOS).mkdir(exist_ok=True)
            self._swap_in(stage, self._video_path(video_id))
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        for seq_id, arrays, attrs in sequences:
            own = {k: v for k, v in arrays.items() if k != "frames"}
            self.write_sequence(seq_id, own, {**attrs, FRAMES_VIDEO: video_id}, overwrite=True,
                                zstd_levels=zstd_levels)
        self._update_video_attrs(video_id, {"complete": True})

    def delete_sequence(self, seq_id: str) -> None:
        """Remove a sequence; a track leaves its video's list, and the last one takes the
        shared frames with it (the other tracks keep theirs)."""
        target = self._seq_path(seq_id)
        if not target.exists():
            return
        video = self.frames_video(seq_id) if (target / "zarr.json").is_file() else None
        self._remove(target)
        attrs = self.video_attrs(video) if video is not None else None
        if attrs is not None:
            tracks = [t for t in attrs.get("tracks", []) if t != seq_id]
            if tracks:
                self._update_video_attrs(video, {"tracks": tracks})
            else:
                self._delete_video(video)

    # ------------------------------------------------------------------ failures
    def record_failure(self, seq_id: str, stage: str, source: str, error: str, **extra: Any) -> None:
        """Remember why a sequence failed, so the manifest can be rebuilt with it."""
        fdir = self.path / FAILURES
        fdir.mkdir(exist_ok=True)
        record = {"seq_id": seq_id, "stage": stage, "source": source, "error": error, **extra}
        atomic_write_text(fdir / f"{seq_id}.json", json.dumps(_jsonable(record), indent=2))

    def clear_failure(self, seq_id: str) -> None:
        record = self.path / FAILURES / f"{seq_id}.json"
        if record.exists():
            record.unlink(missing_ok=True)

    def failures(self) -> list[dict[str, Any]]:
        fdir = self.path / FAILURES
        if not fdir.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(fdir.glob("*.json"))]

    def clean_staging(self) -> None:
        """Remove what killed runs left in staging. Call only when no writer is running."""
        shutil.rmtree(self.path / STAGING, ignore_errors=True)

    # ------------------------------------------------------------------ internals
    def _seq_path(self, seq_id: str) -> Path:
        if not seq_id or "/" in seq_id or seq_id.startswith("."):
            raise ValueError(f"bad sequence id {seq_id!r}")
        return self.path / SEQUENCES / seq_id

    def _video_path(self, video_id: str) -> Path:
        if not video_id or "/" in video_id or video_id.startswith("."):
            raise ValueError(f"bad video id {video_id!r}")
        return self.path / VIDEOS / video_id

    def _delete_video(self, video_id: str) -> None:
        target = self._video_path(video_id)
        if target.exists():
            self._remove(target)

    def _remove(self, target: Path) -> None:
        """Take a group out of sight with one rename, then delete it."""
        trash = self._stage_dir(target.name, "trash")
        os.rename(target, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def _update_video_attrs(self, video_id: str, update: Mapping[str, Any]) -> None:
        _update_group_attrs(self._video_path(video_id), update)

    def _update_root_attrs(self, update: Mapping[str, Any]) -> None:
        _update_group_attrs(self.path, update)
        self.attrs.update(update)

    def _stage_dir(self, seq_id: str, kind: str = "new") -> Path:
        stage_root = self.path / STAGING
        if not stage_root.is_dir():  # a stat, not a failing mkdir: file-system calls are dear
            stage_root.mkdir(exist_ok=True)
        return stage_root / f"{seq_id}.{kind}.{uuid.uuid4().hex[:12]}"

    def _swap_in(self, new: Path, target: Path) -> None:
        """Replace ``target`` by ``new`` with renames only (old one removed afterwards)."""
        old = None
        if target.exists():
            old = self._stage_dir(target.name, "old")
            os.rename(target, old)
        os.rename(new, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _write_array(path: Path, name: str, data: np.ndarray,
                 zstd_levels: Mapping[str, int | None] | None = None) -> None:
    levels = {**ZSTD_LEVELS, **(zstd_levels or {})}
    write_array(path, data, TIME_CHUNKS.get(name, 64), levels.get(name, 3))


def track_video(seq_id: str) -> str | None:
    """The video id of a track sequence ``<video_id>.t<k>``; None for any other id."""
    match = re.fullmatch(r"(.+)\.t\d+", seq_id)
    return match.group(1) if match else None


def flow_attributes(flow: np.ndarray, valid: np.ndarray | None, *, source: str, crop_size: int, backend: str,
                    params: Mapping[str, Any], device: str, seconds: float, **extra: Any) -> dict[str, Any]:
    """The attributes a sequence's ``flow`` array is recorded with (the store's contract), for
    every writer of flow: compute-flow and the synthetic training fixture.

    ``flow`` (T-1, 2, S, S) in crop pixels; ``valid`` (T-1,) the pairs with a crop window
    (None: all), over which the mean magnitude is taken (pairs with nobody are zero by
    design); ``source`` what TV-L1 ran on ("frames", "gray", ...).
    """
    flow = np.asarray(flow, np.float32)
    magnitude = np.hypot(flow[:, 0], flow[:, 1])
    used = magnitude if valid is None else magnitude[valid]
    return {
        "backend": backend,
        "params": dict(params),
        "device": device,
        "seconds": round(float(seconds), 4),
        "mean_magnitude": float(used.mean()) if used.size else 0.0,
        "n_pairs": len(flow),
        "n_pairs_with_window": len(flow) if valid is None else int(valid.sum()),
        "input": source,
        "crop_size": crop_size,
        "units": "crop pixels, t -> t+1" + ("" if source == "gray" else ", cropped with windows[t]"),
        "dtype": "float16",
        "tool_version": __version__,
        **extra,
    }


def _update_group_attrs(path: Path, update: Mapping[str, Any]) -> None:
    """Merge ``update`` into a group's attributes with an atomic file replace."""
    meta_path = path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta.setdefault("attributes", {}).update(_jsonable(dict(update)))
    atomic_write_text(meta_path, json.dumps(meta, indent=2))


def _read_group_attrs(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path / 'zarr.json'}: unreadable ({exc})") from exc
    return dict(meta.get("attributes", {}))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` through a temporary file and a rename: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_tree(path: Path) -> None:
    """Flush staged files before the rename publishes them, when power-loss safety is asked.

    The rename alone already protects against killed processes, crashed workers and full
    disks (the data is complete in the page cache before the group appears). Against power
    loss, set ``GAITTOOLS_FSYNC=1``: it costs about half of the write time of a sequence.
    """
    if os.environ.get("GAITTOOLS_FSYNC", "0") in ("", "0"):
        return
    for dirpath, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _jsonable(obj: Any) -> Any:
    """Attributes must be JSON: numpy scalars and paths become plain values, NaN becomes None."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj
