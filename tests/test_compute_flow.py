"""compute-flow: crop-aligned TV-L1 flow written into the store, resumable, failures isolated.

The synthetic stores hold a textured "person" walking horizontally at a known speed over a
still textured background, with boxes, windows and gray crops made the way extract-frames makes
them, so the flow's shape, location, sign and size in crop pixels are all known.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO, need_data

from gaittools.flow.crop import crop_flow, crop_flow_torch, crop_weights
from gaittools.store.manifest import read_manifest
from gaittools.store.zarr_store import Store
from pipelines.compute_flow import FlowRun, compute_flow, has_flow


# Small frames and a short TV-L1 schedule keep the suite fast on two shared cores; the checks
# below (location, sign, size, backend agreement) hold with it as with OpenCV's defaults.
FAST = {"nscales": 3, "warps": 2, "outer_iterations": 4}
FAST_CLI = [arg for k, v in FAST.items() for arg in ("--tvl1", f"{k}={v}")]
H, W, T, S = 48, 64, 5, 24
PERSON_W, PERSON_H, SPEED = 10, 26, 2  # pixels; SPEED pixels per frame


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _texture(rng: np.random.Generator, shape: tuple[int, int], lo: int, hi: int) -> np.ndarray:
    import cv2

    noise = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 1.0)
    noise = (noise - noise.min()) / (np.ptp(noise) + 1e-6)
    return lo + (hi - lo) * noise


def _walker(direction: int, seed: int, n_frames: int = T) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W) uint8 of a textured block moving by direction*SPEED px/frame; its boxes."""
    rng = np.random.default_rng(seed)
    background = _texture(rng, (H, W), 40, 110)
    person = _texture(rng, (PERSON_H, PERSON_W), 150, 255)
    y0 = 12
    start = 14 if direction > 0 else W - 14 - PERSON_W
    frames, boxes = [], []
    for t in range(n_frames):
        x0 = start + direction * SPEED * t
        frame = background.copy()
        frame[y0 : y0 + PERSON_H, x0 : x0 + PERSON_W] = person
        frames.append(frame)
        boxes.append([x0, y0, x0 + PERSON_W, y0 + PERSON_H])
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8), np.asarray(boxes, np.float32)


def _windows(boxes: np.ndarray) -> np.ndarray:
    """Square windows 1.3 box heights tall, centred on the box (as person-mode cropping does)."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    half = 0.65 * (boxes[:, 3] - boxes[:, 1])
    return np.stack([cx - half, cy - half, cx + half, cy + half], 1).astype(np.float32)


def _crop_images(images: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Area-resampled crops (T, S, S) of frames with their windows (NaN -> all zero)."""
    wy, wx, valid = crop_weights(windows, images.shape[1], images.shape[2], S)
    crops = np.matmul(np.matmul(wy, images.astype(np.float32)), np.swapaxes(wx, 1, 2))
    crops[~valid] = 0
    return np.clip(np.rint(crops), 0, 255).astype(np.uint8)


def _attrs(seq_id: str, n_frames: int) -> dict:
    subject, cond, num, view = seq_id.split("-")
    return {
        "name": {"dataset": "casia-b", "seq_id": seq_id, "subject": subject, "condition": cond,
                 "seq_num": int(num), "view": view},
        "source": f"synthetic:{seq_id}", "fps": 25.0,
        "extract": {"n_frames": n_frames, "n_crops": n_frames, "height": H, "width": W, "coverage": 1.0,
                    "n_tracks": 1, "short": False, "crop_size": S, "seconds": 0.0},
    }


SEQS = {"001-nm-01-090": +1, "001-nm-02-090": -1, "002-nm-01-090": +1, "002-nm-02-090": -1}


def make_store(path: Path, seqs: dict[str, int] = SEQS, gray_only: bool = False, n_frames: int = T) -> Store:
    store = Store.create(path, dataset="casia-b")
    for i, (seq_id, direction) in enumerate(seqs.items()):
        frames, boxes = _walker(direction, seed=i, n_frames=n_frames)
        windows = _windows(boxes)
        if gray_only:  # like a silhouette pickle: the person moves inside a fixed crop
            arrays = {"gray": _fixed_crop(frames)}
        else:
            arrays = {"frames": frames, "boxes": boxes, "windows": windows, "gray": _crop_images(frames, windows)}
        store.write_sequence(seq_id, arrays, _attrs(seq_id, n_frames))
    return store


def _fixed_crop(frames: np.ndarray) -> np.ndarray:
    """A fixed full-height window resampled to S x S: the person moves within the crop."""
    fixed = np.tile(np.array([[8, 0, 56, 48]], np.float32), (len(frames), 1))
    return _crop_images(frames, fixed)


