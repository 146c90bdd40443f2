"""``gaittools build-split DATASET STORE``: the protocol's roles for the sequences a store has."""

from __future__ import annotations

from pathlib import Path

import click

from gaittools.store.manifest import read_manifest
from gaittools.protocols.protocol import Protocol, ProtocolError, load_protocol, packaged_protocol
from gaittools.protocols import splits
from gaittools.protocols.splits import Split, SplitError, SplitOptions, summary_lines, write_split
from gaittools.store.zarr_store import Store, StoreError


@click.command("build-split")
@click.argument("dataset")
@click.argument("store", type=click.Path(exists=True, path_type=Path))
@click.option("--protocol", "setting", default=None,
              help="Setting of the protocol: large|medium|small (casia-b), standard|temporal "
                   "(tum-gaid). Default: the protocol file's default_setting.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for split.parquet, split.json and missing.txt.")
@click.option("--views", default=None,
              help="Comma-separated views (e.g. 090): the protocol restricted to these views, for "
                   "training, gallery and probes (same-view evaluation by default).")
@click.option("--train-all-views", is_flag=True,
              help="With --views: train on every view of the protocol, evaluate on the listed ones.")
@click.option("--cross-view/--same-view", "cross_view", default=None,
              help="Evaluate across views (identical views excluded) or within each view. "
                   "Default: cross-view as the protocol says, same-view when --views is given.")
@click.option("--with-005/--without-005", "with_optional", default=None,
              help="CASIA-B subject 005: OpenGait trains with it, the original GaitSet drops it. "
                   "Default: the protocol file's (casia-b.yaml: with).")
@click.option("--val-fraction", type=float, default=None,
              help="Fraction of the training ids (first ones, sorted) kept for validation "
                   "(protocol default 0.06; 0 = none).")
@click.option("--ids-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder with the dataset's id lists (TUM-GAID: tumgaidtrainvalids.lst, tumgaidtestids.lst).")
@click.option("--protocol-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Your own protocol file instead of the one shipped in manifests/.")
def build_split(dataset: str, store: Path, setting: str | None, out_dir: Path, views: str | None,
                cross_view: bool | None, with_optional: bool | None, val_fraction: float | None,
                ids_dir: Path | None, protocol_file: Path | None, train_all_views: bool = False) -> None:
    """Assign the sequences of STORE (or of a manifest .parquet) to train, val, gallery and probes.

    Only sequences whose extraction finished count as present; every sequence the protocol
    expects and the store lacks is counted and listed in OUT/missing.txt.
    """
    try:
        protocol = _protocol(dataset, protocol_file)
        _check_store_dataset(store, protocol)
        manifest = read_manifest(store)
        options = SplitOptions(
            setting=setting, views=_parse_views(views), cross_view=cross_view,
            with_optional_subject=with_optional, val_fraction=val_fraction, ids_dir=ids_dir,
            train_all_views=train_all_views,
        )
        split = splits.build_split(manifest, protocol, options)  # this command shadows the name
        paths = write_split(split, out_dir)
    except (ProtocolError, SplitError, StoreError, FileNotFoundError, ValueError) as exc:
        error = click.ClickException(str(exc))
        error.exit_code = 2  # bad input, not a partly failed run
        raise error from exc
    _report(split, paths)


def _protocol(dataset: str, protocol_file: Path | None) -> Protocol:
    protocol = load_protocol(protocol_file) if protocol_file else packaged_protocol(dataset)
    if protocol.dataset != dataset:
        raise ProtocolError(f"{protocol.source}: describes dataset {protocol.dataset!r}, not {dataset!r}")
    return protocol


def _check_store_dataset(store: Path, protocol: Protocol) -> None:
    """A store says which dataset it holds; a bare manifest is checked by its dataset column."""
    if store.is_dir() and (store / "zarr.json").is_file():
        held = Store(store).dataset
        # OpenGait pickles are CASIA-B silhouettes named as CASIA-B (gaittools.sources.layouts)
        if held != protocol.dataset and not (held == "opengait-pkl" and protocol.dataset == "casia-b"):
            raise StoreError(f"{store}: a store of dataset {held!r}, not {protocol.dataset!r}")


def _parse_views(views: str | None) -> tuple[str, ...] | None:
    if views is None:
        return None
    parsed = tuple(v.strip() for v in views.split(",") if v.strip())
    if not parsed:
        raise SplitError(f"--views {views!r} names no view")
    return parsed


def _report(split: Split, paths: dict[str, Path]) -> None:
    for line in summary_lines(split):
        click.echo(line)
    n_missing = len(split.missing)
    if n_missing:
        click.echo(f"{n_missing} expected sequences are not in the store: listed in {paths['missing']}", err=True)
    click.echo(f"wrote {paths['table']}, {paths['info']}, {paths['missing']}")
