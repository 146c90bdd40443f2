"""Tests of the synthetic gait dataset generator (gaittools synth).

Tiny datasets (160x120, 12 frames) are generated once per module; every assertion reads the
written files back the way the toolkit will (cv2.VideoCapture, cv2.imread, parquet).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from gaittools.cli.main import main
from gaittools.sources.layouts import (parse_casia_b, parse_casia_b_background, parse_tum_gaid,
                               tum_gaid_id_from_folder)
from gaittools.synth import SynthError, generate_dataset, render_clip, spec_of
from gaittools.synth.clips import ClipSpec
from gaittools.synth.render import mask_box
from video_helpers import read_video

SUBJECTS = 3
WALKS = ["nm-01", "nm-02", "bg-01", "cl-01"]
VIEWS = ("000", "090")
FRAMES = 12
SIZE = (160, 120)


@pytest.fixture(scope="module")
def casia(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "casia"
    return generate_dataset(out, layout="casia-b", subjects=SUBJECTS, walks=WALKS, views=VIEWS,
                            frames=FRAMES, size=SIZE, seed=0, workers=2)


@pytest.fixture(scope="module")
def tum(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "tum"
    return generate_dataset(out, layout="tum-gaid", subjects=2, walks=2, frames=6, size=SIZE,
                            seed=0, workers=1)


def test_casia_file_names_parse_and_are_complete(casia: Path) -> None:
    walks, backgrounds = set(), set()
    for path in (casia / "videos").iterdir():
        assert path.suffix == ".avi", path
        bkgrd = parse_casia_b_background(path.stem)
        if bkgrd:
            backgrounds.add(bkgrd)
        else:
            name = parse_casia_b(path.stem)
            walks.add((name.subject, f"{name.condition}-{name.seq_num:02d}", name.view))
    subjects = [f"{s:03d}" for s in range(1, SUBJECTS + 1)]
    assert walks == {(s, w, v) for s in subjects for w in WALKS for v in VIEWS}
    assert backgrounds == {(s, v) for s in subjects for v in VIEWS}


def test_every_video_decodes_with_expected_count_and_size(casia: Path) -> None:
    for path in sorted((casia / "videos").glob("*.avi")):
        frames = read_video(path)
        assert frames.shape == (FRAMES, SIZE[1], SIZE[0], 3), path.name
        assert frames.std() > 5, f"{path.name} looks blank"


def test_sequences_table_matches_files(casia: Path) -> None:
    table = pd.read_parquet(casia / "ground_truth" / "sequences.parquet")
    assert len(table) == SUBJECTS * len(WALKS) * len(VIEWS)
    for row in table.itertuples():
        name = parse_casia_b(row.seq_id)
        assert (name.subject, name.condition, name.seq_num, name.view) == \
            (row.subject, row.condition, row.seq_num, row.view)
        assert (casia / row.file).is_file() and row.n_frames == FRAMES
    backgrounds = pd.read_parquet(casia / "ground_truth" / "backgrounds.parquet")
    assert len(backgrounds) == SUBJECTS * len(VIEWS)


def test_tum_gaid_frame_folders(tum: Path) -> None:
    folders = sorted(p for p in (tum / "frames").glob("p*/*") if p.is_dir())
    ids = {tum_gaid_id_from_folder(f) for f in folders}
    expected = {f"p{s:03d}-{c}{n:02d}" for s in (1, 2) for c in "nbs" for n in (1, 2)}
    assert ids == expected
    for folder in folders:
        parse_tum_gaid(tum_gaid_id_from_folder(folder))
        names = sorted(p.name for p in folder.iterdir())
        assert names == [f"{i:04d}.png" for i in range(1, 7)], folder
        image = cv2.imread(str(folder / names[0]), cv2.IMREAD_COLOR)
        assert image.shape == (SIZE[1], SIZE[0], 3)
    boxes = pd.read_parquet(tum / "ground_truth" / "boxes.parquet")
    assert set(boxes.seq_id) == expected and len(boxes) == len(expected) * 6
    table = pd.read_parquet(tum / "ground_truth" / "sequences.parquet")
    assert set(table.view) == {""}


def test_tum_gaid_walks_alternate_direction(tum: Path) -> None:
    boxes = pd.read_parquet(tum / "ground_truth" / "boxes.parquet")
    centre = (boxes.x0 + boxes.x1) / 2
    boxes = boxes.assign(centre=centre)
    motion = {sid: g.sort_values("frame").centre.iloc[-1] - g.sort_values("frame").centre.iloc[0]
              for sid, g in boxes.groupby("seq_id")}
    assert motion["p001-n01"] < -5 and motion["p001-n02"] > 5   # odd walks right to left


def test_same_seed_same_frames_whatever_the_rest_of_the_dataset(casia: Path, tmp_path: Path
                                                                ) -> None:
    # Fewer subjects, one walk, one view, one process: subject 2's clip must not change.
    again = generate_dataset(tmp_path / "again", subjects=2, walks=["cl-01"], views=("090",),
                             frames=FRAMES, size=SIZE, seed=0, workers=1)
    for name in ("002-cl-01-090.avi", "002-bkgrd-090.avi"):
        assert np.array_equal(read_video(casia / "videos" / name),
                              read_video(again / "videos" / name)), name
    subjects = pd.read_parquet(casia / "ground_truth" / "subjects.parquet")
    subjects_again = pd.read_parquet(again / "ground_truth" / "subjects.parquet")
    pd.testing.assert_frame_equal(subjects.iloc[:2], subjects_again)


def test_different_seed_differs(casia: Path, tmp_path: Path) -> None:
    other = generate_dataset(tmp_path / "other", subjects=1, walks=["nm-01"], views=("090",),
                             frames=FRAMES, size=SIZE, seed=1, workers=1)
    a = read_video(casia / "videos" / "001-nm-01-090.avi").astype(np.int16)
    b = read_video(other / "videos" / "001-nm-01-090.avi").astype(np.int16)
    assert np.abs(a - b).mean() > 2
    gait_a = pd.read_parquet(casia / "ground_truth" / "subjects.parquet").iloc[0]
    gait_b = pd.read_parquet(other / "ground_truth" / "subjects.parquet").iloc[0]
    assert gait_a.cadence != gait_b.cadence and gait_a.stride_ratio != gait_b.stride_ratio


def test_gait_parameters_differ_across_subjects(casia: Path) -> None:
    table = pd.read_parquet(casia / "ground_truth" / "subjects.parquet")
    assert list(table.subject) == ["001", "002", "003"]
    params = table.drop(columns=["subject"]).astype(float)
    motion = ["cadence", "stride_ratio", "arm_swing_deg", "knee_swing_deg", "torso_sway_deg",
              "arm_phase", "lr_phase", "speed"]
    for column in motion:
        assert params[column].nunique() == SUBJECTS, column
    # Relative to the spread of a parameter over a large population, pairs of subjects
    # differ clearly in their motion parameters taken together.
    from gaittools.synth import subject_gait
    population = pd.DataFrame([subject_gait(0, s).as_row() for s in range(1, 201)])[motion]
    z = (params[motion] - population.mean()) / population.std()
    for i in range(SUBJECTS):
        for j in range(i + 1, SUBJECTS):
            assert np.linalg.norm(z.iloc[i] - z.iloc[j]) > 1.0, (i, j)


def _step_frequency(boxes: np.ndarray, fps: float) -> float:
    """Dominant frequency (Hz) of the box width: in a lateral view the legs open and close
    once per step, so this is the cadence seen in the pixels."""
    width = boxes[:, 2] - boxes[:, 0]
    seen = np.isfinite(width)
    t, width = np.arange(len(width))[seen] / fps, width[seen] - width[seen].mean()
    freqs = np.linspace(1.2, 2.6, 281)
    power = np.abs(np.exp(-2j * np.pi * freqs[:, None] * t[None]) @ width)
    return float(freqs[np.argmax(power)])


def test_rendered_motion_follows_the_subject_gait_under_every_condition() -> None:
    from gaittools.synth import subject_gait
    cadences = []
    for subject in (1, 2, 3):
        steps_per_s = subject_gait(0, subject).cadence / 60
        cadences.append(steps_per_s)
        for condition in ("nm", "bg", "cl"):
            clip = render_clip(ClipSpec("casia-b", subject, condition, 1, "090", 60, (80, 60),
                                        25.0, 0))
            measured = _step_frequency(clip.boxes, 25.0)
            assert abs(measured - steps_per_s) < 0.04 * steps_per_s, (subject, condition)
    assert max(cadences) - min(cadences) > 0.1 * min(cadences)   # and subjects differ


def _mean_width(masks: np.ndarray, boxes: np.ndarray) -> float:
    """Silhouette area per row of its box: the mean width of the person."""
    return float(np.mean(masks.sum(axis=(1, 2)) / (boxes[:, 3] - boxes[:, 1])))


def test_coat_silhouette_is_wider_than_normal(casia: Path) -> None:
    for subject in range(1, SUBJECTS + 1):
        for view in VIEWS:
            widths = {}
            for walk in ("nm-01", "cl-01"):
                clip = render_clip(spec_of(casia, f"{subject:03d}-{walk}-{view}"))
                widths[walk] = _mean_width(clip.masks, clip.boxes)
            assert widths["cl-01"] > 1.08 * widths["nm-01"], (subject, view, widths)


def test_coat_foreground_is_wider_on_average(casia: Path) -> None:
    """The same, seen as the toolkit sees it: |frame - empty scene| on the decoded videos."""
    ratios = []
    boxes = pd.read_parquet(casia / "ground_truth" / "boxes.parquet")
    for subject in range(1, SUBJECTS + 1):
        for view in VIEWS:
            empty = np.median(read_video(casia / "videos" / f"{subject:03d}-bkgrd-{view}.avi"), 0)
            widths = {}
            for walk in ("nm-01", "cl-01"):
                seq_id = f"{subject:03d}-{walk}-{view}"
                frames = read_video(casia / "videos" / f"{seq_id}.avi").astype(np.int16)
                fg = np.abs(frames - empty).max(axis=-1) > 30
                box = boxes[boxes.seq_id == seq_id].sort_values("frame")[["x0", "y0", "x1", "y1"]]
                widths[walk] = _mean_width(fg, box.to_numpy())
            ratios.append(widths["cl-01"] / widths["nm-01"])
    assert np.mean(ratios) > 1.05, ratios


def test_boxes_are_the_tight_boxes_of_the_rendered_mask(casia: Path) -> None:
    boxes = pd.read_parquet(casia / "ground_truth" / "boxes.parquet")
    assert list(boxes.columns[:6]) == ["seq_id", "frame", "x0", "y0", "x1", "y1"]
    seq_id = "003-bg-01-000"
    clip = render_clip(spec_of(casia, seq_id))
    mine = boxes[boxes.seq_id == seq_id].sort_values("frame")
    assert np.array_equal(mine[["x0", "y0", "x1", "y1"]].to_numpy(), clip.boxes)
    assert np.array_equal(mine.area.to_numpy(), clip.masks.sum(axis=(1, 2)))
    for mask, box in zip(clip.masks, clip.boxes):
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(box)


def test_boxes_enclose_the_person_in_the_decoded_video(casia: Path) -> None:
    boxes = pd.read_parquet(casia / "ground_truth" / "boxes.parquet")
    tolerance = 2
    for seq_id in ("001-nm-01-090", "002-bg-01-000", "003-cl-01-090"):
        subject, view = seq_id[:3], seq_id[-3:]
        empty = np.median(read_video(casia / "videos" / f"{subject}-bkgrd-{view}.avi"), 0)
        frames = read_video(casia / "videos" / f"{seq_id}.avi").astype(np.int16)
        fg = np.abs(frames - empty).max(axis=-1) > 30
        box = boxes[boxes.seq_id == seq_id].sort_values("frame")[["x0", "y0", "x1", "y1"]]
        inside = outside = 0
        for mask, (x0, y0, x1, y1) in zip(fg, box.to_numpy()):
            ys, xs = np.nonzero(mask)
            out = (xs < x0 - tolerance) | (xs >= x1 + tolerance) | (ys < y0 - tolerance) \
                | (ys >= y1 + tolerance)
            outside += int(out.sum())
            inside += int((~out).sum())
            assert (x1 - x0) * (y1 - y0) < 0.5 * mask.size   # a person, not the frame
        assert inside > 500, seq_id           # the person is really there
        assert outside <= 0.002 * inside, (seq_id, outside, inside)


def test_views_follow_casia_b_conventions() -> None:
    """000: the walker approaches (grows), 180: walks away (shrinks), 090: crosses right to
    left at constant size."""
    def track(view: str) -> tuple[float, float]:
        boxes = render_clip(ClipSpec("casia-b", 2, "nm", 1, view, 40, (80, 60), 25.0, 0)).boxes
        height, centre = boxes[:, 3] - boxes[:, 1], (boxes[:, 0] + boxes[:, 2]) / 2
        return height[-5:].mean() / height[:5].mean(), centre[-1] - centre[0]
    grow, _ = track("000")
    shrink, _ = track("180")
    same, moved = track("090")
    assert grow > 1.15 and shrink < 0.87 and abs(same - 1) < 0.05
    assert moved < -20                                     # pixels, leftwards


def test_boxes_are_nan_where_the_walker_has_left_the_view() -> None:
    clip = render_clip(ClipSpec("casia-b", 1, "nm", 1, "090", 150, (64, 48), 25.0, 0))
    empty = clip.masks.sum(axis=(1, 2)) == 0
    assert empty[0] and empty[-1] and not empty[75]
    assert np.isnan(clip.boxes[empty]).all() and np.isfinite(clip.boxes[~empty]).all()
    assert np.array_equal(mask_box(clip.masks[75]), clip.boxes[75])


def test_refuses_to_overwrite_without_asking(casia: Path) -> None:
    before = (casia / "videos" / "001-nm-01-090.avi").read_bytes()
    with pytest.raises(SynthError, match="overwrite"):
        generate_dataset(casia, subjects=1, walks=1, views=("090",), frames=2, size=SIZE)
    assert (casia / "videos" / "001-nm-01-090.avi").read_bytes() == before


@pytest.mark.parametrize("kwargs, message", [
    (dict(views=("045",)), "not a CASIA-B view"),
    (dict(walks=["xx-01"]), "not a casia-b walk name"),
    (dict(layout="kth"), "layout"),
    (dict(size=(161, 120)), "even"),
])
def test_bad_settings_are_named(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(SynthError, match=message):
        generate_dataset(tmp_path / "bad", **kwargs)


def test_cli_writes_dataset_and_preview(tmp_path: Path) -> None:
    out, png = tmp_path / "cli", tmp_path / "preview.png"
    result = CliRunner().invoke(main, [
        "synth", str(out), "--subjects", "1", "--walks", "1", "--views", "000,090",
        "--frames", "4", "--size", "96x72", "--workers", "1", "--preview", str(png)])
    assert result.exit_code == 0, result.output
    assert "clips/s" in result.output                     # progress is shown
    names = sorted(p.name for p in (out / "videos").iterdir())
    assert names == sorted([f"001-{w}-{v}.avi" for w in ("nm-01", "bg-01", "cl-01")
                            for v in ("000", "090")] + ["001-bkgrd-000.avi", "001-bkgrd-090.avi"])
    montage = cv2.imread(str(png), cv2.IMREAD_COLOR)
    assert montage.shape == (3 * 72, 2 * 96, 3)            # rows conditions, columns views
    again = CliRunner().invoke(main, ["synth", str(out), "--subjects", "1"])
    assert again.exit_code != 0 and "overwrite" in again.output
