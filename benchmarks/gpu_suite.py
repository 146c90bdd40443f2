"""Everything a GPU call must measure, in one run (issue 15): one JSON and one Markdown report.

Why one script: device time is scarce (15 minutes a session, start-up included; one call
carries at most 64 MiB), so the first call must measure, not debug. Each section runs on its
own; a failure is recorded with its message and the next section still runs.

Sections:

- ``tvl1``: TV-L1 pairs/s at 320x240 and 64x64 for both engines (reference, fused) and the
  fused engine replaying CUDA graphs (``fused-graphs``, behind ``--cuda-graphs`` until this
  measures it), with the mean EPE against OpenCV DualTVL1 reference flows. The GPU image has no opencv-contrib, so
  they are made on the CPU machine (``--make-references``, from ``gaittools synth``, with
  OpenCV's pairs/s there) into the ignored ``.device/reference_flows`` and carried to the
  device call; generated data, never committed. Where OpenCV is installed a missing set is
  made on the spot;
- ``compute_flow``: the whole ``compute-flow`` path on a CASIA-B-sized synthetic slice
  (``benchmarks.compute_flow_speed``): pairs/s, TV-L1 busy fraction, the TV-L1 stream's ticks,
  pairs per tick and slot occupancy, implied hours for CASIA-B; for each schedule of the
  TV-L1 stream (cohorts, the default; batch, ``refill=False``; eager: whether a real device is
  launch-bound or full decides between them, see ``benchmarks/stream_schedule.py``), and with
  CUDA graphs;
- ``training``: clips/s of master and students, random input vs device-resident data, bf16
  (the CPU's per-family speeds are ``benchmarks.train_speed``'s);
- ``resume``: a master run stopped after a checkpoint and resumed on the device repeats the
  uninterrupted run (RNG state, ``cuda`` without an index, checkpoint mapping);
- ``export``: the student as ONNX, torch.export and TensorRT bundles: parity and clips/s.

    python -m benchmarks.gpu_suite                        # on the GPU machine (< 5 minutes)
    python -m benchmarks.gpu_suite --device cpu --tiny    # CI: every section, seconds
    python -m benchmarks.gpu_suite --make-references      # CPU machine: .device/reference_flows
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Generated, ignored by git (``/.device/``), carried to the device call.
REFERENCES = Path(__file__).resolve().parents[1] / ".device" / "reference_flows"
RESULTS = Path(__file__).resolve().parent / "results"
#: Reference pairs per size: few and small, they travel with every device call.
REFERENCE_PAIRS = {"320x240": 2, "64x64": 4}
#: TV-L1 with a short schedule: --tiny runs on a CPU in seconds (EPE is then only a sanity check).
TINY_TVL1 = {"nscales": 2, "warps": 1, "outer_iterations": 2, "inner_iterations": 10}


@dataclass
class Settings:
    """How big each section is: the GPU run, or ``--tiny`` (CI on a CPU)."""

    device: str
    tiny: bool
    work: Path
    references: Path = REFERENCES

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


#: The 3D models timed on the device: the master and the authors' smallest and largest students
#: (the tiny CI run times the first two at tiny widths).
SPEED_MODELS: tuple[str, ...] = ("master3d", "student3d-small", "student3d-large")


# ---------------------------------------------------------------------------- references
def make_references(out: Path = REFERENCES, workdir: Path | None = None) -> dict[str, Any]:
    """Frame pairs from ``gaittools synth`` (one CASIA-B-like walk, 320x240) and their OpenCV
    DualTVL1 flows (defaults) as PNG + ``.flo``; 64x64 pairs are person-centred crops of it."""
    import cv2
    import pandas as pd
    from click.testing import CliRunner

    from gaittools.cli.main import main as gaittools_main
    from gaittools.person.crop import crop_frames
    from gaittools.flow import TVL1Params, opencv_tvl1
    from gaittools.flow.flo import write_flo
    from gaittools.sources.video import decode

    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="gpu-suite-refs-") as tmp:
            return make_references(out, Path(tmp))
    synth = workdir / "synth"
    result = CliRunner().invoke(gaittools_main, ["synth", str(synth), "--subjects", "1", "--walks", "nm-01",
                                                 "--views", "090", "--frames", "12", "--workers", "1"])
    if result.exit_code != 0:
        raise RuntimeError(f"gaittools synth failed: {result.output[-500:]}")
    frames = decode(synth / "videos" / "001-nm-01-090.avi").frames
    boxes = pd.read_parquet(synth / "ground_truth" / "boxes.parquet").sort_values("frame")
    box = boxes[["x0", "y0", "x1", "y1"]].to_numpy(np.float32)
    side = box[:, 3] - box[:, 1]
    cx = (box[:, 0] + box[:, 2]) / 2
    windows = np.stack([cx - side / 2, box[:, 1], cx + side / 2, box[:, 3]], 1).round().astype(np.float32)
    crops = crop_frames(frames, windows, 64)
    sources = {"320x240": (frames, [4, 6]), "64x64": (crops, [3, 5, 7, 9])}
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"made_by": "benchmarks/gpu_suite.py --make-references",
                            "source": "gaittools synth --subjects 1 --walks nm-01 --views 090 --frames 12 "
                                      "(320x240); 64x64: person-centred crops of the same frames",
                            "params": "OpenCV DualTVL1 defaults (TVL1Params())", "opencv": cv2.__version__,
                            "cpu": platform.processor() or platform.machine(), "sizes": {}}
    for size, (images, starts) in sources.items():
        i0 = np.stack([images[t] for t in starts])
        i1 = np.stack([images[t + 1] for t in starts])
        cv2.setNumThreads(1)
        opencv_tvl1(i0[:1], i1[:1])  # warm
        t0 = time.process_time()  # CPU time of one thread: a shared, busy machine does not skew it
        flows = opencv_tvl1(i0, i1, TVL1Params())
        rate = len(i0) / (time.process_time() - t0)
        for k in range(len(starts)):
            cv2.imwrite(str(out / f"{size}_{k}_0.png"), i0[k])
            cv2.imwrite(str(out / f"{size}_{k}_1.png"), i1[k])
            write_flo(out / f"{size}_{k}.flo", flows[k])
        meta["sizes"][size] = {"pairs": len(starts), "opencv_pairs_per_s_one_thread": round(rate, 2),
                              "timing": "CPU time of one OpenCV thread"}
    (out / "references.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def ensure_references(root: Path) -> dict[str, Any]:
    """The references' metadata; made here when absent and OpenCV's contrib module is there
    (CPU machines, CI), else a clear error saying to make them and carry them."""
    meta = root / "references.json"
    if not meta.is_file():
        try:
            import cv2
            has_tvl1 = hasattr(cv2, "optflow")
        except ImportError:
            has_tvl1 = False
        if not has_tvl1:
            raise FileNotFoundError(f"{meta}: no reference flows and no OpenCV DualTVL1 here; run "
                                    "`python -m benchmarks.gpu_suite --make-references` on the CPU "
                                    f"machine and carry {root}")
        print(f"[gpu-suite] making the OpenCV reference flows in {root}", flush=True)
        make_references(root)
    return json.loads(meta.read_text())


def load_references(size: str, root: Path = REFERENCES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(I0, I1, OpenCV flow) stacks of the stored pairs of one size; a clear error if absent."""
    import cv2

    from gaittools.flow.flo import read_flo

    n = REFERENCE_PAIRS[size]
    paths = [root / f"{size}_{k}.flo" for k in range(n)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: reference flow missing; run "
                                "`python -m benchmarks.gpu_suite --make-references` where OpenCV is")
    i0 = np.stack([cv2.imread(str(root / f"{size}_{k}_0.png"), cv2.IMREAD_GRAYSCALE) for k in range(n)])
    i1 = np.stack([cv2.imread(str(root / f"{size}_{k}_1.png"), cv2.IMREAD_GRAYSCALE) for k in range(n)])
    return i0, i1, np.stack([read_flo(p) for p in paths])


