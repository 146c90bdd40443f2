"""GaitCopy on real CASIA-B silhouettes (view 090), end to end, in one command.

The chain, each stage a toolkit command run in this process (so a stage's wall time is its
work, not a fresh interpreter's imports):

1. store: import OpenGait pickles (``extract-frames --dataset opengait-pkl``) from ``--source``,
   or unpack/copy an already-imported store (``--store``: a folder, or a ``.tar``/``.tar.gz``
   made by ``benchmarks/pack_store.py``) into ``OUT/store``;
2. flow: TV-L1 on the silhouette crops (``compute-flow --gpu`` on CUDA, ``--device cpu`` else);
3. split: ``build-split casia-b --protocol large --views 090 --val-fraction 0`` (train 001-074,
   test 075-099 same-view: gallery nm-01..04, probes NM nm-05/06, BG bg-01/02, CL cl-01/02);
4. master: ``train-copy master`` (flow);
5. students: per variant (``set`` or ``3d``: the config's student; ``gaitset``: gaitset-gray),
   with copy loss and without (``--no-copy``);
6. evaluate every run (``train-copy evaluate``; same-view rank-1: sequence 1-NN for set networks,
   which embed each walk whole; the clip family adds clip-knn, the authors' rule);
   the template baseline (``train-copy template``: GEI + PCA + LDA), the tables' first row;
7. export the best student (mean NM/BG/CL rank-1): ONNX always, TensorRT when torch-tensorrt
   and CUDA are there; each export passes its parity check or the stage fails.

Prints and writes ``OUT/results.{csv,json,md}``: NM / BG / CL rank-1 of the master, each copy
and no-copy student, parameter counts, training/eval wall times, the wall time per stage, and
with two or more seeds a side the verdict on copying (``copy_judgement``).

    # one GPU (the carried store is ~20 MB; see benchmarks/README.md for the device command)
    python -m benchmarks.casia_b_sil_090 --store casia-b-sil-090-store.tar.gz --out runs/capstone
    # CPU smoke run on a few subjects (tests/test_capstone_smoke.py does this)
    python -m benchmarks.casia_b_sil_090 --source ../shared/data/casia-b-sil-090 --out /tmp/cap \\
        --subjects 001-006,075-078 --quick
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gaittools.flow.params import PRESETS

REPO = Path(__file__).resolve().parents[1]
GPU_CONFIG = REPO / "training" / "configs" / "casia-b-sil-090.yaml"
SMOKE_CONFIG = REPO / "training" / "configs" / "casia-b-sil-090-smoke.yaml"
CPU_CONFIG = REPO / "training" / "configs" / "casia-b-sil-090-cpu.yaml"
#: TV-L1 settings of --quick: a coarse, cheap flow that still moves with the walker.
QUICK_TVL1 = tuple(f"{name}={value}" for name, value in PRESETS["cheap"].items())
#: TV-L1 settings of --cpu (chosen by measurement: benchmarks/results/casia-b-sil-090-cpu.md).
CPU_TVL1 = QUICK_TVL1
PROBE_SETS = ("NM", "BG", "CL")
#: variant -> config overrides of the student; "set" (walk configs) and "3d" (the authors' clip
#: family) are the config's own student.
VARIANTS: dict[str, Callable[[int], list[str]]] = {
    "set": lambda d: [],
    "3d": lambda d: [],
    "gaitset": lambda d: ["student.model=gaitset-gray", "student.options={}", f"student.embedding_dim={d}"],
}
#: rank-1 column of the evaluation summary reported in the table (same-view protocol).
RANK1_COLUMN = "same_view_rank1"
RANK1_METHOD = "clip-knn"
SEQUENCE_RULE = "sequence-mean"
GROUP_NAMES = {("template", ""): "template (GEI + PCA + LDA)", ("master", ""): "flow master", ("3d", "yes"): "3D student, copy", ("3d", "no"): "3D student, no copy",
               ("set", "yes"): "set student, copy", ("set", "no"): "set student, no copy",
               ("gaitset", "yes"): "GaitSet student, copy", ("gaitset", "no"): "GaitSet student, no copy"}


class StageFailed(RuntimeError):
    """A stage's command exited non-zero; the message names the stage and the command."""


