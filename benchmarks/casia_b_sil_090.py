"""GaitCopy on real CASIA-B silhouettes (view 090), end to end, in one command (issue 9).

The chain, each stage a toolkit command run in this process (so a stage's wall time is its
work, not a fresh interpreter's imports):

1. store: import OpenGait pickles (``extract-frames --dataset opengait-pkl``) from ``--source``,
   or unpack/copy an already-imported store (``--store``: a folder, or a ``.tar``/``.tar.gz``
   made by ``benchmarks/pack_store.py``) into ``OUT/store``;
2. flow: TV-L1 on the silhouette crops (``compute-flow --gpu`` on CUDA, ``--device cpu`` else);
3. split: ``build-split casia-b --protocol large --views 090 --val-fraction 0`` (train 001-074,
   test 075-099 same-view: gallery nm-01..04, probes NM nm-05/06, BG bg-01/02, CL cl-01/02);
4. master: ``train-copy master`` (flow);
5. students: per variant (``3d``: the config's student; ``gaitset``: gaitset-gray), with copy
   loss and without (``--no-copy``);
6. evaluate every run (``train-copy evaluate``; same-view rank-1, clip-knn = the authors' rule);
7. export the best student (mean NM/BG/CL rank-1): ONNX always, TensorRT when torch-tensorrt
   and CUDA are there; each export passes its parity check or the stage fails.

Prints and writes ``OUT/results.{csv,json,md}``: NM / BG / CL rank-1 of the master, each copy
and no-copy student, parameter counts, training/eval wall times, and the wall time per stage.

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
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
GPU_CONFIG = REPO / "training" / "configs" / "casia-b-sil-090.yaml"
SMOKE_CONFIG = REPO / "training" / "configs" / "casia-b-sil-090-smoke.yaml"
#: TV-L1 settings of --quick: a coarse, cheap flow that still moves with the walker.
QUICK_TVL1 = ("nscales=2", "warps=1", "outer_iterations=2", "inner_iterations=5", "median_filtering=1")
PROBE_SETS = ("NM", "BG", "CL")
#: variant -> config overrides of the student; "3d" is the config's own student.
VARIANTS: dict[str, Callable[[int], list[str]]] = {
    "3d": lambda d: [],
    "gaitset": lambda d: ["student.model=gaitset-gray", "student.options={}", f"student.embedding_dim={d}"],
}
#: rank-1 column of the evaluation summary reported in the table (same-view protocol).
RANK1_COLUMN = "same_view_rank1"
RANK1_METHOD = "clip-knn"


class StageFailed(RuntimeError):
    """A stage's command exited non-zero; the message names the stage and the command."""


@dataclass
class Chain:
    """What the run has done so far: stage wall times, runs and their results."""

    out: Path
    device: str
    stages: dict[str, float] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    exports: list[dict[str, Any]] = field(default_factory=list)

    def timed(self, name: str, work: Callable[[], Any]) -> Any:
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        result = work()
        self.stages[name] = time.perf_counter() - start
        print(f"=== {name}: {self.stages[name]:.1f} s ===", flush=True)
        return result


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
    from gaittools.cli import main

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


def limited_source(source: Path, subjects: set[str] | None, work: Path) -> Path:
    """SOURCE itself, or a folder of links to the chosen subjects' pickles (same layout)."""
    if subjects is None:
        return source
    view = work / "source-subset"
    shutil.rmtree(view, ignore_errors=True)
    n = 0
    for pkl in sorted(source.glob("*/*/*/*.pkl")):
        rel = pkl.relative_to(source)
        if rel.parts[0] in subjects:
            (view / rel).parent.mkdir(parents=True, exist_ok=True)
            (view / rel).symlink_to(pkl.resolve())
            n += 1
    if n == 0:
        raise SystemExit(f"{source}: no SSS/CC-NN/VVV/VVV.pkl of subjects {sorted(subjects)}")
    return view


# ---------------------------------------------------------------------------- store
def import_pickles(source: Path, store: Path, subjects: set[str] | None, workers: int | None) -> None:
    src = limited_source(source, subjects, store.parent)
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
    from gaittools.manifest import refresh_manifest
    from gaittools.store import Store

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


def build_split(store: Path, split: Path) -> None:
    # The manifest, not the store: an imported pickle store says dataset "opengait-pkl", and
    # build-split accepts a store only of the protocol's dataset, while the manifest's rows
    # (parsed CASIA-B names) are what it checks for a bare manifest.
    gaittools(["build-split", "casia-b", str(store / "manifest.parquet"), "--protocol", "large",
               "--views", "090", "--same-view", "--val-fraction", "0", "--out", str(split)], "split")


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


