"""The manifest: one row per sequence, derived from the store's own attributes.

The store is the truth; ``manifest.parquet`` is an index of it for pandas users and for
``build-split``. Because every column comes from a sequence's attributes (or its failure
record), ``rebuild_manifest`` can always recreate the file, for instance after a crash.

Sequence attributes written by the stages (the contract between stages)::

    name:    {dataset, seq_id, subject, condition, seq_num, view}   (gaittools.sources.layouts)
    source:  the file or folder it came from
    fps:     frames per second of the source
    extract: {n_frames, n_crops, height, width, coverage, n_tracks, n_walkers, n_groups,
              short, crop_mode, crop_size, working_height, seconds, track: {id, frame_start,
              frame_stop, speed_px, box_height, box_fraction, repaired_merges,
              repaired_splits, repaired_outliers, scale_cv, group_frames, group}
              (None: no person), ...}
             n_groups: tracks of people walking together that could not be divided (not
             walkers); group_frames: frames taken out of the track's boxes for holding such a
             group (a group's own track, written only with --tracks all: the frames its boxes
             hold one; group True)
    flow:    {backend, mean_magnitude, seconds, params, ...}            (compute-flow)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from gaittools.store.zarr_store import Store

#: Column -> pandas dtype. Order is the file's column order.
COLUMNS: dict[str, str] = {
    "dataset": "string",
    "seq_id": "string",
    "subject": "string",
    "condition": "string",
    "seq_num": "Int64",
    "view": "string",
    "source": "string",
    "fps": "float64",
    "n_frames": "Int64",
    "n_crops": "Int64",
    "height": "Int64",
    "width": "Int64",
    "coverage": "float64",
    "n_tracks": "Int64",
    "n_walkers": "Int64",
    "n_groups": "Int64",
    "track_id": "Int64",
    "frame_start": "Int64",
    "frame_stop": "Int64",
    "speed_px": "float64",
    "box_height": "float64",
    "box_fraction": "float64",
    "repaired_merges": "Int64",
    "repaired_splits": "Int64",
    "scale_cv": "float64",
    "group_frames": "Int64",
    "group": "boolean",
    "short": "boolean",
    "status_extract": "string",
    "status_flow": "string",
    "error": "string",
    "seconds_extract": "float64",
    "seconds_flow": "float64",
    "flow_mean_magnitude": "float64",
}

DONE, FAILED, MISSING = "done", "failed", "missing"


def row_from_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """A manifest row for a finished sequence, from its attributes."""
    name = attrs.get("name", {})
    extract = attrs.get("extract", {})
    flow = attrs.get("flow")
    row: dict[str, Any] = {k: name.get(k) for k in ("dataset", "seq_id", "subject", "condition", "seq_num", "view")}
    row.update(
        source=attrs.get("source"),
        fps=attrs.get("fps"),
        n_frames=extract.get("n_frames"),
        n_crops=extract.get("n_crops"),
        height=extract.get("height"),
        width=extract.get("width"),
        coverage=extract.get("coverage"),
        n_tracks=extract.get("n_tracks"),
        n_walkers=extract.get("n_walkers"),
        n_groups=extract.get("n_groups"),
        short=extract.get("short"),
        status_extract=DONE,
        status_flow=DONE if flow else MISSING,
        error=None,
        seconds_extract=extract.get("seconds"),
        seconds_flow=(flow or {}).get("seconds"),
        flow_mean_magnitude=(flow or {}).get("mean_magnitude"),
    )
    track = extract.get("track") or {}
    row.update(track_id=track.get("id"), **{k: track.get(k) for k in (
        "frame_start", "frame_stop", "speed_px", "box_height", "box_fraction", "repaired_merges",
        "repaired_splits", "scale_cv", "group_frames", "group")})
    return row


def row_from_failure(record: dict[str, Any]) -> dict[str, Any]:
    """A manifest row for a sequence whose extraction failed (no group in the store)."""
    name = record.get("name") or {}
    row: dict[str, Any] = {k: name.get(k) for k in ("dataset", "subject", "condition", "seq_num", "view")}
    row.update(seq_id=record["seq_id"], source=record.get("source"), status_extract=FAILED,
               status_flow=MISSING, error=record.get("error"))
    return row


def rebuild_manifest(store: Store) -> pd.DataFrame:
    """The manifest recomputed from the store: finished sequences and recorded failures."""
    rows = [row_from_attrs(store.attrs_of(s)) for s in store.seq_ids()]
    done = {r["seq_id"] for r in rows}
    for rec in store.failures():
        if rec.get("stage") == "extract" and rec["seq_id"] not in done:
            rows.append(row_from_failure(rec))
        elif rec["seq_id"] in done:
            row = next(r for r in rows if r["seq_id"] == rec["seq_id"])
            row[f"status_{rec.get('stage', 'flow')}"] = FAILED
            row["error"] = rec.get("error")
    return to_frame(rows)


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> a DataFrame with exactly the manifest's columns and dtypes, sorted by seq_id."""
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df = df.astype(COLUMNS)
    return df.sort_values("seq_id", kind="stable").reset_index(drop=True)


def write_manifest(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write the manifest atomically (temp file + rename), so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_table(path: str | os.PathLike[str], file_name: str, columns: Iterable[str], what: str,
               hint: str) -> pd.DataFrame:
    """Read a parquet table (or ``path/file_name``), refusing one without ``columns``.

    Shared by the manifest and the split tables, so both fail the same way: naming the file,
    what it should have been, and the command that makes it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / file_name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what} ({hint})")
    df = pd.read_parquet(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a {what} (missing columns {missing})")
    return df


def read_manifest(store_or_path: Store | str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``manifest.parquet`` of a store (or a parquet path) with the manifest's dtypes."""
    path = store_or_path.manifest_path if isinstance(store_or_path, Store) else store_or_path
    df = read_table(path, "manifest.parquet", COLUMNS, "gaittools manifest",
                    "run extract-frames, or `gaittools manifest STORE`")
    return df.astype({c: COLUMNS[c] for c in COLUMNS})


def refresh_manifest(store: Store) -> pd.DataFrame:
    """Rebuild and write the manifest of ``store``; what every stage calls when it ends."""
    df = rebuild_manifest(store)
    write_manifest(df, store.manifest_path)
    return df
