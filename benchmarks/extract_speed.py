"""Frames/s per core: the whole extract-frames path against a bare decode loop, in one run.

    python benchmarks/extract_speed.py [--source DIR] [--repeat 3] [--workers N] [--store-dir DIR]

All run in this process on one core (OpenCV and the FFmpeg decoder on one thread each, as in a
Dask worker), over the same files:

- bare decode: ``VideoCapture.read()`` until the end, nothing else (one decoder thread: FFmpeg's
  frame threads cost ~35% more CPU per frame here, so this is the stricter baseline);
- extract path: what one Dask task does per sequence (``pipelines.extract.extract_task``):
  decode to gray at the working height, localise, crop, and write the sequence atomically
  into a new store (staged, renamed); the empty-scene background is decoded once per clip.
  Timed twice: frames stored with zstd (the default) and raw (``--frames-codec none``).

Each is timed ``--repeat`` times in alternation and the best time is kept, so a busy machine
hurts all alike. The path is also broken down (decode+gray, localise+crop, the store write
with either frames codec) to show where the time goes, and the multi-person tracker alone
(blobs -> tracks, frames per CPU-second). Extraction must stay at least 10x cheaper per
frame than compute-flow: OpenCV's DualTVL1 on working-height frame pairs is timed at its
default settings and at the cheap ``--quick`` settings of benchmarks/casia_b_sil_090.py,
and the ratios printed. ``--workers N`` adds a full
``run_extract`` on a LocalCluster of N processes, reported per core. The goal: the extract
path at least half the frames/s of bare decoding. CPU seconds are the per-core measure; wall
seconds include waiting on the file system (see ``--store-dir``; ``GAITTOOLS_FSYNC=1`` adds
fsync).
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numcodecs
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gaittools.person.extract import ExtractOptions, extract_sequence, load_background  # noqa: E402
from gaittools.sources.discover import discover  # noqa: E402
from gaittools.store.zarr_store import TIME_CHUNKS, ZSTD_LEVELS, Store  # noqa: E402
from gaittools.sources.video import open_capture  # noqa: E402
from pipelines.extract import extract_task, run_extract  # noqa: E402

DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "casia-b-mini" / "videos"


class Clock:
    """Wall and CPU seconds (all threads of this process) of a block."""

    def __enter__(self) -> "Clock":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def bare_decode(paths: list[Path]) -> tuple[int, Clock]:
    n = 0
    with Clock() as clock:
        for p in paths:
            cap = open_capture(p)  # the same decoder settings as extract-frames: one thread
            while cap.read()[0]:
                n += 1
            cap.release()
    return n, clock


def extract_path(found, store_path: Path, options: ExtractOptions) -> tuple[int, Clock]:
    """Into a new store each time, as a first run writes (no old sequences to replace)."""
    shutil.rmtree(store_path, ignore_errors=True)
    Store.create(store_path, found.dataset)
    n = 0
    backgrounds = {}
    with Clock() as clock:
        for seq in found.sequences:
            if seq.background is not None and seq.background not in backgrounds:
                backgrounds[seq.background] = load_background(seq.background)
            r = extract_task(str(store_path), seq, options, False, backgrounds.get(seq.background))
            if not r.ok:
                raise SystemExit(f"extract failed: {r.error}")
            n += r.n_frames
    return n, clock


PARTS = ("decode + gray", "localise + crop", "store write, frames zstd", "store write, frames raw")


def frames_zstd_seconds(found, repeat: int) -> float:
    """Best CPU seconds to zstd-compress every sequence's frames as the store does, and only
    that: with the bare decode it bounds the best ratio a store of zstd frames can reach."""
    from gaittools.sources.video import decode

    frames = [decode(seq.path).frames for seq in found.sequences]
    codec = numcodecs.Zstd(level=ZSTD_LEVELS["frames"])
    rows = TIME_CHUNKS["frames"]
    best = float("inf")
    for _ in range(repeat):
        with Clock() as clock:
            for f in frames:
                for start in range(0, len(f), rows):
                    codec.encode(np.ascontiguousarray(f[start:start + rows]))
        best = min(best, clock.cpu)
    return best


def breakdown(found, store_path: Path, repeat: int) -> dict[str, tuple[float, float]]:
    """Best (wall, cpu) seconds of each part of the path, the write with either frames codec."""
    from gaittools.person.extract import localise_and_crop
    from gaittools.sources.video import decode

    backgrounds = {s.background: load_background(s.background) for s in found.sequences if s.background}
    results = [extract_sequence(seq, ExtractOptions(), backgrounds.get(seq.background)) for seq in found.sequences]
    best = {k: [float("inf"), float("inf")] for k in PARTS}
    for _ in range(repeat):
        stores = {}
        for codec in ("zstd", "raw"):
            shutil.rmtree(store_path / codec, ignore_errors=True)
            stores[codec] = Store.create(store_path / codec, found.dataset)
        total = {k: [0.0, 0.0] for k in best}
        for seq, result in zip(found.sequences, results):
            bg = backgrounds.get(seq.background)
            with Clock() as c1:
                frames = decode(seq.path).frames
            with Clock() as c2:
                localise_and_crop(frames, bg)
            with Clock() as c3:
                stores["zstd"].write_sequence(seq.seq_id, result.arrays, result.attrs)
            with Clock() as c4:
                stores["raw"].write_sequence(seq.seq_id, result.arrays, result.attrs, zstd_levels={"frames": None})
            for k, c in zip(PARTS, (c1, c2, c3, c4)):
                total[k][0] += c.wall
                total[k][1] += c.cpu
        for k in best:
            best[k] = [min(best[k][0], total[k][0]), min(best[k][1], total[k][1])]
    return {k: (v[0], v[1]) for k, v in best.items()}


def tracker_seconds(found, repeat: int) -> tuple[int, float]:
    """Frames and best CPU seconds of the tracker alone (``track_boxes`` on every sequence's
    blobs, computed once beforehand)."""
    from gaittools.person.blobs import frame_blobs
    from gaittools.person.foreground import clean_packed, foreground, shrink
    from gaittools.person.localise import LocaliseParams
    from gaittools.person.tracking import track_boxes
    from gaittools.sources.video import decode

    p = LocaliseParams()
    per_sequence = []
    for seq in found.sequences:
        small = shrink(decode(seq.path).frames, p.analysis_height)
        masks = clean_packed(foreground(small, None)[0], small.shape[2])
        per_sequence.append((frame_blobs(masks, small.shape[2], p.min_area, p.min_height), small.shape[1:]))
    best = float("inf")
    for _ in range(repeat):
        with Clock() as clock:
            for blobs, size in per_sequence:
                track_boxes(blobs, p.tracker, size)
        best = min(best, clock.cpu)
    return sum(len(b) for b, _ in per_sequence), best


def flow_seconds_per_pair(found, pairs: int, cheap: bool) -> float:
    """CPU seconds of OpenCV's DualTVL1 per working-height frame pair (what compute-flow
    runs on the CPU), at OpenCV's defaults or at the cheap preset (casia_b_sil_090's --quick and --cpu)."""
    from gaittools.flow.opencv_backend import opencv_pair
    from gaittools.flow.params import preset
    from gaittools.sources.video import decode

    params = preset("cheap" if cheap else "default")
    frames = decode(found.sequences[0].path).frames
    ts = np.linspace(0, len(frames) - 2, pairs).round().astype(int)
    with Clock() as clock:
        for t in ts:
            opencv_pair(frames[t], frames[t + 1], params)
    return clock.cpu / len(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="a CASIA-B-named video folder")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="also time run_extract on N local workers")
    ap.add_argument("--store-dir", type=Path, default=None, help="where the scratch stores go")
    args = ap.parse_args()
    if not args.source.is_dir():
        raise SystemExit(f"{args.source}: no such folder (try gaittools synth OUT, then --source OUT/videos)")
    if args.store_dir is not None and not args.store_dir.is_dir():
        ap.error(f"--store-dir {args.store_dir}: no such folder (create it first, or leave it out "
                 "for the system's temporary folder)")
    cv2.setNumThreads(1)
    found = discover(args.source, "auto")
    paths = [s.path for s in found.sequences]
    scratch = Path(tempfile.mkdtemp(prefix="extract-bench-", dir=args.store_dir))
    runs = {
        "bare decode": lambda: bare_decode(paths),
        "extract path, frames zstd": lambda: extract_path(found, scratch / "store", ExtractOptions()),
        "extract path, frames raw": lambda: extract_path(found, scratch / "store", ExtractOptions(frames_codec="none")),
    }
    try:
        wall = {name: float("inf") for name in runs}
        cpu = dict(wall)
        frames = {}
        runs["extract path, frames zstd"]()  # warm the page cache and imports once
        for _ in range(args.repeat):
            for name, run in runs.items():
                frames[name], clock = run()
                wall[name], cpu[name] = min(wall[name], clock.wall), min(cpu[name], clock.cpu)
        parts = breakdown(found, scratch / "parts", args.repeat)
        zstd_only = frames_zstd_seconds(found, args.repeat)
        base_wall = frames["bare decode"] / wall["bare decode"]
        base_cpu = frames["bare decode"] / cpu["bare decode"]
        print(f"{len(paths)} sequences from {args.source}, {frames['bare decode']} frames; "
              f"one core, best of {args.repeat}; stores in {scratch}")
        print(f"{'path':<34}{'wall s':>8}{'frames/s':>10}{'ratio':>7}{'cpu s':>8}{'frames/cpu-s':>14}{'ratio':>7}")
        for name in runs:
            fw, fc = frames[name] / wall[name], frames[name] / cpu[name]
            print(f"{name:<34}{wall[name]:>8.3f}{fw:>10.0f}{fw / base_wall:>7.2f}"
                  f"{cpu[name]:>8.3f}{fc:>14.0f}{fc / base_cpu:>7.2f}")
        for name, (w, c) in parts.items():
            print(f"  {'of which ' + name:<32}{w:>8.3f}{frames['bare decode'] / w:>10.0f}{'':>7}"
                  f"{c:>8.3f}{frames['bare decode'] / max(c, 1e-9):>14.0f}")
        floor = cpu["bare decode"] / (cpu["bare decode"] + zstd_only)
        print(f"  {'zstd of the frames alone':<32}{'':>8}{'':>10}{'':>7}{zstd_only:>8.3f}"
              f"{frames['bare decode'] / zstd_only:>14.0f}   -> with zstd frames the cpu ratio "
              f"cannot exceed {floor:.2f}")
        tracked, tracker_cpu = tracker_seconds(found, args.repeat)
        print(f"  {'of which the tracker alone':<32}{'':>8}{'':>10}{'':>7}{tracker_cpu:>8.3f}"
              f"{tracked / max(tracker_cpu, 1e-9):>14.0f}")
        per_frame = cpu["extract path, frames zstd"] / frames["extract path, frames zstd"]
        for cheap, pairs in ((False, 3), (True, 10)):
            flow = flow_seconds_per_pair(found, pairs, cheap)
            label = "cheap --quick" if cheap else "OpenCV default"
            print(f"compute-flow (DualTVL1 {label}) {flow:.3f} cpu s/pair: extraction is "
                  f"{flow / per_frame:.0f}x cheaper per frame"
                  + ("" if cheap else f" (goal >= 10x: {'met' if flow / per_frame >= 10 else 'NOT met'})"))
        if args.workers:
            dask_store = scratch / "dask-store"
            start = time.perf_counter()
            summary = run_extract(args.source, dask_store, workers=args.workers, stream=io.StringIO())
            secs = time.perf_counter() - start
            fps = summary.frames / secs / args.workers
            print(f"{f'run_extract, {args.workers} workers':<34}{secs:>8.3f}{fps:>10.0f}{fps / base_wall:>7.2f}"
                  "   (wall, per worker; includes cluster start-up)")
        for name in list(runs)[1:]:
            for kind, ratio in (("wall", frames[name] / wall[name] / base_wall),
                                ("cpu", frames[name] / cpu[name] / base_cpu)):
                print(f"goal: {name} >= 0.5 x bare decode ({kind}): "
                      f"{'met' if ratio >= 0.5 else 'NOT met'} ({ratio:.2f})")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
