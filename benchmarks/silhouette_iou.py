"""Our silhouettes from raw CASIA-B video against OpenGait's silhouettes of the same walks.

    python -m benchmarks.silhouette_iou [--videos DIR] [--silhouettes DIR] [--out FILE.md]

Runs ``extract-frames`` on ``../shared/data/casia-b-mini/videos`` (subject 001's ten walks at
view 090 and nm-01 of 002/003/004/006, with 001's empty hall) into a temporary store and
compares each walk's ``sil`` with ``../shared/data/casia-b-sil-090/SSS/CC-NN/090/090.pkl``.

Alignment: OpenGait's pretreatment dropped the frames whose silhouette was too small (the
walker entering or leaving), so its sequence is a run of ours with an unknown start. For each
offset that places OpenGait's sequence inside our non-empty frames (at least half of it
overlapping), the mean IoU over the overlapping frames is computed; the best offset is kept
and its frames are the aligned ones. OpenGait's silhouettes are 0..255 after a cubic resize:
foreground is > 127. IoU of two empty frames is not counted (there are none after alignment).

Writes a markdown report (per walk: frames, aligned frames, offset, median and 10th-percentile
IoU; overall median) and a PNG of the worst frames (ours | OpenGait's | overlap, red ours
only, green theirs only).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
WORST = 12


def align(ours: np.ndarray, theirs: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(offset, our frame indices, IoU per aligned frame): ``theirs[k]`` <-> ``ours[k + offset]``."""
    a, b = ours > 127, theirs > 127
    nonempty = np.flatnonzero(a.reshape(len(a), -1).any(axis=1))
    best = (-1.0, 0, np.zeros(0, int), np.zeros(0))
    if len(nonempty) == 0:
        return 0, best[2], best[3]
    for offset in range(nonempty[0] - len(b) + 1, nonempty[-1] + 1):
        k = np.arange(len(b))
        ok = (k + offset >= 0) & (k + offset < len(a))
        if ok.sum() < len(b) / 2:
            continue
        idx = k[ok] + offset
        inter = (a[idx] & b[ok]).sum(axis=(1, 2))
        union = (a[idx] | b[ok]).sum(axis=(1, 2))
        iou = inter / np.maximum(union, 1)
        if iou.mean() > best[0]:
            best = (float(iou.mean()), offset, idx, iou)
    return best[1], best[2], best[3]


def overlay(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """BGR tile: ours | theirs | overlap (white both, red ours only, green theirs only)."""
    a, b = ours > 127, theirs > 127
    both = np.zeros((*a.shape, 3), np.uint8)
    both[a & b] = 255
    both[a & ~b] = (0, 0, 255)
    both[~a & b] = (0, 255, 0)
    gray = lambda m: np.repeat((m * 255).astype(np.uint8)[..., None], 3, axis=2)  # noqa: E731
    return np.hstack([gray(a), gray(b), both])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=Path, default=DATA / "casia-b-mini" / "videos")
    ap.add_argument("--silhouettes", type=Path, default=DATA / "casia-b-sil-090")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "silhouette-iou-casia-b-mini.md")
    ap.add_argument("--store", type=Path, default=None, help="Reuse (or keep) this store.")
    args = ap.parse_args(argv)
    from gaittools.sources.pickles import load_silhouettes
    from gaittools.store.zarr_store import Store

    with tempfile.TemporaryDirectory() as tmp:
        store_path = args.store or Path(tmp) / "store"
        if not (store_path / "zarr.json").exists():
            subprocess.run([sys.executable, "-m", "gaittools.cli.main", "extract-frames", str(args.videos),
                            str(store_path), "--workers", "0"], check=True, cwd=REPO)
        store = Store(store_path)
        rows, worst, all_iou = [], [], []
        for seq_id in store.seq_ids():
            subject, cond, num, view = seq_id.split("-")
            pkl = args.silhouettes / subject / f"{cond}-{num}" / view / f"{view}.pkl"
            if not pkl.is_file():
                continue
            ours, theirs = store.read(seq_id, "sil"), load_silhouettes(pkl)
            offset, idx, iou = align(ours, theirs)
            notes = store.attrs_of(seq_id)["extract"]
            rows.append((seq_id, len(ours), int((ours.reshape(len(ours), -1) > 0).any(1).sum()), len(theirs),
                         len(idx), offset, float(np.median(iou)), float(np.percentile(iou, 10)),
                         notes.get("localisation")))
            all_iou.append(iou)
            k0 = np.arange(len(theirs))[(np.arange(len(theirs)) + offset >= 0)
                                        & (np.arange(len(theirs)) + offset < len(ours))]
            worst += [(float(v), seq_id, int(i), ours[i], theirs[k]) for v, i, k in zip(iou, idx, k0)]
        iou = np.concatenate(all_iou)
        worst.sort(key=lambda w: w[0])
        png = args.out.with_suffix(".png")
        tiles = []
        for v, seq_id, t, a, b in worst[:WORST]:
            tile = cv2.resize(overlay(a, b), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
            cv2.putText(tile, f"{seq_id} t{t} {v:.2f}", (2, 12), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 200, 0))
            tiles.append(tile)
        cv2.imwrite(str(png), np.vstack([np.hstack(tiles[i:i + 3]) for i in range(0, len(tiles) - 2, 3)]))

    lines = [
        "# Silhouette IoU: our `sil` from raw CASIA-B video vs OpenGait's silhouettes (view 090)",
        "",
        f"- command: `python -m benchmarks.silhouette_iou`",
        f"- date: {datetime.date.today().isoformat()}; machine: {platform.node()} "
        f"({platform.machine()}, {os.cpu_count()} CPUs), Python {platform.python_version()}",
        f"- videos: {args.videos}; silhouettes: {args.silhouettes}",
        "- alignment: best offset over our non-empty frames (mean IoU), see the script's docstring",
        "",
        "| walk | our frames | our non-empty | OpenGait frames | aligned | offset | median IoU | p10 IoU | localisation |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6]:.3f} | {r[7]:.3f} | {r[8]} |"
              for r in rows]
    lines += ["", f"**Overall: {len(iou)} aligned frames, median IoU {np.median(iou):.3f}, "
                  f"10th percentile {np.percentile(iou, 10):.3f}, mean {iou.mean():.3f}** (goal: median >= 0.85)",
              "", f"Worst {WORST} frames: `{png.name}` (ours | OpenGait's | overlap: red ours only, "
                  "green theirs only)", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
