"""The whole ``compute-flow`` path (read, TV-L1, crop, write) on a generated store: torch vs OpenCV.

Prints, from one run: pairs/s of the batched torch path on ``--device`` (with its TV-L1 busy
fraction: device time inside TV-L1 and cropping over the engine's wall time, and its TV-L1
stream's ticks, pairs per tick and slot occupancy: how full refilling kept it), pairs/s of the
OpenCV DualTVL1 CPU path (Dask, one single-threaded worker per core), the mean EPE between the
two on the sequences both computed, and the time each implies for CASIA-B (13,640 sequences of
~100 frames at 320x240). "wall" rates include each run's fixed start-up (Dask cluster, CUDA
context, planning); "steady" rates leave it out, and the CASIA-B estimate uses them.

On a CPU-only machine (small settings)::

    python benchmarks/compute_flow_speed.py --device cpu --sequences 4 --frames 6 --size 160x120 \\
        --opencv-sequences 4 --tvl1 nscales=3 --tvl1 warps=2 --tvl1 outer_iterations=4

On a GPU machine (OpenCV's defaults, as the issue's goal is stated)::

    python benchmarks/compute_flow_speed.py --device cuda --sequences 120 --frames 100 --size 320x240 \\
        --opencv-sequences 32 --opencv-frames 8
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gaittools.store.zarr_store import Store  # noqa: E402
from pipelines.cluster import default_workers  # noqa: E402
from pipelines.compute_flow import FlowRun, compute_flow, parse_params  # noqa: E402

CASIA_B_PAIRS = 13_640 * 99
CROP = 64


def make_store(path: Path, n_seqs: int, n_frames: int, width: int, height: int, seed: int = 0) -> Store:
    """Walkers: a textured body-sized block crossing a textured still scene, with windows and crops."""
    import cv2

    from gaittools.person.crop import crop_frames

    rng = np.random.default_rng(seed)
    store = Store.create(path, dataset="generic")
    body_h, body_w = int(0.6 * height), max(4, int(0.12 * height))
    for i in range(n_seqs):
        scene = cv2.GaussianBlur(rng.uniform(30, 120, (height, width)).astype(np.float32), (0, 0), 1.5)
        body = cv2.GaussianBlur(rng.uniform(120, 255, (body_h, body_w)).astype(np.float32), (0, 0), 1.0)
        direction = 1 if i % 2 == 0 else -1
        speed = max(1.0, width / (1.3 * n_frames)) * direction
        y0 = (height - body_h) // 2
        x_start = 0.1 * width if direction > 0 else 0.9 * width - body_w
        frames = np.empty((n_frames, height, width), np.uint8)
        boxes = np.full((n_frames, 4), np.nan, np.float32)
        for t in range(n_frames):
            x0 = int(round(x_start + speed * t))
            frame = scene.copy()
            a, b = max(x0, 0), min(x0 + body_w, width)
            if b > a:
                frame[y0 : y0 + body_h, a:b] = body[:, a - x0 : b - x0]
                boxes[t] = (a, y0, b, y0 + body_h)
            frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        windows = np.stack([np.round(cx - body_h / 2), boxes[:, 1], np.round(cx - body_h / 2) + body_h, boxes[:, 3]], 1)
        windows = windows.astype(np.float32)
        seq_id = f"walker-{i:05d}"
        attrs = {"name": {"dataset": "generic", "seq_id": seq_id}, "source": "generated", "fps": 25.0,
                 "extract": {"n_frames": n_frames, "height": height, "width": width, "crop_size": CROP}}
        store.write_sequence(seq_id, {"frames": frames, "boxes": boxes, "windows": windows,
                                      "gray": crop_frames(frames, windows, CROP)}, attrs)
    return store


def run_path(store_path: Path, run: FlowRun) -> tuple[float, int, object]:
    """Wall seconds, pairs computed and the report of one compute-flow run."""
    start = time.perf_counter()
    with open("/dev/null", "w") as quiet:
        report = compute_flow(str(store_path), run, stream=quiet)
    seconds = time.perf_counter() - start
    if not report.ok:
        raise SystemExit(f"compute-flow failed: {[f.reason for f in report.summary.failed][:3]}")
    return seconds, report.summary.frames, report


def mean_epe(a: Store, b: Store, seq_ids: list[str]) -> float:
    errors = []
    for seq_id in seq_ids:
        fa = a.read(seq_id, "flow").astype(np.float32)
        fb = b.read(seq_id, "flow").astype(np.float32)
        errors.append(np.hypot(fa[:, 0] - fb[:, 0], fa[:, 1] - fb[:, 1]).mean())
    return float(np.mean(errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="torch device: cuda (all GPUs), cuda:N or cpu")
    parser.add_argument("--sequences", type=int, default=120)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", default="320x240", help="WxH of the working frames")
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per batch (default: from free memory)")
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--cuda-graphs", action="store_true", help="fused engine replaying CUDA graphs")
    parser.add_argument("--opencv-sequences", type=int, default=16, help="0 skips the OpenCV path")
    parser.add_argument("--opencv-frames", type=int, default=None, help="frames per OpenCV sequence (default --frames)")
    parser.add_argument("--opencv-workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--tvl1", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--keep", type=Path, default=None, help="build the stores here and keep them")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    params = parse_params(args.tvl1)
    root = args.keep or Path(tempfile.mkdtemp(prefix="compute-flow-bench-"))
    try:
        _bench(args, root, width, height, params)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


def _bench(args: argparse.Namespace, root: Path, width: int, height: int, params: dict) -> None:
    import torch

    print(f"torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name(0)})" if args.device.startswith("cuda") and torch.cuda.is_available() else ""))
    print(f"TV-L1 params: {params or 'OpenCV defaults'}; frames {width}x{height}, crops {CROP}x{CROP}")
    t0 = time.perf_counter()
    make_store(root / "warm", 2, 4, width, height, seed=99)
    make_store(root / "torch", args.sequences, args.frames, width, height)
    print(f"generated {args.sequences} sequences x {args.frames} frames in {time.perf_counter() - t0:.1f} s")

    run = FlowRun(device=args.device, batch_size=args.batch_size, readers=args.readers, params=params,
                  cuda_graphs=args.cuda_graphs)
    run_path(root / "warm", run)  # compilation / CUDA context / caches, not timed
    seconds, pairs, report = run_path(root / "torch", run)
    engine = report.engine
    # Steady rate: the engine's own wall time (reading, batching, TV-L1, writing overlapped),
    # without the run's fixed costs (planning, manifest), which CASIA-B's size amortises.
    rows = [("torch " + args.device, pairs, seconds, engine.pairs / engine.wall_seconds, f"{engine.busy_fraction:.0%}")]
    print(engine.format())  # with the TV-L1 stream's ticks, pairs per tick and slot occupancy

    epe = None
    if args.opencv_sequences:
        n_frames = args.opencv_frames or args.frames
        make_store(root / "opencv", args.opencv_sequences, n_frames, width, height)
        shutil.copytree(root / "opencv", root / "opencv-torch")
        workers = args.opencv_workers or default_workers()
        cv_seconds, cv_pairs, _ = run_path(root / "opencv", FlowRun(workers=workers, params=params))
        cv_store = Store(root / "opencv")
        # Steady rate: per-sequence compute seconds (recorded by each task) spread over the
        # workers, without the cluster's start-up, which CASIA-B's size amortises.
        busy = sum(cv_store.attrs_of(q)["flow"]["seconds"] for q in cv_store.seq_ids())
        rows.append((f"opencv ({workers} workers)", cv_pairs, cv_seconds, cv_pairs / (busy / min(workers, len(cv_store.seq_ids()))), "-"))
        run_path(root / "opencv-torch", run)
        epe = mean_epe(cv_store, Store(root / "opencv-torch"), cv_store.seq_ids())

    print()
    print(f"{'path':<24}{'pairs':>8}{'wall s':>9}{'pairs/s (wall)':>16}{'pairs/s (steady)':>18}"
          f"{'TV-L1 busy':>12}{'CASIA-B time':>14}")
    for name, n, s, rate, busy in rows:
        print(f"{name:<24}{n:>8}{s:>9.1f}{n / s:>16.2f}{rate:>18.2f}{busy:>12}{_duration(CASIA_B_PAIRS / rate):>14}")
    if len(rows) == 2:
        print(f"\ntorch / opencv speed ratio (steady): {rows[0][3] / rows[1][3]:.2f}x")
    if epe is not None:
        print(f"mean EPE torch vs opencv on the same sequences (crop pixels): {epe:.4f}")
    print(f"CASIA-B: {CASIA_B_PAIRS:,} pairs (13,640 sequences x 99) at {width}x{height}; "
          "times are for these frame sizes and parameters")


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


if __name__ == "__main__":
    main()
