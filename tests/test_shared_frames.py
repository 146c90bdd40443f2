"""The tracks of one video share its frames: stored once (``videos/<id>``), flow computed once per
pair, each track's flow as if computed alone; kills, overwrites and deletions leave no track
without frames. On the synthetic two-walker ``crossing`` scene, through the user's path."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import pipelines.compute_flow as compute_flow_module
from gaittools.person.extract import ExtractOptions
from gaittools.store.zarr_store import FRAMES_VIDEO, STORE_FORMAT, Store, StoreError
from gaittools.synth.crowd import write_scenes
from pipelines.compute_flow import FlowRun, compute_flow
from pipelines.extract import run_extract

FAST = {"nscales": 2, "warps": 1, "outer_iterations": 3}
TRACKS = ["crossing.t0", "crossing.t1"]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    """The crossing scene (two walkers) extracted at a small working height: a pristine store."""
    root = tmp_path_factory.mktemp("shared")
    write_scenes(root / "src", ["crossing"], frames=40)
    summary = run_extract(root / "src", root / "store", options=ExtractOptions(working_height=120), workers=0,
                          stream=io.StringIO())
    assert summary.ok and Store(root / "store").seq_ids() == TRACKS, summary.format()
    return root


@pytest.fixture
def store(extracted, tmp_path) -> Store:
    shutil.copytree(extracted / "store", tmp_path / "store")
    return Store(tmp_path / "store")


@pytest.fixture
def small(store, tmp_path) -> Store:
    """The first frames of the scene, the tracks' windows cut so that their spans overlap in
    part (track 0: frames 0-5, track 1: frames 3-9): flow tests stay fast on two cores."""
    out = Store.create(tmp_path / "small", store.dataset)
    results = []
    for seq_id, arrays, attrs in _results(store):
        arrays = {name: a[:10].copy() for name, a in arrays.items()}
        results.append((seq_id, arrays, attrs))
    results[0][1]["windows"][6:] = np.nan
    results[1][1]["windows"][:3] = np.nan
    frames = results[0][1]["frames"]
    out.write_video("crossing", [(t, {**a, "frames": frames}, at) for t, a, at in results])
    return out


def _flow(path: Path, **run) -> compute_flow_module.FlowReport:
    return compute_flow(str(path), FlowRun(workers=0, params=FAST, **run), stream=io.StringIO())


def _per_track_store(store: Store, path: Path) -> Store:
    """The layout before shared frames: every track a sequence holding the video's frames."""
    old = Store.create(path, store.dataset)
    for seq_id in store.seq_ids():
        arrays = {name: store.read(seq_id, name) for name in store.arrays_of(seq_id)}
        attrs = {k: v for k, v in store.attrs_of(seq_id).items() if k != FRAMES_VIDEO}
        old.write_sequence(seq_id, arrays, attrs)
    return old


def test_a_video_s_tracks_hold_one_frames_array(store, extracted):
    frame_arrays = sorted(p.parent.relative_to(store.path).as_posix() for p in store.path.rglob("frames/zarr.json"))
    assert frame_arrays == ["videos/crossing/frames"]
    assert store.video_attrs("crossing") == {"tracks": TRACKS, "complete": True, "store_format": STORE_FORMAT,
                                             "tool_version": store.video_attrs("crossing")["tool_version"]}
    frames = [store.read(t, "frames") for t in TRACKS]
    assert frames[0].shape == (40, 120, 160) and frames[0].std() > 5
    np.testing.assert_array_equal(frames[0], frames[1])
    for seq_id in TRACKS:
        assert "frames" in store.arrays_of(seq_id) and store.frames_video(seq_id) == "crossing"
        assert store.read(seq_id, "gray").shape[0] == 40
    # the tracks cross: their windows differ, so each keeps its own crops of the one array
    assert not np.allclose(store.read(TRACKS[0], "windows"), store.read(TRACKS[1], "windows"), equal_nan=True)


def test_flow_computes_each_pair_once_and_equals_the_per_track_path(small, tmp_path, monkeypatch):
    store = small
    counted: list[int] = []
    real = compute_flow_module.opencv_pairs

    def counting(images, params, pairs):
        counted.append(len(pairs))
        return real(images, params, pairs)

    monkeypatch.setattr(compute_flow_module, "opencv_pairs", counting)
    old = _per_track_store(store, tmp_path / "old")
    kept = [np.isfinite(store.read(t, "windows")[:-1]).all(axis=1) for t in TRACKS]
    union, per_track = int((kept[0] | kept[1]).sum()), int(kept[0].sum() + kept[1].sum())
    assert (union, per_track) == (9, 12)  # the tracks overlap in time: sharing saves work

    report = _flow(store.path)
    assert counted == [union], "one TV-L1 call over the union of the tracks' pairs"
    assert report.summary.computed == union and report.summary.frames == 2 * 9
    assert sorted(report.summary.done) == TRACKS
    counted.clear()
    assert _flow(old.path).summary.computed == per_track and sorted(counted) == sorted(k.sum() for k in kept)
    for seq_id, keep in zip(TRACKS, kept):
        flow = store.read(seq_id, "flow")
        np.testing.assert_array_equal(flow, old.read(seq_id, "flow"))
        assert np.abs(flow[keep]).max() > 0.5 and not flow[~keep].any()
        attrs = store.attrs_of(seq_id)["flow"]
        assert attrs["n_pairs_with_window"] == keep.sum() and attrs["shared_with"] == [t for t in TRACKS if t != seq_id]
    again = _flow(store.path)  # resumed: nothing left to compute
    assert again.summary.computed == 0 and len(again.summary.skipped) == 2


