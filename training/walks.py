"""Whole walks as sets of frames: the walk index, the frame sampler, and the resident source.

Set networks (``training.models.setnet``) see a walk as an unordered set: in training, T
frames drawn from the whole valid span of the walk; at evaluation and in deployment, every
frame. A *walk table* has the clip table's columns (``training.clips.CLIP_COLUMNS``) with one
row per sequence, so the evaluator, the signature table and the run files take it unchanged:
the sequence rule over one row per sequence is the walk's own signature (sequence 1-NN).
Extra column ``frames``: the frame indices the walk offers to its modality.

Which frames: gray frames that hold the person (``training.clips.valid_frames``); flow fields
whose both frames hold the person (field i is frame i -> i+1). A walk without such a pair
falls back to the fields that start on a valid frame, and a walk without any field (one frame)
offers none: it is embedded from a zero field, so every probe of a protocol is still counted.

Draws are a pure function of (seed, step, walk), like the clip sampler's, so a resumed run sees
the same frames; a walk with fewer than T frames repeats some (the set maximum does not change
when a frame repeats, so short walks are not padded with anything they do not hold).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from gaittools.store.zarr_store import Store
from training.clips import CLIP_COLUMNS, LENGTH, split_sequences, valid_masks
from training.data import FLOW, GRAY, RawBatch, stored_array

#: Column of a walk table: the frame indices (into the modality's array) the walk offers.
FRAMES = "frames"
WALK_TAG = "walk"


def walk_frames(valid: np.ndarray, modality: str) -> np.ndarray:
    """Indices of the frames (gray) or fields (flow) a walk offers; see the module docstring."""
    valid = np.asarray(valid, dtype=bool)
    if modality != FLOW:
        return np.flatnonzero(valid)
    both = np.flatnonzero(valid[:-1] & valid[1:])
    return both if len(both) else np.flatnonzero(valid[:-1])


def is_walk_table(table: pd.DataFrame) -> bool:
    return FRAMES in table.columns


def build_walk_index(store: Store, split: pd.DataFrame, modality: str, roles: tuple[str, ...] = ("train",),
                     labels: dict[str, int] | None = None, threads: int = 8) -> pd.DataFrame:
    """One row per walk of the split's sequences in ``roles`` that holds the person.

    ``labels``: subject -> class; by default the sorted subjects of the selected rows get
    0..n-1 (training) -- the same rule as ``training.clips.build_clip_index``. Sequences absent
    from the store are skipped (the split's ``missing.txt`` lists them); a sequence with no
    valid frame has no row (the evaluator's caller warns about it)."""
    rows, labels, masks = split_sequences(store, split, roles, labels, threads)
    records = []
    for rec, mask in zip(rows.itertuples(index=False), masks):
        if not mask.any():
            continue
        frames = walk_frames(mask, modality)
        start = int(frames[0]) if len(frames) else int(np.argmax(mask))
        records.append((f"{rec.seq_id}:{WALK_TAG}", rec.seq_id, rec.subject, rec.condition, rec.seq_num,
                        rec.view, rec.role, rec.probe_set, start, labels.get(rec.subject, -1), len(frames),
                        frames.astype(np.int64)))
    df = pd.DataFrame.from_records(records, columns=[*CLIP_COLUMNS[1:], LENGTH, FRAMES])
    df.insert(0, "clip", np.arange(len(df), dtype=np.int64))
    return df.astype({"start": np.int64, "label": np.int64, LENGTH: np.int64})


def draw_frames(counts: np.ndarray, n: int, seed: int, step: int) -> np.ndarray:
    """(B, n) positions into each walk's frame list for training step ``step``: without
    replacement where a walk has at least n frames, with replacement otherwise; sorted."""
    rng = np.random.default_rng([seed, step, 0x5E7])
    picks = np.empty((len(counts), n), dtype=np.int64)
    for row, count in enumerate(counts):
        count = max(int(count), 1)
        drawn = rng.choice(count, n, replace=False) if count >= n else rng.integers(0, count, n)
        picks[row] = np.sort(drawn)
    return picks


class ResidentWalks:
    """Every walk's frames of one modality in one tensor (uint8 gray or float16 flow, as stored);
    a training batch gathers n drawn frames per walk by index arithmetic."""

    def __init__(self, store_path: str, walks: pd.DataFrame, modality: str, frames_per_walk: int, seed: int,
                 device: torch.device | str = "cpu", gray_array: str = GRAY):
        store = Store(store_path)
        array = stored_array(modality, gray_array)
        chunks = [torch.from_numpy(_frames_of(store, seq_id, array, np.asarray(frames, dtype=np.int64)))
                  for frames, seq_id in zip(walks[FRAMES], walks["seq_id"])]
        self.counts = np.array([len(c) for c in chunks], dtype=np.int64)
        self.device = torch.device(device)
        self.data = torch.cat(chunks).to(self.device)
        self.first = torch.from_numpy(np.concatenate([[0], np.cumsum(self.counts)[:-1]])).to(self.device)
        self.labels = torch.tensor(walks["label"].to_numpy(), dtype=torch.int64, device=self.device)
        self.frames_per_walk, self.seed = frames_per_walk, seed

    def batch(self, indices: Sequence[int], step: int) -> RawBatch:
        idx = np.asarray(indices, dtype=np.int64)
        picks = torch.from_numpy(draw_frames(self.counts[idx], self.frames_per_walk, self.seed, step))
        rows = torch.as_tensor(idx, device=self.device)
        frames = self.first[rows, None] + picks.to(self.device)
        return RawBatch(self.data[frames], rows, self.labels[rows])

    def batches(self, sampler: Iterator[list[int]], start_step: int) -> Iterator[RawBatch]:
        for step, indices in enumerate(sampler, start=start_step):
            yield self.batch(indices, step)

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()


def _frames_of(store: Store, seq_id: str, array: str, frames: np.ndarray) -> np.ndarray:
    """The walk's frames of ``array``; one zero frame for a walk that offers none (one frame, flow)."""
    data = store.read(seq_id, array)
    if len(frames):
        return np.ascontiguousarray(data[frames])
    return np.zeros((1, *data.shape[1:]), dtype=data.dtype)


def read_walk(store: Store, walk: pd.Series | tuple, modality: str, gray_array: str = GRAY) -> np.ndarray:
    """All frames a walk offers, as stored (what evaluation embeds as one set)."""
    return _frames_of(store, walk.seq_id, stored_array(modality, gray_array), np.asarray(walk.frames, np.int64))


def for_modality(store: Store, walks: pd.DataFrame, modality: str, threads: int = 8) -> pd.DataFrame:
    """The same walks (rows, ids, labels) with the frames that ``modality`` offers: a student
    trains on its master's walk table (so signature ids match) but reads gray frames, which
    include the last valid frame of a run that flow fields end on."""
    masks = valid_masks(store, walks["seq_id"], threads)
    out = walks.copy()
    out[FRAMES] = [walk_frames(mask, modality).astype(np.int64) for mask in masks]
    out[LENGTH] = np.array([len(f) for f in out[FRAMES]], dtype=np.int64)
    return out
