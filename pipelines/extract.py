"""extract-frames over a dataset: one Dask task per sequence, written straight into the store.

Why workers write themselves: a sequence's frames are megabytes; sending them back to the
client would make the client the bottleneck. Each task ends with ``Store.write_video``
(staged + renamed, so atomic) or ``Store.record_failure`` and returns a small summary that the
client streams with ``as_completed`` for progress. The store must therefore be on a
filesystem every worker sees.

Resumption: a source already in the store is skipped (unless ``overwrite``); a failed one
has no group, only a failure record, so a rerun tries it again. A video with several tracks
counts as done only when its shared-frames group says all its tracks were written
(``Store.write_video``); a kill between tracks makes the rerun extract that video again.
Staging left by a killed run is removed at the start (one writer per store at a time). One bad input never stops the run:
every exception of a task becomes a failure record of that sequence; even a worker that dies
is caught on the client side. The manifest is rebuilt from the store at the end.

CASIA-B's empty-scene clips become one task each, computed once and passed to the tasks of
that subject and view (Dask moves the 77 kB image, not the clip).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from gaittools.person.extract import ExtractOptions, extract_sequences, load_background
from gaittools.store.manifest import refresh_manifest
from gaittools.sources.discover import Discovery, SourceError, SourceSequence, discover
from gaittools.store.zarr_store import Store, StoreError
from pipelines.cluster import dask_client, in_process, limit_native_threads
from gaittools.cli.progress import Progress, Summary

STAGE = "extract"


@dataclass(frozen=True)
class TaskResult:
    """What a task sends back: small, for progress and the summary."""

    seq_id: str
    source: str
    ok: bool
    n_frames: int = 0
    error: str | None = None
    warnings: tuple[str, ...] = ()


def run_extract(
    source: str | os.PathLike[str], store_path: str | os.PathLike[str], dataset: str = "auto",
    options: ExtractOptions | None = None, scheduler: str | None = None,
    workers: int | None = None, overwrite: bool = False, stream: TextIO | None = None,
) -> Summary:
    """Extract every sequence under ``source`` into the store at ``store_path``."""
    options = options or ExtractOptions()
    stream = stream if stream is not None else sys.stderr
    # absolute paths: workers of a joined cluster do not share this process's working directory
    found = discover(Path(source).resolve(), dataset)
    if not found.sequences:
        why = "".join(f"\n  skipped {path}: {reason}" for path, reason in found.skipped[:20])
        raise SourceError(f"{found.root}: no {found.dataset} sequences found{why}")
    store = Store.create(Path(store_path).resolve(), found.dataset, source_root=str(found.root))
    if not overwrite:
        check_same_options(store, options)
    store.clean_staging()
    todo = _plan(found, store, overwrite)
    progress = Progress("extract-frames", total=len(todo), unit="sequences", stream=stream)
    for path, reason in found.skipped:
        progress.skip(path, reason)
    todo_ids = {s.seq_id for s in todo}
    for seq in found.sequences:
        if seq.seq_id not in todo_ids:
            progress.skip(seq.seq_id, "already in the store")
    print(f"[extract-frames] {found.dataset}: {len(found.sequences)} sequences in {found.root}, "
          f"{len(todo)} to do -> {store.path}", file=stream, flush=True)
    if todo:
        results = (_run_local(todo, store.path, options, overwrite) if in_process(workers, scheduler)
                   else _run_dask(todo, store.path, options, overwrite, scheduler, workers))
        for r in results:
            if r.ok:
                progress.done(r.seq_id, r.n_frames, "; ".join(r.warnings) or None)
            else:
                progress.failed(r.seq_id, r.source, r.error or "unknown error")
    refresh_manifest(store)
    return progress.finish()


#: Options that change the arrays; a store must not mix sequences made with different ones.
SHAPING_OPTIONS = ("working_height", "crop_mode", "crop_size", "method", "hog", "tracks")


def check_same_options(store: Store, options: ExtractOptions) -> None:
    """Refuse to add sequences made differently from those already in the store."""
    for seq_id in store.seq_ids()[:1]:
        before = store.attrs_of(seq_id).get("extract", {}).get("options") or {}
        now = asdict(options)
        differ = [f"{k}: {before[k]!r} in the store, {now[k]!r} now" for k in SHAPING_OPTIONS
                  if k in before and before[k] != now[k]]
        if differ:
            raise StoreError(f"{store.path}: extracted with other options ({'; '.join(differ)}); "
                             "use the same options, another store, or --overwrite")


def _plan(found: Discovery, store: Store, overwrite: bool) -> list[SourceSequence]:
    if overwrite:
        return list(found.sequences)
    done = store.videos_done()  # a video with tracks counts once all of them are written
    return [s for s in found.sequences if s.seq_id not in done]


# ---------------------------------------------------------------------------- the task
def extract_task(store_path: str, seq: SourceSequence, options: ExtractOptions, overwrite: bool,
                 background: Any = None) -> TaskResult:
    """Runs on a worker: extract one sequence and write it (or its failure) to the store."""
    limit_native_threads()
    store = Store(store_path)
    try:
        results = extract_sequences(seq, options, background)
        # one per selected track (walkers: <seq_id>.t<k>), sharing the video's frames
        store.write_video(seq.seq_id, [(r.seq_id, r.arrays, r.attrs) for r in results], overwrite=overwrite,
                          zstd_levels=results[0].zstd_levels)
        warnings = tuple(f"{r.seq_id}: {w}" if r.seq_id != seq.seq_id else w
                         for r in results for w in r.warnings)
        return TaskResult(seq.seq_id, str(seq.path), True, results[0].n_frames, None, warnings)
    except Exception as exc:  # one bad input must not stop the dataset
        error = _describe(exc)
        store.record_failure(seq.seq_id, STAGE, str(seq.path), error, name=seq.name.as_dict())
        return TaskResult(seq.seq_id, str(seq.path), False, 0, error)


def background_task(path: Path, working_height: int) -> Any:
    """The empty-scene image, or the exception (tasks then fall back to the sequence median)."""
    limit_native_threads()
    try:
        return load_background(path, working_height)
    except Exception as exc:
        return exc


def _describe(exc: BaseException) -> str:
    """Our own errors already name the file; anything else gets its type and last frame."""
    from gaittools.sources.pickles import PickleError, UnsafePickle
    from gaittools.sources.video import VideoError

    if isinstance(exc, (VideoError, PickleError, UnsafePickle)):
        return str(exc)
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" (at {Path(where.filename).name}:{where.lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{at}"


# ---------------------------------------------------------------------------- executors
def _run_local(todo: list[SourceSequence], store_path: Path, options: ExtractOptions,
               overwrite: bool) -> Iterator[TaskResult]:
    backgrounds: dict[Path, Any] = {}
    for seq in todo:
        if seq.background is not None and seq.background not in backgrounds:
            backgrounds[seq.background] = background_task(seq.background, options.working_height)
        yield extract_task(str(store_path), seq, options, overwrite, backgrounds.get(seq.background))


def _run_dask(todo: list[SourceSequence], store_path: Path, options: ExtractOptions, overwrite: bool,
              scheduler: str | None, workers: int | None) -> Iterator[TaskResult]:
    from distributed import as_completed

    must_see = {"store": str(store_path), "source": str(todo[0].path)}
    with dask_client(scheduler, workers, must_see=must_see) as client:
        backgrounds = {
            bg: client.submit(background_task, bg, options.working_height, key=f"background-{bg.stem}-{time.time_ns()}")
            for bg in sorted({s.background for s in todo if s.background is not None})
        }
        futures = {}
        for seq in todo:
            fut = client.submit(extract_task, str(store_path), seq, options, overwrite,
                                backgrounds.get(seq.background), key=f"extract-{seq.seq_id}-{time.time_ns()}",
                                retries=0)
            futures[fut] = seq
        for fut in as_completed(futures):
            seq = futures[fut]
            try:
                yield fut.result()
            except Exception as exc:  # the worker died or the task could not run at all
                error = f"task lost: {_describe(exc)}"
                Store(store_path).record_failure(seq.seq_id, STAGE, str(seq.path), error,
                                                 name=seq.name.as_dict())
                yield TaskResult(seq.seq_id, str(seq.path), False, 0, error)
            fut.release()