@dataclass
class Chain:
    """What the run has done so far: stage wall times, runs and their results."""

    out: Path
    device: str
    #: the evaluator's summary column a results row reports, and the sentence that says what it is
    rank1_column: str = RANK1_COLUMN
    protocol: str = "Same-view rank-1 (%), view 090"
    stages: dict[str, float] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    exports: list[dict[str, Any]] = field(default_factory=list)

    def timed(self, name: str, work: Callable[[], Any]) -> Any:
        """Run a stage and record its wall time (added to earlier sessions' time for a stage
        that a killed chain had started: the total is what the stage cost)."""
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        try:
            return work()
        finally:
            spent = time.perf_counter() - start
            self.stages[name] = self.stages.get(name, 0.0) + spent
            self._save_stages()
            print(f"=== {name}: {spent:.1f} s ===", flush=True)

    @property
    def stages_path(self) -> Path:
        return self.out / "stages.json"

    def load_stages(self) -> None:
        """Stage times of earlier (killed) sessions of this chain, so a resumed chain reports
        the whole cost of each stage."""
        if self.stages_path.is_file():
            self.stages.update(json.loads(self.stages_path.read_text()))

    def save_partial(self) -> None:
        """How far a failed or killed chain got (timeout sends SIGTERM): stage times, runs and
        exports so far in ``OUT/partial.json``; a finished chain's numbers are in results.*."""
        path = self.out / "partial.json"
        path.write_text(json.dumps(
            {"stages_s": self.stages, "runs": [{k: v for k, v in r.items() if k != "path"} for r in self.runs],
             "exports": self.exports}, indent=2, default=str))
        print(f"stopped; stage times so far in {path}: {self.stages}", file=sys.stderr)

    def _save_stages(self) -> None:
        tmp = self.stages_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stages, indent=1))
        os.replace(tmp, self.stages_path)


# ---------------------------------------------------------------------------- commands
def _invoke(group: Any, args: list[str], stage: str) -> None:
    """Run a click command in this process; a non-zero exit is ``StageFailed``."""
    print("$ " + " ".join(args), flush=True)
    try:
        code = group.main(args, standalone_mode=False)
    except SystemExit as exc:
        code = exc.code
    except Exception as exc:  # click's UsageError/ClickException and the commands' own errors
        traceback.print_exc()
        raise StageFailed(f"{stage}: `{' '.join(args)}` failed: {exc}") from exc
    if isinstance(code, int) and code != 0:
        raise StageFailed(f"{stage}: `{' '.join(args)}` exited with {code}")


def gaittools(args: list[str], stage: str) -> None:
    from gaittools.cli.main import main

    _invoke(main, args, stage)


def train_copy(args: list[str], stage: str) -> None:
    from training.cli import main

    _invoke(main, args, stage)


# ---------------------------------------------------------------------------- subjects
def parse_subjects(text: str | None) -> set[str] | None:
    """``"001-006,075-078"`` -> the 3-digit subject ids; None keeps every subject."""
    if not text:
        return None
    subjects: set[str] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            lo, hi = int(first), int(last or first)
        except ValueError:
            raise SystemExit(f"--subjects {text!r}: {part!r} is not NNN or NNN-NNN") from None
        if lo > hi or lo < 1:
            raise SystemExit(f"--subjects {text!r}: bad range {part!r}")
        subjects.update(f"{s:03d}" for s in range(lo, hi + 1))
    return subjects


def limited_source(source: Path, subjects: set[str] | None, work: Path, views: set[str] | None = None) -> Path:
    """SOURCE itself, or a folder of links to the chosen subjects' (and views') pickles (same layout)."""
    if subjects is None and views is None:
        return source
    view = work / "source-subset"
    shutil.rmtree(view, ignore_errors=True)
    n = 0
    for pkl in sorted(source.glob("*/*/*/*.pkl")):
        rel = pkl.relative_to(source)
        if (subjects is None or rel.parts[0] in subjects) and (views is None or rel.parts[2] in views):
            (view / rel).parent.mkdir(parents=True, exist_ok=True)
            (view / rel).symlink_to(pkl.resolve())
            n += 1
    if n == 0:
        raise SystemExit(f"{source}: no SSS/CC-NN/VVV/VVV.pkl of subjects {sorted(subjects or ['any'])}, "
                         f"views {sorted(views or ['any'])}")
    return view


# ---------------------------------------------------------------------------- store
def import_pickles(source: Path, store: Path, subjects: set[str] | None, workers: int | None,
                   views: set[str] | None = None) -> None:
    src = limited_source(source, subjects, store.parent, views)
    args = ["extract-frames", "--dataset", "opengait-pkl", str(src), str(store)]
    gaittools(args + ([] if workers is None else ["--workers", str(workers)]), "import")