# ---------------------------------------------------------------------------- sections
def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def section_tvl1(s: Settings) -> list[dict[str, Any]]:
    import torch

    from gaittools.flow import TVL1Params, tvl1
    from gaittools.flow.flo import endpoint_error
    from gaittools.flow.tvl1_torch import pick_engine

    params = TVL1Params(**TINY_TVL1) if s.tiny else TVL1Params()
    meta = ensure_references(s.references)
    rows = []
    sizes = ["64x64"] if s.tiny else ["320x240", "64x64"]
    for size in sizes:
        i0, i1, ref = load_references(size, s.references)
        n = len(i0) if s.tiny else (256 if size == "320x240" else 2048)
        reps = math.ceil(n / len(i0))
        f0 = torch.from_numpy(np.tile(i0, (reps, 1, 1))[:n]).to(s.device)
        f1 = torch.from_numpy(np.tile(i1, (reps, 1, 1))[:n]).to(s.device)
        for wanted in ("reference", "fused", "fused-graphs"):
            row: dict[str, Any] = {"size": size, "engine": wanted, "pairs": n,
                                   "opencv_cpu_pairs_per_s": meta["sizes"][size]["opencv_pairs_per_s_one_thread"]}
            try:
                engine = pick_engine(torch.device(s.device), params, wanted.split("-")[0],
                                     cuda_graphs=wanted == "fused-graphs")
            except RuntimeError as exc:
                rows.append({**row, "status": "skipped", "note": str(exc)})
                continue
            tvl1(f0[:2], f1[:2], params, engine=engine)  # compile kernels, warm caches
            _sync(s.device)
            t0 = time.perf_counter()
            flow = tvl1(f0, f1, params, engine=engine)
            _sync(s.device)
            seconds = time.perf_counter() - t0
            ours = flow[:len(i0)].cpu().numpy()
            epe = float(np.mean([endpoint_error(ours[k], ref[k]) for k in range(len(i0))]))
            still = float(np.mean([endpoint_error(np.zeros_like(ref[k]), ref[k]) for k in range(len(i0))]))
            rows.append({**row, "status": "ok", "pairs_per_s": round(n / seconds, 2), "epe_vs_opencv": round(epe, 4),
                         "epe_of_zero_flow": round(still, 4), "params": "tiny" if s.tiny else "OpenCV defaults"})
    return rows