def train_all(chain: Chain, config: Path, sets: list[str], variants: list[str], split: Path,
              gaitset_steps: int | None = None) -> None:
    runs = chain.out / "runs"
    master = runs / "master"
    chain.timed("master", lambda: train_copy(_with_sets(["master", "--config", str(config), "--out",
                                                          str(master)], list(sets)), "master"))
    chain.runs.append({"run": "master", "variant": "master", "copy": None, "path": master,
                       "train_s": chain.stages["master"]})
    d = master_dim(config)
    for variant in variants:
        for copy in (True, False):
            name = f"student-{variant}-{'copy' if copy else 'nocopy'}"
            args = ["student", "--config", str(config), "--master", str(master), "--out", str(runs / name)]
            args = _with_sets(args + ([] if copy else ["--no-copy"]), sets + variant_sets(variant, d, gaitset_steps))
            chain.timed(name, lambda a=args, n=name: train_copy(a, n))
            chain.runs.append({"run": name, "variant": variant, "copy": copy, "path": runs / name,
                               "train_s": chain.stages[name]})
    for entry in chain.runs:
        stage = f"eval-{entry['run']}"
        chain.timed(stage, lambda e=entry, s=stage: train_copy(
            ["evaluate", str(e["path"]), "--split", str(split), "--device", chain.device], s))
        entry["eval_s"] = chain.stages[stage]
        entry.update(read_rank1(entry["path"]))
        entry["parameters"] = parameter_count(entry["path"])


def read_rank1(run: Path) -> dict[str, float]:
    """Same-view rank-1 per probe set from ``RUN/eval/summary.csv`` (both decision rules)."""
    import pandas as pd

    summary = pd.read_csv(run / "eval" / "summary.csv")
    found: dict[str, float] = {}
    for _, row in summary.iterrows():
        key = row["probe_set"] if row["method"] == RANK1_METHOD else f"{row['probe_set']}_{row['method']}"
        found[key] = float(row[RANK1_COLUMN])
    missing = [p for p in PROBE_SETS if p not in found]
    if missing:
        raise StageFailed(f"{run}/eval/summary.csv: no {RANK1_METHOD} rank-1 of {missing}")
    return found


def parameter_count(run: Path) -> int:
    from training.models import count_parameters
    from training.tasks import load_run_model

    model, _ = load_run_model(run)
    return count_parameters(model)


# ---------------------------------------------------------------------------- export
def best_student(runs: list[dict[str, Any]]) -> dict[str, Any]:
    students = [r for r in runs if r["copy"] is not None]
    return max(students, key=lambda r: sum(r[p] for p in PROBE_SETS))


def export_best(chain: Chain, tensorrt: bool) -> None:
    best = best_student(chain.runs)
    formats = ["onnx"] + (["tensorrt"] if tensorrt else [])
    for fmt in formats:
        stage = f"export-{fmt}"
        device = "cuda" if fmt == "tensorrt" else "cpu"
        target = best["path"] / "exports" / f"capstone-{fmt}"
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
def results_table(chain: Chain) -> list[dict[str, Any]]:
    rows = []
    for r in chain.runs:
        rows.append({"run": r["run"], "variant": r["variant"],
                     "copy": "" if r["copy"] is None else ("yes" if r["copy"] else "no"),
                     "parameters": r["parameters"], **{p: round(r[p], 2) for p in PROBE_SETS},
                     "mean": round(sum(r[p] for p in PROBE_SETS) / len(PROBE_SETS), 2),
                     "train_s": round(r["train_s"], 1), "eval_s": round(r["eval_s"], 1)})
    return rows


def markdown(rows: list[dict[str, Any]], stages: dict[str, float], exports: list[dict[str, Any]],
             header: str) -> str:
    cols = list(rows[0])
    lines = [header, "", f"Rank-1 (%), same view 090, {RANK1_METHOD} rule", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f"{r[c]:,}" if c == "parameters" else str(r[c]) for c in cols) + " |"
              for r in rows]
    lines += ["", "| stage | wall s |", "|---|---|"]
    lines += [f"| {name} | {sec:.1f} |" for name, sec in stages.items()]
    lines += ["", "| export | run | parity passed | min cosine |", "|---|---|---|---|"]
    lines += [f"| {e['format']} | {e['run']} | {e['passed']} | {e.get('min_cosine', '')} |" for e in exports]
    return "\n".join(lines) + "\n"


def write_results(chain: Chain, header: str, settings: dict[str, Any]) -> dict[str, Path]:
    import pandas as pd

    rows = results_table(chain)
    paths = {"csv": chain.out / "results.csv", "json": chain.out / "results.json",
             "md": chain.out / "results.md"}
    pd.DataFrame(rows).to_csv(paths["csv"], index=False)
    paths["json"].write_text(json.dumps({"settings": settings, "results": rows, "stages_s": chain.stages,
                                         "exports": chain.exports, "total_s": sum(chain.stages.values())},
                                        indent=2, default=str))
    text = markdown(rows, chain.stages, chain.exports, header)
    paths["md"].write_text(text)
    print("\n" + text, flush=True)
    return paths


