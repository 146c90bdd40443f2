"""extract-frames on real CASIA-B clips and silhouettes, and on synthetic walkers with ground truth.

Each extraction runs once per module (fixtures); the checks read its results.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import DATA, REPO, need_data
from gaittools.cli.main import main
from gaittools.person.crop import crop_window
from gaittools.person.extract import ExtractOptions, extract_sequence, load_background, localise_and_crop
from gaittools.sources.layouts import parse_generic
from gaittools.person.blobs import box_iou
from gaittools.person.localise import localise
from gaittools.store.manifest import read_manifest
from gaittools.sources.discover import SourceSequence, discover
from gaittools.store.zarr_store import Store

VIDEOS = DATA / "casia-b-mini" / "videos"
SILHOUETTES = DATA / "casia-b-sil-090"
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def casia_mini():
    """Every CASIA-B mini walking clip extracted in person mode, plus localisations with masks."""
    found = discover(need_data(VIDEOS))
    background = load_background(found.backgrounds["001-bkgrd-090"])
    out = {}
    for seq in found.sequences:
        bg = background if seq.background is not None else None
        result = extract_sequence(seq, ExtractOptions(), bg)
        loc = localise(result.arrays["frames"], bg, keep_masks=True)
        out[seq.seq_id] = (result, loc)
    return out


def test_every_walking_clip_has_a_person_in_most_frames(casia_mini):
    assert len(casia_mini) == 14
    for seq_id, (result, _) in casia_mini.items():
        ex = result.attrs["extract"]
        assert ex["coverage"] >= 0.6, (seq_id, ex["coverage"])
        assert ex["n_tracks"] == 1 and not ex["short"] and not ex["no_person"]
        boxes, windows, gray = (result.arrays[k] for k in ("boxes", "windows", "gray"))
        found = np.isfinite(boxes[:, 0])
        assert (np.isfinite(windows[:, 0]) == found).all()
        assert not gray[~found].any() and (gray[found].reshape(found.sum(), -1).max(1) > 0).all()
        # a standing-height person: boxes of the full walk are 100-200 px of the 240 px frame
        heights = boxes[found, 3] - boxes[found, 1]
        assert 100 <= np.median(heights) <= 200, (seq_id, np.median(heights))


def test_person_crop_centre_of_mass_is_centred(casia_mini):
    """Foreground mass of each crop within 10% of the crop width from its centre."""
    for seq_id, (result, loc) in casia_mini.items():
        windows = result.arrays["windows"]
        H, W = result.arrays["frames"].shape[1:]
        offsets = []
        for t in np.flatnonzero(np.isfinite(windows[:, 0])):
            mask = cv2.resize(loc.masks[t].astype(np.uint8) * 255, (W, H), interpolation=cv2.INTER_NEAREST)
            crop = crop_window(mask, windows[t]).astype(np.float64)
            if crop.sum() > 0:
                cx = crop.sum(axis=0) @ (np.arange(64) + 0.5) / crop.sum()
                offsets.append(abs(cx - 32) / 64)
        assert len(offsets) >= 0.6 * len(windows)
        assert max(offsets) <= 0.10, (seq_id, max(offsets))


def test_empty_scene_clip_yields_nobody():
    clip = need_data(VIDEOS / "001-bkgrd-090.avi")
    seq = SourceSequence(parse_generic("001-bkgrd-090"), clip, "video")
    result = extract_sequence(seq)
    ex = result.attrs["extract"]
    assert ex["n_crops"] == 0 and ex["coverage"] == 0 and ex["no_person"]
    assert np.isnan(result.arrays["boxes"]).all() and not result.arrays["gray"].any()
    assert any("no person" in w for w in result.warnings)


def test_montage_of_crops_saved(casia_mini):
    rows = []
    for seq_id, (result, _) in sorted(casia_mini.items()):
        gray = result.arrays["gray"]
        idx = np.flatnonzero(np.isfinite(result.arrays["windows"][:, 0]))
        pick = idx[np.linspace(0, len(idx) - 1, 12).round().astype(int)]
        rows.append(np.hstack(list(gray[pick])))
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "extract_casia_b_mini_crops.png"
    assert cv2.imwrite(str(path), np.vstack(rows))
    print(f"montage of person-mode crops: {path}")
    assert cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).shape == (64 * len(rows), 64 * 12)


def test_frame_mode_window_is_whole_height_on_the_walker(casia_mini):
    result, _ = casia_mini["001-nm-01-090"]
    frames = result.arrays["frames"]
    boxes, windows, gray, info = localise_and_crop(frames, None, mode="frame", size=64)
    ok = np.isfinite(windows[:, 0])
    assert ok.mean() >= 0.6 and info["n_tracks"] == 1
    np.testing.assert_array_equal(windows[ok, 1], 0)
    np.testing.assert_array_equal(windows[ok, 3], 240)
    centres = (windows[ok, 0] + windows[ok, 2]) / 2
    assert (centres >= boxes[ok, 0] - 1).all() and (centres <= boxes[ok, 2] + 1).all()
    np.testing.assert_array_equal(gray[ok][5], cv2.resize(_pad_crop(frames[ok][5], windows[ok][5]), (64, 64),
                                                          interpolation=cv2.INTER_AREA))


def _pad_crop(frame, window):
    x0, y0, x1, y1 = window.astype(int)
    padded = cv2.copyMakeBorder(frame, 0, 0, 400, 400, cv2.BORDER_CONSTANT, value=0)
    return padded[y0:y1, x0 + 400:x1 + 400]


def test_hog_fallback_when_the_camera_pans(casia_mini):
    """A pan (the scene shifts 4 px a frame) defeats background subtraction; HOG finds the walker."""
    result, _ = casia_mini["001-nm-01-090"]
    frames, boxes = result.arrays["frames"], result.arrays["boxes"]
    ts = np.arange(50, 80)
    shifts = -60 + 4 * np.arange(len(ts))
    panned = np.stack([cv2.warpAffine(frames[t], np.float32([[1, 0, dx], [0, 1, 0]]), (320, 240),
                                      borderMode=cv2.BORDER_REFLECT) for t, dx in zip(ts, shifts)])
    loc = localise(panned)
    assert loc.method == "hog", loc.notes
    assert loc.coverage >= 0.8
    truth = boxes[ts] + np.stack([shifts, 0 * shifts, shifts, 0 * shifts], 1)
    ious = [box_iou(truth[i], loc.boxes[i]) for i in range(len(ts)) if np.isfinite(loc.boxes[i, 0])]
    assert np.median(ious) >= 0.5, np.median(ious)


# ---------------------------------------------------------------------------- synthetic ground truth
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from gaittools import synth
    out = tmp_path_factory.mktemp("synth")
    synth.generate_dataset(out, layout="casia-b", subjects=2, walks=["nm-01", "cl-01"],
                           views=("000", "090", "180"), frames=30, seed=3, workers=0)
    return out


def test_synthetic_boxes_match_ground_truth(synthetic):
    truth = pd.read_parquet(synthetic / "ground_truth" / "boxes.parquet")
    found = discover(synthetic)
    assert len(found.sequences) == 12
    ious = []
    for seq in found.sequences:
        boxes = extract_sequence(seq).arrays["boxes"]
        gt = truth[truth.seq_id == seq.seq_id].sort_values("frame")[["x0", "y0", "x1", "y1"]].to_numpy()
        assert len(gt) == len(boxes)
        for t in np.flatnonzero(np.isfinite(gt[:, 0])):
            ious.append(box_iou(boxes[t], gt[t]) if np.isfinite(boxes[t, 0]) else 0.0)
    print(f"synthetic boxes: median IoU {np.median(ious):.3f} over {len(ious)} frames")
    assert np.median(ious) >= 0.8


# ---------------------------------------------------------------------------- OpenGait pickles
@pytest.fixture(scope="module")
def pickle_store(tmp_path_factory):
    """Subjects 001 and 005 (short sequences) linked into a tree, plus one hostile pickle."""
    need_data(SILHOUETTES / "005")
    root = tmp_path_factory.mktemp("pkl")
    src = root / "src"
    for subject in ("001", "005"):
        for pkl in sorted((SILHOUETTES / subject).glob("*/090/090.pkl")):
            link = src / pkl.relative_to(SILHOUETTES)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(pkl)
    hostile = src / "006" / "nm-01" / "090" / "090.pkl"
    hostile.parent.mkdir(parents=True)
    marker = root / "pwned"
    hostile.write_bytes(pickle.dumps(_Hostile(marker)))
    store = root / "store"
    result = CliRunner().invoke(main, ["extract-frames", str(src), str(store), "--workers", "0"])
    return store, result, marker


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_opengait_pickles_stored_as_crops_with_short_flags(pickle_store):
    store_path, result, marker = pickle_store
    assert result.exit_code == 1, result.output  # the hostile pickle failed
    assert not marker.exists()
    store = Store(store_path)
    assert store.dataset == "opengait-pkl"
    assert len(store.seq_ids()) == 20
    for seq_id in store.seq_ids():
        source = SILHOUETTES / seq_id[:3] / seq_id[4:9] / "090" / "090.pkl"
        original = pickle.loads(source.read_bytes())  # trusted test data, compared as-is
        np.testing.assert_array_equal(store.read(seq_id, "gray"), original)
        assert store.arrays_of(seq_id) == ["gray"]
        ex = store.attrs_of(seq_id)["extract"]
        assert ex["content"] == "silhouette" and ex["n_frames"] == len(original)
        assert ex["short"] == (ex["n_crops"] < 25)
    shorts = {s for s in store.seq_ids() if store.attrs_of(s)["extract"]["short"]}
    assert {"005-bg-01-090", "005-bg-02-090", "005-nm-06-090", "005-cl-01-090"} <= shorts
    assert not any(s.startswith("001") for s in shorts)
    manifest = read_manifest(store)
    failed = manifest[manifest.status_extract == "failed"]
    assert failed.seq_id.tolist() == ["006-nm-01-090"]
    assert "refused" in failed.error.iloc[0] and "090.pkl" in failed.error.iloc[0]
    assert manifest.short.sum() == len(shorts)


def test_opengait_pickles_resized_when_size_is_not_64(pickle_store, tmp_path):
    src = pickle_store[0].parent / "src"
    store = tmp_path / "s32"
    result = CliRunner().invoke(main, ["extract-frames", str(src), str(store), "--workers", "0",
                                       "--size", "32", "--dataset", "opengait-pkl"])
    assert result.exit_code == 1
    gray = Store(store).read("001-nm-01-090", "gray")
    assert gray.shape[1:] == (32, 32) and gray.dtype == np.uint8 and gray.max() > 200