def section_compute_flow(s: Settings) -> list[dict[str, Any]]:
    from benchmarks.compute_flow_speed import CASIA_B_PAIRS, make_store, run_path
    from pipelines.compute_flow import FlowRun

    n_seqs, n_frames, (width, height) = (2, 4, (96, 72)) if s.tiny else (120, 100, (320, 240))
    params = TINY_TVL1 if s.tiny else {}
    rows = []
    # the stream's schedules (counted on the CPU, timed here), and CUDA graphs (a flag until measured)
    for schedule, graphs in (("cohorts", False), ("batch", False), ("eager", False), ("cohorts", True)):
        row: dict[str, Any] = {"sequences": n_seqs, "frames": n_frames, "size": f"{width}x{height}",
                               "schedule": schedule, "cuda_graphs": graphs}
        if graphs and not s.cuda:
            rows.append({**row, "status": "skipped", "note": "CUDA graphs need a CUDA device"})
            continue
        name = f"cf-{schedule}-{int(graphs)}"
        make_store(s.work / f"{name}-warm", 1, 3, width, height, seed=9)
        make_store(s.work / name, n_seqs, n_frames, width, height)
        run = FlowRun(device=s.device, params=params, readers=1 if s.tiny else 8, cuda_graphs=graphs, refill=schedule)
        run_path(s.work / f"{name}-warm", run)
        seconds, pairs, report = run_path(s.work / name, run)
        stats = report.engine
        steady = stats.pairs / stats.wall_seconds
        rows.append({**row, "status": "ok", "engine": stats.engine, "pairs": pairs, "wall_s": round(seconds, 2),
                     "pairs_per_s": round(steady, 2), "busy_fraction": round(stats.busy_fraction, 3),
                     "largest_batch": stats.largest_batch, "ticks": stats.stream.ticks,
                     "pairs_per_tick": round(stats.stream.pairs_per_tick, 2),
                     "slot_occupancy": round(stats.stream.occupancy, 3),
                     "casia_b_hours": round(CASIA_B_PAIRS / steady / 3600, 2),
                     "params": "tiny" if s.tiny else "OpenCV defaults"})
    return rows


