"""Shared test set-up: where the real data lives, how a test asks for it, torch threads.

Real data (CASIA-B clips and silhouettes, Middlebury pairs) lives beside the repository in
``../shared/data`` and is never copied in. A test that reads it says so:

- ``@pytest.mark.real_data("casia-b-mini/videos/001-nm-01-090.avi", ...)``: skipped, with the
  missing path as the reason, when any named path (relative to ``DATA``) is absent;
- ``need_data("casia-b-sil-090")`` inside a fixture: the path, or the same skip.

``one_torch_thread``: the torch CPU path with one intra-op thread. On two cores shared with
other jobs, torch's spinning thread pool is many times slower than one thread (measured on the
TV-L1 tests: 11.6 s vs 0.65 s); modules use it with ``pytestmark``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def need_data(*parts: str | Path) -> Path:
    """``DATA/parts...`` (or an absolute path under it), or skip the test or fixture needing it."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not here: {path} (see ../shared/data/README.md)")
    return path


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_data(*paths): reads ../shared/data/<path>; skipped when absent")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("real_data"):
        for part in marker.args:
            need_data(part)


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` for the block, then restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def toy(tmp_path_factory: pytest.TempPathFactory):
    """One small training store + split for the whole session (``gaittools.synth.toystore``):
    8 synthetic subjects (001-004 train, 005-008 enrolled with nm-01/02 and probed with
    nm-03 (NM) and cl-01 (CL)), view 090, 34 frames of which the first 2 have nobody, 52 px
    crops and cheap TV-L1 flow; about 3 s on two cores. Read-only: a test that writes into a
    store copies it first (``copy_toy``)."""
    from gaittools.synth.toystore import write_toy

    return write_toy(tmp_path_factory.mktemp("toy"))


def copy_toy(toy, dest: Path):
    """A writable copy of the session's toy store and split under ``dest``."""
    import shutil

    from gaittools.store.zarr_store import Store
    from gaittools.synth.toystore import ToyData

    shutil.copytree(toy.store.path, dest / "store")
    shutil.copytree(toy.split, dest / "split")
    return ToyData(Store(dest / "store"), dest / "split")