# ---------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--source", type=Path, help="Folder of OpenGait pickles SSS/CC-NN/090/090.pkl to import.")
    given.add_argument("--store", type=Path, help="An imported store: folder, or .tar/.tar.gz of pack_store.py.")
    p.add_argument("--out", type=Path, required=True, help="Output folder (created; must not hold a store).")
    p.add_argument("--subjects", help="Only these subjects, e.g. 001-006,075-078 (smoke runs).")
    p.add_argument("--config", type=Path, help="Training config (default: the GPU one; --quick: the smoke one).")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available).")
    p.add_argument("--steps-scale", type=float, default=1.0, help="Multiply every run's steps (or epochs).")
    p.add_argument("--epochs", type=float, default=None, help="Train every run this many epochs instead.")
    p.add_argument("--variants", default="3d,gaitset", help=f"Student variants of {sorted(VARIANTS)}.")
    p.add_argument("--flow-backend", choices=("auto", "torch", "opencv"), default="auto",
                   help="auto: torch (GPU/CPU), or opencv with --quick on a CPU.")
    p.add_argument("--tvl1", action="append", default=[], metavar="NAME=VALUE", help="TV-L1 override.")
    p.add_argument("--workers", type=int, default=None, help="Import workers (0: no Dask).")
    p.add_argument("--gaitset-steps", type=int, default=None,
                   help="Steps of the GaitSet students (default: the config's; --quick: 2).")
    p.add_argument("--quick", action="store_true",
                   help="CPU smoke settings: the smoke config, cheap TV-L1, no Dask for the import.")
    p.add_argument("--no-tensorrt", action="store_true", help="Skip the TensorRT export even if available.")
    args = p.parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {unknown}; known {sorted(VARIANTS)}")
    return args


def resolve(args: argparse.Namespace) -> tuple[str, Path, tuple[str, ...]]:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.flow_backend == "auto":
        args.flow_backend = "opencv" if args.quick and device == "cpu" else "torch"
    config = args.config or (SMOKE_CONFIG if args.quick else GPU_CONFIG)
    tvl1 = (QUICK_TVL1 if args.quick else ()) + tuple(args.tvl1)
    if args.quick and args.workers is None:
        args.workers = 0
    if args.quick and args.gaitset_steps is None:
        args.gaitset_steps = 2
    return device, config, tvl1


def main(argv: list[str] | None = None) -> dict[str, Path]:
    args = parse_args(argv)
    device, config, tvl1 = resolve(args)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    store, split = out / "store", out / "split"
    subjects = parse_subjects(args.subjects)
    chain = Chain(out, device)
    try:
        return run_chain(args, chain, store, split, subjects, device, config, tvl1)
    except BaseException:
        # a failed or killed run (timeout sends SIGTERM) still says how far it got and how long
        # each stage took; the numbers of a finished run are in results.*
        (out / "partial.json").write_text(json.dumps(
            {"stages_s": chain.stages, "runs": [{k: v for k, v in r.items() if k != "path"} for r in chain.runs],
             "exports": chain.exports}, indent=2, default=str))
        print(f"stopped; stage times so far in {out / 'partial.json'}: {chain.stages}", file=sys.stderr)
        raise


def run_chain(args: argparse.Namespace, chain: Chain, store: Path, split: Path, subjects: set[str] | None,
              device: str, config: Path, tvl1: tuple[str, ...]) -> dict[str, Path]:
    out = chain.out
    if args.source:
        chain.timed("import", lambda: import_pickles(args.source.resolve(), store, subjects, args.workers))
    else:
        chain.timed("unpack", lambda: unpack_store(args.store.resolve(), store, subjects))
    chain.timed("flow", lambda: compute_flow(store, device, args.flow_backend, tvl1, args.workers))
    chain.timed("split", lambda: build_split(store, split))
    sets = training_overrides(store, split, device, args.steps_scale, args.epochs, config)
    train_all(chain, config, sets, args.variants.split(","), split, args.gaitset_steps)
    export_best(chain, tensorrt_available(device) and not args.no_tensorrt)
    settings = {"device": device, "config": str(config), "subjects": args.subjects or "all",
                "tvl1": list(tvl1), "flow_backend": args.flow_backend, "gaitset_steps": args.gaitset_steps, "steps_scale": args.steps_scale, "epochs": args.epochs,
                "torch_device_name": _device_name(device)}
    header = f"# GaitCopy on CASIA-B silhouettes, view 090 ({settings['torch_device_name']})"
    return write_results(chain, header, settings)


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "CPU"


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        main()
    except StageFailed as exc:
        sys.exit(f"error: {exc}")
