"""The torch TV-L1 solver: accuracy on Middlebury, agreement with OpenCV, known motions,
batch independence and edge cases. Runs the reference engine (the CPU path)."""

import cv2
import numpy as np
import pytest
import torch

from gaittools.flow import TVL1Params, opencv_tvl1, read_flo, tvl1
from gaittools.flow.flo import endpoint_error
from gaittools.flow.imageops import centred_gradient, median_filter, median_filter_torch, remap_cubic
from gaittools.flow.pyramid import level_sizes, resize_linear
from conftest import need_data, torch_threads
from flow_helpers import MIDDLEBURY, epe, moved_pair, rotation, translation


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=[("RubberWhale", 0.17), ("Dimetrodon", 0.19)],
                ids=["RubberWhale", "Dimetrodon"])
def middlebury(request):
    name, bound = request.param
    folder = need_data(MIDDLEBURY / name / "flow10.flo").parent
    frame0 = cv2.imread(str(folder / "frame10.png"), cv2.IMREAD_GRAYSCALE)
    frame1 = cv2.imread(str(folder / "frame11.png"), cv2.IMREAD_GRAYSCALE)
    with torch_threads(1):
        ours = tvl1(frame0, frame1)[0].numpy()
    reference = opencv_tvl1(frame0, frame1)[0]
    return name, bound, ours, reference, read_flo(folder / "flow10.flo")


def test_middlebury_accuracy_against_ground_truth(middlebury):
    name, bound, ours, _, truth = middlebury
    assert ours.shape == truth.shape
    assert endpoint_error(ours, truth) <= bound, name


def test_middlebury_agrees_with_opencv(middlebury):
    name, _, ours, reference, truth = middlebury
    assert epe(ours, reference) <= 0.1, name
    # OpenCV's own accuracy as documented: guards against the comparison hiding a broken OpenCV.
    assert endpoint_error(reference, truth) < 0.2


def test_subpixel_translation_recovered():
    frame0, frame1, truth = moved_pair(48, 56, translation(1.35, -0.6))
    flow = tvl1(frame0, frame1)[0].numpy()
    interior = flow[:, 8:-8, 8:-8]
    assert abs(interior[0].mean() - 1.35) < 0.05
    assert abs(interior[1].mean() + 0.6) < 0.05
    assert epe(flow, truth, border=8) < 0.1


def test_small_rotation_recovered():
    frame0, frame1, truth = moved_pair(56, 56, rotation(3.0, 27.5, 27.5), seed=1)
    flow = tvl1(frame0, frame1)[0].numpy()
    assert epe(flow, truth, border=8) < 0.15
    assert np.sqrt((truth ** 2).sum(axis=0)).max() > 1.5  # the motion is not trivially small


def test_batch_independence_and_early_stopping():
    pairs = [moved_pair(40, 44, translation(0.7, 1.1), seed=2),
             moved_pair(40, 44, rotation(-2.0, 20, 22), seed=3),
             moved_pair(40, 44, translation(0.0, 0.0), seed=4)]  # identical frames: stops at once
    frames0 = np.stack([p[0] for p in pairs])
    frames1 = np.stack([p[1] for p in pairs])
    together = tvl1(frames0, frames1).numpy()
    for i in range(len(pairs)):
        alone = tvl1(frames0[i:i + 1], frames1[i:i + 1]).numpy()[0]
        assert np.abs(together[i] - alone).max() <= 1e-3
    assert np.abs(together[2]).max() < 1e-3


def test_constant_images_give_zero_flow_and_no_nan():
    same = np.full((2, 24, 30), 90, np.uint8)
    flow = tvl1(same, same)
    assert torch.isfinite(flow).all() and flow.abs().max() == 0
    brighter = np.full((1, 24, 30), 140, np.uint8)
    assert torch.isfinite(tvl1(same[:1], brighter)).all()


def test_odd_size_matches_opencv():
    frame0, frame1, truth = moved_pair(37, 53, translation(-0.8, 0.45), seed=5)
    ours = tvl1(frame0, frame1)[0].numpy()
    assert ours.shape == (2, 37, 53)
    reference = opencv_tvl1(frame0, frame1)[0]
    assert epe(ours, reference) < 0.05
    assert epe(ours, truth, border=6) < 0.1


def test_frames_below_pyramid_minimum_match_opencv():
    assert level_sizes(12, 14, 5, 0.8) == [(12, 14)]
    frame0, frame1, _ = moved_pair(12, 14, translation(0.5, 0.3), seed=6)
    ours = tvl1(frame0, frame1)[0].numpy()
    reference = opencv_tvl1(frame0, frame1)[0]
    assert np.isfinite(ours).all()
    assert epe(ours, reference) < 0.02
    tiny = tvl1(np.zeros((1, 1, 3), np.uint8), np.full((1, 1, 3), 9, np.uint8))
    assert tiny.shape == (1, 2, 1, 3) and torch.isfinite(tiny).all()