def test_torch_path_computes_each_pair_once_and_matches_per_track(small, tmp_path):
    store = small
    pytest.importorskip("torch")
    old = _per_track_store(store, tmp_path / "old")
    kept = [np.isfinite(store.read(t, "windows")[:-1]).all(axis=1) for t in TRACKS]
    report = _flow(store.path, device="cpu", batch_size=16)
    assert report.ok and report.engine.pairs == int((kept[0] | kept[1]).sum()) == report.summary.computed
    reference = _flow(old.path, device="cpu", batch_size=16)
    assert reference.engine.pairs == int(kept[0].sum() + kept[1].sum())
    for seq_id in TRACKS:
        np.testing.assert_allclose(store.read(seq_id, "flow").astype(np.float32),
                                   old.read(seq_id, "flow").astype(np.float32), atol=2e-3)


def test_one_track_of_a_video_needing_flow_computes_only_its_pairs(small):
    store = small
    _flow(store.path)
    store.delete_sequence(TRACKS[0])  # the other track keeps its frames and flow
    assert store.video_attrs("crossing")["tracks"] == TRACKS[1:]
    before = store.read(TRACKS[1], "flow")
    report = _flow(store.path, overwrite=True)
    keep = np.isfinite(store.read(TRACKS[1], "windows")[:-1]).all(axis=1)
    assert report.summary.done == TRACKS[1:] and report.summary.computed == keep.sum()
    np.testing.assert_array_equal(store.read(TRACKS[1], "flow"), before)
    store.delete_sequence(TRACKS[1])  # the last track takes the shared frames with it
    assert store.seq_ids() == [] and not (store.path / "videos" / "crossing").exists()


def _results(store: Store) -> list[tuple[str, dict, dict]]:
    frames = store.read(TRACKS[0], "frames")
    out = []
    for seq_id in TRACKS:
        arrays = {name: store.read(seq_id, name) for name in store.arrays_of(seq_id) if name != "frames"}
        attrs = {k: v for k, v in store.attrs_of(seq_id).items() if k != FRAMES_VIDEO}
        out.append((seq_id, {**arrays, "frames": frames}, attrs))
    return out


def test_interrupted_video_is_never_half_read_and_is_redone(store, monkeypatch):
    results = _results(store)
    calls = {"n": 0}
    real = Store.write_sequence

    def dies_on_second(self, *args, **kwargs):  # the run is killed between the two tracks
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Store, "write_sequence", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        store.write_video("crossing", results, overwrite=True)
    monkeypatch.undo()
    assert store.seq_ids() == TRACKS[:1]  # what is there reads its frames
    np.testing.assert_array_equal(store.read(TRACKS[0], "frames"), results[0][1]["frames"])
    assert store.video_attrs("crossing")["complete"] is False and "crossing" not in store.videos_done()
    # a resumed extract-frames (no --overwrite) does the video again, all its tracks
    source = store.path.parent / "src"
    write_scenes(source, ["crossing"], frames=40)
    summary = run_extract(source, store.path, options=ExtractOptions(working_height=120), workers=0,
                          stream=io.StringIO())
    assert summary.done == ["crossing"] and store.seq_ids() == TRACKS
    assert store.video_attrs("crossing")["complete"] is True and "crossing" in store.videos_done()
    with pytest.raises(StoreError, match="video 'crossing' exists"):
        store.write_video("crossing", results)


def test_overwrite_replaces_every_track_and_the_frames(store):
    results = _results(store)
    store.write_video("crossing", results[1:], overwrite=True)  # this time one walker was found
    assert store.seq_ids() == TRACKS[1:] and store.video_attrs("crossing")["tracks"] == TRACKS[1:]
    assert len(list(store.path.rglob("frames/zarr.json"))) == 1
    seq_id, arrays, attrs = results[0]
    store.write_video("crossing", [("crossing", arrays, attrs)], overwrite=True)  # now under the plain id
    assert store.seq_ids() == ["crossing"] and store.video_attrs("crossing") is None
    assert (store.path / "sequences" / "crossing" / "frames" / "zarr.json").is_file()  # its own, as before
    assert store.frames_video("crossing") is None and store.videos_done() == {"crossing"}
    with pytest.raises(ValueError, match="share one frames array"):
        store.write_video("other", [(t, {**a, "frames": a["frames"].copy()}, at) for t, a, at in results])


def test_format_1_stores_are_read_and_upgraded_by_a_writer(store):
    meta_path = store.path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["gaittools_store_format"] = 1
    meta_path.write_text(json.dumps(meta))
    assert Store(store.path).read(TRACKS[0], "frames").shape == (40, 120, 160)  # read as it is
    Store.create(store.path, store.dataset)  # a writer: the store may now share frames
    assert json.loads(meta_path.read_text())["attributes"]["gaittools_store_format"] == STORE_FORMAT


def test_a_format_1_video_is_read_and_overwritten_whole(store, tmp_path):
    """Format 1: every track held its own frames and no video group listed them. They are
    read, count as done, and an overwrite replaces all of them (none is left behind)."""
    results = _results(store)
    old = Store.create(tmp_path / "old", store.dataset)
    for seq_id, arrays, attrs in results:  # the format-1 layout: frames in each track
        old.write_sequence(seq_id, {**arrays, "frames": arrays["frames"].copy()}, attrs)
    assert old.frames_video(TRACKS[0]) is None and old.read(TRACKS[1], "frames").shape == (40, 120, 160)
    assert old.videos_done() == {"crossing"}
    old.write_video("crossing", results[:1], overwrite=True)  # the rerun found one walker
    assert old.seq_ids() == TRACKS[:1] and old.video_attrs("crossing")["tracks"] == TRACKS[:1]
    assert len(list(old.path.rglob("frames/zarr.json"))) == 1

