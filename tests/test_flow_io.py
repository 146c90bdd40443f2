"""Middlebury .flo files, the colour coding, and the ``flow`` / ``show-flow`` commands."""

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from gaittools.cli.main import main
from gaittools.flow import FloError, flow_to_color, read_flo, write_flo
from gaittools.flow.colour import colour_wheel
from gaittools.flow.flo import endpoint_error, known_mask
from flow_helpers import MIDDLEBURY, epe, moved_pair, translation


def test_flo_roundtrip_is_exact(tmp_path):
    flow = np.random.default_rng(0).normal(size=(2, 7, 11)).astype(np.float32)
    path = write_flo(tmp_path / "sub" / "f.flo", flow)
    assert path.stat().st_size == 12 + 8 * 7 * 11
    back = read_flo(path)
    assert back.shape == (2, 7, 11) and back.dtype == np.float32
    np.testing.assert_array_equal(back, flow)
    raw = path.read_bytes()
    assert np.frombuffer(raw, "<f4", 1)[0] == np.float32(202021.25)
    assert tuple(np.frombuffer(raw, "<i4", 2, 4)) == (11, 7)  # width first
    assert np.frombuffer(raw, "<f4", 2, 12).tolist() == [flow[0, 0, 0], flow[1, 0, 0]]  # u, v interleaved


@pytest.mark.real_data("middlebury/RubberWhale/flow10.flo")
def test_reads_real_middlebury_ground_truth():
    path = MIDDLEBURY / "RubberWhale" / "flow10.flo"
    truth = read_flo(path)
    assert truth.shape == (2, 388, 584)
    known = known_mask(truth)
    assert 0.5 < known.mean() < 1.0  # RubberWhale has occluded/unknown pixels flagged 1e9
    assert np.abs(truth[:, known]).max() < 10
    assert endpoint_error(truth, truth) == 0.0


def test_bad_flo_files_give_clear_errors(tmp_path):
    bad_tag = tmp_path / "bad.flo"
    bad_tag.write_bytes(np.array([1.0, 0, 0], "<f4").tobytes())
    with pytest.raises(FloError, match="bad.flo.*not a .flo file"):
        read_flo(bad_tag)
    good = write_flo(tmp_path / "good.flo", np.zeros((2, 4, 5), np.float32))
    short = tmp_path / "short.flo"
    short.write_bytes(good.read_bytes()[:-4])
    with pytest.raises(FloError, match="short.flo.*truncated"):
        read_flo(short)
    with pytest.raises(FloError, match="cannot read"):
        read_flo(tmp_path / "missing.flo")
    with pytest.raises(FloError, match=r"\(2, H, W\).*transpose"):
        write_flo(tmp_path / "hw2.flo", np.zeros((4, 5, 2)))
    assert not (tmp_path / "hw2.flo").exists()


def test_colour_coding_known_directions():
    wheel = colour_wheel()
    assert wheel.shape == (55, 3)
    directions = {"right": (1, 0), "down": (0, 1), "left": (-1, 0), "up": (0, -1)}
    flow = np.zeros((2, 1, 5), np.float32)
    for i, (dx, dy) in enumerate(directions.values()):
        flow[:, 0, i] = (dx, dy)  # column 4 stays zero
    rgb = flow_to_color(flow).astype(int)[0]
    right, down, left, up, zero = rgb
    assert right.tolist() == [255, 0, 0]
    assert zero.tolist() == [255, 255, 255]
    assert left[0] < 30 and left[1] > 150 and left[2] == 255  # cyan-blue
    assert down[0] == 255 and down[1] > 200 and down[2] == 0  # yellow
    assert up[2] == 255 and up[1] == 0  # blue-violet
    half = flow_to_color(flow * 0.5, max_flow=1.0).astype(int)[0]
    assert half[0].tolist() == [255, 127, 127]  # half speed: half saturated red
    unknown = flow.copy()
    unknown[:, 0, 0] = 1e10
    assert flow_to_color(unknown)[0, 0].tolist() == [0, 0, 0]


def _write_pair(tmp_path, seed=0):
    frame0, frame1, truth = moved_pair(40, 48, translation(0.9, -0.4), seed=seed)
    paths = tmp_path / "f0.png", tmp_path / "f1.png"
    for path, frame in zip(paths, (frame0, frame1)):
        cv2.imwrite(str(path), np.round(frame).astype(np.uint8))
    return paths, truth


@pytest.mark.parametrize("backend", ["torch", "opencv"])
def test_flow_command_writes_flo_and_png(tmp_path, backend):
    (f0, f1), truth = _write_pair(tmp_path)
    out, png = tmp_path / "out.flo", tmp_path / "out.png"
    result = CliRunner().invoke(main, ["flow", str(f0), str(f1), "--out", str(out),
                                       "--png", str(png), "--backend", backend])
    assert result.exit_code == 0, result.output
    assert "mean |flow|" in result.output
    flow = read_flo(out)
    assert flow.shape == (2, 40, 48)
    assert epe(flow, truth, border=6) < 0.15
    picture = cv2.imread(str(png))
    assert picture.shape == (40, 48, 3)


def test_flow_command_backends_agree(tmp_path):
    (f0, f1), _ = _write_pair(tmp_path, seed=3)
    runner = CliRunner()
    for backend in ("torch", "opencv"):
        result = runner.invoke(main, ["flow", str(f0), str(f1), "--out",
                                      str(tmp_path / f"{backend}.flo"), "--backend", backend])
        assert result.exit_code == 0, result.output
    assert epe(read_flo(tmp_path / "torch.flo"), read_flo(tmp_path / "opencv.flo")) < 0.05


def test_flow_command_errors(tmp_path):
    (f0, f1), _ = _write_pair(tmp_path)
    runner = CliRunner()
    import torch

    if not torch.cuda.is_available():
        result = runner.invoke(main, ["flow", str(f0), str(f1), "--out", str(tmp_path / "x.flo"),
                                      "--device", "cuda"])
        assert result.exit_code != 0 and "CUDA is not available" in result.output
        assert not (tmp_path / "x.flo").exists()
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    result = runner.invoke(main, ["flow", str(junk), str(f1), "--out", str(tmp_path / "y.flo")])
    assert result.exit_code != 0 and "junk.png" in result.output and "cannot read" in result.output
    other = tmp_path / "other.png"
    cv2.imwrite(str(other), np.zeros((10, 12), np.uint8))
    result = runner.invoke(main, ["flow", str(f0), str(other), "--out", str(tmp_path / "z.flo")])
    assert result.exit_code != 0 and "frames must match" in result.output


def test_show_flow_command(tmp_path):
    flow = np.zeros((2, 6, 8), np.float32)
    flow[0] = 2.0  # all to the right: pure red at full saturation
    write_flo(tmp_path / "f.flo", flow)
    result = CliRunner().invoke(main, ["show-flow", str(tmp_path / "f.flo"), "--out",
                                       str(tmp_path / "f.png")])
    assert result.exit_code == 0, result.output
    bgr = cv2.imread(str(tmp_path / "f.png"))
    assert bgr.shape == (6, 8, 3) and bgr[..., ::-1][0, 0].tolist() == [255, 0, 0]
    (tmp_path / "bad.flo").write_bytes(b"\x00" * 20)
    result = CliRunner().invoke(main, ["show-flow", str(tmp_path / "bad.flo"), "--out",
                                       str(tmp_path / "b.png")])
    assert result.exit_code != 0 and "bad.flo" in result.output
    assert not (tmp_path / "b.png").exists()
