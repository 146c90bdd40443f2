"""TV-L1 throughput: our batched solver on one device vs OpenCV DualTVL1 on all CPU cores.

Both solve the same frame pairs: crops of the real Middlebury pairs (real motion) resized to
each benchmark size, or, without the data, synthetic textured frames under random small affine
motions. OpenCV runs in a process pool with one OpenCV thread per process, which is how the CPU
path of compute-flow uses it. Prints pairs/s of each, their ratio and the mean end-point error
between the two flows.

    python benchmarks/flow_speed.py --device cuda --batch 256 --pairs 1024
    python benchmarks/flow_speed.py --device cpu --pairs 8 --sizes 64x64
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "middlebury"


def _real_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    import cv2

    pairs = []
    for name in ("RubberWhale", "Dimetrodon"):
        f0, f1 = DATA / name / "frame10.png", DATA / name / "frame11.png"
        if f0.exists() and f1.exists():
            pairs.append((cv2.imread(str(f0), 0), cv2.imread(str(f1), 0)))
    return pairs


def _synthetic_pair(rng: np.random.Generator, size: int = 400) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    texture = cv2.GaussianBlur(rng.uniform(0, 255, (size, size)).astype(np.float32), (0, 0), 2.0)
    texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX)
    angle, shift = rng.uniform(-2, 2), rng.uniform(-2, 2, 2)
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
    matrix[:, 2] += shift
    moved = cv2.warpAffine(texture, matrix, (size, size), flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REFLECT)
    return texture.astype(np.uint8), np.clip(moved, 0, 255).astype(np.uint8)


def make_pairs(n: int, width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """(n, H, W) uint8 frames 0 and 1: resized random crops of real or synthetic pairs."""
    import cv2

    rng = np.random.default_rng(seed)
    sources = _real_pairs()
    origin = "Middlebury crops" if sources else "synthetic textures"
    frames0 = np.empty((n, height, width), np.uint8)
    frames1 = np.empty_like(frames0)
    for i in range(n):
        a, b = sources[i % len(sources)] if sources else _synthetic_pair(rng)
        crop_w = int(rng.integers(min(a.shape[1], 2 * width) // 2, min(a.shape[1], 2 * width) + 1))
        crop_h = min(a.shape[0], max(8, round(crop_w * height / width)))
        x0 = int(rng.integers(0, a.shape[1] - crop_w + 1))
        y0 = int(rng.integers(0, a.shape[0] - crop_h + 1))
        for frame, out in ((a, frames0), (b, frames1)):
            out[i] = cv2.resize(frame[y0:y0 + crop_h, x0:x0 + crop_w], (width, height),
                                interpolation=cv2.INTER_AREA)
    return frames0, frames1, origin


def time_ours(frames0, frames1, device: str, batch: int, engine: str) -> tuple[float, np.ndarray, str]:
    """Seconds, flows and the engine that ran ("auto" may fall back to the reference)."""
    import torch

    from gaittools.flow import TVL1Params, tvl1
    from gaittools.flow.tvl1_torch import pick_engine

    target = torch.device(device)
    engine = pick_engine(target, TVL1Params(), engine)
    f0 = torch.from_numpy(frames0).to(target)
    f1 = torch.from_numpy(frames1).to(target)
    tvl1(f0[:min(batch, 2)], f1[:min(batch, 2)], engine=engine)  # compile kernels, warm caches
    if target.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    flows = [tvl1(f0[i:i + batch], f1[i:i + batch], engine=engine)
             for i in range(0, len(f0), batch)]
    if target.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return seconds, torch.cat(flows).cpu().numpy(), engine.name


def time_opencv(frames0, frames1, workers: int) -> tuple[float, np.ndarray]:
    """OpenCV on a warmed process pool (pool start-up is not counted)."""
    from gaittools.flow.opencv_backend import opencv_tvl1, worker_pool

    with worker_pool(workers) as pool:
        opencv_tvl1(frames0[:workers], frames1[:workers], pool=pool)  # start every worker
        start = time.perf_counter()
        flows = opencv_tvl1(frames0, frames1, pool=pool)
        return time.perf_counter() - start, flows


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--engine", default="auto", choices=["auto", "reference", "fused"])
    parser.add_argument("--batch", type=int, default=None,
                        help="pairs per tvl1 call (default: 256 on CUDA, 8 on CPU)")
    parser.add_argument("--pairs", type=int, default=None,
                        help="pairs per size (default: 1024 on CUDA, 16 on CPU)")
    parser.add_argument("--sizes", default="320x240,64x64", help="comma-separated WxH")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="OpenCV processes (one thread each)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    on_cuda = args.device.startswith("cuda")
    batch = args.batch or (256 if on_cuda else 8)
    n_pairs = args.pairs or (1024 if on_cuda else 16)
    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = torch.cuda.get_device_name() if on_cuda else f"CPU ({torch.get_num_threads()} torch threads)"
    print(f"ours: {device_name}, engine {args.engine}, batch {batch}; "
          f"OpenCV: {args.workers} processes x 1 thread; {n_pairs} pairs per size")
    header = f"{'size':>9} {'pairs':>6} {'ours pairs/s':>13} {'opencv pairs/s':>15} {'ratio':>7} {'EPE ours-vs-cv':>15}"
    rows = []
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.lower().split("x"))
        frames0, frames1, origin = make_pairs(n_pairs, width, height)
        ours_s, ours, ran = time_ours(frames0, frames1, args.device, batch, args.engine)
        cv_s, cv = time_opencv(frames0, frames1, args.workers)
        epe = float(np.sqrt(((ours - cv) ** 2).sum(axis=1)).mean())
        ours_rate, cv_rate = n_pairs / ours_s, n_pairs / cv_s
        rows.append(f"{size:>9} {n_pairs:>6} {ours_rate:>13.1f} {cv_rate:>15.1f} "
                    f"{ours_rate / cv_rate:>7.2f} {epe:>15.4f}")
        print(f"  done {size} ({origin}; {ran} engine ran)", flush=True)
    print(header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
