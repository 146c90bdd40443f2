"""``gaittools compute-flow STORE``: TV-L1 flow for every sequence of a store."""

from __future__ import annotations

import sys

import click

from gaittools.flow.params import PRESETS
from pipelines.cluster import cluster_options


def _batch_size(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise click.BadParameter(f"{value!r}: expected a positive integer or 'auto'")
    return n


def _shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    k, sep, n = value.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise click.BadParameter(f"{value!r}: expected K/N with 1 <= K <= N, e.g. 2/4", param_hint="--shard")
    return int(k), int(n)


@click.command("compute-flow")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--gpu", is_flag=True, help="Batched torch TV-L1 on the GPU(s) (default: OpenCV DualTVL1 on CPU workers).")
@click.option("--device", default=None, metavar="cpu|cuda|cuda:N",
              help="Run the batched torch TV-L1 on this device (cpu: the torch path without a GPU; "
                   "cuda: every visible GPU, one process each).")
@cluster_options
@click.option("--batch-size", default="auto", show_default=True, metavar="N|auto",
              help="Frame pairs per torch batch; auto: from the device's free memory (halved on out-of-memory).")
@click.option("--engine", type=click.Choice(["auto", "reference", "fused"]), default="auto", show_default=True,
              help="Torch path: TV-L1 inner loop as fused Triton kernels (CUDA), plain torch (reference), or "
                   "auto (fused where it can run, else reference with a warning). The engine that ran is "
                   "recorded in each sequence's flow attributes and the summary line.")
@click.option("--cuda-graphs", is_flag=True,
              help="Torch path, fused engine: replay each block of TV-L1 inner iterations from a captured CUDA "
                   "graph (fewer kernel launches; for small frames). Measured by benchmarks/gpu_suite.py.")
@click.option("--readers", type=click.IntRange(min=1), default=4, show_default=True,
              help="Threads reading sequences ahead of the torch engine.")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="default", show_default=True,
              help="Named TV-L1 settings: OpenCV's defaults, or cheaper ones (speed and error measured in "
                   "gaittools/flow/params.py).")
@click.option("--tvl1", "tvl1_params", multiple=True, metavar="NAME=VALUE",
              help="TV-L1 parameter override on top of the preset, e.g. --tvl1 warps=3.")
@click.option("--overwrite", is_flag=True, help="Recompute sequences that already have flow.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Compute at most N sequences (a trial run).")
@click.option("--shard", default=None, metavar="K/N",
              help="Only the K-th of N shares of the sequences (every N-th id from the K-th): N GPU hosts "
                   "split one shared store without overlap.")
def compute_flow(
    store: str, gpu: bool, device: str | None, scheduler: str | None, workers: int | None, batch_size: str,
    engine: str, cuda_graphs: bool, readers: int, preset: str, tvl1_params: tuple[str, ...], overwrite: bool, limit: int | None, shard: str | None,
) -> None:
    """Compute TV-L1 flow between consecutive frames of every sequence of STORE.

    Flow t -> t+1 is cropped with frame t's crop window and rescaled to the crop's pixels, so
    flow[t] lines up with gray[t]; stores without frames (silhouette pickles) get flow of the
    crops themselves. Done sequences are skipped (resume); failures are listed and recorded,
    and the exit code is 1 when any sequence failed.
    """
    from gaittools.store.zarr_store import StoreError
    from pipelines.cluster import ClusterPathError
    from gaittools.cli.errors import RunStopped
    from pipelines.compute_flow import (DeviceFailure, DeviceUnavailable, FlowRun, compute_flow as run_compute_flow,
                                        parse_params)

    try:
        params = {**PRESETS[preset], **parse_params(tvl1_params)}
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tvl1") from exc
    if (engine != "auto" or cuda_graphs) and not (gpu or device):
        raise click.UsageError("--engine and --cuda-graphs choose the torch TV-L1 engine; add --gpu or --device")
    if (gpu or device) and scheduler:
        raise click.UsageError("--scheduler runs the OpenCV CPU path on a Dask cluster; the torch path (--gpu/--device) "
                               "runs on this machine's devices. Drop one of them.")
    run = FlowRun(gpu=gpu, device=device, scheduler=scheduler, workers=workers, batch_size=_batch_size(batch_size),
                  engine=engine, cuda_graphs=cuda_graphs, readers=readers, overwrite=overwrite, limit=limit, shard=_shard(shard), params=params)
    try:
        report = run_compute_flow(store, run)
    except DeviceFailure as exc:
        raise RunStopped(str(exc)) from exc
    except (DeviceUnavailable, StoreError, ClusterPathError) as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(0 if report.ok else 1)