def unpack_store(packed: Path, store: Path, subjects: set[str] | None) -> None:
    """Put the given store (folder or archive) at ``store``, keeping only ``subjects``.

    The given store is never written to: compute-flow adds flow to the copy."""
    if store.exists():
        raise SystemExit(f"{store}: already exists; give a fresh --out")
    if packed.is_dir():
        source_dir = packed
    else:
        from benchmarks.pack_store import unpack

        source_dir = unpack(packed, store.parent / "unpacked")
    if subjects is None:
        if source_dir.parent == store.parent:
            source_dir.rename(store)
        else:
            shutil.copytree(source_dir, store)
        return
    copy_subjects(source_dir, store, subjects)
    if source_dir.parent == store.parent:
        shutil.rmtree(source_dir)


def copy_subjects(source_dir: Path, store: Path, subjects: set[str]) -> None:
    """A new store holding the chosen subjects' sequences, through the Store API."""
    from gaittools.store.manifest import refresh_manifest
    from gaittools.store.zarr_store import Store

    given = Store(source_dir)
    new = Store.create(store, given.dataset)
    kept = 0
    for seq_id in given.seq_ids():
        if seq_id.split("-")[0] not in subjects:
            continue
        arrays = {name: given.read(seq_id, name) for name in given.arrays_of(seq_id)}
        new.write_sequence(seq_id, arrays, given.attrs_of(seq_id))
        kept += 1
    if kept == 0:
        raise SystemExit(f"{source_dir}: no sequences of subjects {sorted(subjects)}")
    refresh_manifest(new)
    print(f"kept {kept} sequences of {len(subjects)} subjects in {store}", flush=True)


def compute_flow(store: Path, device: str, backend: str, tvl1: tuple[str, ...], workers: int | None) -> None:
    """``torch``: the batched TV-L1 (``--gpu`` on CUDA, ``--device cpu`` else); ``opencv``:
    OpenCV DualTVL1 on CPU workers, which is what --quick uses: on 64 x 64 crops with the
    cheap settings it measured 170 pairs/s on one core against 56 pairs/s for torch on 2 cores."""
    args = ["compute-flow", str(store)]
    if backend == "opencv":
        args += [] if workers is None else ["--workers", str(workers)]
    elif device.startswith("cuda"):
        args += ["--gpu"] + (["--device", device] if device.startswith("cuda:") else [])
    else:
        args += ["--device", "cpu"]
    for item in tvl1:
        args += ["--tvl1", item]
    gaittools(args, "flow")


def build_split(store: Path, split: Path, views: str | None = "090", setting: str = "large",
                cross_view: bool = False) -> None:
    """The protocol ``setting`` restricted to ``views`` (None: every view), evaluated within
    each view or, with ``cross_view`` (always, for every view), across views with identical
    views excluded. No validation subjects."""
    # The manifest, not the store: an imported pickle store says dataset "opengait-pkl", and
    # build-split accepts a store only of the protocol's dataset, while the manifest's rows
    # (parsed CASIA-B names) are what it checks for a bare manifest.
    which = [] if views is None else ["--views", views, "--cross-view" if cross_view else "--same-view"]
    gaittools(["build-split", "casia-b", str(store / "manifest.parquet"), "--protocol", setting, *which,
               "--val-fraction", "0", "--out", str(split)], "split")


# ---------------------------------------------------------------------------- training
def training_overrides(store: Path, split: Path, device: str, steps_scale: float, epochs: float | None,
                       config: Path) -> list[str]:
    """``--set`` items shared by every training command."""
    import yaml

    raw = yaml.safe_load(config.read_text())
    sets = [f"data.store={store}", f"data.split={split}", f"train.device={device}"]
    if "student_train" in raw:
        sets.append(f"student_train.device={device}")
    for section in ("train", "student_train"):
        if section not in raw:
            continue
        if epochs is not None:
            sets += [f"{section}.epochs={epochs}", f"{section}.steps=null"]
        elif steps_scale != 1.0:
            if raw[section].get("steps"):
                sets.append(f"{section}.steps={max(1, round(raw[section]['steps'] * steps_scale))}")
            if raw[section].get("epochs"):
                sets.append(f"{section}.epochs={raw[section]['epochs'] * steps_scale}")
    return sets


def _with_sets(args: list[str], sets: list[str]) -> list[str]:
    for item in sets:
        args += ["--set", item]
    return args


def master_dim(config: Path) -> int:
    import yaml

    dim = (yaml.safe_load(config.read_text()).get("master") or {}).get("embedding_dim")
    if not dim:
        raise SystemExit(f"{config}: master.embedding_dim must be set (62 x strip_dim, for GaitSet)")
    return int(dim)


def variant_sets(variant: str, d: int, gaitset_steps: int | None) -> list[str]:
    sets = VARIANTS[variant](d)
    if variant == "gaitset" and gaitset_steps:
        sets += ["student_train.epochs=null", f"student_train.steps={gaitset_steps}"]
    return sets


