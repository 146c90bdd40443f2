"""Where a pipeline's Dask tasks run: a LocalCluster made for the run, or an existing cluster.

Why one single-threaded worker process per core by default: the tasks are OpenCV/numpy work
that holds the GIL in places and starts its own threads elsewhere; a process per core with one
thread each (and OpenCV told to use one thread, see ``limit_native_threads``) keeps every core
busy without oversubscription. ``--scheduler ADDRESS`` joins a cluster someone else started
(``dask scheduler`` + ``dask worker``); then the workers must see the same filesystem paths
(the store and the sources), because tasks read and write them directly.

Usage (what the commands do)::

    with dask_client(scheduler=None, workers=None) as client:
        futures = [client.submit(task, item, key=...) for item in items]
        for fut in as_completed(futures): ...

``workers=0`` runs nothing on Dask: the caller should then run its tasks in-process
(``in_process(workers)`` says so); handy for debugging with pdb and for small inputs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def default_workers() -> int:
    """One worker per core this process may use (respects CPU affinity / cgroup cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def in_process(workers: int | None, scheduler: str | None = None) -> bool:
    """True when the caller asked for no Dask at all (``--workers 0`` and no scheduler)."""
    return scheduler is None and workers == 0


def limit_native_threads() -> None:
    """Make OpenCV single-threaded inside a worker; called at the start of each task."""
    import cv2

    cv2.setNumThreads(1)


class ClusterPathError(RuntimeError):
    """Workers of a joined cluster that cannot see a path the tasks read or write."""


def _missing(paths: list[str]) -> list[str]:
    """Runs on each worker: the paths it cannot see."""
    return [p for p in paths if not os.path.exists(p)]


def check_workers_see(client: Any, paths: Mapping[str, str]) -> None:
    """Refuse, before any task runs, when a worker cannot see one of ``paths`` (name -> path).

    Tasks open the store (and sources) by path on the worker's host; a worker without the
    shared filesystem would otherwise fail every task it takes, one by one."""
    missing = {w: m for w, m in client.run(_missing, list(paths.values())).items() if m}
    if not missing:
        return
    worker, gone = sorted(missing.items())[0]
    names = ", ".join(f"the {name} {path}" for name, path in paths.items() if path in gone)
    raise ClusterPathError(
        f"{len(missing)} of {len(client.scheduler_info()['workers'])} Dask workers cannot see {names} "
        f"(e.g. {worker}); the workers of a joined cluster (--scheduler) must see the same paths: "
        "mount the shared filesystem at the same place on every host")


@contextmanager
def dask_client(
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | int = "auto",
    quiet: bool = True,
    must_see: Mapping[str, str] | None = None,
) -> Iterator[Any]:
    """A ``distributed.Client`` for the length of a ``with`` block, cleaned up after.

    - ``scheduler``: address (``tcp://host:port``) of a running scheduler to join; the cluster
      is left running afterwards. ``workers`` is then ignored. Every worker must see the
      absolute paths in ``must_see`` (``check_workers_see``).
    - otherwise a ``LocalCluster`` with ``workers`` processes (default: one per core) of
      ``threads_per_worker`` threads each, closed on exit.
    """
    from distributed import Client, LocalCluster

    if quiet:
        for name in ("distributed", "distributed.nanny", "distributed.scheduler", "distributed.worker"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if scheduler is not None:
        client = Client(scheduler, timeout="30s")
        try:
            if must_see:
                check_workers_see(client, must_see)
            yield client
        finally:
            client.close()
        return
    n = workers if workers else default_workers()
    cluster = LocalCluster(
        n_workers=n,
        threads_per_worker=threads_per_worker,
        processes=True,
        memory_limit=memory_limit,
        dashboard_address=":0",  # a free port: runs side by side never collide on 8787
        silence_logs=logging.CRITICAL if quiet else logging.WARNING,  # shutdown heartbeats log tracebacks at ERROR
    )
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def n_workers_of(client: Any) -> int:
    """How many workers the client's cluster has now (for per-core rates)."""
    return max(1, len(client.scheduler_info().get("workers", {})))


def cluster_options(func: F) -> F:
    """Click options ``--scheduler`` and ``--workers`` for any pipeline command."""
    func = click.option(
        "--workers", type=click.IntRange(min=0), default=None,
        help="Worker processes of the local cluster (default: one per core; 0: no Dask, run in "
             "this process). Ignored with --scheduler.",
    )(func)
    func = click.option(
        "--scheduler", metavar="ADDRESS", default=None,
        help="Join a running Dask cluster (e.g. tcp://10.0.0.1:8786) instead of starting a "
             "local one; its workers must see the same paths.",
    )(func)
    return func
