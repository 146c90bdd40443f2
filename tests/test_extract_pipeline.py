"""extract-frames as a run: bad inputs, resumption after a kill, a real distributed cluster.

The sources are symlinks to real CASIA-B clips (never copies in the repository) plus broken
files made in tmp_path. Stores are compared array by array and attribute by attribute
(timings aside).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import DATA, REPO, need_data
from gaittools.cli.main import main
from gaittools.store.manifest import read_manifest
from gaittools.store.zarr_store import Store, StoreError

from dask_helpers import dask_cluster_in

VIDEOS = DATA / "casia-b-mini" / "videos"
#: Eight sequence names for the resume/distributed runs (some reuse a clip under another name).
RUN_LINKS = {
    "001-nm-01-090": "001-nm-01-090", "001-nm-02-090": "001-nm-02-090", "001-bg-01-090": "001-bg-01-090",
    "001-cl-01-090": "001-cl-01-090", "002-nm-01-090": "002-nm-01-090", "003-nm-01-090": "003-nm-01-090",
    "004-nm-01-090": "004-nm-01-090", "006-nm-01-090": "006-nm-01-090", "001-bkgrd-090": "001-bkgrd-090",
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _link_tree(root: Path, links: dict[str, str]) -> Path:
    need_data(VIDEOS)
    root.mkdir(parents=True)
    for name, clip in links.items():
        (root / f"{name}.avi").symlink_to(VIDEOS / f"{clip}.avi")
    return root


def assert_same_store(a: Path, b: Path) -> None:
    """Same sequences, arrays and attributes (timings aside), same failures and manifest."""
    sa, sb = Store(a), Store(b)
    assert sa.seq_ids() == sb.seq_ids()
    for seq_id in sa.seq_ids():
        assert sa.arrays_of(seq_id) == sb.arrays_of(seq_id)
        for name in sa.arrays_of(seq_id):
            np.testing.assert_array_equal(sa.read(seq_id, name), sb.read(seq_id, name), err_msg=f"{seq_id}/{name}")
        ta, tb = sa.attrs_of(seq_id), sb.attrs_of(seq_id)
        ta["extract"].pop("seconds"), tb["extract"].pop("seconds")
        assert ta == tb, seq_id
    assert [f["seq_id"] for f in sa.failures()] == [f["seq_id"] for f in sb.failures()]
    ma, mb = read_manifest(sa).drop(columns="seconds_extract"), read_manifest(sb).drop(columns="seconds_extract")
    assert ma.equals(mb)
    assert not (a / ".staging").exists() or not any((a / ".staging").iterdir())


@pytest.fixture(scope="module")
def run_source(tmp_path_factory):
    return _link_tree(tmp_path_factory.mktemp("run") / "videos", RUN_LINKS)


@pytest.fixture(scope="module")
def reference_store(run_source, tmp_path_factory):
    """An uninterrupted run, in this process (--workers 0)."""
    store = tmp_path_factory.mktemp("ref") / "store"
    result = CliRunner().invoke(main, ["extract-frames", str(run_source), str(store), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert len(Store(store).seq_ids()) == 8
    return store


# ---------------------------------------------------------------------------- bad input
def test_bad_inputs_fail_alone_and_are_retried(tmp_path):
    src = _link_tree(tmp_path / "videos", {"001-nm-01-090": "001-nm-01-090", "001-bkgrd-090": "001-bkgrd-090",
                                           "009-nm-01-090": "001-bkgrd-090"})  # 009: nobody in it
    (src / "008-bkgrd-090.avi").write_bytes(b"")  # a broken empty-scene clip: 008 uses its own median
    clip = VIDEOS / "002-nm-01-090.avi"
    (src / "007-nm-01-090.avi").write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])  # truncated
    (src / "008-nm-01-090.avi").write_bytes(b"")  # zero bytes
    (src / "010-nm-01-090.avi").write_text("I am a text file, not a video\n")
    (src / "holiday.avi").symlink_to(clip)  # does not parse as CASIA-B
    store = tmp_path / "store"

    result = CliRunner().invoke(main, ["extract-frames", str(src), str(store), "--workers", "2"])
    out = result.output
    assert result.exit_code == 1, out
    assert "007-nm-01-090.avi: truncated or corrupt" in out
    assert "008-nm-01-090.avi: empty file (0 bytes)" in out
    assert "010-nm-01-090.avi: not a readable video" in out
    assert "holiday.avi: 'holiday' is not a CASIA-B name" in out
    assert "warning 009-nm-01-090: no person found" in out
    s = Store(store)
    assert s.seq_ids() == ["001-nm-01-090", "009-nm-01-090"]
    assert s.attrs_of("009-nm-01-090")["extract"]["no_person"] is True
    manifest = read_manifest(s).set_index("seq_id")
    assert manifest.status_extract.to_dict() == {
        "001-nm-01-090": "done", "007-nm-01-090": "failed", "008-nm-01-090": "failed",
        "009-nm-01-090": "done", "010-nm-01-090": "failed"}
    assert "truncated" in manifest.loc["007-nm-01-090", "error"]
    assert manifest.loc["009-nm-01-090", "coverage"] == 0.0

    # repair one file: the rerun skips what is done, retries the failures, and clears the fixed one
    (src / "008-nm-01-090.avi").unlink()
    (src / "008-nm-01-090.avi").symlink_to(VIDEOS / "003-nm-01-090.avi")
    result = CliRunner().invoke(main, ["extract-frames", str(src), str(store), "--workers", "0"])
    assert result.exit_code == 1
    assert "skipped 001-nm-01-090: already in the store" in result.output
    assert "done 1, skipped 3, failed 2" in result.output
    assert "008-nm-01-090" in Store(store).seq_ids()
    notes = Store(store).attrs_of("008-nm-01-090")["extract"]["notes"]
    assert "empty-scene clip unusable" in notes[0] and "008-bkgrd-090.avi: empty file" in notes[0]
    assert Store(store).attrs_of("008-nm-01-090")["extract"]["localisation"] == "sequence median"
    assert sorted(f["seq_id"] for f in Store(store).failures()) == ["007-nm-01-090", "010-nm-01-090"]
    # manifest rebuilt from the store alone gives the same table
    before = read_manifest(store)
    (store / "manifest.parquet").unlink()
    result = CliRunner().invoke(main, ["manifest", str(store)])
    assert result.exit_code == 0 and "5 sequences" in result.output
    assert read_manifest(store).equals(before)


def test_overwrite_rewrites_done_sequences(tmp_path):
    src = _link_tree(tmp_path / "videos", {"001-nm-01-090": "001-nm-01-090"})
    store = tmp_path / "store"
    args = ["extract-frames", str(src), str(store), "--workers", "0"]
    assert CliRunner().invoke(main, args).exit_code == 0
    first = Store(store).attrs_of("001-nm-01-090")["extract"]
    refused = CliRunner().invoke(main, [*args, "--crop-mode", "frame"])
    assert refused.exit_code != 0 and "crop_mode: 'person' in the store, 'frame' now" in refused.output
    result = CliRunner().invoke(main, [*args, "--overwrite", "--crop-mode", "frame", "--size", "32"])
    assert result.exit_code == 0, result.output
    s = Store(store)
    assert s.attrs_of("001-nm-01-090")["extract"]["crop_mode"] == "frame" and first["crop_mode"] == "person"
    assert s.read("001-nm-01-090", "gray").shape == (106, 32, 32)
    windows = s.read("001-nm-01-090", "windows")
    ok = np.isfinite(windows[:, 0])
    assert (windows[ok, 3] - windows[ok, 1] == 240).all()


def test_raw_frames_codec_stores_the_same_frames_uncompressed(reference_store, tmp_path):
    src = _link_tree(tmp_path / "videos", {"001-nm-01-090": "001-nm-01-090"})
    store, seq_id = tmp_path / "store", "001-nm-01-090"
    result = CliRunner().invoke(main, ["extract-frames", str(src), str(store), "--workers", "0",
                                       "--frames-codec", "none"])
    assert result.exit_code == 0, result.output
    raw, zstd = Store(store), Store(reference_store)
    frames = raw.read(seq_id, "frames")
    np.testing.assert_array_equal(frames, zstd.read(seq_id, "frames"))
    assert raw.attrs_of(seq_id)["extract"]["options"]["frames_codec"] == "none"

    def stored(s: Store) -> tuple[list[str], int]:
        folder = s.path / "sequences" / seq_id / "frames"
        codecs = [c["name"] for c in json.loads((folder / "zarr.json").read_text())["codecs"]]
        return codecs, sum(f.stat().st_size for f in folder.glob("c.*"))

    assert stored(raw) == (["bytes"], frames.nbytes)
    codecs, size = stored(zstd)
    assert codecs == ["bytes", "zstd"] and size < 0.7 * frames.nbytes


# ---------------------------------------------------------------------------- kill and resume
def test_killed_run_resumes_to_the_same_store(run_source, reference_store, tmp_path):
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "gaittools.cli.main", "extract-frames", str(run_source), str(store), "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if _count_written(store) >= 2:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the client, its nanny and its worker at once
        proc.wait()
    killed_at = Store(store).seq_ids()
    assert 2 <= len(killed_at) < 8, f"run not interrupted mid-way ({len(killed_at)} written)"
    for seq_id in killed_at:  # whatever is under sequences/ is complete
        s = Store(store)
        assert s.arrays_of(seq_id) == ["boxes", "frames", "gray", "sil", "windows"]
        assert s.read(seq_id, "frames").shape[0] == s.attrs_of(seq_id)["extract"]["n_frames"]

    result = CliRunner().invoke(main, ["extract-frames", str(run_source), str(store), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert f"done {8 - len(killed_at)}, skipped {len(killed_at)}, failed 0" in result.output
    assert_same_store(store, reference_store)


def _count_written(store: Path) -> int:
    try:
        return len(Store(store).seq_ids())
    except StoreError:  # not created yet, or its root attributes are still being written
        return 0


# ---------------------------------------------------------------------------- a real Dask cluster
@pytest.fixture()
def dask_cluster(tmp_path):
    with dask_cluster_in(tmp_path / "workers") as address:
        yield address


def test_distributed_run_matches_local_run(run_source, reference_store, dask_cluster, tmp_path):
    store = tmp_path / "store"
    result = CliRunner().invoke(main, ["extract-frames", str(run_source), str(store), "--scheduler", dask_cluster])
    assert result.exit_code == 0, result.output
    assert "8/8 sequences" in result.output
    assert_same_store(store, reference_store)
