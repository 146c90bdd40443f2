"""Store previews: one PNG montage per sequence, to check a store by eye.

A montage has up to three rows over ``columns`` evenly spaced frames of the sequence's span:

1. the working frame with the person's box and crop window, labelled with the track id;
2. the gray crop (``gray``), scaled up to the frame row's height;
3. the flow from that frame to the next in Middlebury colours (``gaittools.flow.colour``),
   when the sequence has flow.

A sequence imported as silhouettes (no frames) shows its crops only. Why PNG montages and not
a viewer: they need nothing but an image viewer, and a folder of them is reviewed in minutes.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gaittools.flow.colour import flow_to_color
from gaittools.store.zarr_store import Store

BOX_COLOUR = (0, 200, 0)  # BGR
WINDOW_COLOUR = (0, 140, 255)
ROW_HEIGHT = 120


def sequence_montage(store: Store, seq_id: str, columns: int = 8) -> np.ndarray:
    """BGR uint8 montage of one sequence (see the module docstring)."""
    arrays = set(store.arrays_of(seq_id))
    gray = store.read(seq_id, "gray")
    boxes = store.read(seq_id, "boxes") if "boxes" in arrays else None
    windows = store.read(seq_id, "windows") if "windows" in arrays else None
    found = np.flatnonzero(np.isfinite(boxes[:, 0])) if boxes is not None else \
        np.flatnonzero(gray.reshape(len(gray), -1).max(axis=1) > 0)
    span = found if len(found) else np.arange(len(gray))
    picks = np.unique(np.linspace(span[0], span[-1], min(columns, len(span))).round().astype(int))
    track = (store.attrs_of(seq_id).get("extract") or {}).get("track") or {}
    rows = []
    if "frames" in arrays:
        frames = store.read(seq_id, "frames")
        rows.append([_annotated(frames[t], boxes, windows, t, track.get("id")) for t in picks])
    rows.append([cv2.cvtColor(gray[t], cv2.COLOR_GRAY2BGR) for t in picks])
    if "flow" in arrays:
        flow = store.read(seq_id, "flow").astype(np.float32)
        rows.append([cv2.cvtColor(flow_to_color(flow[min(t, len(flow) - 1)]), cv2.COLOR_RGB2BGR)
                     for t in picks])
    strips = [np.hstack([_fit(img) for img in row]) for row in rows]
    width = max(s.shape[1] for s in strips)  # frames are wider than crops: pad on the right
    return np.vstack([np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0))) for s in strips])


def _annotated(frame: np.ndarray, boxes: np.ndarray, windows: np.ndarray | None, t: int,
               track_id: int | None) -> np.ndarray:
    img = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if windows is not None and np.isfinite(windows[t, 0]):
        x0, y0, x1, y1 = windows[t].astype(int)
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), WINDOW_COLOUR, 1)
    if np.isfinite(boxes[t, 0]):
        x0, y0, x1, y1 = np.round(boxes[t]).astype(int)
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), BOX_COLOUR, 2)
        label = f"t{track_id}" if track_id is not None else "person"
        cv2.putText(img, label, (x0, max(y0 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, BOX_COLOUR, 1)
    cv2.putText(img, str(t), (4, img.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return img


def _fit(img: np.ndarray) -> np.ndarray:
    """Scaled to ``ROW_HEIGHT`` rows (crops up, frames down) so the rows line up."""
    scale = ROW_HEIGHT / img.shape[0]
    interp = cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA
    return cv2.resize(img, (max(1, round(img.shape[1] * scale)), ROW_HEIGHT), interpolation=interp)


def write_previews(store_path: str | Path, out: str | Path, seq_ids: list[str] | None = None,
                   columns: int = 8) -> list[Path]:
    """``OUT/<seq_id>.png`` for the given sequences (all when none); returns the paths.
    Unknown ids raise KeyError naming the store."""
    store = Store(store_path)
    known = store.seq_ids()
    missing = [s for s in seq_ids or [] if s not in known]
    if missing:
        raise KeyError(f"{store.path}: no sequence {', '.join(missing)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for seq_id in seq_ids or known:
        path = out / f"{seq_id}.png"
        if not cv2.imwrite(str(path), sequence_montage(store, seq_id, columns)):
            raise OSError(f"{path}: could not write the PNG")
        written.append(path)
    return written
