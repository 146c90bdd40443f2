"""A tiny store of rendered stick-figure walkers, for training tests, demos and benchmarks.

Not the synthetic-video generator (``gaittools.synth`` renders videos that go through the
real extract + compute-flow pipeline): this writes person-centred crops straight into a store,
so the training package can be tested in seconds without that pipeline.

Each subject walks with its own gait (cadence, leg and arm swing, knee bend, bounce, build);
conditions change appearance only: ``bg`` adds a bag, ``cl`` a long coat that hides the
thighs and widens the body. Views foreshorten the swing (000/180 see the walker from the
front/back, 180 mirrored). Flow is Farneback's (OpenCV) between consecutive crops: it only has
to be motion, not TV-L1, for the training code to be exercised. A few empty frames at each
sequence start have NaN boxes/windows and black crops, as the store's contract says.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from gaittools.layouts import casia_b_id
from gaittools.store import Store

EMPTY_LEAD = 2


def subject_gait(subject: int, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng([seed, subject])
    return {
        "period": float(rng.uniform(9, 17)),
        "leg_swing": float(rng.uniform(0.25, 0.6)),
        "arm_swing": float(rng.uniform(0.1, 0.7)),
        "knee": float(rng.uniform(0.0, 0.7)),
        "bounce": float(rng.uniform(0.0, 2.5)),
        "height": float(rng.uniform(0.8, 1.0)),
        "width": float(rng.uniform(0.8, 1.2)),
        "shade": float(rng.uniform(150, 230)),
    }


def render_walker(gait: dict[str, float], condition: str, view: str, n_frames: int, size: int = 64,
                  phase: float = 0.0) -> np.ndarray:
    """(n_frames, size, size) uint8 crops of one walk."""
    scale = 4  # draw at 4x and downsample: anti-aliased, sub-pixel motion
    big = size * scale
    angle = math.radians(int(view))
    lateral = max(0.35, abs(math.sin(angle)))
    mirror = -1.0 if int(view) > 90 else 1.0
    frames = np.zeros((n_frames, size, size), np.uint8)
    h = gait["height"] * big
    shade = int(gait["shade"])
    for t in range(n_frames):
        w = 2 * math.pi * (t / gait["period"]) + phase
        cx = big / 2
        hip_y = big * 0.15 + 0.5 * h - gait["bounce"] * scale * abs(math.cos(w))
        img = np.zeros((big, big), np.uint8)
        torso = 0.3 * h
        neck = (cx, hip_y - torso)
        cv2.circle(img, (int(cx), int(neck[1] - 0.07 * h)), int(0.07 * h), shade, -1, cv2.LINE_AA)
        body_w = int(0.06 * h * gait["width"] * (1.6 if condition == "cl" else 1.0))
        cv2.line(img, (int(cx), int(neck[1])), (int(cx), int(hip_y)), shade, 2 * body_w, cv2.LINE_AA)
        for side in (1, -1):
            swing = side * gait["leg_swing"] * math.sin(w)
            knee_a = swing * lateral * mirror
            knee = (cx + math.sin(knee_a) * 0.25 * h, hip_y + math.cos(knee_a) * 0.25 * h)
            bend = gait["knee"] * max(0.0, math.sin(w + side * math.pi / 2))
            foot_a = knee_a - bend * lateral * mirror
            foot = (knee[0] + math.sin(foot_a) * 0.25 * h, knee[1] + math.cos(foot_a) * 0.25 * h)
            cv2.line(img, (int(cx), int(hip_y)), (int(knee[0]), int(knee[1])), shade, int(0.05 * h), cv2.LINE_AA)
            cv2.line(img, (int(knee[0]), int(knee[1])), (int(foot[0]), int(foot[1])), shade, int(0.04 * h),
                     cv2.LINE_AA)
            arm_a = -swing / gait["leg_swing"] * gait["arm_swing"] * lateral * mirror
            hand = (cx + math.sin(arm_a) * 0.28 * h, neck[1] + math.cos(arm_a) * 0.28 * h)
            cv2.line(img, (int(cx), int(neck[1])), (int(hand[0]), int(hand[1])), shade, int(0.03 * h), cv2.LINE_AA)
        if condition == "cl":  # a coat: a trapezoid from shoulders to knees
            pts = np.array([[cx - body_w, neck[1]], [cx + body_w, neck[1]],
                            [cx + 1.8 * body_w, hip_y + 0.2 * h], [cx - 1.8 * body_w, hip_y + 0.2 * h]], np.int32)
            cv2.fillPoly(img, [pts], int(shade * 0.7), cv2.LINE_AA)
        if condition == "bg":  # a bag on one side at hip height
            cv2.rectangle(img, (int(cx + body_w), int(hip_y - 0.15 * h)), (int(cx + body_w + 0.12 * h), int(hip_y)),
                          int(shade * 0.5), -1, cv2.LINE_AA)
        frames[t] = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return frames


def farneback_flow(gray: np.ndarray) -> np.ndarray:
    """(T-1, 2, S, S) float16 flow t -> t+1 in crop pixels."""
    out = np.zeros((len(gray) - 1, 2, *gray.shape[1:]), np.float16)
    for t in range(len(gray) - 1):
        f = cv2.calcOpticalFlowFarneback(gray[t], gray[t + 1], None, 0.5, 2, 9, 3, 5, 1.1, 0)
        out[t] = f.transpose(2, 0, 1)
    return out


def write_toy_store(path: str | os.PathLike[str], subjects: int = 8, views: tuple[str, ...] = ("090",),
                    walks: dict[str, int] | None = None, frames: int = 40, size: int = 64, seed: int = 0,
                    with_flow: bool = True) -> Store:
    """A CASIA-B-named store: ``SSS-CC-NN-VVV`` for each subject, condition walk and view."""
    walks = walks or {"nm": 3, "bg": 1, "cl": 1}
    store = Store.create(path, dataset="casia-b", toy=True)
    for s in range(1, subjects + 1):
        gait = subject_gait(s, seed)
        for cond, count in walks.items():
            for num in range(1, count + 1):
                for view in views:
                    seq_id = casia_b_id(s, cond, num, view)
                    phase = float(np.random.default_rng([seed, s, num, int(view), len(cond)]).uniform(0, 6.28))
                    gray = render_walker(gait, cond, view, frames, size, phase)
                    gray[:EMPTY_LEAD] = 0
                    boxes = np.tile(np.array([120, 40, 180, 220], np.float32), (frames, 1))
                    boxes[:EMPTY_LEAD] = np.nan
                    arrays = {"gray": gray, "boxes": boxes, "windows": boxes.copy()}
                    attrs = {"name": {"dataset": "casia-b", "seq_id": seq_id, "subject": f"{s:03d}",
                                      "condition": cond, "seq_num": num, "view": view},
                             "source": "training.toydata", "fps": 25.0,
                             "extract": {"n_frames": frames, "n_crops": frames - EMPTY_LEAD, "crop_size": size}}
                    if with_flow:
                        arrays["flow"] = farneback_flow(gray)
                        attrs["flow"] = {"backend": "farneback-toy"}
                    store.write_sequence(seq_id, arrays, attrs)
    return store


def write_toy_split(store: Store, out_dir: str | os.PathLike[str], train_subjects: int,
                    gallery: tuple[tuple[str, int], ...] = (("nm", 1), ("nm", 2)),
                    probes: dict[str, tuple[tuple[str, int], ...]] | None = None) -> Path:
    """A split table in ``build-split``'s format: the first ``train_subjects`` train, the rest test."""
    probes = probes or {"NM": (("nm", 3),), "BG": (("bg", 1),), "CL": (("cl", 1),)}
    rows = []
    for seq_id in store.seq_ids():
        name = store.attrs_of(seq_id)["name"]
        key = (name["condition"], int(name["seq_num"]))
        role, probe_set = None, None
        if int(name["subject"]) <= train_subjects:
            role = "train"
        elif key in gallery:
            role = "gallery"
        else:
            for pset, keys in probes.items():
                if key in keys:
                    role, probe_set = "probe", pset
        if role:
            rows.append({"seq_id": seq_id, "subject": name["subject"], "condition": name["condition"],
                         "seq_num": int(name["seq_num"]), "view": name["view"], "role": role,
                         "probe_set": probe_set})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(out / "split.parquet", index=False)
    (out / "split.json").write_text(
        '{"dataset": "casia-b", "protocol": "toy", "cross_view": true}')
    return out
