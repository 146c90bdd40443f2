"""gaittools enroll / identify: synthetic walkers, a student fitted in the test, an ONNX bundle.

The student is a real ``C3DNet`` (tiny widths) whose conv stack keeps its random
initialisation and whose code layer is fitted in closed form (ridge regression of standardised
clip features onto the subjects, folded into the layer's weights and bias). Gradient training
of a 3D CNN takes minutes on 2 CPU cores; this takes seconds and still gives a model whose
signatures separate the subjects it was fitted on. It is fitted on every walk of subjects
001-004 and has seen no others, so it does NOT show generalisation to new walks or people
(that is the evaluation's job): these tests check the deployed path around it - decoding,
localisation, clips, the exported model, pooling, the gallery, the answers.

A walk bundle (a tiny set network, random weights) checks the other unit: a track embedded
as one set of all its frames.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import DATA, REPO
from gaittools.deploy import runtime as deploy
from gaittools.cli.main import main
from gaittools.deploy.clips import clip_starts
from gaittools.deploy.identify import (
    STATUS_NO_PERSON,
    STATUS_OK,
    STATUS_TOO_SHORT,
    Gallery,
    GalleryError,
    match,
    pooled_signature,
    signature_of_crops,
)

from video_helpers import read_video

REAL_VIDEOS = DATA / "casia-b-mini" / "videos"
SUBJECTS = ("001", "002", "003", "004")  # the student is fitted on these
WALKS = ("nm-01", "nm-02", "nm-03")
CLIP = {"length": 25, "step": 5, "crop_size": 64, "crop_mode": "person", "working_height": 120}
WALK = {"unit": "walk", "frames": 30, "crop_size": 64, "crop_mode": "person", "working_height": 120}


# ---------------------------------------------------------------------------- unit pieces
def _fake_model(dim: int = 3, fingerprint: str = "abc") -> deploy.SignatureModel:
    """A SignatureModel whose 'network' is the mean brightness of each third of the clip."""
    meta = {"clip": {"length": 4, "step": 2, "crop_size": 8, "crop_mode": "person"},
            "output": {"dim": dim}, "input": {"batch": "dynamic"}, "weights_fingerprint": fingerprint,
            "model": {"name": "fake"}, "normalisation": dict(deploy.NORMALISATION)}

    def run(x: np.ndarray) -> np.ndarray:
        parts = np.stack([p.mean(axis=(1, 2, 3, 4)) + 1.0 for p in np.array_split(x, dim, axis=2)], axis=1)
        return parts / np.linalg.norm(parts, axis=1, keepdims=True)

    return deploy.SignatureModel(deploy.Bundle(Path("/nowhere"), meta), run, "cpu")


def test_clip_starts_inside_runs_of_person_frames():
    valid = np.array([0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1], bool)
    assert clip_starts(valid, 4, 2) == [1, 7, 9, 11]
    assert clip_starts(valid, 9, 1) == []


def test_statuses_no_person_too_short_and_pooling():
    model = _fake_model()
    gray = np.zeros((10, 8, 8), np.uint8)
    windows = np.full((10, 4), np.nan, np.float32)
    assert signature_of_crops(model, gray, windows).status == STATUS_NO_PERSON
    gray[2:5] = 100
    windows[2:5] = 1.0
    short = signature_of_crops(model, gray, windows)
    assert short.status == STATUS_TOO_SHORT and "3" in short.message and short.person_frames == 3
    gray[5:9], windows[5:9] = 200, 1.0
    seq = signature_of_crops(model, gray, windows)  # frames 2..8 valid: clips at 2 and 4
    assert seq.status == STATUS_OK and seq.clips == 2
    clips = np.stack([gray[2:6], gray[4:8]])
    np.testing.assert_allclose(seq.signature, pooled_signature(model(clips)), atol=1e-6)
    assert abs(np.linalg.norm(seq.signature) - 1) < 1e-6


def test_gallery_roundtrip_match_and_model_refusal(tmp_path):
    model = _fake_model()
    gallery = Gallery.empty_for(model, threshold=0.3)
    gallery.add("ann", np.array([1, 0, 0], np.float32), "a.avi")
    gallery.add("bob", np.array([0, 1, 0], np.float32), "b.avi")
    path = gallery.save(tmp_path / "g")
    assert path.name == "g.npz"
    loaded = Gallery.load(path)
    assert loaded.ids == ["ann", "bob"] and loaded.meta["threshold"] == 0.3
    probe = np.array([0.96, 0.28, 0], np.float32)
    assert match(probe, loaded, 0.3)[0] == "ann"
    answer, distance, nearest = match(probe, loaded, 0.2)
    assert answer == "unknown" and nearest == "ann" and distance == pytest.approx(np.linalg.norm(probe - [1, 0, 0]))
    loaded.check_model(model)
    with pytest.raises(GalleryError, match="not comparable"):
        loaded.check_model(_fake_model(fingerprint="other"))


# ---------------------------------------------------------------------------- end to end
def _crops(video: Path) -> np.ndarray:
    from gaittools.person.extract import localise_and_crop
    from gaittools.sources.video import decode

    frames = decode(video, working_height=CLIP["working_height"]).frames
    _, windows, gray, _ = localise_and_crop(frames, mode="person", size=CLIP["crop_size"])
    return gray[np.isfinite(windows).all(axis=1)]


def _fit_student(videos: Path) -> tuple[torch.nn.Module, np.ndarray]:
    """Tiny C3DNet with a closed-form code layer (see the module docstring)."""
    from training.models.c3d import C3DNet

    clips, labels = [], []
    for label, subject in enumerate(SUBJECTS):
        for walk in WALKS:
            gray = _crops(videos / f"{subject}-{walk}-090.avi")
            clips += [gray[s:s + 25] for s in range(0, len(gray) - 24, 5)]
            labels += [label] * len(range(0, len(gray) - 24, 5))
    clips_u8 = np.stack(clips)
    torch.manual_seed(0)
    model = C3DNet(1, (8, 16, 16, 32, 64, 256), embedding_dim=len(SUBJECTS), dropout=0.0).eval()
    x = torch.from_numpy(deploy.normalise_clips(clips_u8))
    with torch.no_grad():
        feats = model.features(x).mean(dim=(2, 3, 4)).double().numpy()
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    z = (feats - mean) / std
    targets = np.eye(len(SUBJECTS))[labels] - 1.0 / len(SUBJECTS)
    w = np.linalg.solve(z.T @ z + 1e-2 * np.eye(z.shape[1]), z.T @ targets)  # (C, d)
    code = model.code_layer
    with torch.no_grad():
        code.weight.copy_(torch.from_numpy((w / std[:, None]).T).float()[:, :, None, None, None])
        code.bias.copy_(torch.from_numpy(-(w.T @ (mean / std))).float())
    return model, clips_u8


@pytest.fixture(scope="module")
def synth_videos(tmp_path_factory) -> Path:
    """Synthetic walks of 5 subjects (60 frames each), and a frame folder with 18 of them."""
    from gaittools.synth import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    videos = generate_dataset(root / "synth", subjects=5, walks=list(WALKS), views=("090",), frames=60,
                              size=(160, 120), seed=0, workers=1) / "videos"
    short = videos.parent / "short"  # a frame folder with less than one clip of walking
    short.mkdir()
    for i, frame in enumerate(read_video(videos / "001-nm-02-090.avi")[:18]):
        cv2.imwrite(str(short / f"{i:04d}.png"), frame)
    return videos


@pytest.fixture(scope="module")
def world(tmp_path_factory, synth_videos) -> dict[str, Path]:
    from training.export import export_bundle

    root = tmp_path_factory.mktemp("identify")
    videos = synth_videos
    model, clips = _fit_student(videos)
    bundle = export_bundle(model, root / "student-onnx", "onnx", clips[::4], "synthetic training clips",
                           model_name="c3d", options={"widths": [8, 16, 16, 32, 64, 256]}, clip=CLIP,
                           log=lambda _: None)
    program = export_bundle(model, root / "student-pt2", "exported-program", clips[::4], "synthetic training clips",
                            model_name="c3d", clip=CLIP, log=lambda _: None)
    short = videos.parent / "short"
    broken = root / "broken.avi"
    broken.write_bytes(b"this is not a video")
    return {"videos": videos, "bundle": bundle.root, "pt2": program.root, "short": short, "broken": broken,
            "root": root}


@pytest.fixture(scope="module")
def gallery(world) -> Path:
    out = world["root"] / "gallery.npz"
    videos = [str(world["videos"] / f"{s}-nm-01-090.avi") for s in SUBJECTS[:3]]
    result = CliRunner().invoke(main, ["enroll", *videos, "--model", str(world["bundle"]),
                                       "--ids", "001,002", "--ids", "003", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return out


def _identify(world, gallery, videos, *extra) -> tuple[int, list[dict]]:
    result = CliRunner().invoke(main, ["identify", *map(str, videos), "--model", str(world["bundle"]),
                                       "--gallery", str(gallery), "--json", "--device", "cpu", *extra])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, lines


def test_enrolled_gallery_describes_itself(world, gallery):
    g = Gallery.load(gallery)
    assert g.ids == ["001", "002", "003"]
    assert g.meta["weights_fingerprint"] == deploy.read_bundle(world["bundle"]).fingerprint
    np.testing.assert_allclose(np.linalg.norm(g.signatures, axis=1), 1.0, atol=1e-5)


def test_identify_returns_the_right_subjects(world, gallery):
    probes = [world["videos"] / f"{s}-{w}-090.avi" for s in SUBJECTS[:3] for w in ("nm-02", "nm-03")]
    code, answers = _identify(world, gallery, probes)
    assert code == 0
    assert [a["identity"] for a in answers] == ["001", "001", "002", "002", "003", "003"], answers
    assert all(a["status"] == "identified" and a["distance"] <= a["threshold"] and a["clips"] >= 5
               for a in answers)


def test_gallery_is_portable_across_export_formats(world, gallery):
    """An ONNX-enrolled gallery searched with the torch.export bundle of the same weights."""
    probes = [world["videos"] / f"{s}-nm-02-090.avi" for s in SUBJECTS[:3]]
    _, onnx_answers = _identify(world, gallery, probes)
    result = CliRunner().invoke(main, ["identify", *map(str, probes), "--model", str(world["pt2"]),
                                       "--gallery", str(gallery), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    pt2_answers = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [a["identity"] for a in pt2_answers] == ["001", "002", "003"]
    for a, b in zip(onnx_answers, pt2_answers):
        assert b["distance"] == pytest.approx(a["distance"], abs=1e-4)


def test_not_enrolled_person_is_unknown_and_threshold_is_settable(world, gallery):
    probe = world["videos"] / "004-nm-02-090.avi"
    code, [answer] = _identify(world, gallery, [probe])
    assert code == 0 and answer["status"] == "unknown" and answer["identity"] == "unknown"
    assert answer["distance"] > answer["threshold"] and answer["nearest"] in SUBJECTS[:3]
    code, [lenient] = _identify(world, gallery, [probe], "--threshold", "2.0")
    assert lenient["identity"] == lenient["nearest"] and lenient["threshold"] == 2.0


def test_nobody_short_and_broken_videos_get_clear_answers(world, gallery):
    videos = [world["videos"] / "001-bkgrd-090.avi", world["short"], world["broken"],
              world["videos"] / "002-nm-02-090.avi"]
    code, answers = _identify(world, gallery, videos)
    assert [a["status"] for a in answers] == ["no person", "too short", "error", "identified"]
    assert answers[0]["identity"] is None and answers[0]["person_frames"] == 0
    assert "18" in answers[1]["message"] and "25" in answers[1]["message"]
    assert "broken.avi" in answers[2]["message"]
    assert answers[3]["identity"] == "002"  # the bad video did not stop the next one
    assert code == 1


@pytest.mark.real_data("casia-b-mini/videos/001-bkgrd-090.avi", "casia-b-mini/videos/002-nm-01-090.avi")
def test_real_casia_b_empty_hall_is_no_person(world, gallery):
    empty, walker = REAL_VIDEOS / "001-bkgrd-090.avi", REAL_VIDEOS / "002-nm-01-090.avi"
    code, answers = _identify(world, gallery, [empty, walker])
    assert code == 0
    assert answers[0]["status"] == "no person"
    assert answers[1]["status"] in ("identified", "unknown") and answers[1]["clips"] > 0


def test_enroll_refuses_to_clobber_and_other_models_galleries(world, gallery, tmp_path):
    video = str(world["videos"] / "001-nm-01-090.avi")
    result = CliRunner().invoke(main, ["enroll", video, "--model", str(world["bundle"]), "--ids", "x",
                                       "--out", str(gallery), "--device", "cpu"])
    assert result.exit_code != 0 and "--append" in result.output
    result = CliRunner().invoke(main, ["enroll", video, "--model", str(world["bundle"]), "--ids", "a,b",
                                       "--out", str(tmp_path / "g.npz")])
    assert result.exit_code != 0 and "1 videos but 2 ids" in result.output
    other = world["root"] / "other-bundle"
    meta = json.loads((world["bundle"] / deploy.BUNDLE_FILE).read_text())
    other.mkdir(exist_ok=True)
    (other / meta["model_file"]).write_bytes((world["bundle"] / meta["model_file"]).read_bytes())
    deploy.write_bundle_meta(other, {**meta, "weights_fingerprint": "f" * 64})
    result = CliRunner().invoke(main, ["identify", video, "--model", str(other), "--gallery", str(gallery)])
    assert result.exit_code != 0 and "not comparable" in result.output


def test_identify_in_a_fresh_process_computes_no_flow_and_imports_no_training(world, gallery):
    """Dense optical flow (TV-L1, Farneback, DIS) is booby-trapped; gaittools.flow and training
    must stay unimported. (Localisation's moving-camera check tracks ~60 corners with sparse
    Lucas-Kanade on a few frame pairs; that is not the flow the master needs and stays allowed.)"""
    probe = world["videos"] / "003-nm-02-090.avi"
    script = (
        "import sys, cv2\n"
        "def trap(*a, **k):\n"
        "    raise AssertionError('dense optical flow computed on the identify path')\n"
        "for owner, names in ((cv2, ('calcOpticalFlowFarneback', 'DISOpticalFlow_create', "
        "'FarnebackOpticalFlow_create')), (cv2.optflow, ('DualTVL1OpticalFlow_create', "
        "'createOptFlow_DualTVL1', 'calcOpticalFlowSparseToDense'))):\n"
        "    for name in names:\n"
        "        if hasattr(owner, name):\n"
        "            setattr(owner, name, trap)\n"
        "from gaittools.cli.main import main\n"
        "try:\n"
        f"    main(['identify', {str(probe)!r}, '--model', {str(world['bundle'])!r}, "
        f"'--gallery', {str(gallery)!r}, '--json', '--device', 'cpu'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "bad = [m for m in sys.modules if m.startswith(('gaittools.flow', 'training', 'pipelines'))]\n"
        "assert not bad, bad\n"
        "print('CLEAN')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.splitlines()[0])
    assert answer["identity"] == "003" and result.stdout.strip().endswith("CLEAN")


# ---------------------------------------------------------------------------- several people
@pytest.fixture(scope="module")
def scenes(world) -> Path:
    """Synthetic scenes with ground truth (``gaittools synth --scenes``), and the crossing
    scene cut in two frame folders: frames 0-44 (to enrol) and 35-79 (to identify)."""
    from gaittools.synth.crowd import write_scenes

    out = world["root"] / "scenes"
    write_scenes(out, ["crossing", "waver", "row"])
    frames = read_video(out / "crossing.avi")
    for name, part in (("first", frames[:45]), ("second", frames[35:])):
        (out / name).mkdir()
        for i, frame in enumerate(part):
            cv2.imwrite(str(out / name / f"{i:04d}.png"), frame)
    return out


def _visible_range(boxes: np.ndarray) -> tuple[int, int]:
    frames = np.flatnonzero(np.isfinite(boxes[:, 0]))
    return int(frames[0]), int(frames[-1])


def test_identify_answers_per_walking_track_with_its_frames(world, gallery, scenes):
    """One answer per ground-truth walker, with its frame range; the standing waver gets none."""
    code, answers = _identify(world, gallery, [scenes / f"{s}.avi" for s in ("crossing", "waver", "row")])
    assert code == 0
    for scene in ("crossing", "waver", "row"):
        truth = np.load(scenes / "ground_truth" / f"{scene}.npz")
        walkers = [_visible_range(b) for b, walks in zip(truth["boxes"], truth["walking"]) if walks]
        mine = [a for a in answers if a["video"].endswith(f"{scene}.avi")]
        assert len(mine) == len(walkers), (scene, mine)  # the waver: 1 answer for 2 people
        assert sorted(a["track"] for a in mine) == sorted(set(a["track"] for a in mine))
        for a, (first, last) in zip(sorted(mine, key=lambda a: a["first_frame"]), sorted(walkers)):
            assert abs(a["first_frame"] - first) <= 2 and abs(a["last_frame"] - last) <= 2, (scene, a)
            assert a["status"] in ("identified", "unknown") and a["clips"] >= 5
            assert a["person_frames"] >= 0.9 * (last - first + 1) and a["distance"] is not None
    result = CliRunner().invoke(main, ["identify", str(scenes / "crossing.avi"), "--model", str(world["bundle"]),
                                       "--gallery", str(gallery), "--device", "cpu"])
    lines = [line for line in result.stdout.splitlines() if "crossing.avi track" in line]
    assert result.exit_code == 0 and len(lines) == 2 and all("(frames 0-79" in line for line in lines), result.output


def test_two_walkers_are_told_apart_by_a_gallery_of_their_own_tracks(world, scenes):
    """Enrol each walker of the crossing scene from its track in frames 0-44; identify them
    in frames 35-79: each track is named after its own person (the near or the far one, told
    by the track's box height). The halves are too short for a sequence median without the
    walkers: the whole clip's median is their background."""
    from gaittools.person.foreground import median_background
    from gaittools.deploy.identify import answer_for, signatures_of_video
    from gaittools.person.localise import localise
    from gaittools.sources.video import decode

    model = deploy.load_signature_model(world["bundle"], device="cpu")
    background = median_background(decode(scenes / "crossing.avi", CLIP["working_height"]).frames, 31)

    def who(folder: Path) -> dict[int, str]:  # track id -> near / far, from the same tracking
        tracks = localise(decode(folder, CLIP["working_height"]).frames, background).walkers
        tallest = max(tracks, key=lambda tr: tr.median_height)
        return {tr.id: "near" if tr is tallest else "far" for tr in tracks}

    enrolled, people = signatures_of_video(scenes / "first", model, background), who(scenes / "first")
    assert len(enrolled) == 2 and all(s.status == STATUS_OK for s in enrolled)
    own = Gallery.empty_for(model)
    for seq in enrolled:
        own.add(people[seq.track], seq.signature, f"first track {seq.track}")
    probes, people = signatures_of_video(scenes / "second", model, background), who(scenes / "second")
    answers = [answer_for("second", seq, own, threshold=2.0) for seq in probes]
    assert sorted(people.values()) == ["far", "near"]
    assert [a.identity for a in answers] == [people[a.track] for a in answers], answers
    assert all(a.margin > 0.2 for a in answers), answers


# ---------------------------------------------------------------------------- walk bundles
def _tiny_setnet() -> torch.nn.Module:
    from training.models.setnet import SetNet

    torch.manual_seed(0)
    return SetNet(1, "plain", (4, 8), n_strips=4, strip_dim=8).eval()


@pytest.fixture(scope="module")
def walk_bundle(tmp_path_factory, synth_videos) -> Path:
    """A tiny set network (random weights) as an ONNX walk bundle, parity on synthetic walks."""
    from training.export import PARITY_FRAMES, cut_walks, export_bundle

    walks = [_crops(synth_videos / f"{s}-nm-01-090.avi") for s in SUBJECTS[:2]]
    bundle = export_bundle(_tiny_setnet(), tmp_path_factory.mktemp("walk") / "setnet-onnx", "onnx",
                           cut_walks(walks, PARITY_FRAMES, 1), "synthetic walks", model_name="setnet-gray",
                           clip=WALK, log=lambda _: None)
    return bundle.root


def test_walk_bundle_embeds_a_track_as_one_set(walk_bundle, synth_videos):
    """The track's signature is the eager network's on ALL its person frames as one set (not a
    mean over clips), and the answer says so."""
    from gaittools.deploy.identify import signature_of_video
    from training.export import eager_signatures

    model = deploy.load_signature_model(walk_bundle, device="cpu")
    video = synth_videos / "003-nm-02-090.avi"
    seq = signature_of_video(video, model)
    crops = _crops(video)
    assert seq.status == STATUS_OK and seq.clips == 0
    assert seq.set_frames == seq.person_frames == len(crops) > model.bundle.train_frames
    np.testing.assert_allclose(seq.signature, eager_signatures(_tiny_setnet(), crops[None], "cpu")[0], atol=1e-5)


def test_enroll_and_identify_with_a_walk_bundle(walk_bundle, synth_videos, tmp_path):
    videos = [str(synth_videos / f"{s}-nm-01-090.avi") for s in SUBJECTS[:3]]
    out = tmp_path / "walk-gallery.npz"
    result = CliRunner().invoke(main, ["enroll", *videos, "--model", str(walk_bundle), "--ids", "001,002,003",
                                       "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "enrolled as 002 (one set of " in result.output and Gallery.load(out).meta["unit"] == "walk"
    result = CliRunner().invoke(main, ["identify", videos[1], str(synth_videos.parent / "short"), "--model",
                                       str(walk_bundle), "--gallery", str(out), "--json", "--device", "cpu"])
    same, short = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert same["identity"] == "002" and same["distance"] < 1e-4 and same["set_frames"] > 30 and same["clips"] == 0
    assert short["status"] == STATUS_TOO_SHORT and "18 frames" in short["message"] and "30" in short["message"]
