"""The clip index: which fixed-length clips every sequence of a split offers.

A clip is ``(seq_id, start)`` with id ``"<seq_id>:<start>"``. The SAME ids name the gray
clip and the flow clip, so a master's signature of a flow clip is the target of the student
that sees the gray clip:

- gray clip = ``gray[start : start + L]`` (L frames);
- flow clip = ``flow[start : start + L]`` (L flow fields: frame start+i -> start+i+1).

The flow clip needs frames ``start .. start + L`` (L + 1 frames), so a clip is valid when all
L + 1 frames hold the person and ``start + L <= T - 1`` (flow has T - 1 fields). The rule
is the same whether or not a store has flow yet, so the ids do not change when flow arrives.
A frame holds the person when its crop window (or box) is finite; stores without windows or
boxes (silhouettes imported from pickles) fall back to "gray not all zero". Per the store's
contract these agree, and reading the small (T, 4) arrays is much cheaper than all of gray.

Clips start every ``step`` frames inside each run of valid frames, counted from the run's
start, so the index is a pure function of the store, the split and (L, step): stable.

Short sequences (evaluation only, ``loop_short=True``): a gallery or probe sequence without
one full clip still gets exactly one clip, so every probe of the protocol is counted (CASIA-B
has such walks: subject 005 at 090, 079/088/096/109 at other views). That clip *loops* the
sequence's longest run of valid frames: frame ``start + (i mod length)`` for i in 0..L-1,
with ``length`` = the run's length minus one (so the flow clip, which needs one frame more,
covers the same span), at least 1. Looping rather than zero-padding keeps every input frame a
real walking frame, as the network saw in training. Column ``length`` holds L for ordinary
clips.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from gaittools.deploy.clips import clip_starts as shared_clip_starts
from gaittools.deploy.clips import valid_runs
from gaittools.store.manifest import read_table
from gaittools.store.zarr_store import Store

SPLIT_COLUMNS = ("seq_id", "subject", "condition", "seq_num", "view", "role", "probe_set")
CLIP_COLUMNS = ("clip", "clip_id", "seq_id", "subject", "condition", "seq_num", "view", "role",
                "probe_set", "start", "label")
#: Frames a clip really holds (< clip_len: a looped short sequence); absent in older tables.
LENGTH = "length"


def read_split(split: str | os.PathLike[str]) -> pd.DataFrame:
    """``DIR/split.parquet`` (or the parquet file itself), checked for the columns we use."""
    df = read_table(split, "split.parquet", SPLIT_COLUMNS, "split table", "run `gaittools build-split`")
    df = df.astype({"seq_id": str, "subject": str, "condition": str, "view": str, "role": str})
    return df.reset_index(drop=True)


def valid_frames(store: Store, seq_id: str) -> np.ndarray:
    """Boolean (T,) mask of frames that hold the person."""
    arrays = set(store.arrays_of(seq_id))
    for name in ("windows", "boxes"):
        if name in arrays:
            return np.isfinite(store.read(seq_id, name)).all(axis=1)
    if "gray" not in arrays:
        raise ValueError(f"{store.path}: sequence {seq_id!r} has no gray crops (run extract-frames)")
    gray = store.read(seq_id, "gray")
    return gray.reshape(len(gray), -1).any(axis=1)


def clip_starts(valid: np.ndarray, clip_len: int, step: int) -> list[int]:
    """Starts of the clips inside each run of valid frames: a clip at s needs s .. s+L valid."""
    return shared_clip_starts(valid, clip_len, step, extra=1)


def build_clip_index(
    store: Store,
    split: pd.DataFrame,
    clip_len: int,
    step: int,
    roles: tuple[str, ...] = ("train",),
    labels: dict[str, int] | None = None,
    threads: int = 8,
    loop_short: bool = False,
) -> pd.DataFrame:
    """One row per clip of the split's sequences in ``roles``; ``label`` = class of the subject.

    ``labels`` maps subject -> class; by default the sorted subjects of the selected rows get
    0..n-1 (training). Sequences in the split but absent from the store are skipped (the split's
    ``missing.txt`` already lists them); sequences too short for one clip give no rows, or
    with ``loop_short`` one looped clip (module docstring).
    """
    rows, labels, masks = split_sequences(store, split, roles, labels, threads)
    records = []
    for rec, mask in zip(rows.itertuples(index=False), masks):
        spans = [(start, clip_len) for start in clip_starts(mask, clip_len, step)]
        if not spans and loop_short:
            spans = looped_span(mask)
        for start, length in spans:
            records.append(
                (f"{rec.seq_id}:{start}", rec.seq_id, rec.subject, rec.condition, rec.seq_num, rec.view,
                 rec.role, rec.probe_set, start, labels.get(rec.subject, -1), length)
            )
    df = pd.DataFrame.from_records(records, columns=[*CLIP_COLUMNS[1:], LENGTH])
    df[LENGTH] = df[LENGTH].astype(np.int64)
    df.insert(0, "clip", np.arange(len(df), dtype=np.int64))
    df["start"] = df["start"].astype(np.int64)
    df["label"] = df["label"].astype(np.int64)
    return df


def split_sequences(store: Store, split: pd.DataFrame, roles: tuple[str, ...], labels: dict[str, int] | None,
                    threads: int = 8) -> tuple[pd.DataFrame, dict[str, int], list[np.ndarray]]:
    """The split's rows in ``roles`` that the store holds (by seq_id), the subject -> class map
    (by default the sorted subjects get 0..n-1) and each sequence's valid-frame mask: what the
    clip and the walk index are both built from."""
    rows = split[split["role"].isin(roles)].sort_values("seq_id", kind="stable")
    rows = rows[rows["seq_id"].isin(set(store.seq_ids()))]
    if labels is None:
        labels = {s: i for i, s in enumerate(sorted(rows["subject"].unique()))}
    return rows, labels, valid_masks(store, rows["seq_id"], threads)


def valid_masks(store: Store, seq_ids: Iterable[str], threads: int = 8) -> list[np.ndarray]:
    """``valid_frames`` of many sequences, read in parallel (small arrays, I/O-bound)."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(lambda s: valid_frames(store, s), seq_ids))


def looped_span(valid: np.ndarray) -> list[tuple[int, int]]:
    """The one looped clip of a short sequence: (start, length) of its longest valid run."""
    runs = valid_runs(valid)
    if not runs:
        return []
    start, end = max(runs, key=lambda run: (run[1] - run[0], -run[0]))
    return [(start, max(1, end - start - 1))]


def save_clip_index(clips: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    clips.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def load_clip_index(path: str | os.PathLike[str]) -> pd.DataFrame:
    df = pd.read_parquet(path)
    missing = [c for c in CLIP_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a clip index (missing columns {missing})")
    return df
