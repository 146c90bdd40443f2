"""Flow-free inference (the gray student) against the master path (TV-L1 flow + master), one run.

Measures on ``--device``, from the same real frames (a CASIA-B clip from ../shared/data when
present, else a synthetic walker):

- student signatures per second: eager, ``torch.compile``, ONNX Runtime, and TensorRT where
  torch-tensorrt and CUDA are there (the last three are real exports with the parity check);
- the master path: TV-L1 flow on the device (``gaittools.flow.tvl1``) of whole working-
  resolution frames, cropped to 64 x 64 windows (``gaittools.flow.crop``), then the master;
- the shared front end both paths need (decode + localise + crop, CPU), once per sequence.

and prints clips/s and the speed-ups, per clip (a clip needs 24 flow pairs of its own) and per
sequence (``--seq-frames`` frames: pairs are computed once and shared by overlapping clips,
clips every 5 frames), with and without the front end, plus parameter counts and file sizes.

On this CPU machine (small settings; reduced TV-L1 iterations are said in the output)::

    python benchmarks/inference_speed.py --device cpu --batch 4 --repeats 2 --flow-pairs 2 \\
        --tvl1 nscales=3 --tvl1 warps=2 --tvl1 outer_iterations=4 --no-compile

On a GPU machine (OpenCV's TV-L1 defaults; bf16 for the networks)::

    python benchmarks/inference_speed.py --device cuda --batch 256 --repeats 20 --flow-pairs 480 --bf16
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gaittools.deploy import runtime as deploy  # noqa: E402
from training.export import export_bundle  # noqa: E402
from training.models import build_model, count_parameters  # noqa: E402

REAL_VIDEO = ROOT.parent / "shared" / "data" / "casia-b-mini" / "videos" / "001-nm-01-090.avi"
CLIP_LEN, STEP, SIZE = 25, 5, 64


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--student", default="student3d-small")
    ap.add_argument("--master", default="master3d")
    ap.add_argument("--embedding-dim", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8, help="clips per network call")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    ap.add_argument("--flow-pairs", type=int, default=24, help="frame pairs per TV-L1 call")
    ap.add_argument("--tvl1", action="append", default=[], metavar="NAME=VALUE",
                    help="TV-L1 parameter override (default: OpenCV's defaults)")
    ap.add_argument("--seq-frames", type=int, default=100, help="frames of a sequence (CASIA-B ~100)")
    ap.add_argument("--bf16", action="store_true", help="autocast bf16 for eager/compiled nets (CUDA)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to build on CPU)")
    ap.add_argument("--no-onnx", action="store_true")
    return ap.parse_args()


def timed(fn: Callable[[], Any], repeats: int, device: str, warmup: int = 1) -> float:
    """Median seconds of one call (after warm-up), synchronising CUDA around each."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def walking_video(n: int) -> tuple[Path, str]:
    """A real CASIA-B walk, or a synthetic one where the real data is absent."""
    if REAL_VIDEO.is_file():
        return REAL_VIDEO, f"real CASIA-B {REAL_VIDEO.name}"
    from gaittools.synth import generate_dataset

    out = Path(tempfile.mkdtemp(prefix="bench-synth-"))
    generate_dataset(out, subjects=1, walks=["nm-01"], views=("090",), frames=max(n, 30), workers=1)
    return out / "videos" / "001-nm-01-090.avi", "synthetic walker (real clip absent)"


