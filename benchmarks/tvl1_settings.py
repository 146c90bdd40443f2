"""TV-L1 settings for a CPU budget: flow error against time, on the store's own frame pairs.

Why: on two cores, OpenCV's default DualTVL1 would take most of a 75-minute budget for the
57k pairs of CASIA-B view 090, and silhouettes (flat 0/255 regions, motion only at the
boundary) may not need its 5 scales x 5 warps x 10 outer x 30 inner iterations. This script
measures, on the same pairs of real crops, each preset's pairs/s on one core and its end-point
error against OpenCV's default settings (the reference), plus the share of moving pixels it
sees. Printed as one table; ``--out`` also writes it as Markdown.

    python -m benchmarks.tvl1_settings --store runs/casia-b-cpu/store --pairs 300
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from gaittools.flow.opencv_backend import opencv_pair
from gaittools.flow.params import PRESETS, TVL1Params



def frame_pairs(store_path: Path, n_pairs: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_pairs`` consecutive gray-crop pairs with the person in both, spread over sequences."""
    from gaittools.store.zarr_store import Store

    store = Store(store_path)
    ids = store.seq_ids()
    if not ids:
        raise SystemExit(f"{store_path}: the store holds no sequence")
    rng = np.random.default_rng(seed)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for seq_id in rng.permutation(ids):
        gray = store.read(seq_id, "gray")
        held = np.flatnonzero(gray.reshape(len(gray), -1).any(axis=1))
        held = held[np.isin(held + 1, held)]
        for t in rng.choice(held, size=min(3, len(held)), replace=False) if len(held) else []:
            pairs.append((gray[t], gray[t + 1]))
        if len(pairs) >= n_pairs:
            break
    return pairs[:n_pairs]


def measure(pairs: list[tuple[np.ndarray, np.ndarray]], params: TVL1Params) -> tuple[np.ndarray, float]:
    """Flows (N, 2, H, W) and pairs per second on this process's one core."""
    start = time.perf_counter()
    flows = np.stack([opencv_pair(a, b, params) for a, b in pairs])
    return flows, len(pairs) / (time.perf_counter() - start)


def compare(pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[dict[str, float | str]]:
    reference, _ = measure(pairs, TVL1Params())
    moving = np.hypot(reference[:, 0], reference[:, 1]) > 0.5
    rows = []
    for name, overrides in PRESETS.items():
        flows, rate = measure(pairs, replace(TVL1Params(), **overrides))
        error = np.hypot(*(flows - reference).transpose(1, 0, 2, 3))
        rows.append({"preset": name, "settings": " ".join(f"{k}={v}" for k, v in overrides.items()) or "OpenCV defaults",
                     "pairs/s (1 core)": round(rate, 1), "EPE vs default (px)": round(float(error.mean()), 3),
                     "EPE on moving px": round(float(error[moving].mean()), 3) if moving.any() else float("nan")})
    return rows


def to_markdown(rows: list[dict[str, float | str]], header: str) -> str:
    cols = list(rows[0])
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, required=True, help="A store with gray crops (e.g. the chain's).")
    p.add_argument("--pairs", type=int, default=300, help="Frame pairs to measure on.")
    p.add_argument("--out", type=Path, default=None, help="Also write the table as Markdown here.")
    args = p.parse_args(argv)
    if not (args.store / "manifest.parquet").is_file() and not (args.store / "zarr.json").is_file():
        p.error(f"--store {args.store}: not a gaittools store (run extract-frames first)")
    pairs = frame_pairs(args.store, args.pairs)
    if not pairs:
        p.error(f"--store {args.store}: no consecutive pair of frames with the person")
    size = pairs[0][0].shape
    text = to_markdown(compare(pairs), f"TV-L1 presets on {len(pairs)} real {size[0]}x{size[1]} crop pairs "
                                       f"of {args.store.name}, one core; EPE against OpenCV's default settings")
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
