"""A small training store and its split, made in seconds from the synthetic walkers.

Why: the training package, its tests, the benchmarks and ``train-copy make-toy`` need a store
with gray crops and flow of several subjects' walks, on two CPU cores, in seconds. The real
path (``gaittools synth`` -> extract-frames -> compute-flow, as demo.sh runs it) spends nearly
all of its time in TV-L1 on whole frames: measured on 2 cores for 8 walks of 34 frames at the
cheap settings below, 3.4 s (frame crop, working height 64) or 10.9 s (person crop, height 120)
of flow against 0.4 s of rendering, encoding, decoding and localising; the tests' 32 walks
would take 12-36 s. This fast mode writes the same 32 walks in about 3 s. It keeps what the
training code sees and drops what costs:

- the walkers are ``gaittools.synth``'s own (``render_clip``: same subjects, gaits, clothes,
  bags and coats, cameras, hall and camera noise as ``gaittools synth`` with the same seed);
- no video is encoded or decoded and nobody is localised: each frame's person box is the
  renderer's ground truth (its mask's tight box), the window is ``gaittools.person.crop``'s person
  window on it (centred on the mask's horizontal centre of mass), and the gray crop is cut by
  ``crop_frames``, as extract-frames cuts it;
- flow is our torch TV-L1 (``gaittools.flow.tvl1_torch.tvl1``) at the cheap settings ``PARAMS``,
  run on the crop pair (frame t and frame t+1, both cut with frame t's window): the store's
  flow definition (t -> t+1, cropped with windows[t], in crop pixels) at crop resolution
  instead of frame resolution, which is what makes it cheap.
- ``lead`` frames at the start of every walk are recorded as frames where nobody was found
  (NaN boxes and windows, black crops, zero flow), as extract-frames records a walker who has
  not entered yet, so that every user of the fixture meets the store's NaN contract.
- the store holds gray, boxes, windows and flow, not the frames or silhouettes (training
  reads neither).

The split is ``gaittools.protocols.splits.build_split`` under a protocol written for the fixture
(``toy_protocol``): the first ``train_subjects`` subjects train on every walk, the others
are enrolled with the ``gallery`` walks and probed with the ``probes`` walks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

from gaittools.person.blobs import mass_centres
from gaittools.person.crop import crop_frames, crop_window, windows_for
from gaittools.flow.params import TVL1Params
from gaittools.flow.tvl1_torch import tvl1
from gaittools.sources.layouts import casia_b_id
from gaittools.store.manifest import refresh_manifest
from gaittools.person.packed_masks import pack_masks
from gaittools.protocols.protocol import Protocol, parse_protocol
from gaittools.protocols.splits import SplitOptions, build_split, write_split
from gaittools.store.zarr_store import Store, flow_attributes
from gaittools.synth.clips import ClipSpec, render_clip
from gaittools.synth.dataset import resolve_views, resolve_walks

#: Cheap TV-L1 settings of the fixture: two scales, one warp, 2 x 10 iterations, median 5 (OpenCV: 5, 5,
#: 10 x 30; compute-flow's `cheap` preset also drops the median and halves the inner iterations).
PARAMS = TVL1Params(nscales=2, warps=1, outer_iterations=2, inner_iterations=10)
SOURCE = "gaittools.synth.toystore"
FPS = 25.0  # CASIA-B's


@dataclass(frozen=True)
class ToyData:
    """Where the fixture was written: the store and the split folder (build-split's files)."""

    store: Store
    split: Path


def toy_protocol(subjects: int, train_subjects: int, walks: Sequence[str], views: Sequence[str],
                 gallery: Sequence[str], probes: Mapping[str, Sequence[str]]) -> Protocol:
    """The fixture's protocol (``manifests/README.md`` format), named ``toy``."""
    if not 1 <= train_subjects < subjects:
        raise ValueError(f"train_subjects={train_subjects}: need 1..{subjects - 1} so that some "
                         "subjects are left to enrol and probe")

    def seqs(names: Sequence[str]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for cond, num in resolve_walks("casia-b", list(names)):
            out.setdefault(cond, []).append(num)
        return out

    doc = {
        "format": 1, "dataset": "casia-b", "name": "toy", "subjects": f"001-{subjects:03d}",
        "views": list(views), "conditions": ["nm", "bg", "cl"], "cross_view": len(views) > 1,
        "train_sequences": seqs(walks), "gallery": seqs(gallery),
        "probes": {name: seqs(names) for name, names in probes.items()},
        "settings": {"toy": {"train": f"001-{train_subjects:03d}",
                             "test": f"{train_subjects + 1:03d}-{subjects:03d}"}},
    }
    return parse_protocol(yaml.safe_dump(doc), f"{SOURCE}.toy_protocol")


def walk_arrays(spec: ClipSpec, crop_size: int, lead: int, flow: bool) -> tuple[dict[str, np.ndarray], dict]:
    """Gray crops, boxes, windows (and flow) of one rendered walk, and the attributes to record."""
    clip = render_clip(spec)
    frames = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in clip.frames])
    boxes = clip.boxes.copy()
    boxes[:lead] = np.nan
    centres = mass_centres(pack_masks(clip.masks), frames.shape[2], boxes, 1.0)
    windows = windows_for(boxes, centres, frames.shape[1:], "person")
    gray = crop_frames(frames, windows, crop_size)
    arrays = {"gray": gray, "boxes": boxes, "windows": windows}
    n_crops = int(np.isfinite(windows[:, 0]).sum())
    attrs = {"name": {"dataset": "casia-b", "seq_id": casia_b_id(spec.subject, spec.condition, spec.seq_num,
                                                                 spec.view),
                      "subject": f"{spec.subject:03d}", "condition": spec.condition,
                      "seq_num": spec.seq_num, "view": spec.view},
             "source": SOURCE, "fps": spec.fps,
             "extract": {"n_frames": len(frames), "n_crops": n_crops, "height": frames.shape[1],
                         "width": frames.shape[2], "coverage": round(n_crops / len(frames), 4),
                         "crop_mode": "person", "crop_size": crop_size, "content": "gray",
                         "localisation": "ground truth", "short": False, "seed": spec.seed}}
    if flow:
        start = time.perf_counter()
        arrays["flow"], valid = crop_pair_flow(frames, windows, gray)
        attrs["flow"] = flow_attributes(arrays["flow"], valid, source="crop pairs", crop_size=crop_size,
                                        backend="torch-tvl1", params=asdict(PARAMS), device="cpu",
                                        seconds=time.perf_counter() - start)
    return arrays, attrs


