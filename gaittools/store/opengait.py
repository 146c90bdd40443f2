"""A store -> OpenGait's dataset layout: ``OUT/SSS/CC-NN/VVV/VVV.pkl`` and a partition JSON.

OpenGait's silhouette models (GaitSet, GaitPart, GaitGL, GaitBase) read one pickle per
sequence: a uint8 array (T, 64, 64), or (T, 64, 44) for the configs that train on the centre
44 columns. ``export_opengait`` writes exactly that from the store's ``sil`` (silhouettes made
by extract-frames) or ``gray`` (stores imported from OpenGait pickles, whose ``gray`` holds
silhouettes), so that our data can be trained on by the field's model zoo, and reads back
unchanged through ``extract-frames --dataset opengait-pkl`` (gaittools.sources.pickles).

Decisions:
- Only plain numpy arrays are pickled (``pickle.dumps(ndarray)``): the file references
  numpy's array reconstructor and nothing else, so our own unpickler, which admits numpy
  arrays only, loads it. numpy 2 spells the reconstructor's module ``numpy._core``: numpy
  older than 1.26 cannot load such pickles (OpenGait's environments are newer).
- Frames without a person (all-zero silhouettes) are kept: dropping them would break the
  frame indexing shared with the store's other arrays, and OpenGait samples frames anyway.
  OpenGait's own pretreatment drops them; say so when comparing frame counts.
- Only CASIA-B-named sequences are exported (the layout is CASIA-B's naming in folders); a
  store of another dataset is refused naming the first sequence that does not fit.
- The partition JSON (``{"TRAIN_SET": [...], "TEST_SET": [...]}``, subject ids) comes from a
  split table: train and val subjects train, gallery and probe subjects test. It is written
  as ``OUT/partition.json``: OpenGait lists only the subjects the partition names, so the
  file beside the subject folders is ignored by its loader; point ``data_cfg.dataset_partition``
  at it.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gaittools.person.crop import resize_crops
from gaittools.store.manifest import read_table
from gaittools.store.zarr_store import Store, atomic_write_bytes, atomic_write_text

#: Arrays that hold silhouettes: ``sil`` (extract-frames) or ``gray`` of pickle imports.
EXPORT_ARRAYS = ("sil", "gray")
#: OpenGait's silhouette side, and the widths its configs use (44: the centre cut).
OPENGAIT_SIZE = 64
WIDTHS = (64, 44)
TRAIN_ROLES, TEST_ROLES = ("train", "val"), ("gallery", "probe")
PARTITION_FILE = "partition.json"


class ExportError(ValueError):
    """A store or split that cannot be exported as asked; the message names it."""


@dataclass
class ExportResult:
    written: list[Path]
    partition: Path | None
    frames: int


def pickle_path(out: Path, attrs: dict) -> Path:
    """``OUT/SSS/CC-NN/VVV/VVV.pkl`` from a sequence's ``name`` attributes."""
    name = attrs.get("name", {})
    if name.get("dataset") != "casia-b" or not name.get("view"):
        raise ExportError(f"sequence {name.get('seq_id')!r} of dataset {name.get('dataset')!r}: "
                          f"OpenGait's layout needs CASIA-B names (SSS-CC-NN-VVV)")
    cond = f"{name['condition']}-{int(name['seq_num']):02d}"
    return out / name["subject"] / cond / name["view"] / f"{name['view']}.pkl"


def check_silhouettes(store: Store, seq_id: str, array: str) -> None:
    """Refuse a sequence whose ``array`` is absent or does not hold silhouettes."""
    arrays = store.arrays_of(seq_id)
    if array not in arrays:
        hint = ("re-run extract-frames with --overwrite: stores made before silhouettes were "
                "stored lack 'sil'") if array == "sil" else "run extract-frames"
        raise ExportError(f"{store.path}: sequence {seq_id!r} has no {array!r} array ({hint})")
    if array == "gray" and store.attrs_of(seq_id).get("extract", {}).get("content") != "silhouette":
        raise ExportError(f"{store.path}: sequence {seq_id!r}: its 'gray' holds gray crops, not "
                          f"silhouettes (only stores imported from OpenGait pickles do); use --array sil")


def to_opengait(sil: np.ndarray, width: int = OPENGAIT_SIZE) -> np.ndarray:
    """uint8 (T, S, S) -> uint8 (T, 64, width): resized to 64 if S differs, then the centre
    ``width`` columns (OpenGait's 64 x 44 configs cut 10 columns each side)."""
    if width not in WIDTHS:
        raise ExportError(f"width must be one of {WIDTHS}, not {width}")
    sil = resize_crops(np.asarray(sil, np.uint8), OPENGAIT_SIZE)
    cut = (OPENGAIT_SIZE - width) // 2
    return np.ascontiguousarray(sil[:, :, cut:cut + width])


def partition(split_dir: str | os.PathLike[str]) -> dict[str, list[str]]:
    """OpenGait's partition (TRAIN_SET / TEST_SET subject ids) of a split table."""
    table = read_table(split_dir, "split.parquet", ("subject", "role"), "split table",
                       "run `gaittools build-split`")
    def subjects(roles: tuple[str, ...]) -> list[str]:
        return sorted(set(table.loc[table["role"].isin(roles), "subject"].astype(str)))

    out = {"TRAIN_SET": subjects(TRAIN_ROLES), "TEST_SET": subjects(TEST_ROLES)}
    if both := set(out["TRAIN_SET"]) & set(out["TEST_SET"]):
        raise ExportError(f"{split_dir}: subjects {sorted(both)[:5]} both train and test; "
                          f"OpenGait's partition is by subject")
    return out


def export_opengait(store_path: str | os.PathLike[str], out: str | os.PathLike[str], array: str = "sil",
                    width: int = OPENGAIT_SIZE, split_dir: str | os.PathLike[str] | None = None,
                    seq_ids: list[str] | None = None) -> ExportResult:
    """Write every sequence of the store (or ``seq_ids``) as an OpenGait pickle, and the
    partition JSON when ``split_dir`` is given. Each file is replaced atomically."""
    if array not in EXPORT_ARRAYS:
        raise ExportError(f"--array must be one of {EXPORT_ARRAYS}, not {array!r}")
    store, out = Store(store_path), Path(out)
    ids = store.seq_ids() if seq_ids is None else seq_ids
    if not ids:
        raise ExportError(f"{store.path}: no sequences to export")
    parts = partition(split_dir) if split_dir is not None else None
    paths = [pickle_path(out, store.attrs_of(s)) for s in ids]  # refuse before writing anything
    for seq_id in ids:
        check_silhouettes(store, seq_id, array)
    written, frames = [], 0
    for seq_id, path in zip(ids, paths):
        data = to_opengait(store.read(seq_id, array), width)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, pickle.dumps(data, protocol=4))
        written.append(path)
        frames += len(data)
    part_path = None
    if parts is not None:
        part_path = out / PARTITION_FILE
        atomic_write_text(part_path, json.dumps(parts, indent=2) + "\n")
    return ExportResult(written, part_path, frames)