def _toy(s: Settings) -> tuple[Path, Path]:
    """``work/toy/store`` and ``work/toy/split`` of synthetic walkers (``gaittools.synth.toystore``),
    made once: 8 training subjects x nm-01/02, 45 frames, 64 px (tiny: 4 subjects, 30 frames, 52 px)."""
    from gaittools.synth.toystore import write_toy

    root = s.work / "toy"
    if not (root / "split" / "split.parquet").is_file():
        shutil.rmtree(root, ignore_errors=True)  # what a killed run left
        write_toy(root, subjects=6 if s.tiny else 12, train_subjects=4 if s.tiny else 8, walks=("nm-01", "nm-02"),
                  gallery=("nm-01",), probes={"NM": ("nm-02",)}, frames=30 if s.tiny else 45,
                  crop_size=52 if s.tiny else 64)
    return root / "store", root / "split"


#: 3D widths of the tiny (CI) training section.
TINY_WIDTHS = [4, 8, 16, 16, 32, 32]


def _clip_model(name: str, tiny: bool, n_classes: int) -> Any:
    """A registered 3D model, or the tiny-width ``c3d`` with its input channels (CI)."""
    from training.config import ModelConfig
    from training.model_build import build_net

    if tiny:
        channels = 2 if name in ("master3d", "gaitset-flow") else 1
        return build_net(ModelConfig("c3d", 64, {"in_channels": channels, "widths": TINY_WIDTHS}), n_classes)
    return build_net(ModelConfig(name, 1024 if "3d" in name else 7936, {}), n_classes)


def _clips_per_s(model: Any, batches: Any, n_steps: int, warmup: int, device: Any, input_size: int) -> float:
    """Clips/s of full training steps (augment, bf16 autocast on CUDA, CE + triplet, Adam) over
    ``n_steps`` after ``warmup``: the data path's cost shows between random and resident batches.
    (The CPU's per-family speeds are ``benchmarks.train_speed``'s.)"""
    import torch

    from training.data import AugmentParams, augment
    from training.losses import LossSet
    from training.trainer import is_3d

    losses = LossSet({"ce": 1.0, "triplet": 1.0})
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    channels_last = is_3d(model)
    done, t0 = 0, time.perf_counter()
    for i, raw in enumerate(batches):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, done = time.perf_counter(), 0
        aug = AugmentParams.draw(len(raw.clip), 0, i, 5.0, 0.04, True, input_size)
        x = augment(raw.x, aug, input_size, 0.25)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(x)
        loss, _ = losses({k: v.float() for k, v in out.items()}, labels=raw.label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += len(raw.clip)
        if i + 1 >= warmup + n_steps:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - t0)


def section_training(s: Settings) -> list[dict[str, Any]]:
    import torch

    from gaittools.store.zarr_store import Store
    from training.clips import build_clip_index, read_split
    from training.data import PKBatchSampler, ResidentClips, crop_size, iterate_batches
    from training.model_build import model_modality
    from training.trainer import is_3d

    store, split = _toy(s)
    clips = build_clip_index(Store(store), read_split(split), 25, 5)
    device = torch.device(s.device)
    P, K, steps, warmup = (4, 2, 2, 1) if s.tiny else (8, 4, 20, 3)
    models = SPEED_MODELS[:2] if s.tiny else SPEED_MODELS
    rows = []
    for name in models:
        model = _clip_model(name, s.tiny, int(clips["label"].nunique())).to(device)
        if is_3d(model):
            model.to(memory_format=torch.channels_last_3d)
        modality = model_modality(model)
        size = crop_size(str(store), clips["seq_id"].iloc[0], modality)
        row: dict[str, Any] = {"status": "ok", "model": name + (" (tiny widths)" if s.tiny else ""),
                               "batch": P * K, "bf16": s.cuda}
        for path in ("random", "resident"):
            sampler = PKBatchSampler(clips["label"].to_numpy(), P, K, 0, 0, warmup + steps)
            source = ResidentClips(str(store), clips, modality, 25, device)
            batches: Any = iterate_batches(source, sampler, device)
            if path == "random":
                first = next(iter(batches))
                x = (torch.randint(0, 256, first.x.shape, dtype=torch.uint8, device=device) if modality == "gray"
                     else torch.randn(first.x.shape, device=device).half())
                batches = (type(first)(x, first.clip, first.label) for _ in range(warmup + steps))
            row[f"{path}_clips_per_s"] = round(_clips_per_s(model, batches, steps, warmup, device, size), 2)
        rows.append(row)
    return rows