@dataclass
class RunSpec:
    """One training run of the chain: the master (``copy`` None) or a student."""

    name: str
    variant: str
    copy: bool | None
    seed: int
    args: list[str]

    def entry(self, path: Path) -> dict[str, Any]:
        return {"run": self.name, "variant": self.variant, "copy": self.copy, "seed": self.seed, "path": path}


def plan_runs(config: Path, sets: list[str], variants: list[str], runs: Path, seeds: list[int],
              master_seeds: list[int], gaitset_steps: int | None = None) -> list[RunSpec]:
    """The master(s), then per variant and seed the copy and the no-copy student. Every
    student copies the first master; the other masters only measure the master's spread."""
    import yaml

    raw = yaml.safe_load(config.read_text())
    student_section = "student_train" if "student_train" in raw else "train"
    specs = []
    for seed in master_seeds:
        name = master_name(seed, master_seeds)
        args = ["master", "--config", str(config), "--out", str(runs / name)]
        specs.append(RunSpec(name, "master", None, seed, _with_sets(args, sets + [f"train.seed={seed}"])))
    master = runs / master_name(master_seeds[0], master_seeds)
    d = master_dim(config)
    for variant in variants:
        for seed in seeds:
            for copy in (True, False):
                name = f"student-{variant}-{'copy' if copy else 'nocopy'}-s{seed}"
                args = ["student", "--config", str(config), "--master", str(master), "--out", str(runs / name)]
                more = variant_sets(variant, d, gaitset_steps) + [f"{student_section}.seed={seed}"]
                specs.append(RunSpec(name, variant, copy, seed,
                                     _with_sets(args + ([] if copy else ["--no-copy"]), sets + more)))
    return specs


def master_name(seed: int, master_seeds: list[int]) -> str:
    return "master" if seed == master_seeds[0] else f"master-s{seed}"


def run_state(path: Path) -> str:
    """``finished``, ``partial`` (a run folder to --resume) or ``absent``."""
    info = path / "run.json"
    if info.is_file():
        if json.loads(info.read_text()).get("finished"):
            return "finished"
    return "partial" if (path / "config.yaml").is_file() else "absent"