def test_single_pair_2d_input_and_dtypes_agree():
    frame0, frame1, _ = moved_pair(20, 24, translation(0.4, 0.2), seed=7)
    as_uint8 = (np.round(frame0).astype(np.uint8), np.round(frame1).astype(np.uint8))
    flat = tvl1(*as_uint8)
    batched = tvl1(torch.from_numpy(as_uint8[0])[None], torch.from_numpy(as_uint8[1])[None])
    floats = tvl1(as_uint8[0].astype(np.float64), as_uint8[1].astype(np.float32))
    assert flat.shape == (1, 2, 20, 24) and flat.dtype == torch.float32
    assert torch.equal(flat, batched) and torch.equal(flat, floats)


def test_illumination_term_gamma_matches_opencv():
    frame0, frame1, truth = moved_pair(40, 48, translation(0.9, -0.4), seed=3)
    frame1 = np.clip(frame1 * 0.9 + 15, 0, 255).astype(np.float32)  # a brightness change
    params = TVL1Params(gamma=0.5)
    ours = tvl1(frame0, frame1, params)[0].numpy()
    assert epe(ours, opencv_tvl1(frame0, frame1, params)[0]) < 0.01
    assert epe(ours, truth, border=6) < epe(tvl1(frame0, frame1)[0].numpy(), truth, border=6)


def test_opencv_process_pool_matches_serial():
    pairs = [moved_pair(24, 28, translation(0.3 * i, 0.2), seed=10 + i) for i in range(3)]
    frames0 = np.stack([p[0] for p in pairs]).astype(np.uint8)
    frames1 = np.stack([p[1] for p in pairs]).astype(np.uint8)
    serial = opencv_tvl1(frames0, frames1)
    pooled = opencv_tvl1(frames0, frames1, workers=2)
    assert serial.shape == (3, 2, 24, 28) and serial.dtype == np.float32
    np.testing.assert_allclose(pooled, serial, atol=1e-5)


def test_bad_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match="differ in shape"):
        tvl1(np.zeros((1, 8, 8)), np.zeros((1, 8, 9)))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        tvl1(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 8, 8)))
    with pytest.raises(ValueError, match="tau"):
        TVL1Params(tau=0)
    with pytest.raises(RuntimeError, match="fused"):
        tvl1(np.zeros((1, 8, 8)), np.zeros((1, 8, 8)), engine="fused")


# --- building blocks against the OpenCV calls DualTVL1 makes -------------------------------

def test_pyramid_resize_matches_opencv():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (2, 45, 61)).astype(np.float32)
    sizes = level_sizes(45, 61, 5, 0.8)
    down = resize_linear(torch.from_numpy(image), sizes[1], (0.8, 0.8)).numpy()
    expected = cv2.resize(image[0], None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    assert down.shape[1:] == expected.shape
    np.testing.assert_allclose(down[0], expected, atol=1e-3)
    up = resize_linear(torch.from_numpy(down), (45, 61)).numpy()
    np.testing.assert_allclose(up[1], cv2.resize(down[1], (61, 45)), atol=1e-3)


def test_cubic_remap_matches_opencv():
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.uniform(0, 255, (30, 34)).astype(np.float32), (0, 0), 1.5)
    flow = rng.uniform(-3, 3, (2, 30, 34)).astype(np.float32)
    ys, xs = np.mgrid[0:30, 0:34].astype(np.float32)
    expected = cv2.remap(image, xs + flow[0], ys + flow[1], cv2.INTER_CUBIC)
    ours = remap_cubic(torch.from_numpy(image)[None, None], torch.from_numpy(flow)[None])[0, 0]
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-3)


def test_centred_gradient_and_median_match_opencv():
    rng = np.random.default_rng(2)
    image = rng.uniform(0, 255, (1, 9, 11)).astype(np.float32)
    dx, dy = centred_gradient(torch.from_numpy(image))
    np.testing.assert_allclose(dx[0, 4, 0].item(), 0.5 * (image[0, 4, 1] - image[0, 4, 0]), rtol=1e-6)
    np.testing.assert_allclose(dy[0, 3, 5].item(), 0.5 * (image[0, 4, 5] - image[0, 2, 5]), rtol=1e-6)
    flow = torch.from_numpy(rng.normal(size=(2, 2, 9, 11)).astype(np.float32))
    expected = np.stack([[cv2.medianBlur(plane.numpy(), 5) for plane in pair] for pair in flow])
    np.testing.assert_array_equal(median_filter(flow, 5).numpy(), expected)
    np.testing.assert_array_equal(median_filter_torch(flow, 5).numpy(), expected)


def test_cuda_graphs_are_refused_where_they_cannot_run():
    """The CUDA-graph engine needs CUDA and the fused engine; elsewhere a clear refusal, never
    a silent fallback to an engine the caller did not ask for."""
    from gaittools.flow.tvl1_torch import pick_engine

    with pytest.raises(RuntimeError, match=r"CUDA graphs .* need a CUDA device \(got cpu\)"):
        pick_engine(torch.device("cpu"), TVL1Params(), "auto", cuda_graphs=True)
    with pytest.raises(RuntimeError, match=r"need the fused engine \(got reference\)"):
        pick_engine(torch.device("cuda"), TVL1Params(), "reference", cuda_graphs=True)
    assert pick_engine(torch.device("cpu"), TVL1Params(), "auto").name == "reference"