def section_resume(s: Settings) -> list[dict[str, Any]]:
    import csv

    import torch

    from training.config import config_from_dict
    from training.tasks import train_master

    store, split = _toy(s)
    widths = [4, 8, 8, 16, 16, 16]
    cfg = config_from_dict({
        "data": {"store": str(store), "split": str(split), "P": 4, "K": 2, "workers": 0, "step": 3},
        "master": {"model": "c3d", "embedding_dim": 32, "options": {"in_channels": 2, "widths": widths}},
        "optim": {"lr": 5e-3, "schedule": "plateau", "plateau_patience": 0},
        "train": {"steps": 4, "ckpt_every": 2, "log_every": 1, "seed": 3,
                  "device": "cuda" if s.cuda else "cpu"},  # "cuda" without an index: defect 5
        "eval": {"batch_size": 8},
    }, "gpu-suite")
    t0 = time.perf_counter()
    full = train_master(cfg, s.work / "resume-full")
    cut = train_master(cfg, s.work / "resume-cut")
    ckdir = cut.path / "checkpoints"
    (ckdir / "step_00000004.pt").unlink()
    (ckdir / "last.txt").write_text("step_00000002.pt")
    resumed = train_master(cfg, s.work / "resume-cut", resume=True)

    def losses(path: Path) -> list[float]:
        with open(path / "metrics.csv") as f:
            return [float(r["loss"]) for r in csv.DictReader(f)]

    a = torch.load(full.path / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(resumed.path / "model.pt", weights_only=False)["state_dict"]
    same_weights = all(torch.equal(a[k], b[k]) for k in a)
    same_losses = losses(full.path) == losses(resumed.path)
    return [{"status": "ok" if same_weights and same_losses else "failed", "device": cfg.train.device,
             "same_losses": same_losses, "same_weights": same_weights,
             "seconds": round(time.perf_counter() - t0, 2)}]


def section_export(s: Settings) -> list[dict[str, Any]]:
    from gaittools.deploy import runtime as deploy
    from training import export as ex
    from training.config import ModelConfig
    from training.model_build import build_net

    widths = [4, 8, 8, 16, 16, 16]
    model_cfg = ModelConfig("c3d", 32, {"in_channels": 1, "widths": widths}) if s.tiny else \
        ModelConfig("student3d-small", 1024, {})
    model = build_net(model_cfg, 0).eval()
    n, batch = (4, 2) if s.tiny else (64, 32)
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (n, 25, 64, 64), dtype=np.uint8)
    rows = []
    for fmt in ("onnx", "exported-program", "tensorrt"):
        device = s.device if fmt != "onnx" or not s.cuda else "cuda"
        row: dict[str, Any] = {"format": fmt, "model": model_cfg.model}
        try:
            bundle = ex.export_bundle(model, s.work / f"export-{fmt}", fmt, clips, "random clips",
                                      model_name=model_cfg.model, clip={"length": 25, "step": 5, "crop_size": 64},
                                      device=device, log=lambda _line: None)
        except ex.ExportError as exc:
            if fmt == "tensorrt" and ("torch-tensorrt" in str(exc) or "CUDA" in str(exc)):
                rows.append({**row, "status": "skipped", "note": str(exc)[:200]})
                continue
            raise
        loaded = deploy.load_signature_model(bundle.root, device=device, batch_size=batch)
        loaded(clips[:batch])  # warm
        t0 = time.perf_counter()
        loaded(clips)
        rate = n / (time.perf_counter() - t0)
        parity = bundle.meta["parity"]
        rows.append({**row, "status": "ok", "device": loaded.device, "min_cosine": round(parity["min_cosine"], 6),
                     "clips_per_s": round(rate, 2), "file_mb": round(bundle.meta["file_size"] / 2**20, 2)})
    return rows


