"""A montage of a synthetic dataset so that a person can see it: rows conditions, columns views.

Frames are read back from the written files (not re-rendered), so the montage shows exactly
what the toolkit will read, compression included.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from gaittools.synth.writing import frame_name


def read_frame(out: Path, file: str, index: int) -> np.ndarray | None:
    """Frame ``index`` of a written clip (video or frame folder), None if unreadable."""
    path = out / file
    if path.is_dir():
        return cv2.imread(str(path / frame_name(index)), cv2.IMREAD_COLOR)
    cap = cv2.VideoCapture(str(path))
    try:
        frame = None
        for _ in range(index + 1):
            ok, frame = cap.read()
            if not ok:
                return None
        return frame
    finally:
        cap.release()


def _label(img: np.ndarray, text: str) -> np.ndarray:
    img = img.copy()
    scale = max(img.shape[0] / 480, 0.35)
    cv2.putText(img, text, (4, int(16 * scale / 0.5)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (4, int(16 * scale / 0.5)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), 1, cv2.LINE_AA)
    return img


def make_preview(out: str | os.PathLike, png: str | os.PathLike, subject: str | None = None
                 ) -> Path:
    """Write a PNG montage: one row per condition (its first walk), one column per view,
    the middle frame of each clip of one subject (the first one by default)."""
    out, png = Path(out), Path(png)
    table = pd.read_parquet(out / "ground_truth" / "sequences.parquet")
    if table.empty:
        raise ValueError(f"{out}: the dataset has no sequences to preview")
    subject = subject or sorted(table.subject)[0]
    mine = table[table.subject == subject]
    if mine.empty:
        have = ", ".join(sorted(set(table.subject)))
        raise ValueError(f"{out}: no subject {subject!r} (have {have})")
    conditions = list(dict.fromkeys(mine.sort_values(["condition", "seq_num"]).condition))
    order = {c: i for i, c in enumerate(["nm", "bg", "cl", "n", "b", "s"])}
    conditions.sort(key=lambda c: order.get(c, 99))
    views = sorted(set(mine.view))
    size = json.loads((out / "ground_truth" / "synth.json").read_text())["size"]
    rows = []
    for cond in conditions:
        walk = mine[mine.condition == cond].sort_values("seq_num")
        first = walk[walk.seq_num == walk.seq_num.iloc[0]]
        cells = []
        for view in views:
            row = first[first.view == view]
            frame = None
            if not row.empty:
                frame = read_frame(out, str(row.file.iloc[0]), int(row.n_frames.iloc[0]) // 2)
            if frame is None:   # a missing or unreadable clip shows as a black cell
                frame = np.zeros((size[1], size[0], 3), np.uint8)
            num = int(first.seq_num.iloc[0])
            name = f"{cond}-{num:02d} {view}" if view else str(first.seq_id.iloc[0])
            cells.append(_label(frame, name))
        rows.append(np.hstack(cells))
    png.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(png), np.vstack(rows)):
        raise OSError(f"{png}: cv2.imwrite could not write the preview")
    return png
