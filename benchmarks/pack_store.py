"""Pack an imported store into one ``.tar.gz`` that travels to a GPU machine, and unpack it.

Why: a device call carries at most 64 MiB, and a Zarr store is thousands of small files. The
silhouette store of CASIA-B view 090 (990 sequences of 64 x 64 gray crops, zstd chunks) packs
to about 20 MB. Only the gray crops travel: flow is recomputed there (``compute-flow --gpu``),
which is faster than carrying it. Packing refuses a store that already holds flow unless
``--with-flow``, so an archive never grows past the limit by accident.

    python -m benchmarks.pack_store STORE casia-b-sil-090-store.tar.gz
    python -m benchmarks.pack_store --import ../shared/data/casia-b-sil-090 casia-b-sil-090-store.tar.gz
"""

from __future__ import annotations

import argparse
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

#: Folder name of the store inside the archive; ``unpack`` returns it.
ARCHIVE_ROOT = "store"
DEVICE_CARRY_LIMIT = 64 * 2**20


def pack(store: Path, archive: Path, with_flow: bool = False) -> Path:
    """Write ``archive`` (tar.gz, the store under ``store/``) atomically; returns its path."""
    from gaittools.store.zarr_store import Store

    opened = Store(store)
    if not with_flow:
        with_flow_ids = [s for s in opened.seq_ids()[:20] if "flow" in opened.arrays_of(s)]
        if with_flow_ids:
            raise SystemExit(f"{store}: holds flow (e.g. {with_flow_ids[0]}); pack the gray-only "
                             "store, or pass --with-flow")
    archive.parent.mkdir(parents=True, exist_ok=True)
    staging = archive.with_name(archive.name + ".partial")
    with tarfile.open(staging, "w:gz", compresslevel=6) as tar:
        tar.add(store, arcname=ARCHIVE_ROOT, filter=_skip_staging)
    os.replace(staging, archive)
    return archive


def _skip_staging(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Leave out what a killed writer left behind (``.staging``), which is never data."""
    return None if ".staging" in Path(info.name).parts else info


def unpack(archive: Path, into: Path) -> Path:
    """Extract ``archive`` to ``into`` (which must not exist) and return the store's folder."""
    if into.exists():
        raise SystemExit(f"{into}: already exists; unpack into a new folder")
    if not archive.is_file():
        raise SystemExit(f"{archive}: no such archive")
    into.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=into.name + ".", dir=into.parent))
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(tmp, filter="data")  # "data": no absolute paths, links out or devices
        root = tmp / ARCHIVE_ROOT
        if not (root / "zarr.json").is_file():
            raise SystemExit(f"{archive}: no {ARCHIVE_ROOT}/zarr.json inside; not made by pack_store.py")
        root.rename(into)
    except (tarfile.TarError, OSError) as exc:
        raise SystemExit(f"{archive}: cannot unpack ({exc})") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return into


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("store", type=Path, nargs="?", help="Imported store folder (gray crops).")
    p.add_argument("archive", type=Path, help="Archive to write (.tar.gz).")
    p.add_argument("--import", dest="source", type=Path,
                   help="Import this folder of OpenGait pickles first (into a temporary store).")
    p.add_argument("--with-flow", action="store_true", help="Pack a store that holds flow too.")
    args = p.parse_args(argv)
    if (args.store is None) == (args.source is None):
        p.error("give STORE or --import SOURCE (not both)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if args.source:
            from gaittools.cli.main import main as gaittools

            store = Path(tmp) / "store"
            code = gaittools.main(["extract-frames", "--dataset", "opengait-pkl", str(args.source), str(store)],
                                  standalone_mode=False)
            if isinstance(code, int) and code:
                raise SystemExit(f"import of {args.source} failed (exit {code})")
            print(f"imported {args.source} in {time.perf_counter() - started:.1f} s")
        pack(store, args.archive, args.with_flow)
    size = args.archive.stat().st_size
    print(f"wrote {args.archive}: {size / 2**20:.1f} MiB in {time.perf_counter() - started:.1f} s"
          + ("" if size < DEVICE_CARRY_LIMIT else "  (over the device's 64 MiB carry limit!)"))


if __name__ == "__main__":
    main()
