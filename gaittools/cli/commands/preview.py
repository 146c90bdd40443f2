"""``gaittools preview STORE [SEQ...] --out DIR``: PNG montages to check a store by eye."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.argument("seq_ids", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the montages, one <seq_id>.png per sequence.")
@click.option("--columns", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Frames per montage, evenly spaced over the person's frames.")
def preview(store: str, seq_ids: tuple[str, ...], out: Path, columns: int) -> None:
    """Write a montage per sequence of STORE (all, or the SEQ ids given): frames with the
    person's box, crop window and track id; the crops; the flow in Middlebury colours."""
    from gaittools.store.preview import write_previews
    from gaittools.store.zarr_store import StoreError

    try:
        written = write_previews(store, out, list(seq_ids) or None, columns)
    except (StoreError, KeyError, OSError) as exc:
        raise click.ClickException(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from exc
    click.echo(f"wrote {len(written)} previews to {out}")
