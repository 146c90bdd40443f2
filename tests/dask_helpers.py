"""A real Dask cluster for tests: ``dask scheduler`` and two single-threaded ``dask worker``
processes on 127.0.0.1, started in a working directory of the test's choosing (so that a path
the client leaves relative means something else to the workers, as on another host)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def dask_cluster_in(workdir: Path, workers: int = 2) -> Iterator[str]:
    """The scheduler's address while the cluster runs (nice'd: tests share the cores)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = ["nice", "-n", "19", sys.executable, "-m", "dask"]
    logs = [open(workdir / f"{n}.log", "w") for n in ["scheduler", *(f"worker{i}" for i in range(workers))]]
    procs = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], cwd=workdir, env=_env(), stdout=logs[0], stderr=logs[0],
                              start_new_session=True)]
    try:
        for log in logs[1:]:
            procs.append(subprocess.Popen([*dask, "worker", address, "--nthreads", "1", "--nworkers", "1",
                                           "--no-dashboard", "--host", "127.0.0.1"], cwd=workdir, env=_env(),
                                          stdout=log, stderr=log, start_new_session=True))
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(workers, timeout=90)
        yield address
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for log in logs:
            log.close()
