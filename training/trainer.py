"""The training loop, the same code on CPU, one GPU, or several GPUs under ``torchrun``.

Distributed training is detected from the environment ``torchrun`` sets (WORLD_SIZE,
LOCAL_RANK): only then is a process group created and the model wrapped in DDP; each rank
takes its share of the subjects of every P x K batch (``PKBatchSampler``). Rank 0 alone
writes logs, checkpoints and signatures.

With ``train.amp`` the forward runs under bf16 autocast (no loss scaling needed) on CUDA, and
on a CPU whose oneDNN has bf16 kernels (AVX512-BF16 or AMX: ``bf16_supported``); elsewhere fp32.
The run records which (``precision``). 3D models use ``channels_last_3d`` (NDHWC) on CUDA
(cuDNN's fast kernels) and on CPU too, where oneDNN's 3D convolutions measured 2-3x faster than
the NCDHW path for our small stacks; 2D set networks use ``channels_last`` weights (measured
1.3-1.6x faster on this CPU with bf16, ``benchmarks/train_speed.py``).

Set networks train on whole walks (``data.unit: walk``): batch ``step`` is P x K walks with
``data.frames`` frames drawn from each (``training.walks``), still a function of (seed, step).

What a step is: draw batch ``step`` (a function of seed and step), augment it on the device
with parameters drawn for (seed, step), forward, loss, backward, optimiser step, scheduler
step. With the model/optimiser/scheduler state and the global RNG (dropout) restored from a
checkpoint, a resumed run therefore repeats the original run exactly.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from gaittools.cli.progress import eta
from training.config import Config, DataConfig, OptimConfig, TrainConfig
from training.data import (AugmentParams, PKBatchSampler, RawBatch, ResidentClips, ZarrClips,
                           augment, crop_size, iterate_batches, make_loader, stored_array)
from training.model_build import model_modality
from training.monitor import CollapseGuard, embedding_cosine, gradient_shares
from training.runs import RunDir, seed_everything, set_rng_state
from training.walks import ResidentWalks

#: objective(outputs, batch, augmentation) -> (total loss, {name: detached 0-d tensor}).
#: Parts stay tensors until a log step, so logging does not synchronise the GPU every step.
Objective = Callable[[dict[str, torch.Tensor], RawBatch, AugmentParams],
                     tuple[torch.Tensor, dict[str, torch.Tensor]]]


# ---------------------------------------------------------------------------- devices
@dataclass
class DeviceContext:
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def setup_device(train_cfg: TrainConfig) -> DeviceContext:
    """The device of this process; joins the process group when launched by torchrun.

    ``cuda`` without an index means this rank's GPU, ``cuda:LOCAL_RANK``: CUDA calls
    (``set_device``, DDP's ``device_ids``) need an index."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if train_cfg.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(train_cfg.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DeviceContext(device, rank, world)


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs on fast kernels here: CUDA, or a CPU with bf16 instructions
    (without them oneDNN emulates bf16 and is slower than fp32). oneDNN's own answer is a
    private torch op; where a torch release lacks it, the CPU's flags answer instead."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    onednn_probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if onednn_probe is not None:
        return bool(onednn_probe())
    return any(cpu_bf16_flags().values())


def cpu_bf16_flags() -> dict[str, bool]:
    """Whether /proc/cpuinfo lists the bf16 instructions oneDNN uses (AVX512-BF16, AMX-BF16);
    both False where there is no /proc/cpuinfo (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"avx512_bf16": False, "amx_bf16": False}
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return {name: name in flags for name in ("avx512_bf16", "amx_bf16")}


def autocast_enabled(device: torch.device, amp: bool) -> bool:
    return amp and bf16_supported(device)


def precision(device: torch.device, amp: bool) -> str:
    """What a run computed in, for its records: "bf16-autocast" or "fp32"."""
    return "bf16-autocast" if autocast_enabled(device, amp) else "fp32"


def barrier(ctx: DeviceContext) -> None:
    if ctx.distributed:
        dist.barrier()


def mean_over_ranks(value: float, ctx: DeviceContext) -> float:
    """The mean of a per-rank number over all ranks (the number itself without DDP)."""
    if not ctx.distributed:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(total)
    return float(total.item()) / ctx.world


# ---------------------------------------------------------------------------- building
def build_optimizer(params: Any, ocfg: OptimConfig) -> torch.optim.Optimizer:
    if ocfg.name == "adam":
        return torch.optim.Adam(params, lr=ocfg.lr, weight_decay=ocfg.weight_decay)
    return torch.optim.SGD(params, lr=ocfg.lr, momentum=ocfg.momentum, weight_decay=ocfg.weight_decay)


def build_scheduler(opt: torch.optim.Optimizer, ocfg: OptimConfig, total_steps: int) -> Any:
    """``step``: x gamma every step_size steps; ``cosine``: to 0 over the run; ``plateau``:
    x plateau_factor when the mean loss of ``plateau_patience`` log windows did not improve."""
    if ocfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, ocfg.step_size, ocfg.gamma)
    if ocfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, total_steps))
    if ocfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=ocfg.plateau_factor,
                                                          patience=ocfg.plateau_patience)
    return None


def total_steps(train_cfg: TrainConfig, n_clips: int, batch: int) -> int:
    if train_cfg.steps is not None:
        return train_cfg.steps
    if train_cfg.epochs is not None:
        return max(1, math.ceil(train_cfg.epochs * n_clips / batch))
    return 1000


# ---------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    model: nn.Module
    steps: int
    clips_per_s: float
    history: list[dict[str, Any]] = field(default_factory=list)


def train(
    run: RunDir | None,
    model: nn.Module,
    objective: Objective,
    clips: pd.DataFrame,
    cfg: Config,
    role: str,
    ctx: DeviceContext,
    resume: bool = False,
    terms: Callable[[], dict[str, torch.Tensor]] | None = None,
    guard: CollapseGuard | None = None,
) -> TrainResult:
    """Train ``model`` on the clip table with ``objective``; checkpoints into ``run``.

    ``terms``: the objective's weighted loss terms of the latest step (still in the graph);
    at every log step each term's share of the gradient at the model's ``"features"`` is
    logged as ``gradshare_<name>``. ``guard`` turns logged rows into collapse warnings."""
    tcfg, ocfg, dcfg = cfg.train_for(role), cfg.optim_for(role), cfg.data
    modality = model_modality(model)
    if clips.empty:
        raise ValueError(f"{dcfg.store}: no training clips (are the sequences long enough for a clip?)")
    store_size = crop_size(dcfg.store, clips["seq_id"].iloc[0], stored_array(modality, dcfg.gray_array))
    input_size = dcfg.input_size or store_size
    n_steps = total_steps(tcfg, len(clips), dcfg.P * dcfg.K)
    seed_everything(tcfg.seed)

    model.to(ctx.device)
    channels_last = tcfg.channels_last and is_3d(model)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    elif tcfg.channels_last:  # 2D frame networks: NHWC weights, oneDNN converts the frames
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model.parameters(), ocfg)
    scheduler = build_scheduler(optimizer, ocfg, n_steps)
    start, spent_before = 0, 0.0
    if resume and run is not None and (ckpt := run.last_checkpoint()) is not None:
        state = run.load_checkpoint(ckpt, map_location=ctx.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start = int(state["step"])
        spent_before = float(state.get("train_s", 0.0))
        run.truncate_metrics(start)
        _log(ctx, f"resumed {run.path} at step {start}/{n_steps}")
    net: nn.Module = nn.parallel.DistributedDataParallel(
        model, device_ids=[ctx.device.index] if ctx.cuda else None) if ctx.distributed else model

    sampler = PKBatchSampler(clips["label"].to_numpy(), dcfg.P, dcfg.K, tcfg.seed, start, n_steps,
                             ctx.rank, ctx.world)
    batches = _training_batches(clips, modality, dcfg, tcfg, ctx, sampler, start)
    writer = run.tensorboard() if run is not None and ctx.is_main else None
    history: list[dict[str, Any]] = []
    window: list[dict[str, torch.Tensor]] = []
    t_window, clips_window, t_all, clips_all = time.perf_counter(), 0, time.perf_counter(), 0
    net.train()
    step = start
    for step, raw in zip(range(start, n_steps), batches):
        aug = AugmentParams.draw(len(raw.clip), tcfg.seed * 1000 + ctx.rank, step, dcfg.shift_px, dcfg.zoom,
                                 dcfg.flip, input_size)
        x = augment(raw.x, aug, input_size, dcfg.flow_scale)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=autocast_enabled(ctx.device, tcfg.amp)):
            computed = net(x)
        # losses read float32 copies; gradient shares are measured at the computed features,
        # which every copy descends from (a bf16 tensor's .float() is a new node)
        outputs = {k: v.float() for k, v in computed.items()}
        loss, parts = objective(outputs, raw, aug)
        done = step + 1
        log_now = done % tcfg.log_every == 0 or done == n_steps
        probe: dict[str, float] = {}
        if log_now:
            probe["embedding_cosine"] = embedding_cosine(outputs["embedding"])
            if terms is not None and "features" in outputs and not ctx.distributed:
                probe.update(gradient_shares(terms(), computed["features"]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append({"loss": loss.detach(), **{k: v for k, v in parts.items() if k != "total"}})
        clips_window += len(raw.clip) * ctx.world
        clips_all += len(raw.clip) * ctx.world
        if scheduler is not None and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step()
        if log_now:
            row = _summarise(window, done, optimizer, clips_window / (time.perf_counter() - t_window))
            row.update(probe)
            for warning in guard.check(row, n_steps) if guard is not None else []:
                _log(ctx, f"warning: {role}: {warning}")
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(mean_over_ranks(row["loss"], ctx))  # one decision, or lrs drift apart
            history.append(row)
            if ctx.is_main and run is not None:
                run.append_metrics(row)
                for key, value in row.items():
                    if key != "step":
                        writer.add_scalar(f"{role}/{key}", value, done)
            _log(ctx, f"{role} step {done}/{n_steps} loss {row['loss']:.4f} lr {row['lr']:.2e} "
                      f"{row['clips_per_s']:.1f} clips/s ETA {_eta(done - start, n_steps - done, t_all)}")
            window, t_window, clips_window = [], time.perf_counter(), 0
        if run is not None and ctx.is_main and (done % tcfg.ckpt_every == 0 or done == n_steps):
            run.save_checkpoint(done, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                # training-loop wall time so far, over every resume: a learning curve's x axis
                "train_s": spent_before + time.perf_counter() - t_all,
            }, keep=tcfg.ckpt_keep)
    if writer is not None:
        writer.close()
    elapsed = time.perf_counter() - t_all
    barrier(ctx)
    return TrainResult(model, n_steps, clips_all / elapsed if elapsed > 0 and clips_all else 0.0, history)


def _training_batches(clips: pd.DataFrame, modality: str, dcfg: DataConfig, tcfg: TrainConfig,
                      ctx: DeviceContext, sampler: PKBatchSampler, start: int) -> Iterator[RawBatch]:
    """Raw batches in the sampler's order from the data path the config asks for: whole walks
    (always resident: frames are drawn anywhere in a walk), resident clips, or Zarr workers."""
    if dcfg.unit == "walk":
        walks = ResidentWalks(dcfg.store, clips, modality, dcfg.frames, tcfg.seed * 1000 + ctx.rank, ctx.device,
                              dcfg.gray_array)
        _log(ctx, f"{modality} of {len(clips)} walks resident on {ctx.device} ({walks.nbytes / 2**20:.0f} MiB), "
                  f"{dcfg.frames} frames per walk, {precision(ctx.device, tcfg.amp)}")
        return walks.batches(sampler, start)
    if dcfg.gpu_resident:
        source: Any = ResidentClips(dcfg.store, clips, modality, dcfg.clip_len, ctx.device, dcfg.gray_array)
        _log(ctx, f"{modality} of {clips['seq_id'].nunique()} sequences resident on {ctx.device} "
                  f"({source.nbytes / 2**20:.0f} MiB)")
    else:
        source = make_loader(ZarrClips(dcfg.store, clips, modality, dcfg.clip_len, dcfg.cache_sequences,
                                       dcfg.gray_array),
                             sampler, dcfg.workers, pin_memory=ctx.cuda)
    return iterate_batches(source, sampler, ctx.device)


def _summarise(window: list[dict[str, torch.Tensor]], step: int, opt: torch.optim.Optimizer,
               speed: float) -> dict[str, Any]:
    keys = list(window[0])
    means = torch.stack([torch.stack([w[k].float() for w in window]).mean() for k in keys]).tolist()
    row: dict[str, Any] = {"step": step}
    row.update(dict(zip(keys, means)))
    row["lr"] = opt.param_groups[0]["lr"]
    row["clips_per_s"] = speed
    return row


def _eta(done: int, left: int, t0: float) -> str:
    return eta(done, left, time.perf_counter() - t0)


def _log(ctx: DeviceContext, message: str) -> None:
    if ctx.is_main:
        print(message, flush=True)


def is_3d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv3d) for m in model.modules())
