"""The cross-view chain at the field's scale on one GPU, in device calls of at most 10 minutes (issue 22).

``benchmarks.casia_b_cross_view`` with ``training/configs/casia-b-sil-lt-gpu.yaml`` (GaitBase-
like widths 64-512, P x K = 8 x 16 walks x 30 frames, 60k steps, bf16, a checkpoint every
500 steps), run under a wall-clock budget. When the budget runs out, the stage in progress is
stopped where it is (a training run keeps its last checkpoint), ``OUT/progress.md`` says how
far each run got, and the script exits with 75 ("run me again"). The next call on the same
``--out`` resumes: finished stages are kept, runs continue from their checkpoints. When every
stage has finished it exits 0 with the same results as the CPU chain (``OUT/results.md``, the
field's table and heatmaps in ``OUT/views``).

Every other option is the chain's (``--archives``/``--source``/``--store``, ``--seeds``,
``--set``, ...). A device machine starts bare, so OUT must come back between calls (or the calls
follow one another on one warm machine); see benchmarks/README.md for what fits a call.

    python -m benchmarks.gpu_cross_view --store STORE --out OUT --budget-s 540 --seeds 0,1
    # on a CPU, 1 step of the full-width networks on three subjects and three views (a check)
    python -m benchmarks.gpu_cross_view --archives ../shared/data/casia-b-sil-all --subjects 001-002,075 \\
        --views 000,090,180 --out /tmp/xv-gpu --device cpu --workers 0 --seeds 0 \\
        --set train.steps=1 --set student_train.steps=1 --set data.P=2 --set data.K=2 --set data.frames=4
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import casia_b_cross_view as chain_module
from benchmarks.casia_b_sil_090 import StageFailed, run_state

#: Exit status of a call that ran out of its budget: call again with the same --out.
AGAIN = 75


class OutOfTime(BaseException):
    """The budget ran out (a BaseException: the chain's and the commands' ``except Exception``
    must not take it for a failed stage)."""


def within(budget_s: float, work: Callable[[], Any]) -> bool:
    """Run ``work``; stop it with ``OutOfTime`` after ``budget_s`` seconds of wall time.
    True when it finished, False when the budget stopped it."""
    def expire(signum: int, frame: Any) -> None:
        raise OutOfTime

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(budget_s, 1e-3))
    try:
        work()
        return True
    except OutOfTime:
        return False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def progress(out: Path) -> list[dict[str, Any]]:
    """Each run folder's state and the step of its newest checkpoint."""
    rows = []
    for run in sorted((out / "runs").glob("*")) if (out / "runs").is_dir() else []:
        marker = run / "checkpoints" / "last.txt"
        step = int(marker.read_text().strip().split("_")[1].split(".")[0]) if marker.is_file() else 0
        rows.append({"run": run.name, "state": run_state(run), "checkpoint_step": step})
    return rows


def write_progress(out: Path, finished: bool) -> Path:
    """OUT/progress.md: where the chain stands after this call (and the stage times so far)."""
    stages = json.loads((out / "stages.json").read_text()) if (out / "stages.json").is_file() else {}
    lines = [f"# Cross-view chain on the GPU: {'finished' if finished else 'stopped by its budget; run again'}",
             "", "| run | state | newest checkpoint |", "|---|---|---|"]
    lines += [f"| {r['run']} | {r['state']} | {r['checkpoint_step']} |" for r in progress(out)]
    lines += ["", "| stage | wall s (all calls) |", "|---|---|"] + [f"| {k} | {v:.1f} |" for k, v in stages.items()]
    path = out / "progress.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="Wall seconds this call may take before it stops (default 540: a 10-minute call "
                        "with time to start and to send OUT back).")
    p.add_argument("--help", "-h", action="store_true")
    own, rest = p.parse_known_args(argv)
    if own.help:
        print(__doc__)
        chain_module.parse_args(["--help"])
    if "--config" not in rest:
        rest += ["--config", str(chain_module.GPU_CONFIG)]
    out = Path(rest[rest.index("--out") + 1]).resolve() if "--out" in rest else None
    finished = within(own.budget_s, lambda: chain_module.main(rest))
    if out is not None:
        print(write_progress(out, finished).read_text(), flush=True)
    if not finished:
        print(f"out of time after {own.budget_s:.0f} s: run again with the same --out to resume", flush=True)
    return 0 if finished else AGAIN


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        sys.exit(main())
    except StageFailed as exc:
        sys.exit(f"error: {exc}")