def template_entry(chain: Chain, store: Path, split: Path, array: str = "gray") -> dict[str, Any]:
    """The GEI + PCA + LDA baseline (``train-copy template``), the first row of every table: a
    network that does not beat it has no place there. Fitted once (seconds to minutes) and kept;
    a killed fit has no checkpoint, so its folder is started again. Its results row."""
    path = chain.out / "runs" / "template"
    if (path / "eval" / "summary.csv").is_file():
        print("template: finished earlier, kept", flush=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
        chain.timed("template", lambda: train_copy(
            ["template", "--store", str(store), "--split", str(split), "--out", str(path), "--array", array],
            "template"))
    entry = {"run": "template", "variant": "template", "copy": None, "seed": 0, "path": path,
             "train_s": chain.stages.get("template", float("nan")), "eval_s": 0.0,
             "parameters": template_parameters(path)}
    entry.update(read_rank1(path, chain.rank1_column))
    return entry


def template_parameters(path: Path) -> int:
    """Numbers in the template's fitted map (centre + projection): its size as a model."""
    import numpy as np

    files = list(path.glob("*.npz"))
    if not files:
        return 0
    with np.load(files[0]) as saved:
        return int(sum(saved[name].size for name in saved.files))


def train_all(chain: Chain, specs: list[RunSpec], split: Path) -> None:
    """Train, then evaluate, every planned run; finished work is kept, so a rerun resumes."""
    for spec in specs:
        path = chain.out / "runs" / spec.name
        state = run_state(path)
        if state == "finished":
            print(f"{spec.name}: finished earlier, kept", flush=True)
        else:
            args = spec.args + (["--resume"] if state == "partial" else [])
            chain.timed(spec.name, lambda a=args, n=spec.name: train_copy(a, n))
        chain.runs.append({**spec.entry(path), "train_s": chain.stages.get(spec.name, float("nan"))})
    for entry in chain.runs:
        stage = f"eval-{entry['run']}"
        summary = entry["path"] / "eval" / "summary.csv"
        model = entry["path"] / "model.pt"
        if not (summary.is_file() and summary.stat().st_mtime >= model.stat().st_mtime):
            chain.timed(stage, lambda e=entry, s=stage: train_copy(
                ["evaluate", str(e["path"]), "--split", str(split), "--device", chain.device], s))
        entry["eval_s"] = chain.stages.get(stage, float("nan"))
        entry.update(read_rank1(entry["path"], chain.rank1_column))
        entry["parameters"] = parameter_count(entry["path"])


def read_rank1(run: Path, column: str = RANK1_COLUMN) -> dict[str, float]:
    """Rank-1 (the summary's ``column``: same-view by default) and probe counts per probe set
    and rule from ``RUN/eval/summary.csv``: ``NM`` (clip-knn, the authors' rule),
    ``NM_sequence-mean`` (OpenGait's), ``n_NM``."""
    import pandas as pd

    summary = pd.read_csv(run / "eval" / "summary.csv")
    found: dict[str, float] = {}
    for _, row in summary.iterrows():
        key = row["probe_set"] if row["method"] == RANK1_METHOD else f"{row['probe_set']}_{row['method']}"
        found[key] = float(row[column])
        found[f"n_{row['probe_set']}"] = int(row["n_probes"])
    missing = [p for p in PROBE_SETS for key in (p, f"{p}_{SEQUENCE_RULE}") if key not in found]
    if missing:
        raise StageFailed(f"{run}/eval/summary.csv: no rank-1 of {missing}")
    return found


def parameter_count(run: Path) -> int:
    from training.model_build import load_run_model
    from training.models import count_parameters

    model, _ = load_run_model(run)
    return count_parameters(model)


# ---------------------------------------------------------------------------- export
def config_unit(config: Path) -> str:
    """``walk`` (set networks: whole walks, sequence 1-NN) or ``clip`` (the authors' 3D family)."""
    import yaml

    return (yaml.safe_load(config.read_text()).get("data") or {}).get("unit", "clip")


def rules_for(unit: str) -> tuple[str, ...]:
    """Decision rules a table reports: the clip k-NN vote is the clip family's only."""
    return (SEQUENCE_RULE,) if unit == "walk" else (SEQUENCE_RULE, RANK1_METHOD)


def rank1_key(probe_set: str, rule: str) -> str:
    return probe_set if rule == RANK1_METHOD else f"{probe_set}_{rule}"


def best_student(runs: list[dict[str, Any]], rule: str = RANK1_METHOD) -> dict[str, Any]:
    students = [r for r in runs if r["copy"] is not None and r["variant"] != "template"]
    return max(students, key=lambda r: sum(r[rank1_key(p, rule)] for p in PROBE_SETS))


def export_best(chain: Chain, tensorrt: bool, rule: str = RANK1_METHOD) -> None:
    best = best_student(chain.runs, rule)
    formats = ["onnx"] + (["tensorrt"] if tensorrt else [])
    for fmt in formats:
        stage = f"export-{fmt}"
        device = "cuda" if fmt == "tensorrt" else "cpu"
        target = best["path"] / "exports" / f"capstone-{fmt}"
        if target.exists():
            shutil.rmtree(target)  # a resumed chain exports again: the best run may have changed
        try:
            chain.timed(stage, lambda f=fmt, t=target, dev=device, s=stage: train_copy(
                ["export", str(best["path"]), "--format", f, "--out", str(t), "--device", dev], s))
        except StageFailed as exc:
            if fmt == "onnx":
                raise
            print(f"warning: {exc}", flush=True)  # TensorRT is a bonus; ONNX must work
            chain.exports.append({"run": best["run"], "format": fmt, "passed": False, "error": str(exc)})
            continue
        meta = json.loads((target / "bundle.json").read_text())
        chain.exports.append({"run": best["run"], "format": fmt, "path": str(target),
                              "passed": bool(meta["parity"]["passed"]),
                              "min_cosine": float(meta["parity"]["min_cosine"]),
                              "file_size": int(meta.get("file_size", 0))})


def tensorrt_available(device: str) -> bool:
    return device.startswith("cuda") and importlib.util.find_spec("torch_tensorrt") is not None


# ---------------------------------------------------------------------------- report
def results_table(chain: Chain, rules: tuple[str, ...] = (SEQUENCE_RULE, RANK1_METHOD)) -> list[dict[str, Any]]:
    """One row per run: each rule's rank-1 per probe set, probe counts, size, wall times."""
    rows = []
    for r in chain.runs:
        row = {"run": r["run"], "variant": r["variant"],
               "copy": "" if r["copy"] is None else ("yes" if r["copy"] else "no"), "seed": r["seed"],
               "parameters": r["parameters"]}
        for rule in rules:
            row.update({f"{p} {rule}": round(r[rank1_key(p, rule)], 2) for p in PROBE_SETS})
        row.update({f"n_{p}": r[f"n_{p}"] for p in PROBE_SETS})
        row.update({"train_s": round(r["train_s"], 1), "eval_s": round(r["eval_s"], 1)})
        rows.append(row)
    return rows


def seed_groups(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Runs that differ only in their seed, keyed by (variant, copy), in table order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["variant"], row["copy"]), []).append(row)
    return groups


