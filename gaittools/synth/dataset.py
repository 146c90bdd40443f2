"""``generate_dataset``: a synthetic CASIA-B or TUM-GAID, files and ground truth.

Output (``out``):

- CASIA-B: ``videos/SSS-CC-NN-VVV.avi`` per walk and view, ``videos/SSS-bkgrd-VVV.avi`` per
  subject and view (the empty hall, same camera and session exposure).
- TUM-GAID: ``frames/pNNN/CNN/NNNN.png`` (1-based frame numbers), one side camera.
- ``ground_truth/boxes.parquet``: seq_id, frame (0-based), x0, y0, x1, y1 (float32, video
  pixels, x1/y1 exclusive, tight box of the rendered person mask clipped to the image, NaN when
  no person pixel is visible), area (person pixels).
- ``ground_truth/subjects.parquet``: one row per subject, every gait parameter (``GaitParams``).
- ``ground_truth/sequences.parquet``: seq_id, subject, condition, seq_num, view, n_frames, file
  (relative to ``out``); ``ground_truth/backgrounds.parquet`` likewise for the bkgrd clips.
- ``ground_truth/synth.json``: the settings that produced the dataset.

Walks (``walks``): None = the layout's ten (nm-01..06, bg-01..02, cl-01..02 or n01..06,
b01..02, s01..02); an int n = the first n of each condition (capped at that condition's
count); or a list of names ("nm-01" / "n01" style).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd

from gaittools.sources.layouts import (CASIA_B_VIEWS, casia_b_background_id, casia_b_id, tum_gaid_id)
from gaittools.synth.clips import BACKGROUND, TUM_GAID_VIEW, ClipSpec, render_clip, subject_gait
from gaittools.synth.writing import write_avi, write_frame_folder, write_parquet

LAYOUTS = ("casia-b", "tum-gaid")
WALKS: dict[str, tuple[tuple[str, int], ...]] = {
    "casia-b": (("nm", 6), ("bg", 2), ("cl", 2)),
    "tum-gaid": (("n", 6), ("b", 2), ("s", 2)),
}
OWNED = ("videos", "frames", "ground_truth")
Progress = Callable[[int, int, float], None]


class SynthError(RuntimeError):
    """Bad settings for the generator, or clips that could not be written."""


def resolve_walks(layout: str, walks: int | Iterable[str] | None) -> list[tuple[str, int]]:
    """(condition, number) pairs for the walks option (see the module docstring)."""
    table = WALKS[layout]
    if walks is None:
        return [(c, n) for c, count in table for n in range(1, count + 1)]
    if isinstance(walks, int):
        if walks < 1:
            raise SynthError(f"walks={walks}: need at least one walk per condition")
        return [(c, n) for c, count in table for n in range(1, min(walks, count) + 1)]
    pattern = re.compile(r"^(nm|bg|cl)-(\d{2})$" if layout == "casia-b" else r"^([nbs])(\d{2})$")
    out = []
    for name in walks:
        m = pattern.match(str(name).strip())
        if m is None:
            example = "nm-01" if layout == "casia-b" else "n01"
            raise SynthError(f"walk {name!r} is not a {layout} walk name like {example!r}")
        pair = (m[1], int(m[2]))
        if pair[1] < 1:
            raise SynthError(f"walk {name!r}: walk numbers start at 01")
        if pair not in out:
            out.append(pair)
    if not out:
        raise SynthError("walks: the list of walk names is empty")
    return out


def resolve_views(layout: str, views: Iterable[str | int]) -> list[str]:
    """CASIA-B view names ("090"); TUM-GAID has its one camera whatever is asked."""
    if layout == "tum-gaid":
        return [TUM_GAID_VIEW]
    out = []
    for v in views:
        try:
            name = f"{int(str(v).strip()):03d}"
        except ValueError:
            raise SynthError(f"view {v!r} is not a number; CASIA-B views are 000..180 step 18")
        if name not in CASIA_B_VIEWS:
            raise SynthError(f"view {v!r} is not a CASIA-B view (000..180 step 18)")
        if name not in out:
            out.append(name)
    if not out:
        raise SynthError("views: no view given")
    return out


def _seq_id(spec: ClipSpec) -> str:
    if spec.layout == "tum-gaid":
        return tum_gaid_id(spec.subject, spec.condition, spec.seq_num)
    if spec.condition == BACKGROUND:
        return casia_b_background_id(spec.subject, spec.view)
    return casia_b_id(spec.subject, spec.condition, spec.seq_num, spec.view)


def clip_file(spec: ClipSpec) -> str:
    """Where a clip lives, relative to the dataset folder."""
    if spec.layout == "tum-gaid":
        return f"frames/p{spec.subject:03d}/{spec.condition}{spec.seq_num:02d}"
    return f"videos/{_seq_id(spec)}.avi"


def plan_clips(layout: str, subjects: int, walks: list[tuple[str, int]], views: list[str],
               frames: int, size: tuple[int, int], fps: float, seed: int) -> list[ClipSpec]:
    """Every clip of the dataset, walks first then the empty-scene clips (CASIA-B only)."""
    base = dict(layout=layout, frames=frames, size=size, fps=fps, seed=seed)
    specs = [ClipSpec(subject=s, condition=c, seq_num=n, view=v, **base)
             for s in range(1, subjects + 1) for c, n in walks for v in views]
    if layout == "casia-b":
        specs += [ClipSpec(subject=s, condition=BACKGROUND, seq_num=0, view=v, **base)
                  for s in range(1, subjects + 1) for v in views]
    return specs


def write_clip(spec: ClipSpec, out: str) -> dict[str, object]:
    """Render and write one clip; returns its boxes and areas for the ground truth."""
    clip = render_clip(spec)
    path = Path(out) / clip_file(spec)
    if spec.layout == "tum-gaid":
        write_frame_folder(path, clip.frames)
    else:
        write_avi(path, clip.frames, spec.fps)
    return {"boxes": clip.boxes, "area": clip.masks.sum(axis=(1, 2)).astype(np.int32)}


def _init_worker() -> None:
    import cv2
    cv2.setNumThreads(1)   # one process per core already; OpenCV's threads would oversubscribe


def _start_method() -> str:
    """spawn (safe in a parent with threads, e.g. torch or dask); fork only where spawn cannot
    re-import the main script (a script fed on stdin or typed interactively)."""
    main_file = getattr(sys.modules["__main__"], "__file__", None)
    fork_ok = "fork" in multiprocessing.get_all_start_methods()
    if main_file and not Path(main_file).is_file() and fork_ok:
        return "fork"
    return "spawn"


def _run(specs: list[ClipSpec], out: Path, workers: int, progress: Progress | None
         ) -> tuple[dict[ClipSpec, dict], dict[ClipSpec, str]]:
    """Render all clips, in a process pool when workers > 1; order of completion is free."""
    results: dict[ClipSpec, dict] = {}
    failures: dict[ClipSpec, str] = {}
    start = time.perf_counter()

    def done(spec: ClipSpec, get: Callable[[], dict]) -> None:
        try:
            results[spec] = get()
        except Exception as exc:  # one bad clip must not stop the dataset; reported at the end
            failures[spec] = f"{type(exc).__name__}: {exc}"
        if progress is not None:
            progress(len(results) + len(failures), len(specs), time.perf_counter() - start)

    if workers <= 1:
        _init_worker()
        for spec in specs:
            done(spec, lambda s=spec: write_clip(s, str(out)))
        return results, failures
    context = multiprocessing.get_context(_start_method())
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        futures = {pool.submit(write_clip, spec, str(out)): spec for spec in specs}
        for future in as_completed(futures):
            done(futures[future], future.result)
    return results, failures


def _prepare(out: Path, overwrite: bool) -> None:
    existing = [name for name in OWNED if (out / name).exists()]
    if existing and not overwrite:
        raise SynthError(f"{out} already holds {', '.join(n + '/' for n in existing)}; "
                         "rerun with --overwrite to replace the synthetic dataset")
    for name in existing:
        shutil.rmtree(out / name)
    out.mkdir(parents=True, exist_ok=True)


def _ground_truth(out: Path, specs: list[ClipSpec], results: dict[ClipSpec, dict],
                  subjects: int, seed: int) -> None:
    walks = [s for s in specs if s.condition != BACKGROUND and s in results]
    rows = []
    for spec in walks:
        boxes, area = results[spec]["boxes"], results[spec]["area"]
        rows.append(pd.DataFrame({
            "seq_id": _seq_id(spec), "frame": np.arange(len(boxes), dtype=np.int32),
            "x0": boxes[:, 0], "y0": boxes[:, 1], "x1": boxes[:, 2], "y1": boxes[:, 3],
            "area": area}))
    gt = out / "ground_truth"
    columns = ["seq_id", "frame", "x0", "y0", "x1", "y1", "area"]
    write_parquet(gt / "boxes.parquet", pd.concat(rows, ignore_index=True) if rows
                  else pd.DataFrame(columns=columns))
    tum = specs[0].layout == "tum-gaid"
    write_parquet(gt / "sequences.parquet", pd.DataFrame([{
        "seq_id": _seq_id(s), "subject": f"{s.subject:03d}", "condition": s.condition,
        "seq_num": s.seq_num, "view": "" if tum else s.view, "n_frames": s.frames,
        "file": clip_file(s)} for s in walks]))
    if not tum:
        write_parquet(gt / "backgrounds.parquet", pd.DataFrame([{
            "seq_id": _seq_id(s), "subject": f"{s.subject:03d}", "view": s.view,
            "n_frames": s.frames, "file": clip_file(s)}
            for s in specs if s.condition == BACKGROUND and s in results]))
    table = pd.DataFrame([subject_gait(seed, s).as_row() for s in range(1, subjects + 1)])
    table["subject"] = [f"{s:03d}" for s in range(1, subjects + 1)]
    write_parquet(gt / "subjects.parquet", table)


def generate_dataset(out: str | os.PathLike, layout: str = "casia-b", subjects: int = 8,
                     walks: int | Sequence[str] | None = None,
                     views: Sequence[str | int] = ("000", "090", "180"), frames: int = 40,
                     size: tuple[int, int] = (320, 240), fps: float = 25, seed: int = 0,
                     workers: int | None = None, overwrite: bool = False,
                     progress: Progress | None = None) -> Path:
    """Generate a synthetic gait dataset in ``out`` (see the module docstring); returns ``out``.

    Deterministic for a seed: every clip's randomness is keyed by its identity, so the same
    clip comes out the same whatever the number of subjects, views, workers or the order.
    ``views`` is ignored for TUM-GAID (one camera). ``workers``: processes (None: one per CPU
    core; 0 or 1: in this process). ``progress(done, total, seconds)`` is called per clip.
    Raises SynthError for bad settings, for an ``out`` that already holds a dataset (unless
    ``overwrite``), and, after writing everything else, for clips that failed.
    """
    if layout not in LAYOUTS:
        raise SynthError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    if subjects < 1 or subjects > 999:
        raise SynthError(f"subjects={subjects}: need 1..999 (three-digit subject ids)")
    if frames < 1:
        raise SynthError(f"frames={frames}: need at least one frame")
    width, height = (int(v) for v in size)
    if width < 16 or height < 16:
        raise SynthError(f"size={size}: need at least 16x16 pixels")
    if layout == "casia-b" and (width % 2 or height % 2):
        raise SynthError(f"size={size}: MJPG videos need an even width and height")
    if fps <= 0:
        raise SynthError(f"fps={fps}: must be positive")
    walk_list, view_list = resolve_walks(layout, walks), resolve_views(layout, views)
    out = Path(out)
    _prepare(out, overwrite)
    specs = plan_clips(layout, subjects, walk_list, view_list, int(frames), (width, height),
                       float(fps), int(seed))
    n_workers = min(os.cpu_count() or 1, len(specs)) if workers is None else int(workers)
    results, failures = _run(specs, out, n_workers, progress)
    _ground_truth(out, specs, results, subjects, seed)
    settings = dict(layout=layout, subjects=subjects, walks=[f"{c}-{n:02d}" for c, n in walk_list],
                    views=view_list, frames=frames, size=[width, height], fps=fps, seed=seed,
                    camera_view_tum_gaid=TUM_GAID_VIEW if layout == "tum-gaid" else None)
    (out / "ground_truth" / "synth.json").write_text(json.dumps(settings, indent=2))
    if failures:
        lines = [f"{clip_file(s)}: {why}" for s, why in failures.items()]
        (out / "ground_truth" / "failures.txt").write_text("\n".join(lines) + "\n")
        raise SynthError(f"{len(failures)} of {len(specs)} clips failed (ground_truth/"
                         f"failures.txt): " + "; ".join(lines[:3]))
    return out


def spec_of(out: str | os.PathLike, seq_id: str) -> ClipSpec:
    """The ClipSpec that produced a written sequence (to re-render it, e.g. for its masks)."""
    out = Path(out)
    settings = json.loads((out / "ground_truth" / "synth.json").read_text())
    table = pd.read_parquet(out / "ground_truth" / "sequences.parquet")
    row = table[table.seq_id == seq_id]
    if row.empty:
        backgrounds = out / "ground_truth" / "backgrounds.parquet"
        table = pd.read_parquet(backgrounds) if backgrounds.exists() else table.iloc[:0]
        row = table[table.seq_id == seq_id]
        if row.empty:
            raise SynthError(f"{out}: no sequence {seq_id!r} in the synthetic dataset")
        condition, num = BACKGROUND, 0
    else:
        condition, num = str(row.condition.iloc[0]), int(row.seq_num.iloc[0])
    view = str(row.view.iloc[0]) or TUM_GAID_VIEW
    return ClipSpec(layout=settings["layout"], subject=int(row.subject.iloc[0]),
                    condition=condition, seq_num=num, view=view, frames=int(settings["frames"]),
                    size=tuple(settings["size"]), fps=float(settings["fps"]),
                    seed=int(settings["seed"]))
