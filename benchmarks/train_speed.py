"""CPU training speed per network family: frames/s, achieved GFLOPS and their share of the
matmul peak, for fp32 and bf16 autocast side by side, with and without channels_last (issue 21).

Why: a training recipe is chosen by accuracy per CPU-minute, so each family's cost must be
measured the way training pays it, in one run on one machine. A full training step is timed:
forward, the losses the trainer uses (``training.losses.LossSet``: per-strip batch-hard triplet
plus 0.1 x cross-entropy for set networks, the CPU config's triplet + CE for the 3D clips),
backward and an Adam step, on a fixed random batch already in memory (the network's ceiling).

The ceiling of the machine is measured too: a 4096 x 4096 matmul in bf16 and in fp32 at the
same thread count. A network's achieved GFLOPS (matmul and conv FLOPs of one forward+backward,
counted by ``torch.utils.flop_counter.FlopCounterMode``, divided by the step's time) over the
peak of its precision says how much of the CPU it uses; the issue aims at 25% or more.

Families (``--families``):

    setnet-64x44    setnet-gray, plain conv backbone, input 64 x 44        (64, 1, 30, 64, 64)
    setnet-32x22    the same at downscale=2 (32 x 22)                      (64, 1, 30, 64, 64)
    gaitbase-64x44  gaitbase-gray, residual GaitBase-style backbone        (64, 1, 30, 64, 64)
    gaitbase-32x22  the same at downscale=2                                (64, 1, 30, 64, 64)
    gaitset         gaitset-gray (GaitSet, 64 x 64)                        (64, 1, 30, 64, 64)
    c3d             the authors' 3D clip stack at the CPU config's widths  (32, 1, 25, 64, 64)

Set networks take P x K x T = 8 x 8 x 30 frames per step (``--K`` changes K), the 3D stack
32 clips of 25 frames (the CPU config's 8 x 4). The wide 64 x 44 networks (gaitbase, GaitSet)
cost about 2 TFLOP a step, so timing stops after ``--budget`` seconds of timed steps (one
at least), and a warm-up step that alone takes ``--budget`` seconds is the measurement.

The first set network also gets a data-path row (``--no-data`` drops it): the same step fed
by ``training.walks.ResidentWalks`` (uint8 walks in memory, T frames drawn per walk) and the
trainer's augmentation instead of a fixed batch; the difference is what feeding costs.
``--compile [FAMILIES]`` adds torch.compile'd runs (default: setnet-64x44), each in a child
process, so a compile that fails or crashes is reported and the run goes on.

    python -m benchmarks.train_speed                                   # everything but compile
    python -m benchmarks.train_speed --families setnet-32x22,c3d --K 2 --steps 1   # a smoke run
    python -m benchmarks.train_speed --compile --out benchmarks/results/train-speed.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.machine import cpu_name
from training.config import OptimConfig, load_config
from training.losses import LossSet
from training.model_build import build_net
from training.models import build_model, count_parameters
from training.trainer import bf16_supported, build_optimizer, cpu_bf16_flags

if TYPE_CHECKING:
    from training.data import PKBatchSampler
    from training.walks import ResidentWalks

ROOT = Path(__file__).resolve().parents[1]
CPU_CONFIG = ROOT / "training" / "configs" / "casia-b-sil-090-cpu-3d.yaml"
#: CASIA-B's training subjects (001-074): the classifier's width in every family.
N_CLASSES = 74
#: Subjects x walks per subject of a set network's batch, frames drawn per walk (issue 21's recipe).
P, K_WALKS, FRAMES = 8, 8, 30
MATMUL_SIZE = 4096
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Family:
    """A network as training builds it, with the batch and the losses it trains with."""

    name: str
    model: str
    build: Callable[[], nn.Module]
    shape: tuple[int, ...]
    frames_per_step: int
    losses: Callable[[], LossSet]
    clip: bool = False  # a 3D clip network (channels_last_3d), else a set network (channels_last)

    @property
    def labels(self) -> torch.Tensor:
        """P subjects x K samples each, as the P x K sampler draws them (triplets need positives)."""
        return torch.arange(P).repeat_interleave(self.shape[0] // P)


def set_losses() -> LossSet:
    """The set networks' recipe (issue 21): batch-hard triplet per strip, margin 0.2, plus 0.1 x CE."""
    return LossSet({"triplet": 1.0, "ce": 0.1}, margin=0.2, mining="batch_hard")


