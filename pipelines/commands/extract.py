"""``gaittools extract-frames SOURCE STORE`` and ``gaittools manifest STORE``."""

from __future__ import annotations

import sys

import click

from pipelines.cluster import cluster_options


@click.command("extract-frames")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--dataset", type=click.Choice(["auto", "casia-b", "tum-gaid", "generic", "opengait-pkl"]),
              default="auto", show_default=True,
              help="Naming of SOURCE; auto detects it where unambiguous.")
@click.option("--crop-mode", type=click.Choice(["person", "frame"]), default="person", show_default=True,
              help="person: box height -> S, centred on the body's centre of mass (OpenGait); "
                   "frame: frame height -> S, an S-wide window on the walker (GaitCopy).")
@click.option("--size", "crop_size", type=click.IntRange(min=8), default=64, show_default=True,
              help="Side S of the square gray crops.")
@click.option("--height", "working_height", type=click.IntRange(min=16), default=240, show_default=True,
              help="Working height of the stored frames (boxes and windows are in its pixels).")
@click.option("--background", "method", type=click.Choice(["median", "mog2", "knn"]), default="median",
              show_default=True,
              help="Background model: the dataset's empty-scene clip, else the sequence median; "
                   "or OpenCV's MOG2/KNN.")
@click.option("--no-hog", is_flag=True, help="Never fall back to the HOG people detector.")
@click.option("--frames-codec", type=click.Choice(["zstd", "none"]), default="zstd", show_default=True,
              help="How the working-resolution frames are stored: zstd (about half the bytes) or "
                   "none (raw: twice the disk, about twice the extraction speed).")
@click.option("--tracks", type=click.Choice(["auto", "walkers", "longest", "all"]), default="auto",
              show_default=True,
              help="Sequences per video: walkers (each walking person, <seq_id>.t<k>), longest "
                   "(the longest walker, plain id), all tracks; auto: longest for CASIA-B and "
                   "TUM-GAID, walkers otherwise.")
@click.option("--fps", type=float, default=None, help="Frame rate of frame folders (default 25).")
@click.option("--overwrite", is_flag=True, help="Extract again sequences already in the store.")
@cluster_options
def extract_frames(source: str, store: str, dataset: str, crop_mode: str, crop_size: int,
                   working_height: int, method: str, no_hog: bool, frames_codec: str, tracks: str,
                   fps: float | None,
                   overwrite: bool,
                   scheduler: str | None, workers: int | None) -> None:
    """Extract gray frames, person boxes and normalised crops of every sequence in SOURCE.

    Writes STORE (Zarr; one atomic group per sequence) and STORE/manifest.parquet. A rerun
    resumes: finished sequences are skipped, failed ones retried. Names that do not parse are
    listed and skipped; bad files are listed with the reason. Exit code 1 if anything failed.
    """
    from gaittools.person.extract import ExtractOptions
    from gaittools.sources.discover import SourceError
    from gaittools.store.zarr_store import StoreError
    from pipelines.cluster import ClusterPathError
    from pipelines.extract import run_extract

    options = ExtractOptions(working_height=working_height, crop_mode=crop_mode, crop_size=crop_size,
                             method=method, fps=fps, hog=not no_hog, frames_codec=frames_codec,
                             tracks=tracks)
    try:
        summary = run_extract(source, store, dataset, options, scheduler=scheduler, workers=workers,
                              overwrite=overwrite)
    except (SourceError, StoreError, ClusterPathError) as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(0 if summary.ok else 1)


@click.command("manifest")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
def manifest(store: str) -> None:
    """Rebuild STORE/manifest.parquet from the store's own attributes and failure records."""
    from gaittools.store.manifest import refresh_manifest
    from gaittools.store.zarr_store import Store, StoreError

    try:
        df = refresh_manifest(Store(store))
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    counts = df["status_extract"].value_counts().to_dict()
    click.echo(f"{Store(store).manifest_path}: {len(df)} sequences "
               + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