SECTIONS: dict[str, Callable[[Settings], list[dict[str, Any]]]] = {
    "tvl1": section_tvl1, "compute_flow": section_compute_flow, "training": section_training,
    "resume": section_resume, "export": section_export,
}


# ---------------------------------------------------------------------------- reports
def run_suite(s: Settings, only: list[str] | None = None,
              after_section: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
    """Every section (or ``only`` these); ``after_section`` gets the report so far after each
    one, so that a device call cut off by its time limit still brings the finished sections back."""
    import torch

    report: dict[str, Any] = {
        "device": s.device, "device_name": torch.cuda.get_device_name() if s.cuda else platform.processor() or "cpu",
        "torch": torch.__version__, "tiny": s.tiny, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "sections": {},
        "seconds": 0.0}
    for name, section in SECTIONS.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        try:
            rows = section(s)
            status = "failed" if any(r.get("status") == "failed" for r in rows) else "ok"
            entry: dict[str, Any] = {"status": status, "rows": rows}
        except Exception as exc:  # noqa: BLE001 - one section's failure is a result, the others still run
            entry = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc()[-3000:], "rows": []}
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        report["sections"][name] = entry
        print(f"[gpu-suite] {name}: {entry['status']} in {entry['seconds']} s"
              + (f" ({entry['error']})" if "error" in entry else ""), flush=True)
        report["seconds"] = round(sum(e["seconds"] for e in report["sections"].values()), 2)
        if after_section is not None:
            after_section(report)
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# GPU suite: {report['device_name']} ({report['device']}), torch {report['torch']}"
             + (" — tiny settings" if report["tiny"] else ""), "",
             f"Started {report['started']}, {report['seconds']} s in all.", ""]
    for name, entry in report["sections"].items():
        lines += [f"## {name}: {entry['status']} ({entry['seconds']} s)", ""]
        if "error" in entry:
            lines += [f"Error: `{entry['error']}`", ""]
        rows = entry["rows"]
        if rows:
            keys = list(dict.fromkeys(k for r in rows for k in r))
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
            lines.append("")
    return "\n".join(lines)


def write_reports(report: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu_suite-{report['device'].replace(':', '')}{'-tiny' if report['tiny'] else ''}"
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["md"].write_text(markdown(report) + "\n")
    return paths


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="every section at toy size (CI on a CPU)")
    ap.add_argument("--only", default=None, help=f"comma-separated sections of {', '.join(SECTIONS)}")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and Markdown reports go")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    ap.add_argument("--references", type=Path, default=REFERENCES,
                    help="folder of the OpenCV reference flows (default: the ignored .device/reference_flows)")
    ap.add_argument("--make-references", action="store_true", help="(re)build the reference flows there (OpenCV)")
    args = ap.parse_args(argv)
    if args.make_references:
        print(json.dumps(make_references(args.references), indent=2))
        return {}
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA GPU")
    if not args.device.startswith("cuda"):
        torch.set_num_threads(min(2, torch.get_num_threads()))
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-suite-"))
    try:
        report = run_suite(Settings(args.device, args.tiny, work, args.references),
                           args.only.split(",") if args.only else None,
                           after_section=lambda partial: write_reports(partial, args.out))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    paths = write_reports(report, args.out)
    print(f"[gpu-suite] wrote {paths['json']} and {paths['md']}")
    return report


if __name__ == "__main__":
    main()