def front_end_seconds(frames: np.ndarray, repeats: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Localise + crop one sequence (decode is measured separately): what both paths share."""
    from gaittools.person.extract import localise_and_crop

    out: dict[str, Any] = {}

    def run() -> None:
        _, windows, gray, _ = localise_and_crop(frames)
        out["windows"], out["gray"] = windows, gray

    seconds = timed(run, max(1, repeats // 2), "cpu", warmup=0)
    return seconds, out["windows"], out["gray"]


def network_rate(model: torch.nn.Module, x: torch.Tensor, args: argparse.Namespace, compile_: bool = False) -> float:
    """Clips/s of ``model`` (eager or compiled) on the batch ``x``."""
    net = torch.compile(model) if compile_ else model
    use_bf16 = args.bf16 and args.device.startswith("cuda")

    def run() -> None:
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=use_bf16):
            net(x)

    return len(x) / timed(run, args.repeats, args.device, warmup=2 if compile_ else 1)


def export_rate(model: torch.nn.Module, fmt: str, clips: np.ndarray, args: argparse.Namespace,
                tmp: Path) -> tuple[float, int, str]:
    """Clips/s of an exported bundle (parity-checked), its file size, and a note."""
    device = args.device
    if fmt == "onnx" and device.startswith("cuda"):
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            device = "cpu"  # CPU-only onnxruntime: measure it where it runs
    try:
        bundle = export_bundle(model, tmp / fmt, fmt, clips[: min(8, len(clips))], "benchmark clips",
                               model_name=args.student, clip={"length": CLIP_LEN, "step": STEP,
                                                              "crop_size": SIZE}, device=device,
                               log=lambda line: print("   ", line))
    except Exception as exc:  # noqa: BLE001 - a missing optional backend is a line, not a crash
        return float("nan"), 0, f"skipped: {exc}"
    loaded = deploy.load_signature_model(bundle.root, device=device, batch_size=args.batch)
    batch = clips[: args.batch]
    return len(batch) / timed(lambda: loaded(batch), args.repeats, "cpu"), bundle.meta["file_size"], loaded.device


def flow_rate(frames: np.ndarray, windows: np.ndarray, args: argparse.Namespace) -> tuple[float, str]:
    """Flow pairs/s: TV-L1 on the device for whole working frames, then the crop to S x S."""
    from gaittools.flow import TVL1Params, tvl1
    from gaittools.flow.crop import crop_flow_torch
    from pipelines.compute_flow import parse_params

    overrides = parse_params(args.tvl1)
    params = TVL1Params(**overrides)
    n = min(args.flow_pairs, len(frames) - 1)
    reps = max(1, -(-args.flow_pairs // n))  # frames are reused when more pairs than frames are asked
    i0 = torch.from_numpy(np.concatenate([frames[:n]] * reps)).to(args.device)
    i1 = torch.from_numpy(np.concatenate([frames[1:n + 1]] * reps)).to(args.device)
    w = np.concatenate([windows[:n]] * reps)
    w = np.where(np.isfinite(w), w, np.nanmedian(windows, axis=0))

    def run() -> None:
        crop_flow_torch(tvl1(i0, i1, params), w, SIZE)

    seconds = timed(run, max(1, args.repeats // 2), args.device, warmup=1 if args.device.startswith("cuda") else 0)
    note = f"TV-L1 {'defaults' if not overrides else overrides} on {len(i0)} pairs of {frames.shape[2]}x{frames.shape[1]}"
    return len(i0) / seconds, note


def opencv_flow_rate(frames: np.ndarray, windows: np.ndarray, args: argparse.Namespace) -> float:
    """Pairs/s of OpenCV's CPU DualTVL1 (one core) + the numpy crop: the CPU master path."""
    from gaittools.flow import TVL1Params, opencv_tvl1
    from gaittools.flow.crop import crop_flow
    from pipelines.compute_flow import parse_params

    params = TVL1Params(**parse_params(args.tvl1))
    n = max(1, min(2, args.flow_pairs, len(frames) - 1))
    w = np.where(np.isfinite(windows[:n]), windows[:n], np.nanmedian(windows, axis=0))

    def run() -> None:
        crop_flow(opencv_tvl1(frames[:n], frames[1:n + 1], params), w, SIZE)

    return n / timed(run, 1, "cpu", warmup=0)


def main() -> None:
    args = parse_args()
    dev = args.device
    torch.manual_seed(0)
    student = build_model(args.student, embedding_dim=args.embedding_dim).eval().to(dev)
    master = build_model(args.master, embedding_dim=args.embedding_dim).eval().to(dev)
    from gaittools.sources.video import decode

    video, source = walking_video(max(args.seq_frames, CLIP_LEN + 1))
    decode_s = timed(lambda: decode(video), 1, "cpu", warmup=0)
    frames = decode(video).frames
    decode_s *= args.seq_frames / len(frames)  # per sequence of --seq-frames frames
    print(f"device {dev}; frames: {source}, {frames.shape[0]} x {frames.shape[2]}x{frames.shape[1]}")
    front_s, windows, gray = front_end_seconds(frames, args.repeats)
    valid = np.isfinite(windows).all(axis=1)
    starts = [s for s in range(0, len(gray) - CLIP_LEN + 1, STEP) if valid[s:s + CLIP_LEN].all()] or [0]
    clips_u8 = np.stack([gray[s:s + CLIP_LEN] for s in starts])
    clips_u8 = np.concatenate([clips_u8] * (-(-args.batch // len(clips_u8))))[: max(args.batch, 8)]
    x_gray = torch.from_numpy(deploy.normalise_clips(clips_u8[: args.batch])).to(dev)
    x_flow = torch.randn(args.batch, 2, CLIP_LEN, SIZE, SIZE, device=dev)

    rates: dict[str, tuple[float, str]] = {}
    rates["student eager"] = (network_rate(student, x_gray, args), "")
    if not args.no_compile:
        rates["student torch.compile"] = (network_rate(student, x_gray, args, compile_=True), "")
    sizes = {"student state_dict fp32": 4 * count_parameters(student), "master state_dict fp32": 4 * count_parameters(master)}
    with tempfile.TemporaryDirectory() as tmp:
        formats = ([] if args.no_onnx else ["onnx"]) + ["tensorrt"]
        for fmt in formats:
            rate, size, note = export_rate(student.float(), fmt, clips_u8, args, Path(tmp))
            rates[f"student {fmt}"] = (rate, note)
            if size:
                sizes[f"student {fmt} file"] = size
    master_rate = network_rate(master, x_flow, args)
    pairs_per_s, flow_note = flow_rate(frames, windows, args)
    opencv_pairs_per_s = opencv_flow_rate(frames, windows, args)

    print(f"\nparameters: student {args.student} {count_parameters(student):,}; master {args.master} "
          f"{count_parameters(master):,} (x{count_parameters(master) / count_parameters(student):.2f})")
    for name, size in sizes.items():
        print(f"  {name:28s} {size / 1e6:8.2f} MB")
    print(f"\nnetworks (batch {args.batch}{', bf16 autocast' if args.bf16 and dev.startswith('cuda') else ''}):")
    for name, (rate, note) in rates.items():
        print(f"  {name:28s} {rate:10.1f} clips/s  {note}")
    print(f"  {'master eager':28s} {master_rate:10.1f} clips/s")
    print(f"  {'TV-L1 (torch) + crop':28s} {pairs_per_s:10.2f} pairs/s   ({flow_note}, on {dev})")
    print(f"  {'TV-L1 (OpenCV CPU) + crop':28s} {opencv_pairs_per_s:10.2f} pairs/s   (one core, same parameters)")
    flow_name = "torch"
    if dev == "cpu" and opencv_pairs_per_s > pairs_per_s:
        pairs_per_s, flow_name = opencv_pairs_per_s, "OpenCV"  # the faster CPU master path: a fair baseline
    print(f"front end (CPU): decode {decode_s:.3f} s/sequence, localise+crop {front_s:.3f} s/sequence "
          f"of {len(frames)} frames")

    best_name, (best, _) = max(((k, v) for k, v in rates.items() if np.isfinite(v[0])), key=lambda kv: kv[1][0])
    master_clip_s = (CLIP_LEN - 1) / pairs_per_s + 1 / master_rate
    print(f"\nmaster path uses the {flow_name} TV-L1 ({pairs_per_s:.2f} pairs/s); student the fastest backend")
    print(f"per clip (24 own flow pairs): master path {master_clip_s * 1e3:.2f} ms, "
          f"student ({best_name}) {1e3 / best:.3f} ms -> x{master_clip_s * best:.1f}")
    n_frames = args.seq_frames
    n_clips = max(1, (n_frames - CLIP_LEN) // STEP + 1)
    master_seq = (n_frames - 1) / pairs_per_s + n_clips / master_rate
    student_seq = n_clips / best
    shared = decode_s + front_s * n_frames / len(frames)
    print(f"per sequence of {n_frames} frames ({n_clips} clips, {n_frames - 1} shared pairs): "
          f"master path {master_seq:.3f} s, student {student_seq:.4f} s -> x{master_seq / student_seq:.1f} "
          f"(networks and flow only)")
    print(f"  end to end with decode+localise+crop ({shared:.3f} s): master {master_seq + shared:.3f} s, "
          f"student {student_seq + shared:.3f} s -> x{(master_seq + shared) / (student_seq + shared):.1f}")


if __name__ == "__main__":
    main()
