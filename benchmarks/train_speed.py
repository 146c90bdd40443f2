"""Training throughput (clips/s) of masters and students, per data path, measured in one run.

Three ways to feed the same model and optimiser step, so the cost of the data path shows:

- ``random``:   a fixed random batch already on the device (the model's ceiling);
- ``loader``:   Zarr -> DataLoader workers -> pinned memory -> device (+ on-device augment);
- ``resident``: the split's clips held in device memory, cut and augmented there.

The issue's goal: real training (loader or resident) within 80% of ``random``.

    python -m benchmarks.train_speed --store S --split D                # real store
    python -m benchmarks.train_speed --toy /tmp/bench --small           # CPU smoke run
    python -m benchmarks.train_speed --models master3d,student3d-small --batch 256 --steps 50

Without ``--store`` a toy store (``gaittools.synth.toystore``: synthetic walkers with TV-L1
flow) is written to ``--toy``. ``--small``
swaps in tiny 3D-CNN widths so the comparison finishes on a CPU in a minute or two.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from training.clips import build_clip_index, read_split
from training.config import ModelConfig
from training.data import (AugmentParams, PKBatchSampler, ResidentClips, ZarrClips, augment, crop_size,
                           iterate_batches, make_loader)
from training.losses import LossSet
from training.model_build import build_net, model_modality
from training.trainer import is_3d

TINY = [4, 8, 16, 16, 32, 32]


def _model(name: str, small: bool, n_classes: int) -> torch.nn.Module:
    if small:
        channels = 2 if name in ("master3d", "gaitset-flow") else 1
        return build_net(ModelConfig("c3d", 64, {"in_channels": channels, "widths": TINY}), n_classes)
    return build_net(ModelConfig(name, 1024 if "3d" in name else 7936, {}), n_classes)


def toy_store(root: Path, tiny: bool = False) -> tuple[Path, Path]:
    """``root/store`` and ``root/split`` of synthetic walkers (``gaittools.synth.toystore``), made
    once: 8 training subjects x nm-01/02, 45 frames, 64 px (tiny: 4 subjects, 30 frames, 52 px)."""
    from gaittools.synth.toystore import write_toy

    if not (root / "split" / "split.parquet").is_file():
        shutil.rmtree(root, ignore_errors=True)  # what a killed run left
        write_toy(root, subjects=6 if tiny else 12, train_subjects=4 if tiny else 8, walks=("nm-01", "nm-02"),
                  gallery=("nm-01",), probes={"NM": ("nm-02",)}, frames=30 if tiny else 45,
                  crop_size=52 if tiny else 64)
    return root / "store", root / "split"


def measure(model: torch.nn.Module, batches, n_steps: int, warmup: int, device: torch.device,
            input_size: int, amp: bool) -> float:
    """Clips/s over ``n_steps`` optimiser steps after ``warmup`` steps."""
    losses = LossSet({"ce": 1.0, "triplet": 1.0})
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    cl = is_3d(model)
    done, t0 = 0, None
    for i, raw in enumerate(batches):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, done = time.perf_counter(), 0
        aug = AugmentParams.draw(len(raw.clip), 0, i, 5.0, 0.04, True, input_size)
        x = augment(raw.x, aug, input_size, 0.25)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store")
    ap.add_argument("--split")
    ap.add_argument("--toy", default="/tmp/train-speed-toy")
    ap.add_argument("--models", default="master3d,student3d-small")
    ap.add_argument("--paths", default="random,loader,resident")
    ap.add_argument("--P", type=int, default=8)
    ap.add_argument("--K", type=int, default=4)
    ap.add_argument("--batch", type=int, default=None, help="P x K total (overrides P, K=4)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--clip-len", type=int, default=25)
    ap.add_argument("--small", action="store_true", help="tiny widths (CPU smoke run)")
    ap.add_argument("--no-amp", action="store_true")
    args = ap.parse_args()
    if args.batch:
        args.P, args.K = max(2, args.batch // 4), 4
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    store, split = args.store, args.split
    if not store:
        store, split = (str(p) for p in toy_store(Path(args.toy)))
    from gaittools.store.zarr_store import Store

    clips = build_clip_index(Store(store), read_split(split), args.clip_len, 5)
    n_classes = int(clips["label"].nunique())
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
          f"{len(clips)} clips, batch {args.P}x{args.K}, {args.steps} timed steps", flush=True)
    rows = []
    for name in args.models.split(","):
        model = _model(name, args.small, n_classes).to(device)
        if is_3d(model):
            model.to(memory_format=torch.channels_last_3d)
        modality = model_modality(model)
        size = crop_size(store, clips["seq_id"].iloc[0], modality)
        total = args.warmup + args.steps
        result = {"model": name + (" (tiny)" if args.small else "")}
        for path in args.paths.split(","):
            sampler = PKBatchSampler(clips["label"].to_numpy(), args.P, args.K, 0, 0, total)
            if path == "random":
                first = next(iter(iterate_batches(ResidentClips(store, clips, modality, args.clip_len, device),
                                                  sampler, device)))
                rnd = (torch.randint(0, 256, first.x.shape, dtype=torch.uint8, device=device) if modality == "gray"
                       else torch.randn(first.x.shape, device=device).half())
                batches = (type(first)(rnd, first.clip, first.label) for _ in range(total))
            elif path == "resident":
                batches = iterate_batches(ResidentClips(store, clips, modality, args.clip_len, device), sampler,
                                          device)
            else:
                loader = make_loader(ZarrClips(store, clips, modality, args.clip_len), sampler, args.workers,
                                     pin_memory=device.type == "cuda")
                batches = iterate_batches(loader, sampler, device)
            result[path] = measure(model, batches, args.steps, args.warmup, device, size, not args.no_amp)
            print(f"  {result['model']:<24} {path:<9} {result[path]:9.1f} clips/s", flush=True)
        rows.append(result)
    print(f"\n{'clips/s':<25}" + "".join(f"{p:>11}" for p in args.paths.split(",")) + "   vs random")
    for r in rows:
        ratio = " ".join(f"{p}={r[p] / r['random']:.0%}" for p in args.paths.split(",")
                         if p != "random" and "random" in r)
        print(f"{r['model']:<25}" + "".join(f"{r[p]:11.1f}" for p in args.paths.split(",")) + f"   {ratio}")


if __name__ == "__main__":
    main()