def _person_mask(seq_id: str, store: Store) -> np.ndarray:
    """(T-1, S, S) bool: crop pixels mostly covered by the person in frame t."""
    boxes, windows = store.read(seq_id, "boxes"), store.read(seq_id, "windows")
    masks = np.zeros((len(boxes), H, W), np.float32)
    for t, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
        masks[t, y0:y1, x0:x1] = 1
    wy, wx, _ = crop_weights(windows, H, W, S)
    return (np.matmul(np.matmul(wy, masks), np.swapaxes(wx, 1, 2)) > 0.5)[:-1]


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    import cv2

    kernel = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    return np.stack([cv2.dilate(m.astype(np.uint8), kernel) > 0 for m in mask])


def _run(path: Path, **kwargs) -> object:
    options = {"workers": 0, "params": FAST, **kwargs}
    with open(os.devnull, "w") as quiet:
        return compute_flow(str(path), FlowRun(**options), stream=quiet).summary


# ---------------------------------------------------------------------------- flow_crop
def test_crop_flow_rescales_a_known_translation_and_zeroes_missing_windows():
    flow = np.zeros((3, 2, H, W), np.float32)
    flow[:, 0], flow[:, 1] = 3.0, -1.5  # frame pixels
    windows = np.array([[10, 4, 40, 44], [np.nan] * 4, [0, 0, 12, 6], [0, 0, 1, 1]], np.float32)
    out, mask = crop_flow(flow, windows, S)
    assert out.shape == (3, 2, S, S) and out.dtype == np.float32
    assert mask.tolist() == [True, False, True]
    np.testing.assert_allclose(out[0, 0], 3.0 * S / 30, rtol=1e-5)
    np.testing.assert_allclose(out[0, 1], -1.5 * S / 40, rtol=1e-5)
    np.testing.assert_allclose(out[2, 0], 3.0 * S / 12, rtol=1e-5)  # upsampled window
    np.testing.assert_allclose(out[2, 1], -1.5 * S / 6, rtol=1e-5)
    assert not out[1].any()
    import torch
    out_t, mask_t = crop_flow_torch(torch.from_numpy(flow), windows, S)
    np.testing.assert_allclose(out_t.numpy(), out, atol=1e-5)
    assert mask_t.tolist() == mask.tolist()


def test_crop_flow_takes_the_window_region():
    """A flow field whose dx is the frame x coordinate: crop pixel j must read its footprint's x."""
    xs = np.arange(W, dtype=np.float32) + 0.5
    flow = np.zeros((1, 2, H, W), np.float32)
    flow[0, 0] = xs
    window = np.array([[20, 10, 44, 34]], np.float32)  # 24 px wide -> one frame px per crop px
    out, _ = crop_flow(flow, window, S)
    np.testing.assert_allclose(out[0, 0, 5], 20.5 + np.arange(S), atol=1e-4)
    out, _ = crop_flow(flow, np.array([[-12, 0, 36, 48]], np.float32), S)  # half outside: zero there
    assert not out[0, 0, :, :6].any() and (out[0, 0, :, 7:] > 0).all()


def test_crop_flow_matches_how_gray_is_cropped():
    """Same windows, same resampling as extract-frames' crops (gaittools.person.crop), so flow[t] ~ gray[t]."""
    from gaittools.person import crop
    rng = np.random.default_rng(3)
    field = rng.normal(size=(2, 2, H, W)).astype(np.float32)
    windows = np.array([[5, 3, 41, 39], [-6, 10, 30, 46]], np.float32)  # whole pixels; one partly outside
    out, _ = crop_flow(field, windows, S)
    for t in range(2):
        scale = S / (windows[t, 2] - windows[t, 0])
        for c in range(2):
            expected = crop.crop_window(field[t, c], windows[t], S) * scale
            np.testing.assert_allclose(out[t, c], expected, atol=1e-4)


