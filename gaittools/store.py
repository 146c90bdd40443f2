"""The Zarr v3 store: one self-describing group per sequence, written atomically.

Layout::

    STORE/zarr.json                       root attrs: store format, dataset, tool version
    STORE/sequences/<seq_id>/             one group per finished sequence
        frames  uint8  (T, H, W)          gray frames at the working resolution
        boxes   float32 (T, 4)            x0, y0, x1, y1 in frame pixels, NaN where nobody
        gray    uint8  (T, S, S)          person-centred crops
        sil     uint8  (T, S, S)          silhouettes 0/255 (extract-frames; absent in older stores)
        flow    float16 (T-1, 2, S, S)    TV-L1 flow t -> t+1 in crop pixels (compute-flow)
    STORE/failures/<seq_id>.json          why a sequence failed (removed once it succeeds)
    STORE/manifest.parquet                one row per sequence (gaittools.manifest)
    STORE/.staging/                       work in progress; never read as data

Why staging and rename: a sequence group appears under ``sequences/`` only by an atomic
``rename`` of a fully written directory, so a killed run, a full disk or a crashing worker
never leaves a half-written sequence that a resume would mistake for a finished one.
Arrays added later (``flow``) are staged the same way and renamed into the group before the
group's attributes say so. The store is a local directory (or a shared filesystem that all
Dask workers see); rename-based atomicity is what limits it to that.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from gaittools import __version__
from gaittools.zarr_files import write_array, write_group

STORE_FORMAT = 1
SEQUENCES = "sequences"
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
        if fmt != STORE_FORMAT:
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
        """Names of the arrays a sequence holds."""
        p = self._seq_path(seq_id)
        return sorted(e.name for e in os.scandir(p) if e.is_dir() and (Path(e.path) / "zarr.json").is_file())

    def read(self, seq_id: str, name: str) -> np.ndarray:
        """One whole array of a sequence as numpy."""
        path = self._seq_path(seq_id) / name
        if not (path / "zarr.json").is_file():
            raise KeyError(f"{self.path}: sequence {seq_id!r} has no array {name!r}")
        return zarr.open_array(str(path), mode="r")[...]

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
        meta_path = self._seq_path(seq_id) / "zarr.json"
        meta = json.loads(meta_path.read_text())
        meta.setdefault("attributes", {}).update(_jsonable(dict(update)))
        atomic_write_text(meta_path, json.dumps(meta, indent=2))

    def delete_sequence(self, seq_id: str) -> None:
        target = self._seq_path(seq_id)
        if target.exists():
            trash = self._stage_dir(seq_id, "trash")
            os.rename(target, trash)
            shutil.rmtree(trash, ignore_errors=True)

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
