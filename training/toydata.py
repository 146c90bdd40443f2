"""A small in-memory store of synthetic walkers: the fixture for training tests, demos and benchmarks.

Why not the real chain? The real one is ``gaittools synth`` (videos) -> ``extract-frames``
(decode, localise, crop) -> ``compute-flow`` (TV-L1 on frames, cropped): it has its own tests
and takes minutes. The training package only needs a store with the same contract, in seconds.
So this module takes the same pieces without the videos and the localisation:

- walkers are rendered by ``gaittools.synth.render_clip`` (each subject's own gait, clothes
  drawn per walk, ``bg``/``cl`` change appearance only, CASIA-B cameras) at a small frame
  size, in memory, and turned gray;
- crops are ``gaittools.crop``'s ``person`` windows around the renderer's ground-truth boxes,
  centred on the person mask's horizontal centre of mass (what localisation estimates);
- flow is ``gaittools.flow.opencv_tvl1`` between consecutive *crops* (as compute-flow does
  for stores without frames), with cheap parameters (:data:`TOY_TVL1`): coarse, but TV-L1.

Frames themselves are not stored (like silhouette stores), so the flow's source is the crops;
``extract.height/width`` give the rendered frame size that ``boxes``/``windows`` refer to. The
first :data:`EMPTY_LEAD` frames of every sequence are written as "nobody found" (NaN
boxes/windows, black crops), so consumers' no-person path is exercised.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from gaittools.crop import crop_frames, windows_for
from gaittools.flow import TVL1Params, opencv_tvl1
from gaittools.layouts import casia_b_id
from gaittools.store import Store
from gaittools.synth import ClipSpec, render_clip

EMPTY_LEAD = 2
FPS = 10.0
#: Rendered frame height per crop pixel: the walker (about half the frame height) then spans
#: about one crop height, so crops are downsampled only a little.
FRAME_HEIGHT_PER_CROP = 2
#: Cheap TV-L1: 2 scales, 1 warp, few iterations. Enough motion for the training code; not
#: the quality compute-flow's defaults give.
TOY_TVL1 = TVL1Params(nscales=2, warps=1, outer_iterations=2, inner_iterations=10)


def frame_size(crop_size: int) -> tuple[int, int]:
    """(W, H) of the rendered frames for a crop size: 4:3, even sides."""
    height = FRAME_HEIGHT_PER_CROP * crop_size
    return 3 * height, height


def mass_centres(masks: np.ndarray) -> np.ndarray:
    """Horizontal centre of mass (frame pixels) of each mask, NaN where it is empty."""
    cols = masks.sum(axis=1, dtype=np.float64)                       # (T, W)
    total = cols.sum(axis=1)
    centres = (cols @ (np.arange(masks.shape[2]) + 0.5)) / np.maximum(total, 1)
    return np.where(total > 0, centres, np.nan).astype(np.float32)


def toy_sequence(spec: ClipSpec, crop_size: int, with_flow: bool
                 ) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Arrays (gray, boxes, windows[, flow]) and the extract/flow attributes of one walk."""
    start = time.perf_counter()
    clip = render_clip(spec)
    frames = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in clip.frames])
    boxes = clip.boxes.astype(np.float32)
    boxes[:EMPTY_LEAD] = np.nan
    windows = windows_for(boxes, mass_centres(clip.masks), frames.shape[1:], "person")
    gray = crop_frames(frames, windows, crop_size)
    n_crops = int(np.isfinite(windows[:, 0]).sum())
    attrs: dict[str, object] = {"extract": {
        "n_frames": len(frames), "n_crops": n_crops, "height": int(frames.shape[1]),
        "width": int(frames.shape[2]), "coverage": round(n_crops / len(frames), 4), "n_tracks": 1,
        "short": False, "crop_mode": "person", "crop_size": crop_size, "localisation": "ground-truth",
        "seconds": round(time.perf_counter() - start, 4)}}
    arrays = {"gray": gray, "boxes": boxes, "windows": windows}
    if with_flow:
        start = time.perf_counter()
        # as compute-flow's cropping does: no flow (zeros) where frame t has no window
        valid = np.isfinite(windows[:-1, 0])
        flow = np.zeros((len(gray) - 1, 2, crop_size, crop_size), np.float32)
        pairs = np.flatnonzero(valid)
        if len(pairs):
            flow[pairs] = opencv_tvl1(gray[pairs], gray[pairs + 1], TOY_TVL1)
        magnitude = np.hypot(flow[:, 0], flow[:, 1]).mean(axis=(1, 2))
        arrays["flow"] = flow.astype(np.float16)
        attrs["flow"] = {"backend": "opencv-dualtvl1", "source": "gray", "params": TOY_TVL1.as_dict(),
                         "mean_magnitude": float(magnitude[valid].mean()) if valid.any() else 0.0,
                         "n_pairs_with_window": int(valid.sum()),
                         "seconds": round(time.perf_counter() - start, 4)}
    return arrays, attrs


def write_toy_store(path: str | os.PathLike[str], subjects: int = 8, views: tuple[str, ...] = ("090",),
                    walks: dict[str, int] | None = None, frames: int = 40, size: int = 64, seed: int = 0,
                    with_flow: bool = True) -> Store:
    """A CASIA-B-named store: ``SSS-CC-NN-VVV`` for each subject, condition walk and view."""
    walks = walks or {"nm": 3, "bg": 1, "cl": 1}
    store = Store.create(path, dataset="casia-b", toy=True)
    for s in range(1, subjects + 1):
        for cond, count in walks.items():
            for num in range(1, count + 1):
                for view in views:
                    seq_id = casia_b_id(s, cond, num, view)
                    spec = ClipSpec("casia-b", s, cond, num, view, frames, frame_size(size), FPS, seed)
                    arrays, attrs = toy_sequence(spec, size, with_flow)
                    attrs.update(name={"dataset": "casia-b", "seq_id": seq_id, "subject": f"{s:03d}",
                                       "condition": cond, "seq_num": num, "view": view},
                                 source="training.toydata", fps=FPS)
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
