"""``gaittools export-opengait STORE OUT``: silhouettes in OpenGait's dataset layout."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export-opengait")
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--array", type=click.Choice(["sil", "gray"]), default="sil", show_default=True,
              help="sil: silhouettes made by extract-frames; gray: stores imported from OpenGait "
                   "pickles (their gray holds silhouettes).")
@click.option("--split", "split_dir", type=click.Path(exists=True, path_type=Path), default=None,
              help="Split folder (build-split): also write OUT/partition.json (TRAIN_SET: train "
                   "and val subjects, TEST_SET: gallery and probe subjects).")
@click.option("--width", type=click.Choice(["64", "44"]), default="64", show_default=True,
              help="64: T x 64 x 64 pickles; 44: the centre 44 columns (OpenGait's 64 x 44 configs).")
def export_opengait(store: Path, out: Path, array: str, split_dir: Path | None, width: str) -> None:
    """Write STORE's silhouettes as OUT/SSS/CC-NN/VVV/VVV.pkl (uint8 arrays only), readable by
    OpenGait and by `extract-frames --dataset opengait-pkl`."""
    from gaittools.store.opengait import ExportError, export_opengait as run
    from gaittools.sources.pickles import PickleError
    from gaittools.store.zarr_store import StoreError

    try:
        result = run(store, out, array, int(width), split_dir)
    except (ExportError, StoreError, PickleError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{out}: {len(result.written)} sequences, {result.frames} frames (uint8 T x 64 x {width})")
    if result.partition is not None:
        click.echo(f"partition: {result.partition}")