def crop_pair_flow(frames: np.ndarray, windows: np.ndarray, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T-1, 2, S, S) float16 flow t -> t+1 of frame t's window, and the pairs that have one.

    Frame t+1 is cut with frame t's window, so the flow carries the walker's own motion in the
    crop's pixels; pairs without a window get zero flow, as compute-flow writes them.
    """
    size = gray.shape[1]
    valid = np.isfinite(windows[:-1]).all(axis=1)
    out = np.zeros((len(frames) - 1, 2, size, size), np.float16)
    pairs = np.flatnonzero(valid)
    if len(pairs):
        after = np.stack([crop_window(frames[t + 1], windows[t], size) for t in pairs])
        out[pairs] = tvl1(torch.from_numpy(gray[pairs]), torch.from_numpy(after), PARAMS).numpy()
    return out, valid


def write_toy(out: str | os.PathLike[str], subjects: int = 8, train_subjects: int = 4,
              walks: Sequence[str] = ("nm-01", "nm-02", "nm-03", "cl-01"), views: Sequence[str] = ("090",),
              frames: int = 34, crop_size: int = 52, size: tuple[int, int] = (160, 120),
              gallery: Sequence[str] = ("nm-01", "nm-02"),
              probes: Mapping[str, Sequence[str]] | None = None, lead: int = 2, seed: int = 0,
              flow: bool = True) -> ToyData:
    """Write ``out/store`` (crops, boxes, windows, flow of every walk and view) and ``out/split``.

    ``walks``/``gallery``/``probes`` are CASIA-B walk names ("nm-01"); ``probes`` maps probe-set
    names to walks (default: NM = nm-03, CL = cl-01). ``size`` is the rendered frame (W, H).
    The store is deterministic for the arguments: the walkers are ``gaittools synth``'s.
    """
    probes = {"NM": ("nm-03",), "CL": ("cl-01",)} if probes is None else probes
    walk_list, view_list = resolve_walks("casia-b", list(walks)), resolve_views("casia-b", views)
    protocol = toy_protocol(subjects, train_subjects, walks, view_list, gallery, probes)
    if frames < lead + 2:
        raise ValueError(f"frames={frames}: need at least lead + 2 = {lead + 2} frames")
    root = Path(out)
    store = Store.create(root / "store", dataset="casia-b", source=SOURCE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # crops are tiny: torch's thread pool only spins (make-toy: 62 s vs 10 s, 2 busy cores)
    try:
        for subject in range(1, subjects + 1):
            for cond, num in walk_list:
                for view in view_list:
                    spec = ClipSpec(layout="casia-b", subject=subject, condition=cond, seq_num=num, view=view,
                                    frames=frames, size=tuple(size), fps=FPS, seed=seed)
                    arrays, attrs = walk_arrays(spec, crop_size, lead, flow)
                    store.write_sequence(attrs["name"]["seq_id"], arrays, attrs)
    finally:
        torch.set_num_threads(threads)
    split = build_split(refresh_manifest(store), protocol, SplitOptions(val_fraction=0.0))
    write_split(split, root / "split")
    return ToyData(store, root / "split")