def clip_losses() -> LossSet:
    """The 3D clip family's losses as the CPU config sets them."""
    loss = load_config(CPU_CONFIG).loss
    return LossSet({"ce": loss.ce_weight, "triplet": loss.triplet_weight}, margin=loss.triplet_margin,
                   mining=loss.triplet_mining)


def _set_family(name: str, model: str, k: int, **options: int) -> Family:
    """A registered set network (gray, 1 channel) on P x k walks of T frames, 64 x 64 crops."""
    walks = P * k
    return Family(name, model, lambda: build_model(model, n_classes=N_CLASSES, **options),
                  (walks, 1, FRAMES, 64, 64), walks * FRAMES, set_losses)


def _clip_family(k: int) -> Family:  # noqa: ARG001 -- the 3D batch is the CPU config's, always
    """The gray student of the CPU config: its widths, its P x K clips of clip_len frames."""
    cfg = load_config(CPU_CONFIG)
    clips = cfg.data.P * cfg.data.K
    return Family("c3d", f"c3d {'-'.join(map(str, cfg.student.options['widths']))}",
                  lambda: build_net(cfg.student, N_CLASSES), (clips, 1, cfg.data.clip_len, 64, 64),
                  clips * cfg.data.clip_len, clip_losses, clip=True)


#: name -> builder taking K, the walks per subject of a set network's batch.
FAMILIES: dict[str, Callable[[int], Family]] = {
    "setnet-64x44": lambda k: _set_family("setnet-64x44", "setnet-gray", k),
    "setnet-32x22": lambda k: _set_family("setnet-32x22", "setnet-gray", k, downscale=2),
    "gaitbase-64x44": lambda k: _set_family("gaitbase-64x44", "gaitbase-gray", k),
    "gaitbase-32x22": lambda k: _set_family("gaitbase-32x22", "gaitbase-gray", k, downscale=2),
    "gaitset": lambda k: _set_family("gaitset", "gaitset-gray", k),
    "c3d": _clip_family,
}


@dataclass
class Setting:
    """One way to run a family: layout (contiguous / channels_last) and eager or compiled."""

    layout: str
    compiled: bool = False

    @property
    def label(self) -> str:
        return self.layout + (" + compile" if self.compiled else "")


@dataclass
class Result:
    """Per precision: seconds per step (a string: why it failed) and of the first step."""

    family: str
    setting: str
    seconds: dict[str, float | str] = field(default_factory=dict)
    first: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------- machine
