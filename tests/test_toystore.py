"""The training fixture (gaittools.synth.toystore): synth's walkers, cut at their true boxes,
with our TV-L1 flow, and a build-split split; checked on the session's toy store."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from gaittools.person.crop import crop_frames
from gaittools.store.manifest import read_manifest
from gaittools.synth import render_clip
from gaittools.synth.clips import ClipSpec
from gaittools.synth.toystore import toy_protocol


def test_split_is_build_splits_under_the_toy_protocol(toy):
    split = pd.read_parquet(toy.split / "split.parquet")
    info = json.loads((toy.split / "split.json").read_text())
    assert info["protocol"] == "toy" and info["cross_view"] is False
    train, gallery = split[split.role == "train"], split[split.role == "gallery"]
    assert sorted(train.subject.unique()) == ["001", "002", "003", "004"]
    assert set(train.condition + train.seq_num.astype(str)) == {"nm1", "nm2", "nm3", "cl1"}
    assert sorted(gallery.subject.unique()) == ["005", "006", "007", "008"]
    assert set(gallery.seq_num) == {1, 2} and set(gallery.condition) == {"nm"}
    probes = split[split.role == "probe"]
    assert set(zip(probes.probe_set, probes.condition, probes.seq_num)) == {("NM", "nm", 3), ("CL", "cl", 1)}
    assert len(split) == len(toy.store.seq_ids()) and (read_manifest(toy.store).status_flow == "done").all()
    with pytest.raises(ValueError, match="train_subjects=4: need 1..3"):
        toy_protocol(4, 4, ["nm-01"], ["090"], ["nm-01"], {"NM": ["nm-02"]})


def test_crops_are_the_synth_walker_at_its_true_box(toy):
    seq_id = "003-cl-01-090"
    gray, windows = toy.store.read(seq_id, "gray"), toy.store.read(seq_id, "windows")
    attrs = toy.store.attrs_of(seq_id)
    lead = int(np.argmax(np.isfinite(windows[:, 0])))
    assert lead == attrs["extract"]["n_frames"] - attrs["extract"]["n_crops"] > 0
    assert np.isnan(toy.store.read(seq_id, "boxes")[:lead]).all() and not gray[:lead].any()
    spec = ClipSpec("casia-b", 3, "cl", 1, "090", len(gray), (160, 120), 25.0, 0)
    clip = render_clip(spec)  # the same walk, re-rendered: the crops are its frames cut at windows
    frames = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in clip.frames])
    np.testing.assert_array_equal(crop_frames(frames, windows, gray.shape[1]), gray)
    masks = crop_frames(clip.masks.astype(np.uint8) * 255, windows, gray.shape[1])[lead:]
    rows = np.flatnonzero  # the person spans the crop's height: head at the top, feet at the bottom
    spans = np.array([rows(m.max(axis=1) > 0)[[0, -1]] for m in masks])
    assert (spans[:, 0] <= 2).all() and (spans[:, 1] >= gray.shape[1] - 3).all(), spans


def test_flow_follows_the_walker(toy):
    """View 090: the walker goes right to left; the torso's flow is the window's own speed."""
    for seq_id in ("001-nm-01-090", "007-cl-01-090"):
        flow, windows = toy.store.read(seq_id, "flow").astype(np.float32), toy.store.read(seq_id, "windows")
        ok = np.isfinite(windows[:, 0])
        assert not flow[~ok[:-1]].any()  # no window: zero flow, as compute-flow writes it
        first, last = np.flatnonzero(ok)[[0, -1]]
        size = flow.shape[-1]
        centre = (windows[:, 0] + windows[:, 2]) / 2
        speed = (centre[last] - centre[first]) / (last - first) * size / np.median(windows[ok, 2] - windows[ok, 0])
        third = slice(size // 3, 2 * size // 3)
        torso = np.median(flow[first:last, 0, third, third])
        assert speed < -0.5 and 0.5 * speed > torso > 1.5 * speed, (speed, torso)
        assert toy.store.attrs_of(seq_id)["flow"]["backend"] == "torch-tvl1"