def seed_summary(members: list[dict[str, Any]], rule: str) -> dict[str, tuple[float, float]]:
    """Probe set -> (mean, sample std) of rank-1 over seeds (std NaN for one seed)."""
    import statistics

    summary = {}
    for p in PROBE_SETS:
        values = [m[f"{p} {rule}"] for m in members]
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        summary[p] = (round(statistics.fmean(values), 1), round(sd, 1))
    return summary


def group_table(rows: list[dict[str, Any]], rules: tuple[str, ...] = (SEQUENCE_RULE, RANK1_METHOD)
                ) -> list[dict[str, Any]]:
    """Mean and sample standard deviation over seeds per (variant, copy)."""
    import statistics

    table = []
    for (variant, copy), members in seed_groups(rows).items():
        out: dict[str, Any] = {"model": GROUP_NAMES.get((variant, copy), f"{variant} {copy}"),
                               "seeds": len(members), "parameters": members[0]["parameters"]}
        for rule in rules:
            out.update({f"{p} {rule}": cell for p, cell in seed_summary(members, rule).items()})
        out.update({f"n_{p}": members[0][f"n_{p}"] for p in PROBE_SETS})
        out["train_s"] = round(statistics.fmean(m["train_s"] for m in members), 1)
        table.append(out)
    return table


def copy_judgement(rows: list[dict[str, Any]], rule: str = SEQUENCE_RULE) -> list[str]:
    """The method's claim tested per student family: copying wins a probe set when the copy
    students' mean beats the no-copy students' by more than twice the larger of their seed
    standard deviations (a gap the seeds' own spread does not explain). Needs two or more
    seeds on each side; the flow master and the template stand beside it as the levels to read
    the gap against. Markdown lines, empty where no family has both sides."""
    groups = seed_groups(rows)
    levels = {name: seed_summary(groups[key], rule) for key, name in
              ((("master", ""), "master"), (("template", ""), "template")) if key in groups}
    lines = []
    for variant in dict.fromkeys(v for v, _ in groups):
        copy, plain = groups.get((variant, "yes"), []), groups.get((variant, "no"), [])
        if len(copy) < 2 or len(plain) < 2:
            continue
        ours, theirs = seed_summary(copy, rule), seed_summary(plain, rule)
        lines += [f"{GROUP_NAMES.get((variant, 'yes'), variant)} against no copy, {len(copy)} and {len(plain)} "
                  f"seeds (`{rule}`): copying wins a probe set when copy - no copy > 2 x the larger seed std.", "",
                  "| probe set | copy | no copy | " + "".join(f"{n} | " for n in levels)
                  + "copy - no copy | 2 x larger std | copying wins |",
                  "|---|---|---|" + "---|" * len(levels) + "---|---|---|"]
        for p in PROBE_SETS:
            gap, bar = ours[p][0] - theirs[p][0], 2 * max(ours[p][1], theirs[p][1])
            lines.append(f"| {p} | {_cell(ours[p])} | {_cell(theirs[p])} | "
                         + "".join(f"{level[p][0]:.1f} | " for level in levels.values())
                         + f"{gap:+.1f} | {bar:.1f} | {'yes' if gap > bar else 'no'} |")
        lines.append("")
    return ["## Copying, judged", "", *lines] if lines else []