# ---------------------------------------------------------------------------- the store stage
def test_opencv_flow_is_aligned_located_and_signed(tmp_path):
    store = make_store(tmp_path / "s")
    summary = _run(tmp_path / "s")
    assert summary.ok and sorted(summary.done) == sorted(SEQS)
    expected_dx = SPEED * S / (1.3 * PERSON_H)
    for seq_id, direction in SEQS.items():
        flow = store.read(seq_id, "flow")
        assert flow.dtype == np.float16 and flow.shape == (T - 1, 2, S, S)
        assert len(flow) == len(store.read(seq_id, "gray")) - 1
        flow = flow.astype(np.float32)
        person = _person_mask(seq_id, store)
        moving = np.hypot(flow[:, 0], flow[:, 1]) > 0.5 * expected_dx
        assert (moving & _dilate(person, 2)).sum() >= 0.9 * moving.sum(), seq_id  # moves only near the person
        assert (moving & person).sum() >= 0.7 * person.sum(), seq_id  # and the person moves
        mean_dx = flow[:, 0][person].mean()
        assert np.sign(mean_dx) == direction, seq_id
        assert abs(abs(mean_dx) - expected_dx) < 0.25 * expected_dx, (seq_id, mean_dx, expected_dx)
        attrs = store.attrs_of(seq_id)["flow"]
        assert attrs["backend"] == "opencv-dualtvl1" and attrs["params"]["warps"] == FAST["warps"]
        assert attrs["n_pairs"] == T - 1 and attrs["mean_magnitude"] > 0
    df = read_manifest(store)
    assert (df["status_flow"] == "done").all() and (df["flow_mean_magnitude"] > 0).all()
    assert df["seconds_flow"].notna().all()


def test_torch_and_opencv_backends_agree(tmp_path):
    make_store(tmp_path / "cv", seqs={"001-nm-01-090": +1, "001-nm-02-090": -1})
    shutil.copytree(tmp_path / "cv", tmp_path / "pt")
    assert _run(tmp_path / "cv").ok
    assert _run(tmp_path / "pt", device="cpu", batch_size=3).ok  # batches straddle sequences
    cv, pt = Store(tmp_path / "cv"), Store(tmp_path / "pt")
    for seq_id in cv.seq_ids():
        a, b = cv.read(seq_id, "flow").astype(np.float32), pt.read(seq_id, "flow").astype(np.float32)
        epe = np.hypot(a[:, 0] - b[:, 0], a[:, 1] - b[:, 1]).mean()
        assert epe < 0.15, (seq_id, epe)
        assert pt.attrs_of(seq_id)["flow"]["backend"] == "torch-tvl1"
        assert pt.attrs_of(seq_id)["flow"]["engine"] == "reference"  # what ran, not what was asked


def test_shards_split_a_store_without_overlap(tmp_path):
    """N hosts with --shard K/N on one store: each sequence in exactly one share."""
    from pipelines.compute_flow import plan

    seqs = {f"00{i}-nm-01-090": 1 for i in range(1, 6)}
    store = make_store(tmp_path / "s", seqs=seqs)
    shares = [[p.seq_id for p in plan(store, shard=(k, 2))[0]] for k in (1, 2)]
    assert sorted(shares[0] + shares[1]) == sorted(seqs) and not set(shares[0]) & set(shares[1])
    assert len(shares[0]) == 3
    result = CliRunner().invoke(_cli(), ["compute-flow", str(store.path), "--workers", "0", "--shard", "2/2",
                                         *FAST_CLI])
    assert result.exit_code == 0, result.output
    assert sorted(s for s in seqs if has_flow(store, s)) == sorted(shares[1])
    bad = CliRunner().invoke(_cli(), ["compute-flow", str(store.path), "--shard", "3/2"])
    assert bad.exit_code == 2 and "expected K/N with 1 <= K <= N" in bad.output


def test_preset_with_an_override_is_what_the_store_records(tmp_path):
    """--preset picks named settings; --tvl1 overrides on top; an unknown preset is exit 2."""
    from gaittools.flow.params import PRESETS

    store = make_store(tmp_path / "s", seqs={"001-nm-01-090": 1})
    result = CliRunner().invoke(_cli(), ["compute-flow", str(store.path), "--workers", "0", "--preset", "cheapest",
                                         "--tvl1", "inner_iterations=3"])
    assert result.exit_code == 0, result.output
    params = Store(store.path).attrs_of("001-nm-01-090")["flow"]["params"]
    assert params["inner_iterations"] == 3 and params["inner_iterations"] != PRESETS["cheapest"]["inner_iterations"]
    assert {k: params[k] for k in ("nscales", "warps", "outer_iterations", "median_filtering")} == \
        {k: PRESETS["cheapest"][k] for k in ("nscales", "warps", "outer_iterations", "median_filtering")}
    bad = CliRunner().invoke(_cli(), ["compute-flow", str(store.path), "--preset", "fastest"])
    assert bad.exit_code == 2 and "fastest" in bad.output


