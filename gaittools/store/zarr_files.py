"""Zarr v3 groups and arrays written straight to files, in one synchronous pass.

Why not zarr-python for writing: its asynchronous machinery costs about 5 ms to create an
array and 4 ms more to fill it, even a 100-byte one. A sequence is four arrays and a group, so
zarr-python spent ~40 ms per sequence in bookkeeping, more than decoding the sequence's video.
What is written here is exactly what zarr-python writes for the same array (the tests compare
the metadata and read every array back with zarr): a ``zarr.json`` per node, a regular chunk
grid along the first axis with whole rows of the other axes per chunk, the default chunk
keys with the ``.`` separator (``c.3.0.0``), the ``bytes`` codec (little-endian) and
optionally ``zstd``. Why ``.``, not zarr's usual ``/``: each chunk is then one file beside
``zarr.json`` instead of a file two or three directories down; file-system calls are the
dearest part of writing a small array (0.1-1 ms each on the sandboxed and network file
systems users run on), and ``/`` needed ~48 directories per sequence.
Edge chunks are padded with the fill value to the full chunk shape, as the format requires.
Reading stays with zarr-python (``gaittools.store.zarr_store``), which handles every codec and layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np

#: numpy kinds whose zarr v3 ``data_type`` name is the numpy dtype name (bool, ints, floats).
SUPPORTED_KINDS = "biuf"


def write_group(path: Path, attributes: dict[str, Any]) -> None:
    """A group node: the directory and its ``zarr.json`` (``attributes`` must be JSON)."""
    path.mkdir(parents=True, exist_ok=True)
    _write_json(path / "zarr.json", {"attributes": attributes, "zarr_format": 3, "node_type": "group"})


def write_array(path: Path, data: np.ndarray, chunk_rows: int, zstd_level: int | None = 3) -> None:
    """An array node holding ``data``, chunked by ``chunk_rows`` along the first axis."""
    if np.ndim(data) == 0:
        raise ValueError(f"{path}: 0-d arrays are not stored; give the value an axis")
    data = _little_endian(np.ascontiguousarray(data))
    chunk_shape = (max(1, min(chunk_rows, data.shape[0])), *data.shape[1:])
    path.mkdir(parents=True, exist_ok=True)
    _write_json(path / "zarr.json", array_metadata(data.shape, data.dtype, chunk_shape, zstd_level))
    compressor = numcodecs.Zstd(level=zstd_level, checksum=False) if zstd_level is not None else None
    rows = chunk_shape[0]
    tail = "".join(".0" for _ in data.shape[1:])
    for i, start in enumerate(range(0, data.shape[0], rows)):
        block = data[start:start + rows]
        if len(block) < rows:  # edge chunk: padded to the full chunk shape with the fill value
            block = np.concatenate([block, np.zeros((rows - len(block), *block.shape[1:]), block.dtype)])
        payload = compressor.encode(block) if compressor is not None else memoryview(block).cast("B")
        with open(path / f"c.{i}{tail}", "wb") as f:
            f.write(payload)


def array_metadata(shape: tuple[int, ...], dtype: np.dtype, chunk_shape: tuple[int, ...],
                   zstd_level: int | None) -> dict[str, Any]:
    """The ``zarr.json`` of an array, key for key as zarr-python 3 writes it."""
    dtype = np.dtype(dtype)
    if dtype.kind not in SUPPORTED_KINDS:
        raise TypeError(f"dtype {dtype} is not stored by gaittools (bool, ints and floats are)")
    bytes_codec: dict[str, Any] = {"name": "bytes"}
    if dtype.itemsize > 1:
        bytes_codec["configuration"] = {"endian": "little"}
    codecs = [bytes_codec]
    if zstd_level is not None:
        codecs.append({"name": "zstd", "configuration": {"level": zstd_level, "checksum": False}})
    fill = False if dtype.kind == "b" else (0.0 if dtype.kind == "f" else 0)
    return {
        "shape": list(shape),
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunk_shape)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "."}},
        "fill_value": fill,
        "codecs": codecs,
        "attributes": {},
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def _little_endian(data: np.ndarray) -> np.ndarray:
    return data.astype(data.dtype.newbyteorder("<")) if data.dtype.byteorder == ">" else data


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    with open(path, "w") as f:
        f.write(json.dumps(obj, indent=2, allow_nan=False))