def _cell(value: Any) -> str:
    if isinstance(value, tuple):
        mean, sd = value
        return f"{mean:.1f}" if sd != sd else f"{mean:.1f} ± {sd:.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _md_table(rows: list[dict[str, Any]]) -> list[str]:
    cols = list(rows[0])
    return (["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            + ["| " + " | ".join(_cell(r[c]) for c in cols) + " |" for r in rows])


RULE_NOTES = {
    "walk": f"`{SEQUENCE_RULE}` = sequence 1-NN, each walk embedded whole (every frame as one set); "
            "the authors' clip k-NN vote applies to the clip family only.",
    "clip": f"`{SEQUENCE_RULE}` = sequence-mean 1-NN (OpenGait's rule), `{RANK1_METHOD}` = clip 7-NN vote "
            "(the authors').",
}


def markdown(rows: list[dict[str, Any]], stages: dict[str, float], exports: list[dict[str, Any]],
             header: str, unit: str = "clip", protocol: str = "Same-view rank-1 (%), view 090", extra: str = "") -> str:
    """The results page; ``extra`` (markdown) goes after the tables (the cross-view chain's views)."""
    lines = [header, "", f"{protocol}; {RULE_NOTES[unit]} Mean ± sample std over seeds.", ""]
    lines += _md_table(group_table(rows, rules_for(unit)))
    lines += ["", "Every run:", ""] + _md_table(rows)
    lines += ["", "| stage | wall s |", "|---|---|"]
    lines += [f"| {name} | {sec:.1f} |" for name, sec in stages.items()]
    lines += [f"| total | {sum(stages.values()):.1f} |"]
    lines += ["", "| export | run | parity passed | min cosine |", "|---|---|---|---|"]
    lines += [f"| {e['format']} | {e['run']} | {e['passed']} | {e.get('min_cosine', '')} |" for e in exports]
    judged = copy_judgement(rows)
    lines += ["", *judged] if judged else []
    return "\n".join(lines) + "\n" + (f"\n{extra}" if extra else "")


def write_results(chain: Chain, header: str, settings: dict[str, Any], unit: str = "clip", extra: str = ""
                  ) -> dict[str, Path]:
    import pandas as pd

    rules = rules_for(unit)
    rows = results_table(chain, rules)
    paths = {"csv": chain.out / "results.csv", "json": chain.out / "results.json",
             "md": chain.out / "results.md"}
    pd.DataFrame(rows).to_csv(paths["csv"], index=False)
    paths["json"].write_text(json.dumps({"settings": settings, "results": rows, "groups": group_table(rows, rules),
                                         "stages_s": chain.stages, "exports": chain.exports,
                                         "total_s": sum(chain.stages.values())},
                                        indent=2, default=str))
    text = markdown(rows, chain.stages, chain.exports, header, unit, chain.protocol, extra)
    paths["md"].write_text(text)
    print("\n" + text, flush=True)
    return paths


def machine_facts(threads: int) -> dict[str, Any]:
    """What produced the numbers: CPU, threads and library versions."""
    import platform

    import cv2
    import numpy
    import torch

    from benchmarks.machine import cpu_name

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": threads, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": numpy.__version__, "opencv": cv2.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


# ---------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--source", type=Path, help="Folder of OpenGait pickles SSS/CC-NN/090/090.pkl to import.")
    given.add_argument("--store", type=Path, help="An imported store: folder, or .tar/.tar.gz of pack_store.py.")
    p.add_argument("--out", type=Path, required=True,
                   help="Output folder; running again on the same folder resumes (finished stages kept).")
    p.add_argument("--subjects", help="Only these subjects, e.g. 001-006,075-078 (smoke runs).")
    p.add_argument("--config", type=Path, help="Training config (default: GPU, --cpu or --quick's).")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available).")
    p.add_argument("--steps-scale", type=float, default=1.0, help="Multiply every run's steps (or epochs).")
    p.add_argument("--epochs", type=float, default=None, help="Train every run this many epochs instead.")
    p.add_argument("--variants", default=None, help=f"Student variants of {sorted(VARIANTS)} "
                                                    "(default 3d,gaitset; --cpu: set).")
    p.add_argument("--seeds", default=None, help="Student seeds, e.g. 0,1,2 (default 0; --cpu: 0,1,2).")
    p.add_argument("--master-seeds", default="0", help="Master seeds; students copy the first (default 0).")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores); recorded.")
    p.add_argument("--flow-backend", choices=("auto", "torch", "opencv"), default="auto",
                   help="auto: torch (GPU), opencv on a CPU with --quick or --cpu.")
    p.add_argument("--tvl1", action="append", default=[], metavar="NAME=VALUE", help="TV-L1 override.")
    p.add_argument("--workers", type=int, default=None, help="Import/flow workers (0: no Dask).")
    p.add_argument("--gaitset-steps", type=int, default=None,
                   help="Steps of the GaitSet students (default: the config's; --quick: 2).")
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--cpu", action="store_true",
                        help="The 2-core CPU recipe: casia-b-sil-090-cpu.yaml, its TV-L1 settings, 3 student seeds.")
    preset.add_argument("--quick", action="store_true",
                        help="CPU smoke settings: the smoke config, cheap TV-L1, no Dask for the import.")
    p.add_argument("--publish", type=Path, default=None,
                   help="Also write the results (with command, machine, versions) to this .md/.json stem, "
                        "e.g. benchmarks/results/casia-b-sil-090-cpu.")
    p.add_argument("--no-tensorrt", action="store_true", help="Skip the TensorRT export even if available.")
    args = p.parse_args(argv)
    args.variants = args.variants or ("set" if args.cpu else "3d,gaitset")
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {unknown}; known {sorted(VARIANTS)}")
    args.seeds = _int_list(p, "--seeds", args.seeds or ("0,1,2" if args.cpu else "0"))
    args.master_seeds = _int_list(p, "--master-seeds", args.master_seeds)
    args.command = "python -m benchmarks.casia_b_sil_090 " + " ".join(sys.argv[1:] if argv is None else argv)
    return args


