"""extract-frames building blocks on small inputs: pickles, crops, decoding errors, naming, progress."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import DATA, need_data
from gaittools.person.crop import crop_frames, crop_window, resize_crops, windows_for
from gaittools.person.localise import localise
from gaittools.person.series import fill_gaps, smooth_boxes
from gaittools.sources.pickles import PickleError, UnsafePickle, load_array, load_silhouettes, loads_array
from gaittools.sources.discover import SourceError, detect_dataset, discover
from gaittools.sources.video import VideoError, decode
from gaittools.cli.progress import Meter, Progress, eta

CLIP = DATA / "casia-b-mini" / "videos" / "001-nm-01-090.avi"


# ---------------------------------------------------------------------------- pickles
class _Hostile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "090.pkl"
    evil.write_bytes(pickle.dumps(_Hostile(marker)))
    with pytest.raises(UnsafePickle, match=r"090\.pkl: refused.*system"):
        load_array(evil)
    assert not marker.exists()
    # the same refusal for a pickle hiding the call inside a container of arrays
    with pytest.raises(UnsafePickle):
        loads_array(pickle.dumps([np.zeros(3), _Hostile(marker)]))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_arrays_load_under_every_protocol(protocol):
    arr = np.random.default_rng(protocol).integers(0, 255, (3, 8, 8), dtype=np.uint8)
    np.testing.assert_array_equal(loads_array(pickle.dumps(arr, protocol=protocol)), arr)


def test_pickle_of_other_things_or_garbage_is_a_clear_error(tmp_path):
    with pytest.raises(PickleError, match="holds a dict"):
        loads_array(pickle.dumps({"a": 1}), "x.pkl")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(PickleError, match="bad.pkl: not a readable pickle"):
        load_array(bad)
    flat = tmp_path / "flat.pkl"
    flat.write_bytes(pickle.dumps(np.zeros((4, 4), np.uint8)))
    with pytest.raises(PickleError, match=r"expected silhouettes \(T, h, w\)"):
        load_silhouettes(flat)


def test_float_silhouettes_in_0_1_are_scaled_with_a_warning(tmp_path):
    from gaittools.person.extract import extract_sequence

    rng = np.random.default_rng(0)
    binary = (rng.random((30, 64, 64)) > 0.7).astype(np.float32)  # what some exports store: x / 255
    folder = tmp_path / "sil" / "001" / "nm-01" / "090"
    folder.mkdir(parents=True)
    (folder / "090.pkl").write_bytes(pickle.dumps(binary))
    notes: list[str] = []
    arr = load_silhouettes(folder / "090.pkl", notes)
    assert arr.dtype == np.uint8 and set(np.unique(arr)) == {0, 255} and "scaled by 255" in notes[0]
    seq = discover(tmp_path / "sil", "opengait-pkl").sequences[0]
    extracted = extract_sequence(seq)
    assert extracted.arrays["gray"].max() == 255 and any("scaled by 255" in w for w in extracted.warnings)
    (folder / "090.pkl").write_bytes(pickle.dumps(binary * 300))  # floats beyond 255: refused, not wrapped
    with pytest.raises(PickleError, match=r"expected uint8 silhouettes \(0-255\), got float32"):
        load_silhouettes(folder / "090.pkl")


def test_real_opengait_pickle_loads():
    arr = load_silhouettes(need_data(DATA / "casia-b-sil-090" / "001" / "nm-01" / "090" / "090.pkl"))
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[1:] == (64, 64) and arr.max() > 200


# ---------------------------------------------------------------------------- crops
def test_person_window_spans_box_height_and_centres_on_mass():
    boxes = np.array([[100, 40, 140, 200], [np.nan] * 4], np.float32)
    centres = np.array([112.0, np.nan], np.float32)
    w = windows_for(boxes, centres, (240, 320), "person")
    np.testing.assert_array_equal(w[0], [32, 40, 192, 200])  # 160 tall, centred on 112
    assert np.isnan(w[1]).all()


def test_person_scale_is_the_tracks_median_height():
    boxes = np.array([[300, 150, 320, 200]] + [[250 - 4 * t, 40, 290 - 4 * t, 200] for t in range(1, 10)],
                     np.float32)  # frame 0: only a foot at the right edge
    w = windows_for(boxes, np.full(10, np.nan, np.float32), (240, 320), "person")
    np.testing.assert_array_equal(w[0], [230, 40, 390, 200])  # 160 tall, feet at 200
    assert (w[1:, 3] - w[1:, 1] == 160).all()
    boxes[5, 1] = -100  # a merge stretches one box upwards: the scale stays
    w = windows_for(boxes, np.full(10, np.nan, np.float32), (240, 320), "person")
    assert (w[:, 3] - w[:, 1] == 160).all()


def test_frame_window_is_frame_high_and_centred_on_walker():
    boxes = np.array([[100, 40, 140, 200]], np.float32)
    w = windows_for(boxes, np.array([np.nan], np.float32), (240, 320), "frame")
    np.testing.assert_array_equal(w[0], [0, 0, 240, 240])  # centre 120 -> [0, 240)


def test_crop_is_exactly_the_padded_window_resized():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (240, 320), dtype=np.uint8)
    window = np.array([-20, 10, 80, 110], np.float32)  # sticks out on the left
    padded = np.zeros((100, 100), np.uint8)
    padded[:, 20:] = frame[10:110, 0:80]
    expected = cv2.resize(padded, (64, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(crop_window(frame, window), expected)
    crops = crop_frames(np.stack([frame, frame]), np.stack([window, np.full(4, np.nan, np.float32)]))
    np.testing.assert_array_equal(crops[0], expected)
    assert crops.dtype == np.uint8 and not crops[1].any()


def test_resize_crops_keeps_64_and_resizes_otherwise():
    crops = np.zeros((2, 64, 64), np.uint8)
    crops[:, 16:48, 24:40] = 255
    assert resize_crops(crops, 64) is crops
    small = resize_crops(crops, 32)
    assert small.shape == (2, 32, 32) and small[:, 8:24, 12:20].min() == 255 and small[:, :8].max() == 0


# ---------------------------------------------------------------------------- localisation on drawn frames
def _walker_frames(T=30, H=120, W=160):
    """A dark ellipse 'body' walking right over a textured static scene."""
    rng = np.random.default_rng(1)
    scene = cv2.GaussianBlur(rng.integers(90, 170, (H, W), dtype=np.uint8), (0, 0), 2)
    frames, truth = [], []
    for t in range(T):
        f = scene.copy()
        cx = 30 + 3 * t
        cv2.ellipse(f, (cx, 60), (8, 30), 0, 0, 360, 20, -1)
        frames.append(f)
        truth.append([cx - 8, 30, cx + 9, 91])
    return np.stack(frames), np.array(truth, np.float32), scene


def test_localise_finds_drawn_walker_and_nobody_in_empty_scene():
    frames, truth, scene = _walker_frames()
    loc = localise(frames, background=scene, keep_masks=True)
    assert loc.coverage == 1.0 and loc.n_tracks == 1
    assert np.abs(loc.boxes - truth).max() <= 3.0
    np.testing.assert_allclose(loc.centres, (truth[:, 0] + truth[:, 2]) / 2, atol=1.5)
    empty = localise(np.repeat(scene[None], 20, axis=0))
    assert empty.coverage == 0.0 and np.isnan(empty.boxes).all() and empty.n_tracks == 0


@pytest.mark.parametrize("method", ["mog2", "knn"])
def test_localise_with_opencv_subtractors(method):
    from gaittools.person.localise import LocaliseParams

    frames, truth, scene = _walker_frames()
    loc = localise(frames, background=scene, params=LocaliseParams(method=method))
    assert loc.method == method and loc.coverage >= 0.9
    ok = np.isfinite(loc.boxes[:, 0])
    assert np.median(np.abs(loc.boxes[ok] - truth[ok])) <= 3.0


def test_frame_folder_sequence_extracts_to_contract(tmp_path):
    from gaittools.person.extract import ExtractOptions, extract_sequence

    frames, truth, _ = _walker_frames(T=12, H=120, W=160)
    folder = tmp_path / "tum" / "p003" / "b02"
    folder.mkdir(parents=True)
    for t, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{t + 1:04d}.png"), cv2.resize(f, (320, 240), interpolation=cv2.INTER_NEAREST))
    (seq,) = discover(tmp_path / "tum").sequences
    assert seq.seq_id == "p003-b02" and seq.kind == "frames"
    result = extract_sequence(seq, ExtractOptions(working_height=120, fps=30))
    a, ex = result.arrays, result.attrs["extract"]
    assert a["frames"].shape == (12, 120, 160) and a["gray"].shape == (12, 64, 64)
    assert a["boxes"].dtype == a["windows"].dtype == np.float32
    assert ex["coverage"] == 1.0 and ex["short"] and result.attrs["fps"] == 30
    assert result.attrs["name"]["condition"] == "b" and result.attrs["name"]["seq_num"] == 2
    assert np.abs(a["boxes"] - truth).max() <= 3.0
    assert any("short" in w for w in result.warnings)


def test_localise_keeps_longest_of_two_walkers_and_counts_tracks():
    frames, truth, _ = _walker_frames(T=30, W=200)
    frames = frames.copy()
    for t in range(8, 20):  # a second, shorter visitor on the right
        cv2.ellipse(frames[t], (185, 60), (6, 28), 0, 0, 360, 230, -1)
    loc = localise(frames)
    assert loc.n_tracks == 2
    assert np.abs(loc.boxes[:, 0] - truth[:, 0]).max() <= 3.0


def test_gap_filling_and_smoothing():
    boxes = np.array([[0, 0, 10, 10], [np.nan] * 4, [np.nan] * 4, [6, 0, 16, 10]], np.float32)
    filled = fill_gaps(boxes, max_gap=2)
    np.testing.assert_allclose(filled[1], [2, 0, 12, 10])
    assert np.isnan(fill_gaps(boxes, max_gap=1)[1]).all()
    line = np.stack([np.arange(10.0), np.zeros(10), np.arange(10.0) + 5, np.full(10, 9.0)], 1)
    np.testing.assert_allclose(smooth_boxes(line, 5)[2:-2], line[2:-2])  # linear motion kept


# ---------------------------------------------------------------------------- decoding errors
def test_bad_videos_give_errors_naming_the_file(tmp_path):
    zero = tmp_path / "zero.avi"
    zero.write_bytes(b"")
    text = tmp_path / "text.avi"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(VideoError, match=r"zero\.avi: empty file \(0 bytes\)"):
        decode(zero)
    with pytest.raises(VideoError, match=r"text\.avi: not a readable video"):
        decode(text)
    with pytest.raises(VideoError, match=r"missing\.avi: no such file"):
        decode(tmp_path / "missing.avi")
    clip = need_data(CLIP)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    with pytest.raises(VideoError, match=r"cut\.avi: truncated or corrupt: decoded \d+ of the 106"):
        decode(cut)


def test_video_and_frame_folder_decode_to_working_height(tmp_path):
    full = decode(need_data(CLIP), working_height=None)
    assert full.frames.shape == (106, 240, 320) and full.fps == 25.0
    half = decode(CLIP, working_height=120)
    assert half.frames.shape == (106, 120, 160) and half.scale == 0.5
    folder = tmp_path / "p001" / "n01"
    folder.mkdir(parents=True)
    for t in range(5):
        cv2.imwrite(str(folder / f"{t:04d}.png"), full.frames[t])
    frames = decode(folder, working_height=240, fps=30).frames
    np.testing.assert_array_equal(frames, full.frames[:5])
    (folder / "0005.png").write_bytes(b"")
    with pytest.raises(VideoError, match=r"0005\.png: not a readable image"):
        decode(folder)


# ---------------------------------------------------------------------------- naming
def test_discover_lists_unparsable_names_with_reasons(tmp_path):
    for name in ("001-nm-01-090.avi", "001-bkgrd-090.avi", "001-xx-01-090.avi", "002-nm-01-091.avi"):
        (tmp_path / name).write_bytes(b"x")
    found = discover(tmp_path)
    assert found.dataset == "casia-b"
    assert [s.seq_id for s in found.sequences] == ["001-nm-01-090"]
    assert found.sequences[0].background == tmp_path / "001-bkgrd-090.avi"
    reasons = dict(found.skipped)
    assert "not a CASIA-B name" in reasons[str(tmp_path / "001-xx-01-090.avi")]
    assert "view 091" in reasons[str(tmp_path / "002-nm-01-091.avi")]


def test_detect_dataset_layouts_and_ambiguity(tmp_path):
    pkl = tmp_path / "a" / "001" / "nm-01" / "090" / "090.pkl"
    pkl.parent.mkdir(parents=True)
    pkl.write_bytes(b"x")
    assert detect_dataset(tmp_path / "a") == "opengait-pkl"
    tum = tmp_path / "b" / "p001" / "n01"
    tum.mkdir(parents=True)
    (tum / "0001.png").write_bytes(b"x")
    assert detect_dataset(tmp_path / "b") == "tum-gaid"
    assert discover(tmp_path / "b").sequences[0].seq_id == "p001-n01"
    depth = tmp_path / "b" / "depth" / "p001" / "n01"  # TUM-GAID ships depth frames beside the images
    depth.mkdir(parents=True)
    (depth / "0001.png").write_bytes(b"x")
    assert [s.path for s in discover(tmp_path / "b").sequences] == [tum]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "my clip.mp4").write_bytes(b"x")
    assert detect_dataset(tmp_path / "c") == "generic"
    (tmp_path / "a" / "001-nm-01-090.avi").write_bytes(b"x")
    with pytest.raises(SourceError, match="choose with --dataset"):
        detect_dataset(tmp_path / "a")


# ---------------------------------------------------------------------------- progress
def test_eta_waits_for_work_and_ignores_start_up():
    now = [0.0]
    meter = Meter(100, now=lambda: now[0])
    now[0] = 30.0  # 30 s of start-up before the first item finishes
    meter.update(1)
    assert meter.eta() == "?"
    for i in range(2, 5):  # then one item a second
        now[0] += 1.0
        meter.update(i)
    assert meter.eta() == "0:01:36" and abs(meter.rate - 1.0) < 1e-9  # 96 left at 1/s, not at 4/33
    assert eta(2, 10, 5.0) == "?" and eta(10, 10, 0.5) == "?" and eta(10, 20, 5.0) == "0:00:10"


def test_progress_rates_eta_and_summary():
    out = io.StringIO()
    progress = Progress("demo", total=4, unit="sequences", stream=out, interval=0.0)
    progress.skip("a.avi", "bad name")
    progress.done("s1", frames=100)
    progress.done("s2", frames=50, warning="short")
    progress.failed("s3", "/x/s3.avi", "truncated")
    assert "3/4 sequences" in progress.line() and "ETA ?" in progress.line()  # too early to judge
    summary = progress.finish()
    text = out.getvalue()
    assert not summary.ok and summary.frames == 150
    assert "done 2, skipped 1, failed 1, warnings 1" in text
    assert "FAILED  s3 (/x/s3.avi): truncated" in text and "skipped a.avi: bad name" in text
    for i in range(5):
        progress.skip(f"d{i}", "already in the store")
    assert "skipped 5 items: already in the store (d0, d1, d2, ...)" in progress.summary.format()


def test_cli_refuses_a_folder_without_sequences(tmp_path):
    from click.testing import CliRunner

    from gaittools.cli.main import main

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("nothing to see")
    result = CliRunner().invoke(main, ["extract-frames", str(tmp_path / "src"), str(tmp_path / "store")])
    assert result.exit_code == 2 and "no generic sequences found" in result.output  # a usage error
    assert not (tmp_path / "store").exists()


# ---------------------------------------------------------------------------- fast paths = plain definitions
def _noisy_masks(T=6, h=48, w=150, seed=0):
    """Bodies (ellipses), a detached head, speckle; corners kept empty (no 3-pixel corner
    remnants after cleaning)."""
    rng = np.random.default_rng(seed)
    masks = rng.random((T, h, w)) < 0.04
    for t in range(T):
        m = masks[t].view(np.uint8)
        cv2.ellipse(m, (20 + 17 * t, h // 2), (5, h // 3), 0, 0, 360, 1, -1)
        cv2.circle(m, (20 + 17 * t, h // 2 - h // 3 - 4), 3, 1, -1)
        cv2.ellipse(m, (w - 30, h // 2 + 5), (8, 6), 0, 0, 360, 1, -1)
        for ys in (slice(0, 3), slice(h - 3, h)):
            for xs in (slice(0, 3), slice(w - 3, w)):
                masks[t, ys, xs] = False
    return masks


def _reference_clean(masks):
    opener = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    closer = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 9))
    opened = [cv2.morphologyEx(m.view(np.uint8), cv2.MORPH_OPEN, opener) for m in masks]
    out = [cv2.morphologyEx(m, cv2.MORPH_CLOSE, closer) for m in opened]
    return np.stack(out).astype(bool)


@pytest.mark.parametrize("shape", [(4, 120, 160), (3, 37, 64), (3, 20, 65), (2, 9, 200), (2, 5, 3)])
def test_packed_morphology_is_opencvs_ellipse_open_and_close(shape):
    from gaittools.person.foreground import CLOSE_KERNEL, OPEN_KERNEL, clean_masks
    from gaittools.person.packed_masks import pack_masks, unpack_masks

    for kernel, size in ((OPEN_KERNEL, (3, 3)), (CLOSE_KERNEL, (5, 9))):
        drawn = np.zeros(size[::-1], np.uint8)
        for rx, ry in kernel:
            drawn[size[1] // 2 - ry:size[1] // 2 + ry + 1, size[0] // 2 - rx:size[0] // 2 + rx + 1] = 1
        np.testing.assert_array_equal(drawn, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, size))
    rng = np.random.default_rng(sum(shape))
    for density in (0.05, 0.3, 0.6, 0.9):
        masks = rng.random(shape) < density
        np.testing.assert_array_equal(unpack_masks(pack_masks(masks), shape[2]), masks)
        np.testing.assert_array_equal(clean_masks(masks), _reference_clean(masks))


def test_blobs_keep_people_at_two_depths_apart_and_join_the_parts_of_one_body():
    from gaittools.person.blobs import frame_blobs
    from gaittools.person.packed_masks import pack_masks

    masks = np.zeros((3, 100, 160), np.uint8)
    # frame 0: a near body (rows 20-95) and a far one (rows 30-75) sharing columns 60-70,
    # not touching: column runs made them one box
    cv2.ellipse(masks[0], (55, 58), (12, 37), 0, 0, 360, 1, -1)
    cv2.ellipse(masks[0], (78, 52), (8, 22), 0, 0, 360, 1, -1)
    # frame 1: one body fallen apart: head above the trunk, a foot below, an arm piece beside
    cv2.ellipse(masks[1], (80, 55), (10, 30), 0, 0, 360, 1, -1)
    cv2.circle(masks[1], (80, 16), 6, 1, -1)
    cv2.rectangle(masks[1], (74, 88), (84, 94), 1, -1)
    cv2.rectangle(masks[1], (93, 50), (95, 58), 1, -1)
    # frame 2: three bodies in a row, a body width apart
    for x in (30, 70, 110):
        cv2.ellipse(masks[2], (x, 55), (10, 35), 0, 0, 360, 1, -1)
    found = frame_blobs(pack_masks(masks.astype(bool)), 160, 0.002, 0.1)
    assert [len(f) for f in found] == [2, 1, 3]
    near, far = sorted(found[0], key=lambda b: -(b[3] - b[1]))
    np.testing.assert_array_equal(near[:4], [43, 21, 68, 96])
    np.testing.assert_array_equal(far[:4], [70, 30, 87, 75])
    np.testing.assert_array_equal(found[1][0, :4], [70, 10, 96, 95])
    assert found[1][0, 4] == masks[1].sum()
    np.testing.assert_array_equal(found[2][:, 0], [20, 60, 100])


def _stick_body(mask: np.ndarray, x: int, front: int, back: int, arm: int = 0) -> None:
    """A side-view body 80 rows tall standing on row 95 at column ``x``: head, trunk, a leg
    reaching ``front`` columns forward and one ``back`` columns backward, an arm ``arm``
    columns out at shoulder height."""
    cv2.circle(mask, (x, 22), 7, 1, -1)
    cv2.ellipse(mask, (x, 45), (8, 18), 0, 0, 360, 1, -1)
    for dx in (front, -back):
        cv2.line(mask, (x, 60), (x + dx, 95), 1, 5)
    if arm:
        cv2.line(mask, (x, 34), (x + arm, 34), 1, 3)


def test_a_wide_blob_of_people_side_by_side_is_divided_and_one_body_is_not():
    from gaittools.person.blobs import frame_blobs
    from gaittools.person.packed_masks import pack_masks

    masks = np.zeros((4, 100, 160), np.uint8)
    _stick_body(masks[0], 50, 12, 12, arm=40)  # frame 0: two people holding hands
    _stick_body(masks[0], 90, 12, 12)
    _stick_body(masks[1], 40, 20, 20)  # frame 1: three, whose strides meet
    _stick_body(masks[1], 72, 20, 20)
    _stick_body(masks[1], 104, 20, 20)
    _stick_body(masks[2], 70, 25, 25, arm=30)  # frame 2: one walker, full stride, arm out
    _stick_body(masks[3], 70, 25, 25)  # frame 3: one walker, full stride
    found = frame_blobs(pack_masks(masks.astype(bool)), 160, 0.002, 0.1)
    assert [len(f) for f in found] == [2, 3, 1, 1]
    assert (found[0][:, 5] == 1).all() and (found[1][:, 5] == 1).all()
    assert (found[2][:, 5] == 0).all() and (found[3][:, 5] == 0).all()
    left, right = found[0]
    # cut between the trunks; below the hands each box keeps its own legs
    assert 66 <= left[2] <= 74 and 68 <= right[0] <= 74 and left[0] <= 40 and right[2] >= 100
    assert (left[1], left[3]) == (right[1], right[3]) == (15, 99)
    # strides that meet between the trunks: both neighbours' boxes take them
    assert found[1][0, 2] > found[1][1, 0] + 10 and found[1][1, 2] > found[1][2, 0] + 10
    assert found[1][:, 4].sum() <= masks[1].sum()


def test_mass_centres_on_packed_masks_match_the_plain_sums():
    from gaittools.person.blobs import mass_centres
    from gaittools.person.packed_masks import pack_masks

    masks = _noisy_masks(T=8, h=40, w=130, seed=5)
    rng = np.random.default_rng(5)
    x0, y0 = rng.uniform(-5, 250, 8), rng.uniform(-5, 70, 8)  # some boxes stick out of the frame
    boxes = np.stack([x0, y0, x0 + rng.uniform(10, 60, 8), y0 + rng.uniform(10, 40, 8)], 1).astype(np.float32)
    boxes[1] = np.nan
    boxes[2] = [500, 10, 520, 30]  # right of the frame: no foreground, box centre
    scale = 2.0
    expected = np.full(8, np.nan, np.float32)
    for t in np.flatnonzero(np.isfinite(boxes[:, 0])):
        x0, y0, x1, y1 = boxes[t] / scale
        c0, c1 = int(max(0, np.floor(x0))), int(min(130, np.ceil(x1)))
        r0, r1 = int(max(0, np.floor(y0))), int(min(40, np.ceil(y1)))
        cols = masks[t, r0:r1, c0:c1].sum(axis=0, dtype=np.int64)
        total = cols.sum()
        expected[t] = ((cols @ np.arange(c0, c1)) / total + 0.5) * scale if total else (x0 + x1) / 2 * scale
    np.testing.assert_array_equal(mass_centres(pack_masks(masks), 130, boxes, scale), expected)


def test_shrink_medians_and_crops_equal_their_plain_definitions():
    from gaittools.person.foreground import _row_medians, median_background, shrink

    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (7, 240, 320), dtype=np.uint8)
    frames = np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in noise])
    for height, size in ((120, (160, 120)), (80, (107, 80)), (100, (133, 100))):
        expected = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
        np.testing.assert_array_equal(shrink(frames, height), expected)
    for T in (1, 2, 5, 30, 31, 32, 61):
        stack = rng.integers(0, 256, (T, 9, 11), dtype=np.uint8)
        for samples in (2, 31, 60):
            idx = np.unique(np.linspace(0, T - 1, min(samples, T)).round().astype(int))
            expected = np.sort(stack[idx], axis=0)[len(idx) // 2]
            np.testing.assert_array_equal(median_background(stack, samples), expected)
    for n in (1, 6, 1200, 1201):
        values = rng.integers(0, 256, (5, n), dtype=np.uint8)
        np.testing.assert_array_equal(_row_medians(values), np.median(values, axis=1))
    for dtype in (np.uint8, np.float32):
        frame = rng.uniform(0, 255, (240, 320)).astype(dtype)
        for window in ([10, 20, 170, 180], [0, 0, 320, 240], [-5, 30, 95, 130], [250, 150, 350, 250]):
            x0, y0, x1, y1 = window
            padded = cv2.copyMakeBorder(frame, 200, 200, 200, 200, cv2.BORDER_CONSTANT, value=0)
            expected = cv2.resize(padded[y0 + 200:y1 + 200, x0 + 200:x1 + 200], (64, 64),
                                  interpolation=cv2.INTER_AREA)
            np.testing.assert_array_equal(crop_window(frame, np.array(window, np.float32)), expected)


def test_moving_camera_stops_early_with_the_full_answer():
    from gaittools.person import foreground as loc

    frames, _, scene = _walker_frames(T=30)
    panned = np.stack([np.roll(scene, 2 * t, axis=1) for t in range(30)])
    calls = []
    real = loc._pair_shift

    def counted(*args):
        calls.append(1)
        return real(*args)

    loc._pair_shift = counted
    try:
        assert not loc.moving_camera(frames, 1.0) and len(calls) == 3  # 3 still pairs of 5 decide
        calls.clear()
        assert loc.moving_camera(panned, 1.0) and len(calls) == 3
    finally:
        loc._pair_shift = real


def test_blockwise_threshold_is_the_plain_definition():
    from gaittools.person.foreground import foreground, refined_background
    from gaittools.person.packed_masks import unpack_masks

    rng = np.random.default_rng(7)
    for T, h, w in ((37, 60, 90), (5, 21, 33), (16, 8, 64)):
        small = rng.integers(0, 256, (T, h, w), dtype=np.uint8)
        small[:, : h // 2] //= 8  # some frames' median difference differs from others'
        bg = rng.integers(0, 256, (h, w), dtype=np.uint8)
        for background in (bg, None):
            packed, _ = foreground(small, background)
            ref_bg = bg if background is not None else refined_background(small, 31, 14)
            diff = np.abs(small.astype(int) - ref_bg)
            level = np.median(diff[:, ::4, ::4].reshape(T, -1), axis=1).astype(np.int16)
            expected = diff > np.minimum(14 + 2 * level, 255)[:, None, None]
            np.testing.assert_array_equal(unpack_masks(packed, w), expected)


def test_blobs_with_zero_min_area_and_empty_frames():
    from gaittools.person.blobs import frame_blobs
    from gaittools.person.packed_masks import pack_masks

    masks = np.zeros((3, 20, 40), bool)
    masks[1, 2:18, 5:9] = True
    found = frame_blobs(pack_masks(masks), 40, 0.0, 0.1)
    assert [len(c) for c in found] == [0, 1, 0]
    np.testing.assert_array_equal(found[1], [[5, 2, 9, 18, 64, 0]])


def test_extract_benchmark_names_a_missing_store_dir(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "extract_speed.py"), "--source", str(tmp_path),
                             "--store-dir", str(tmp_path / "nope")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--store-dir" in result.stderr and "no such folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_opencv_and_ffmpeg_stay_quiet_about_a_broken_video(tmp_path):
    """Our error names the file; OpenCV's '[ WARN:...]' and FFmpeg's 'moov atom not found' lines
    would only repeat it on the console."""
    import subprocess
    import sys

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + bytes(range(256)) * 8)
    script = ("from gaittools.sources.video import VideoError, decode\n"
              f"try:\n    decode({str(bad)!r})\nexcept VideoError as e:\n    print(e)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert "not a readable video" in result.stdout, result.stdout + result.stderr
    assert "moov atom" not in result.stderr and "WARN" not in result.stderr, result.stderr


def test_rolling_median_is_nanmedian_over_each_window():
    import warnings

    from gaittools.person.series import rolling_median

    rng = np.random.default_rng(11)
    for _ in range(50):
        T, reach = int(rng.integers(1, 120)), int(rng.integers(1, 15))
        values = rng.normal(100, 20, T)
        values[rng.random(T) < rng.random()] = np.nan  # gaps, and series with no value at all
        windows = np.lib.stride_tricks.sliding_window_view(np.pad(values, reach, constant_values=np.nan),
                                                           2 * reach + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmedian(windows, axis=1)
        np.testing.assert_array_equal(rolling_median(values, reach), expected)