def test_engine_option_is_checked_and_reported(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    store = make_store(tmp_path / "s", seqs={"001-nm-01-090": 1})
    cli = CliRunner()
    result = cli.invoke(_cli(), ["compute-flow", str(store.path), "--engine", "reference", *FAST_CLI])
    assert result.exit_code == 2 and "choose the torch TV-L1 engine; add --gpu or --device" in result.output
    result = cli.invoke(_cli(), ["compute-flow", str(store.path), "--device", "cpu", "--engine", "fused", *FAST_CLI])
    assert result.exit_code == 2 and "--engine fused on cpu: the fused TV-L1 engine cannot run" in result.output
    result = cli.invoke(_cli(), ["compute-flow", str(store.path), "--device", "cpu", "--cuda-graphs", *FAST_CLI])
    assert result.exit_code == 2 and "--engine auto --cuda-graphs on cpu: CUDA graphs" in result.output
    assert "need a CUDA device (got cpu)" in result.output
    assert not has_flow(store, "001-nm-01-090")
    result = cli.invoke(_cli(), ["compute-flow", str(store.path), "--device", "cpu", "--engine", "reference",
                                 "--readers", "1", *FAST_CLI])
    assert result.exit_code == 0, result.output
    assert "torch TV-L1 (reference engine) on cpu" in result.output
    assert "pairs/s on cpu (torch, reference engine)" in result.output


def test_gray_only_store_gets_flow_of_its_crops(tmp_path):
    store = make_store(tmp_path / "s", gray_only=True)
    assert _run(tmp_path / "s", device="cpu").ok
    scale = S / 48  # the fixed window is 48 frame px wide
    for seq_id, direction in SEQS.items():
        gray, flow = store.read(seq_id, "gray"), store.read(seq_id, "flow").astype(np.float32)
        assert flow.shape == (len(gray) - 1, 2, S, S)
        assert store.attrs_of(seq_id)["flow"]["input"] == "gray"
        bright = gray[:-1] > 140  # the person's texture is the bright part of the crop
        dx = np.median(flow[:, 0][bright])  # crop pixels: no rescaling for flow of crops
        assert np.sign(dx) == direction and abs(abs(dx) - SPEED * scale) < 0.3 * SPEED * scale, (seq_id, dx)


def test_refilled_slots_give_each_pair_its_own_flow_in_sequence_order(tmp_path):
    """Through slots of 3 pairs refilled from the queue (pairs of 4 sequences finishing out of
    order), each stored flow is ``tvl1`` of its own pair, at its own place in its sequence."""
    import torch

    from gaittools.flow import TVL1Params, tvl1
    from pipelines.compute_flow import plan
    from pipelines.flow_batches import run_torch

    store = make_store(tmp_path / "s", gray_only=True)
    results = []
    stats = run_torch(str(store.path), plan(store)[0], "cpu", FAST, batch_size=3, readers=2, report=results.append)
    assert sorted(r.seq_id for r in results) == sorted(SEQS) and all(r.ok for r in results)
    assert stats.pairs == len(SEQS) * (T - 1) and stats.largest_batch <= 3
    assert stats.stream.pair_steps >= stats.stream.ticks > 0 and 0 < stats.stream.occupancy <= 1
    assert "slot occupancy" in stats.format()
    batch_store = make_store(tmp_path / "b", gray_only=True)  # the batch schedule: the same flows
    batched = run_torch(str(batch_store.path), plan(batch_store)[0], "cpu", FAST, batch_size=3, readers=2,
                        report=lambda r: None, refill=False)
    assert batched.stream.pair_steps == stats.stream.pair_steps and batched.pairs == stats.pairs
    with torch.no_grad():
        for seq_id in SEQS:
            gray = store.read(seq_id, "gray")
            expected = tvl1(gray[:-1], gray[1:], TVL1Params(**FAST), engine="reference").numpy()
            stored = store.read(seq_id, "flow")
            assert np.array_equal(stored, expected.astype(np.float16)), seq_id
            assert np.array_equal(batch_store.read(seq_id, "flow"), stored), seq_id


def test_bad_sequences_fail_alone_and_are_recorded(tmp_path):
    store = make_store(tmp_path / "s")
    ids = list(SEQS)
    # A frames array that does not match its windows (wrong shape for the stage).
    good = {n: store.read(ids[0], n) for n in ("frames", "boxes", "windows", "gray")}
    store.write_sequence(ids[0], {**good, "frames": good["frames"][:3]},
                         _attrs(ids[0], T), overwrite=True)
    # An unreadable chunk file.
    chunk = next(p for p in (store.path / "sequences" / ids[1] / "frames").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"not zstd at all" * 10)
    for device in (None, "cpu"):
        result = CliRunner().invoke(_cli(), ["compute-flow", str(store.path), "--workers", "0", *FAST_CLI,
                                             *(["--device", device] if device else [])])
        assert result.exit_code == 1, result.output
        assert ids[0] in result.output and ids[1] in result.output and "FAILED" in result.output
        assert has_flow(store, ids[2]) and has_flow(store, ids[3])
        assert not has_flow(store, ids[0]) and not has_flow(store, ids[1])
        failures = {f["seq_id"]: f for f in store.failures()}
        assert set(failures) == {ids[0], ids[1]} and all(f["stage"] == "flow" for f in failures.values())
        assert "windows" in failures[ids[0]]["error"] and "cannot read" in failures[ids[1]]["error"]
        df = read_manifest(store).set_index("seq_id")
        assert df.loc[ids[0], "status_flow"] == "failed" and df.loc[ids[2], "status_flow"] == "done"
        store.add_arrays(ids[2], {}, {"flow": None})  # make the next round compute one good sequence again


def test_non_finite_flow_is_refused(tmp_path, monkeypatch):
    import pipelines.compute_flow as cf

    store = make_store(tmp_path / "s", seqs={"001-nm-01-090": 1})

    def nan_pairs(images, params, pairs):
        out = np.zeros((len(pairs), 2, H, W), np.float32)
        out[1, 0, 3, 3] = np.nan
        return out

    monkeypatch.setattr(cf, "opencv_pairs", nan_pairs)
    summary = _run(tmp_path / "s")
    assert not summary.ok and "NaN/Inf" in summary.failed[0].reason
    assert "flow" not in store.arrays_of("001-nm-01-090")


@pytest.mark.parametrize("device", [None, "cpu"])
def test_sequences_without_pairs_or_person(tmp_path, device):
    """One frame: empty flow. Nobody in view: zero flow, and TV-L1 spends nothing on it."""
    store = make_store(tmp_path / "s", seqs={"001-nm-01-090": 1})
    frames, boxes = _walker(1, seed=5, n_frames=3)
    nobody = np.full((3, 4), np.nan, np.float32)
    store.write_sequence("003-nm-01-090", {"frames": frames, "boxes": nobody, "windows": nobody,
                                           "gray": np.zeros((3, S, S), np.uint8)}, _attrs("003-nm-01-090", 3))
    one = {"frames": frames[:1], "boxes": boxes[:1], "windows": _windows(boxes[:1])}
    store.write_sequence("004-nm-01-090", {**one, "gray": _crop_images(frames[:1], one["windows"])},
                         _attrs("004-nm-01-090", 1))
    with open(os.devnull, "w") as quiet:
        report = compute_flow(str(store.path), FlowRun(workers=0, params=FAST, device=device), stream=quiet)
    assert report.ok and len(report.summary.done) == 3
    assert store.read("004-nm-01-090", "flow").shape == (0, 2, S, S)
    empty = store.read("003-nm-01-090", "flow")
    assert empty.shape == (2, 2, S, S) and not empty.any()
    assert store.attrs_of("003-nm-01-090")["flow"]["n_pairs_with_window"] == 0
    if report.engine is not None:
        assert report.engine.pairs == T - 1  # only the walker's pairs went through TV-L1
    df = read_manifest(store).set_index("seq_id")
    assert (df["status_flow"] == "done").all() and df.loc["003-nm-01-090", "flow_mean_magnitude"] == 0


def test_rerun_skips_done_and_overwrite_recomputes(tmp_path):
    store = make_store(tmp_path / "s", seqs={"001-nm-01-090": 1, "001-nm-02-090": -1})
    assert len(_run(tmp_path / "s").done) == 2
    untouched = store.attrs_of("001-nm-02-090")["flow"]
    again = _run(tmp_path / "s")
    assert again.done == [] and len(again.skipped) == 2
    redo = _run(tmp_path / "s", overwrite=True, limit=1)
    assert redo.done == ["001-nm-01-090"]
    assert store.read("001-nm-01-090", "flow").shape == (T - 1, 2, S, S)
    assert store.attrs_of("001-nm-02-090")["flow"] == untouched  # --limit 1: the other was left alone


def _engine_that(monkeypatch, fail) -> None:
    """compute-flow's TV-L1 engine becomes the reference engine with ``fail(u)`` called first
    in each block of inner iterations (to raise what a device would)."""
    import pipelines.flow_batches as fb
    from gaittools.flow.tvl1_torch import ReferenceEngine

    class Failing(ReferenceEngine):
        def iterate(self, u, p, data, threshold, n_iter, params):
            fail(u)
            return super().iterate(u, p, data, threshold, n_iter, params)

    monkeypatch.setattr(fb, "pick_engine", lambda device, params, engine, cuda_graphs=False: Failing())


def test_out_of_memory_halves_the_tick(tmp_path, monkeypatch):
    """A tick that runs out of memory changes nothing and runs again in halves; the capacity
    is halved; every pair still gets its flow."""
    import torch

    import pipelines.flow_batches as fb
    from pipelines.compute_flow import plan

    store = make_store(tmp_path / "s", seqs={"001-nm-01-090": 1, "001-nm-02-090": -1})

    def small_memory(u):
        if u.shape[0] > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    _engine_that(monkeypatch, small_memory)
    todo, _ = plan(store)
    results = []
    stats = fb.run_torch(str(store.path), todo, "cpu", FAST, batch_size=8, readers=2, report=results.append)
    assert all(r.ok for r in results) and len(results) == 2
    assert stats.oom_halvings >= 1 and stats.largest_batch <= 3 and stats.pairs == 2 * (T - 1)
    assert stats.stream.ticks > 0 and stats.stream.pair_steps >= stats.stream.ticks and 0 < stats.stream.occupancy <= 1
    for seq_id, direction in (("001-nm-01-090", 1), ("001-nm-02-090", -1)):
        flow = store.read(seq_id, "flow").astype(np.float32)
        assert np.sign(flow[:, 0][_person_mask(seq_id, store)].mean()) == direction


def test_device_error_stops_the_run_and_a_data_error_fails_only_its_pairs(tmp_path, monkeypatch):
    """A sticky CUDA error must not mark the dataset failed: the run stops, nothing is recorded
    failed, and the rerun resumes. A ValueError (the frames) fails its pairs' sequences only."""
    import pipelines.flow_batches as fb

    seqs = {"001-nm-01-090": 1, "001-nm-02-090": -1, "002-nm-01-090": 1}
    store = make_store(tmp_path / "s", seqs=seqs)
    written = []
    real_write = fb.BatchedFlow._write
    monkeypatch.setattr(fb.BatchedFlow, "_write", lambda self, *a: (written.append(1), real_write(self, *a)))

    def sticky(u):  # the device breaks once the first sequence is done
        if written:
            raise RuntimeError("CUDA error: an illegal memory access was encountered (simulated)")

    _engine_that(monkeypatch, sticky)
    result = CliRunner().invoke(_cli(), ["compute-flow", str(store.path), "--device", "cpu", "--batch-size",
                                         str(T - 1), "--readers", "1", *FAST_CLI])
    assert result.exit_code == 1
    assert "compute-flow stopped: TV-L1 on cpu failed on a tick" in result.output
    assert "illegal memory access" in result.output and "rerun resumes" in result.output
    assert store.failures() == []  # stopped at the first device error, nothing marked failed
    assert sum(has_flow(store, s) for s in seqs) == 1

    def bad_frames(u):
        raise ValueError("frames of the wrong kind (simulated)")

    _engine_that(monkeypatch, bad_frames)
    summary = _run(store.path, device="cpu", batch_size=T - 1, readers=1)
    assert len(summary.failed) == 2 and {f["seq_id"] for f in store.failures()} == set(seqs) - {
        s for s in seqs if has_flow(store, s)}
    assert all("wrong kind" in f["error"] for f in store.failures())


def test_gpu_without_cuda_is_a_clear_error(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; the error path is for machines without it")
    make_store(tmp_path / "s", seqs={"001-nm-01-090": 1})
    result = CliRunner().invoke(_cli(), ["compute-flow", str(tmp_path / "s"), "--gpu"])
    assert result.exit_code != 0 and "--device cpu" in result.output
    assert not has_flow(Store(tmp_path / "s"), "001-nm-01-090")


@pytest.mark.slow
def test_dask_cluster_and_device_processes(tmp_path):
    """The two parallel paths for real: a LocalCluster of 2 workers; 2 torch engine processes."""
    from pipelines.compute_flow import plan
    from pipelines.flow_batches import run_torch

    make_store(tmp_path / "a", seqs={"001-nm-01-090": 1, "001-nm-02-090": -1, "002-nm-01-090": 1})
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    result = CliRunner().invoke(_cli(), ["compute-flow", str(tmp_path / "a"), "--workers", "2", *FAST_CLI])
    assert result.exit_code == 0, result.output
    assert "pairs/s" in result.output and " pairs stored, " in result.output  # the summary counts pairs
    assert " frames in " not in result.output
    store = Store(tmp_path / "b")
    todo, _ = plan(store)
    results = []
    run_torch(str(store.path), todo, ["cpu", "cpu"], FAST, batch_size=4, readers=1, report=results.append)
    assert sorted(r.seq_id for r in results if r.ok) == sorted(store.seq_ids())
    for seq_id in store.seq_ids():
        a = Store(tmp_path / "a").read(seq_id, "flow").astype(np.float32)
        b = store.read(seq_id, "flow").astype(np.float32)
        assert np.hypot(*(a - b).transpose(1, 0, 2, 3)).mean() < 0.15


@pytest.mark.slow
def test_joined_cluster_with_a_relative_store_path(tmp_path, monkeypatch):
    """--scheduler: workers in another working directory get the store's absolute path, and a
    path a worker cannot see is refused before any task runs (the message names it)."""
    from distributed import Client

    from pipelines.cluster import ClusterPathError, check_workers_see
    from dask_helpers import dask_cluster_in

    seqs = {"001-nm-01-090": 1, "002-nm-01-090": -1}
    make_store(tmp_path / "client" / "store", seqs=seqs)
    shutil.copytree(tmp_path / "client" / "store", tmp_path / "ref")
    _run(tmp_path / "ref")
    monkeypatch.chdir(tmp_path / "client")
    with dask_cluster_in(tmp_path / "workers") as address:
        with Client(address, timeout="30s") as client:  # /proc/self/cwd: each process's own directory
            with pytest.raises(ClusterPathError, match=r"2 of 2 Dask workers cannot see the store /proc/self/cwd"):
                check_workers_see(client, {"store": "/proc/self/cwd/store"})
        result = CliRunner().invoke(_cli(), ["compute-flow", "store", "--scheduler", address, *FAST_CLI])
    assert result.exit_code == 0, result.output
    for seq_id in seqs:
        np.testing.assert_array_equal(Store(tmp_path / "client" / "store").read(seq_id, "flow"),
                                      Store(tmp_path / "ref").read(seq_id, "flow"))


def test_resume_after_a_killed_run(tmp_path):
    seqs = {f"{s:03d}-nm-0{n}-090": (1 if n % 2 else -1) for s in (1, 2) for n in (1, 2, 3, 4)}
    make_store(tmp_path / "s", seqs=seqs)
    shutil.copytree(tmp_path / "s", tmp_path / "ref")
    assert _run(tmp_path / "ref").ok
    cmd = [sys.executable, "-c", "from gaittools.cli.main import main; main()", "compute-flow", str(tmp_path / "s"),
           "--workers", "0", *FAST_CLI]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = Store(tmp_path / "s")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if any(has_flow(store, s) for s in seqs):
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done = [s for s in seqs if has_flow(store, s)]
    assert 0 < len(done) < len(seqs), "the kill should land mid-run"
    for seq_id in seqs:  # nothing half-written is taken as done
        if has_flow(store, seq_id):
            assert store.read(seq_id, "flow").shape == (T - 1, 2, S, S)
    result = CliRunner().invoke(_cli(), ["compute-flow", str(store.path), "--workers", "0", *FAST_CLI])
    assert result.exit_code == 0, result.output
    assert f"skipped {len(done)}" in result.output
    ref = Store(tmp_path / "ref")
    for seq_id in seqs:
        np.testing.assert_array_equal(store.read(seq_id, "flow"), ref.read(seq_id, "flow"))
    assert not any((store.path / ".staging").glob("*")) if (store.path / ".staging").exists() else True


def _cli():
    from gaittools.cli.main import main

    return main


# ---------------------------------------------------------------------------- real footage
def test_casia_b_mini_flow_follows_the_walker(tmp_path):
    """Real CASIA-B clips through extract-frames, then compute-flow on a stretch of frames.

    The flow is measured on the whole frame and cropped, so over the person it carries the
    walk's translation: its mean dx must have the sign of the box's motion across the frame.
    """
    videos = need_data("casia-b-mini", "videos")
    from pipelines import extract
    from gaittools.person.extract import ExtractOptions

    source = tmp_path / "videos"
    source.mkdir()
    for name in ("001-nm-01-090.avi", "002-nm-01-090.avi", "001-bkgrd-090.avi"):
        (source / name).symlink_to(videos / name)
    with open(os.devnull, "w") as quiet:
        extracted = extract.run_extract(source, tmp_path / "full", options=ExtractOptions(working_height=120, crop_size=32),
                                        workers=0, stream=quiet)
    assert extracted.ok, extracted.format()
    full = Store(tmp_path / "full")
    # Eight frames from the middle of each walk keep TV-L1 cheap; slicing keeps them aligned.
    small = Store.create(tmp_path / "small", dataset=full.dataset)
    for seq_id in full.seq_ids():
        windows = full.read(seq_id, "windows")
        seen = np.flatnonzero(np.isfinite(windows[:, 0]))
        mid = seen[len(seen) // 2]
        part = slice(mid - 4, mid + 4)
        arrays = {n: full.read(seq_id, n)[part] for n in ("frames", "boxes", "windows", "gray")}
        small.write_sequence(seq_id, arrays, full.attrs_of(seq_id))
    # CASIA-B's 090 walks all go leftwards; a mirrored clip is real footage walking rightwards.
    width = arrays["frames"].shape[2]
    mirrored = {"frames": arrays["frames"][:, :, ::-1], "gray": arrays["gray"][:, :, ::-1],
                **{n: np.stack([width - arrays[n][:, 2], arrays[n][:, 1], width - arrays[n][:, 0], arrays[n][:, 3]], 1)
                   for n in ("boxes", "windows")}}
    small.write_sequence("002-nm-02-090", mirrored, full.attrs_of(seq_id))
    summary = _run(tmp_path / "small")
    assert summary.ok and len(summary.done) == 3
    walks = {}
    for seq_id in small.seq_ids():
        boxes, windows = small.read(seq_id, "boxes"), small.read(seq_id, "windows")
        gray, flow = small.read(seq_id, "gray"), small.read(seq_id, "flow").astype(np.float32)
        assert flow.shape == (len(gray) - 1, 2, *gray.shape[1:])
        centres = (boxes[:, 0] + boxes[:, 2]) / 2
        walk = walks[seq_id] = np.sign(np.nanmean(np.diff(centres)))
        size = gray.shape[1]
        in_box = np.zeros(flow.shape[:1] + flow.shape[2:], bool)  # the person's box in crop pixels
        for t in range(len(flow)):
            if np.isfinite(windows[t, 0]) and np.isfinite(boxes[t, 0]):
                scale = size / (windows[t, 2] - windows[t, 0])
                x0, x1 = ((boxes[t, [0, 2]] - windows[t, 0]) * scale).clip(0, size).astype(int)
                y0, y1 = ((boxes[t, [1, 3]] - windows[t, 1]) * scale).clip(0, size).astype(int)
                in_box[t, y0:y1, x0:x1] = True
        magnitude = np.hypot(flow[:, 0], flow[:, 1])
        moving = magnitude > 0.5
        assert moving.any(), seq_id
        assert (moving & in_box).sum() >= 0.8 * moving.sum(), seq_id  # motion is on the person
        assert np.sign(flow[:, 0][in_box & moving].mean()) == walk, seq_id
    assert sorted(walks.values()) == [-1, -1, 1]


def test_real_silhouette_pickles_get_flow_of_their_crops(tmp_path):
    """OpenGait-style CASIA-B silhouettes (gray only): flow lives on and around the silhouette."""
    pkl = need_data("casia-b-sil-090", "001", "nm-01", "090", "090.pkl")
    from pipelines import extract
    source = tmp_path / "sil" / "001" / "nm-01" / "090"
    source.mkdir(parents=True)
    (source / "090.pkl").symlink_to(pkl)
    with open(os.devnull, "w") as quiet:
        assert extract.run_extract(tmp_path / "sil", tmp_path / "full", workers=0, stream=quiet).ok
    full = Store(tmp_path / "full")
    (seq_id,) = full.seq_ids()
    assert "frames" not in full.arrays_of(seq_id)
    gray = full.read(seq_id, "gray")
    mid = len(gray) // 2
    small = Store.create(tmp_path / "small", dataset=full.dataset)
    small.write_sequence(seq_id, {"gray": gray[mid - 4 : mid + 4]}, full.attrs_of(seq_id))
    assert _run(tmp_path / "small").ok
    gray, flow = small.read(seq_id, "gray"), small.read(seq_id, "flow").astype(np.float32)
    assert flow.shape == (len(gray) - 1, 2, *gray.shape[1:])
    assert small.attrs_of(seq_id)["flow"]["input"] == "gray"
    # Flat silhouettes leave TV-L1 free to fill the background, so check what flow must do
    # anywhere: in crop pixels and (dx, dy) order, it warps gray[t+1] back onto gray[t].
    assert _warp_residual(gray, flow) < 0.6 * _warp_residual(gray, np.zeros_like(flow))


def _warp_residual(images: np.ndarray, flow: np.ndarray) -> float:
    """Mean |I[t+1](x + flow[t](x)) - I[t](x)| over the sequence."""
    import cv2

    ys, xs = np.mgrid[: images.shape[1], : images.shape[2]].astype(np.float32)
    errors = [np.abs(cv2.remap(images[t + 1].astype(np.float32), xs + flow[t, 0], ys + flow[t, 1], cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE) - images[t]).mean() for t in range(len(flow))]
    return float(np.mean(errors))
