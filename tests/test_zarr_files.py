"""Our direct Zarr v3 writer must produce what zarr-python produces and reads back."""

import json

import numpy as np
import pytest
import zarr
import zarr.codecs

from gaittools.store.zarr_files import array_metadata, write_array, write_group

CASES = [  # (shape, dtype, chunk rows, zstd level)
    ((35, 24, 32), np.uint8, 16, 1),       # edge chunk of 3 rows, padded
    ((7, 4), np.float32, 4096, 3),         # one chunk smaller than the chunk rows
    ((9, 2, 8, 8), np.float16, 4, 3),      # flow-like, 3 chunks
    ((6, 5), np.bool_, 4, None),           # no compression
    ((0, 4), np.float32, 64, 3),           # empty: metadata only
    ((5,), np.int16, 2, 3),
]


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        data = rng.normal(0, 100, shape).astype(dtype)
        if data.size:
            data.flat[0] = np.nan
        return data
    if np.dtype(dtype).kind == "b":
        return rng.random(shape) > 0.5
    return rng.integers(0, 200, shape).astype(dtype)


@pytest.mark.parametrize("shape,dtype,rows,level", CASES)
def test_same_files_as_zarr_python_and_readable(tmp_path, shape, dtype, rows, level):
    data = _data(shape, dtype)
    ours = tmp_path / "ours"
    write_array(ours, data, rows, level)
    chunks = (max(1, min(rows, shape[0])), *shape[1:])
    theirs = zarr.create_array(
        str(tmp_path / "theirs"), shape=shape, dtype=dtype, chunks=chunks, fill_value=0,
        compressors=zarr.codecs.ZstdCodec(level=level) if level is not None else None,
        config={"write_empty_chunks": True},
        chunk_key_encoding={"name": "default", "separator": "."},
    )
    if data.size:
        theirs[...] = data
    assert json.loads((ours / "zarr.json").read_text()) == json.loads((tmp_path / "theirs" / "zarr.json").read_text())
    our_keys = sorted(p.relative_to(ours).as_posix() for p in ours.rglob("*") if p.is_file())
    their_keys = sorted(p.relative_to(tmp_path / "theirs").as_posix()
                        for p in (tmp_path / "theirs").rglob("*") if p.is_file())
    assert our_keys == their_keys
    back = zarr.open_array(str(ours), mode="r")[...]
    assert back.dtype == np.dtype(dtype) and back.shape == shape
    np.testing.assert_array_equal(back, data)  # NaN compares equal in assert_array_equal


def test_group_then_arrays_open_as_one_zarr_group(tmp_path):
    write_group(tmp_path / "g", {"name": "x", "n": [1, 2]})
    write_array(tmp_path / "g" / "a", np.arange(10, dtype=np.uint8), 4)
    group = zarr.open_group(str(tmp_path / "g"), mode="r")
    assert dict(group.attrs) == {"name": "x", "n": [1, 2]}
    np.testing.assert_array_equal(group["a"][...], np.arange(10, dtype=np.uint8))


def test_refuses_what_it_cannot_store(tmp_path):
    with pytest.raises(TypeError, match="not stored"):
        array_metadata((2,), np.dtype("U3"), (2,), 3)
    with pytest.raises(ValueError, match="0-d"):
        write_array(tmp_path / "s", np.float32(1.0), 4)
    with pytest.raises(ValueError):  # NaN in attributes is a bug upstream, not valid JSON
        write_group(tmp_path / "g", {"x": float("nan")})


def test_big_endian_input_is_stored_little_endian(tmp_path):
    data = np.arange(6, dtype=">f4").reshape(3, 2)
    write_array(tmp_path / "a", data, 2)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a"), mode="r")[...], data)