def matmul_gflops(dtype: torch.dtype, size: int = MATMUL_SIZE, repeats: int = 3) -> float:
    """Best GFLOPS of a size x size matmul in ``dtype``: the ceiling a network's convs can reach
    with this thread count (best of ``repeats``: other load on the machine only slows it)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)  # warm: oneDNN picks and caches its kernel
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * size ** 3 / best / 1e9


# ------------------------------------------------------------------------------- one step
def prepare(family: Family, setting: Setting) -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor]:
    """A fresh network (same seed every time), its Adam and a random batch in the setting's
    layout. Set networks get channels_last weights only (oneDNN converts the frames), as the
    trainer does; the 3D stack gets channels_last_3d weights and input."""
    torch.manual_seed(0)
    model = family.build().train()
    x = torch.rand(family.shape)
    if setting.layout == "channels_last":
        fmt = torch.channels_last_3d if family.clip else torch.channels_last
        model = model.to(memory_format=fmt)
        if family.clip:
            x = x.contiguous(memory_format=fmt)
    return model, build_optimizer(model.parameters(), OptimConfig(name="adam", lr=1e-3)), x


def train_step(model: nn.Module, losses: LossSet, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               labels: torch.Tensor, bf16: bool) -> None:
    """What ``training.trainer.train`` does per step: autocast forward, float32 losses, backward, Adam."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        computed = model(x)
    loss, _ = losses({k: v.float() for k, v in computed.items()}, labels=labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def step_flops(family: Family) -> int:
    """Matmul/conv FLOPs of one forward + loss + backward, as FlopCounterMode counts them: each
    backward op by the gradients it computes (a conv's input and weight gradients, about 2x its
    forward; no input gradient for the first conv); elementwise ops, BatchNorm, pooling and Adam
    not at all. Counted on the meta device: shapes only, no arithmetic, so counting a 2-TFLOP
    step costs seconds. The count does not depend on precision or layout."""
    with torch.device("meta"):
        model, x, labels, losses = family.build().train(), torch.empty(family.shape), family.labels, family.losses()
        with FlopCounterMode(display=False) as counter:
            computed = model(x)
            loss, _ = losses({k: v.float() for k, v in computed.items()}, labels=labels)
            loss.backward()
    return counter.get_total_flops()


def time_steps(step: Callable[[], None], steps: int, warmup: int, budget: float = math.inf,
               cold: int = 0) -> tuple[float, float]:
    """(median seconds of the timed steps, seconds of the first step).

    ``warmup`` untimed steps, then up to ``steps`` timed ones, stopping once they have taken
    ``budget`` seconds (at least one). A warm-up step that alone takes ``budget`` seconds is
    the measurement: what warming up removes (oneDNN's kernel set-up, a fraction of a second)
    is then a few percent of it, and the 2-TFLOP steps of the wide 64 x 44 networks would
    otherwise double the run. The first ``cold`` steps never count (a compile). The median: a
    step hit by other load on a shared machine does not move it."""
    times: list[float] = []
    while len(times) < warmup + steps:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        if cold < len(times) <= warmup and times[-1] >= budget:
            return times[-1], times[0]
        if len(times) > warmup and sum(times[warmup:]) >= budget:
            break
    return statistics.median(times[warmup:]), times[0]


def measure(family: Family, setting: Setting, precision: str, steps: int, warmup: int,
            budget: float = math.inf) -> tuple[float | str, float]:
    """(seconds per training step, or why it could not run, seconds of the first step).

    A compiled network gets one more warm-up step (its first call compiles forward and
    backward); an exception from torch.compile is a result, not a crash."""
    model, optimizer, x = prepare(family, setting)
    losses, labels = family.losses(), family.labels
    net = torch.compile(model) if setting.compiled else model
    bf16 = precision == "bf16"
    try:
        cold = int(setting.compiled)
        return time_steps(lambda: train_step(net, losses, optimizer, x, labels, bf16), steps, warmup + cold,
                          budget, cold)
    except Exception as error:  # noqa: BLE001 -- torch.compile fails in many ways on a CPU
        if not setting.compiled:
            raise
        first = str(error).strip().splitlines()[0][:120] if str(error).strip() else ""
        return f"failed: {type(error).__name__}: {first}", float("nan")


def measure_compiled(name: str, k: int, precision: str, steps: int, warmup: int, budget: float,
                     timeout: float = 1800) -> tuple[float | str, float]:
    """``measure`` of a torch.compile'd channels_last network in a child process.

    Why a child: compiled CPU code can take the process down (torch 2.13's inductor backward of
    the set networks aborts with heap corruption here), which no ``except`` catches. The child
    compiles into a fresh inductor cache, so the first step shows a cold compile's cost."""
    spec = json.dumps({"name": name, "k": k, "precision": precision, "steps": steps, "warmup": warmup,
                       "budget": budget, "threads": torch.get_num_threads()})
    code = ("import faulthandler, sys; faulthandler.enable(); "
            "from benchmarks.train_speed import compiled_child; compiled_child(sys.argv[1])")
    with tempfile.TemporaryDirectory(prefix="train-speed-inductor-") as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        try:
            proc = subprocess.run([sys.executable, "-c", code, spec], capture_output=True, text=True, env=env,
                                  cwd=ROOT, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"failed: no result in {timeout:.0f} s", float("nan")
    if proc.returncode == 0:
        seconds, first = json.loads(proc.stdout.strip().splitlines()[-1])
        return seconds, first
    return f"failed: {_death(proc.returncode)}{_phase(proc.stderr)}: {_first_error(proc.stderr)}", float("nan")


def compiled_child(spec: str) -> None:
    """The child's side of ``measure_compiled``: one measurement, printed as JSON."""
    args = json.loads(spec)
    torch.set_num_threads(args["threads"])
    family = FAMILIES[args["name"]](args["k"])
    result = measure(family, Setting("channels_last", compiled=True), args["precision"], args["steps"],
                     args["warmup"], args["budget"])
    print(json.dumps(result), flush=True)


def _death(returncode: int) -> str:
    """"killed by SIGABRT" or "exit 1": how a child ended."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit {returncode}"


def _phase(stderr: str) -> str:
    """" in the backward" where faulthandler's stack of a dead child passes through autograd's
    backward (a compiled backward), " in the forward" where it does not, "" without a stack."""
    _, found, stack = stderr.partition("most recent call first")
    if not found:
        return ""
    return " in the backward" if " in backward" in stack else " in the forward"


def _first_error(stderr: str) -> str:
    """What a dead child said: a Python traceback's last line (the exception), else the first
    stderr line that is not a warning (a C++ abort prints its reason first)."""
    lines = [line.rstrip() for line in stderr.splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):
        lines = [line for line in reversed(lines) if not line[0].isspace()]
    lines = [line.strip() for line in lines if "warn" not in line.lower()]
    return lines[0][:120] if lines else "no message"


# ------------------------------------------------------------------------------- data path
def walk_source(work: Path, k: int) -> tuple[ResidentWalks, PKBatchSampler]:
    """``ResidentWalks`` over a small synthetic store (8 training subjects x 4 walks of 60 gray
    frames, no flow: seconds to write) and an endless P x K sampler over its walks (K > 4 draws
    a walk more than once; each draw gets its own frames, so the batch costs the same)."""
    from gaittools.synth.toystore import write_toy
    from training.clips import read_split
    from training.data import PKBatchSampler
    from training.walks import ResidentWalks, build_walk_index

    toy = write_toy(work / "toy", subjects=P + 1, train_subjects=P, walks=("nm-01", "nm-02", "nm-03", "nm-04"),
                    frames=60, crop_size=64, gallery=("nm-01",), probes={"NM": ("nm-02",)}, flow=False)
    walks = build_walk_index(toy.store, read_split(toy.split), "gray")
    source = ResidentWalks(str(toy.store.path), walks, "gray", FRAMES, seed=0)
    return source, PKBatchSampler(walks["label"].to_numpy(), P, k, seed=0)


def data_path_seconds(family: Family, precision: str, steps: int, warmup: int, budget: float
                      ) -> tuple[float, float]:
    """(seconds per training step fed by resident walks, seconds of the feeding alone), medians.

    Feeding is what the trainer does before the forward: gather T drawn frames per walk of a
    P x K batch from the uint8 walks, fit and augment them (``training.data.augment``, the
    config's default shift, zoom and flip)."""
    from training.config import DataConfig
    from training.data import AugmentParams, augment

    cfg = DataConfig()
    with tempfile.TemporaryDirectory(prefix="train-speed-") as work:
        source, sampler = walk_source(Path(work), family.shape[0] // P)
    model, optimizer, _ = prepare(family, Setting("channels_last"))
    losses, batches, feeding = family.losses(), iter(sampler), []
    steps_done = [0]

    def step() -> None:
        t0, i = time.perf_counter(), steps_done[0]
        raw = source.batch(next(batches), i)
        params = AugmentParams.draw(len(raw.clip), 0, i, cfg.shift_px, cfg.zoom, cfg.flip, family.shape[-1])
        x = augment(raw.x, params, family.shape[-1], cfg.flow_scale)
        feeding.append(time.perf_counter() - t0)
        train_step(model, losses, optimizer, x, raw.label, precision == "bf16")
        steps_done[0] += 1

    seconds, _ = time_steps(step, steps, warmup, budget)
    return seconds, statistics.median(feeding[warmup:] or feeding[-1:])  # a long warm-up step counts alone


# ------------------------------------------------------------------------------- report
@dataclass
class Machine:
    """What the numbers were measured on: every result file says it."""

    cpu: str
    threads: int
    torch: str
    bf16: bool
    flags: dict[str, bool]
    peak: dict[str, float]  # precision -> matmul GFLOPS

    @classmethod
    def measure(cls) -> Machine:
        peak = {"bf16": matmul_gflops(torch.bfloat16), "fp32": matmul_gflops(torch.float32)}
        return cls(cpu_name(), torch.get_num_threads(), torch.__version__, bf16_supported(torch.device("cpu")),
                   cpu_bf16_flags(), peak)

    def lines(self) -> list[str]:
        flags = ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in self.flags.items())
        return [f"- machine: {self.cpu}, {self.threads} threads (torch.get_num_threads), "
                f"Python {platform.python_version()}, torch {self.torch}",
                f"- bf16: `training.trainer.bf16_supported` {'yes' if self.bf16 else 'no'} "
                f"(/proc/cpuinfo: {flags})" + ("" if self.bf16 else "; bf16 below is emulated, not a recipe"),
                f"- matmul peak ({MATMUL_SIZE} x {MATMUL_SIZE}, best of 3): bf16 {self.peak['bf16']:,.0f} GFLOPS, "
                f"fp32 {self.peak['fp32']:,.0f} GFLOPS"]


def family_table(families: list[Family], flops: dict[str, int]) -> list[str]:
    rows = ["| family | network | parameters | input per step | frames/step | GFLOP/step (fwd+bwd) | MFLOP/frame |",
            "|---|---|---|---|---|---|---|"]
    for f in families:
        per_frame = flops[f.name] / f.frames_per_step / 1e6
        rows.append(f"| {f.name} | {f.model} | {count_parameters(f.build()):,} | {tuple(f.shape)} | "
                    f"{f.frames_per_step:,} | {flops[f.name] / 1e9:,.1f} | {per_frame:,.1f} |")
    return rows


def _speed(result: float | str | None, family: Family, flops: int, peak: float) -> tuple[str, str]:
    """(frames/s, GFLOPS and % of peak) cells of one measurement."""
    if result is None:
        return "-", "-"
    if isinstance(result, str):
        return result, "-"
    gflops = flops / result / 1e9
    return f"{family.frames_per_step / result:,.0f}", f"{gflops:,.1f} ({gflops / peak:.1%})"


def step_table(results: list[Result], families: dict[str, Family], flops: dict[str, int],
               machine: Machine) -> list[str]:
    rows = ["| family | setting | fp32 frames/s | bf16 frames/s | bf16 / fp32 | fp32 GFLOPS (% of fp32 peak) "
            "| bf16 GFLOPS (% of bf16 peak) | first step s, fp32 / bf16 |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        family = families[r.family]
        fp32, fp32_gflops = _speed(r.seconds.get("fp32"), family, flops[r.family], machine.peak["fp32"])
        bf16, bf16_gflops = _speed(r.seconds.get("bf16"), family, flops[r.family], machine.peak["bf16"])
        a, b = r.seconds.get("fp32"), r.seconds.get("bf16")
        ratio = f"{a / b:.2f}x" if isinstance(a, float) and isinstance(b, float) else "-"
        first = " / ".join(f"{r.first[p]:.1f}" if math.isfinite(r.first.get(p, math.nan)) else "-"
                           for p in PRECISIONS)
        rows.append(f"| {r.family} | {r.setting} | {fp32} | {bf16} | {ratio} | {fp32_gflops} | {bf16_gflops} "
                    f"| {first} |")
    return rows


def data_table(family: Family, precision: str, fixed: float, fed: float, feeding: float) -> list[str]:
    frames = family.frames_per_step
    return ["| family | precision | fixed batch frames/s | resident walks frames/s | resident / fixed "
            "| feeding ms/step |", "|---|---|---|---|---|---|",
            f"| {family.name} | {precision}, channels_last | {frames / fixed:,.0f} | {frames / fed:,.0f} | "
            f"{fixed / fed:.0%} | {feeding * 1e3:,.0f} |"]


def report(command: str, machine: Machine, families: list[Family], flops: dict[str, int],
           results: list[Result], data: list[str], timing: str, elapsed: float) -> str:
    by_name = {f.name: f for f in families}
    lines = ["# CPU training speed per family (`benchmarks/train_speed.py`)", "",
             f"- command: `{command}`",
             f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}; "
             f"run time {elapsed / 60:.1f} min",
             *machine.lines(),
             "- a step: forward (bf16: `torch.autocast`), float32 losses (set networks: batch-hard triplet per "
             "strip + 0.1 x CE; 3D: the CPU config's triplet + CE), backward, Adam, on a fixed random batch in "
             f"memory (input per step: the families' table); {timing}",
             "- channels_last: NHWC weights for the set networks (oneDNN converts the frames, as the trainer "
             "does), NDHWC weights and input for the 3D stack",
             "- FLOPs: `FlopCounterMode` over one forward + loss + backward (convs and matmuls only; backward "
             "counts each gradient it computes, about 2x the forward, no input gradient for the first conv; "
             "BatchNorm, elementwise, pooling and Adam are not counted). GFLOPS = FLOPs per step / step time; "
             "share = GFLOPS / matmul peak of the same precision",
             "- compile: `torch.compile(model)` (inductor) in a child process with a fresh cache, so a crash is "
             "a result and its first step is a cold compile",
             "", "## Families", "", *family_table(families, flops),
             "", "## Training step", "", *step_table(results, by_name, flops, machine)]
    if data:
        lines += ["", "## Data path: resident walks vs a fixed batch", "",
                  "Resident: `training.walks.ResidentWalks` (uint8 walks in memory, T frames drawn per walk) "
                  "and the trainer's augmentation before every step; fixed: the same step on a batch "
                  "already in memory.", "", *data]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- main
def settings_for(family: Family, compile_: bool) -> list[Setting]:
    """Both layouts; a compiled channels_last run for a set network when asked."""
    settings = [Setting("contiguous"), Setting("channels_last")]
    if compile_ and not family.clip:
        settings.append(Setting("channels_last", compiled=True))
    return settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, of: {', '.join(FAMILIES)}")
    ap.add_argument("--steps", type=int, default=3, help="at most this many timed steps per measurement (median)")
    ap.add_argument("--budget", type=float, default=10.0,
                    help="stop timing a measurement once its timed steps took this many seconds (at least one "
                         "step); a warm-up step this long is the measurement")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones")
    ap.add_argument("--K", type=int, default=K_WALKS, help="walks per subject in a set network's batch (P = 8)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--compile", nargs="?", const="setnet-64x44", default="", metavar="FAMILIES",
                    help="also time torch.compile'd set networks, channels_last (default: setnet-64x44; "
                         "compiling costs a minute or more per family and precision on 2 cores)")
    ap.add_argument("--no-data", action="store_true", help="skip the resident-walks data-path row")
    ap.add_argument("--out", type=Path, default=None, help="write the report as markdown here")
    args = ap.parse_args(argv)
    unknown = sorted((set(args.families.split(",")) | set(filter(None, args.compile.split(",")))) - set(FAMILIES))
    if unknown:
        ap.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    return args


def measure_all(families: list[Family], args: argparse.Namespace) -> list[Result]:
    """Every family in every setting, fp32 and bf16 back to back (so a change in the machine's
    load hits both columns of a row alike), printed as it goes."""
    compiled = set(filter(None, args.compile.split(",")))
    timing = (args.steps, args.warmup, args.budget)
    results = []
    for family in families:
        for setting in settings_for(family, family.name in compiled):
            result = Result(family.name, setting.label)
            for precision in PRECISIONS:
                value, first = (measure_compiled(family.name, args.K, precision, *timing) if setting.compiled
                                else measure(family, setting, precision, *timing))
                result.seconds[precision], result.first[precision] = value, first
                shown = (f"{family.frames_per_step / value:,.0f} frames/s (first step {first:.1f} s)"
                         if isinstance(value, float) else value)
                print(f"  {family.name:<15} {setting.label:<26} {precision}: {shown}", flush=True)
            results.append(result)
    return results


def data_rows(families: list[Family], results: list[Result], machine: Machine, args: argparse.Namespace
              ) -> list[str]:
    """The data-path table for the first set network, in the precision training would use."""
    set_families = [f for f in families if not f.clip]
    if args.no_data or not set_families:
        return []
    family = set_families[0]
    precision = "bf16" if machine.bf16 else "fp32"
    fixed = next(r for r in results if r.family == family.name and r.setting == "channels_last")
    fed, feeding = data_path_seconds(family, precision, args.steps, args.warmup, args.budget)
    return data_table(family, precision, float(fixed.seconds[precision]), fed, feeding)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    machine = Machine.measure()
    print("\n".join(machine.lines()), flush=True)
    families = [FAMILIES[name](args.K) for name in args.families.split(",")]
    flops = {f.name: step_flops(f) for f in families}
    results = measure_all(families, args)
    data = data_rows(families, results, machine, args)
    command = "python -m benchmarks.train_speed " + shlex.join(argv if argv is not None else sys.argv[1:])
    timing = (f"{args.warmup} warm-up step(s), then the median of up to {args.steps} timed steps, fewer once "
              f"they took {args.budget:g} s; a warm-up step that alone took {args.budget:g} s is the measurement")
    text = report(command.strip(), machine, families, flops, results, data, timing, time.perf_counter() - t_start)
    print("\n" + text, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