def _int_list(p: argparse.ArgumentParser, name: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        p.error(f"{name} {text!r}: not a comma-separated list of integers")
    if not values or len(set(values)) != len(values):
        p.error(f"{name} {text!r}: give one or more distinct integers")
    return values


def resolve(args: argparse.Namespace) -> tuple[str, Path, tuple[str, ...]]:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cheap = (args.quick or args.cpu) and device == "cpu"
    if args.flow_backend == "auto":
        args.flow_backend = "opencv" if cheap else "torch"
    config = args.config or (SMOKE_CONFIG if args.quick else CPU_CONFIG if args.cpu else GPU_CONFIG)
    tvl1 = (QUICK_TVL1 if args.quick else CPU_TVL1 if args.cpu else ()) + tuple(args.tvl1)
    if args.quick and args.workers is None:
        args.workers = 0
    if args.quick and args.gaitset_steps is None:
        args.gaitset_steps = 2
    return device, config, tvl1


def main(argv: list[str] | None = None) -> dict[str, Path]:
    import torch

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, config, tvl1 = resolve(args)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    store, split = out / "store", out / "split"
    subjects = parse_subjects(args.subjects)
    chain = Chain(out, device)
    try:
        return run_chain(args, chain, store, split, subjects, device, config, tvl1)
    except BaseException:
        chain.save_partial()
        raise


def prepare_store(args: argparse.Namespace, chain: Chain, store: Path, subjects: set[str] | None) -> None:
    """Import or unpack once; a rerun finds the store and lets extract-frames resume it."""
    if args.source:
        chain.timed("import", lambda: import_pickles(args.source.resolve(), store, subjects, args.workers))
    elif not (store / "manifest.parquet").is_file():
        chain.timed("unpack", lambda: unpack_store(args.store.resolve(), store, subjects))


def run_chain(args: argparse.Namespace, chain: Chain, store: Path, split: Path, subjects: set[str] | None,
              device: str, config: Path, tvl1: tuple[str, ...]) -> dict[str, Path]:
    import torch

    chain.load_stages()
    prepare_store(args, chain, store, subjects)
    chain.timed("flow", lambda: compute_flow(store, device, args.flow_backend, tvl1, args.workers))
    chain.timed("split", lambda: build_split(store, split))
    sets = training_overrides(store, split, device, args.steps_scale, args.epochs, config)
    specs = plan_runs(config, sets, args.variants.split(","), chain.out / "runs", args.seeds, args.master_seeds,
                      args.gaitset_steps)
    train_all(chain, specs, split)
    chain.runs.insert(0, template_entry(chain, store, split))
    unit = config_unit(config)
    export_best(chain, tensorrt_available(device) and not args.no_tensorrt, rules_for(unit)[-1])
    settings = {"device": device, "config": str(config), "subjects": args.subjects or "all",
                "tvl1": list(tvl1), "flow_backend": args.flow_backend, "gaitset_steps": args.gaitset_steps,
                "steps_scale": args.steps_scale, "epochs": args.epochs, "seeds": args.seeds,
                "master_seeds": args.master_seeds, "torch_device_name": _device_name(device),
                "command": args.command,
                **machine_facts(torch.get_num_threads())}
    header = f"# GaitCopy on CASIA-B silhouettes, view 090 ({settings['torch_device_name']})"
    paths = write_results(chain, header, settings, unit)
    if args.publish:
        paths.update(publish(paths, args.publish, settings))
    return paths


def publish(paths: dict[str, Path], stem: Path, settings: dict[str, Any]) -> dict[str, Path]:
    """Copy the results next to the facts that produced them, for the README to quote."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    facts = ["", "| fact | value |", "|---|---|"]
    facts += [f"| {key} | {settings[key]} |" for key in ("command", "date", "cpu", "cores", "torch_threads",
                                                          "python", "torch", "numpy", "opencv", "config", "tvl1")]
    md, js = stem.with_suffix(".md"), stem.with_suffix(".json")
    md.write_text(paths["md"].read_text() + "\n".join(facts) + "\n")
    shutil.copyfile(paths["json"], js)
    print(f"published {md} and {js}", flush=True)
    return {"published_md": md, "published_json": js}


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "CPU"


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        main()
    except StageFailed as exc:
        sys.exit(f"error: {exc}")
