"""The store's contract: atomic sequences, self-description, version refusal, manifest rebuild."""

import json

import numpy as np
import pytest

from gaittools.store.manifest import read_manifest, refresh_manifest
from gaittools.store.zarr_store import Store, StoreError


def _seq_attrs(seq_id: str) -> dict:
    return {
        "name": {"dataset": "casia-b", "seq_id": seq_id, "subject": seq_id[:3], "condition": "nm",
                 "seq_num": 1, "view": "090"},
        "source": f"/data/{seq_id}.avi",
        "fps": 25.0,
        "extract": {"n_frames": 5, "n_crops": 4, "height": 240, "width": 320, "coverage": 0.8,
                    "n_tracks": 1, "short": False, "seconds": 0.5},
    }


def test_write_read_roundtrip_and_manifest(tmp_path):
    store = Store.create(tmp_path / "s", dataset="casia-b")
    gray = np.random.default_rng(0).integers(0, 255, (5, 64, 64), dtype=np.uint8)
    boxes = np.full((5, 4), np.nan, np.float32)
    store.write_sequence("001-nm-01-090", {"gray": gray, "boxes": boxes}, _seq_attrs("001-nm-01-090"))
    assert store.seq_ids() == ["001-nm-01-090"]
    np.testing.assert_array_equal(store.read("001-nm-01-090", "gray"), gray)
    assert np.isnan(store.read("001-nm-01-090", "boxes")).all()
    assert not (tmp_path / "s" / ".staging").exists() or not any((tmp_path / "s" / ".staging").iterdir())

    flow = np.ones((4, 2, 64, 64), np.float16)
    store.add_arrays("001-nm-01-090", {"flow": flow}, {"flow": {"mean_magnitude": 1.41, "seconds": 0.1}})
    assert store.arrays_of("001-nm-01-090") == ["boxes", "flow", "gray"]
    store.record_failure("002-nm-01-090", "extract", "/data/002-nm-01-090.avi", "truncated file")

    df = refresh_manifest(store)
    assert list(df["seq_id"]) == ["001-nm-01-090", "002-nm-01-090"]
    assert list(df["status_extract"]) == ["done", "failed"]
    assert df.loc[0, "status_flow"] == "done"
    assert df.loc[1, "error"] == "truncated file"
    assert read_manifest(tmp_path / "s").equals(df)


def test_existing_sequence_needs_overwrite(tmp_path):
    store = Store.create(tmp_path / "s", dataset="casia-b")
    a = np.zeros((3, 8, 8), np.uint8)
    store.write_sequence("x", {"gray": a}, _seq_attrs("x"))
    with pytest.raises(StoreError):
        store.write_sequence("x", {"gray": a + 1}, _seq_attrs("x"))
    store.write_sequence("x", {"gray": a + 1}, _seq_attrs("x"), overwrite=True)
    assert store.read("x", "gray").max() == 1


def test_failed_write_leaves_no_sequence(tmp_path):
    store = Store.create(tmp_path / "s", dataset="casia-b")

    bad = {"gray": np.zeros((3, 8, 8), np.uint8), "boxes": object()}  # second array cannot be written
    with pytest.raises(Exception):
        store.write_sequence("x", bad, _seq_attrs("x"))
    assert store.seq_ids() == []
    assert "x" not in store


def test_refuses_other_format_and_dataset(tmp_path):
    store = Store.create(tmp_path / "s", dataset="casia-b")
    with pytest.raises(StoreError, match="not 'tum-gaid'"):
        Store.create(tmp_path / "s", dataset="tum-gaid")
    meta_path = store.path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["gaittools_store_format"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="format 99"):
        Store(store.path)
    with pytest.raises(StoreError, match="not a gaittools store"):
        Store(tmp_path / "nowhere")
