"""GaitCopy on CASIA-B cross-view, all 11 views, end to end, in one command (issue 22).

The field's table: train on every walk of 001-074 at all 11 views; gallery nm-01..04 at one
view, probes nm-05/06 (NM), bg-01/02 (BG), cl-01/02 (CL) at another; identical views
excluded; rank-1 averaged over the 10 other gallery views per probe view, then over probe
views. The shared silhouettes hold subjects 001-099, so the test subjects are 075-099.

The stages are those of ``benchmarks.casia_b_sil_090`` (its functions, run in this process),
at all views:

1. store: unpack the chosen subjects' archives (``--archives``: ``unpack.sh`` of
   ``../shared/data/casia-b-sil-all``) into ``OUT/pkl`` and import them (``extract-frames
   --dataset opengait-pkl``); or import unpacked pickles (``--source``); or use an imported
   store in place (``--store``; compute-flow adds flow to it);
2. flow at the cheap TV-L1 preset (OpenCV on CPU workers; the torch TV-L1 on CUDA), with the
   pairs and pairs/s it took recorded: all views hold 11x the pairs of one;
3. split: ``build-split casia-b --protocol large`` without ``--views``: cross-view, all views,
   no validation subjects (``--setting tune`` for model choice: train 011-074, test 001-010);
4. the template baseline (``train-copy template --array gray``: the 090 chain's ``template_entry``);
5. the flow master; 6. copy and no-copy students per seed; 7. cross-view evaluation of each;
8. ONNX export (TensorRT too on CUDA) of the best student, with its parity check.

A rerun on the same ``--out`` resumes: finished stages and runs are kept, a killed run
continues from its last checkpoint. Writes ``OUT/results.{csv,json,md}`` (cross-view rank-1
per model, mean ± std over seeds, the verdict on copying, the published anchors beside them) and ``OUT/views/``: the
field's table, the 11 x 11 matrices and their heatmaps per model (``benchmarks.cross_view_table``).

    # the 2-core CPU chain on the prepared store (flow already in it)
    python -m benchmarks.casia_b_cross_view --cpu --store /work/exp/xv/store --out /work/exp/xv/chain
    # smoke run: three subjects, three views, a 2-step model
    python -m benchmarks.casia_b_cross_view --quick --archives ../shared/data/casia-b-sil-all \\
        --out /tmp/xv --subjects 001-002,075 --views 000,090,180
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import casia_b_sil_090 as base
from benchmarks.casia_b_sil_090 import Chain, StageFailed
from benchmarks.cross_view_table import (CONDITIONS, RULE, anchors_md, read_run_evaluation, run_report_md,
                                        view_tables, write_run_report)

REPO = base.REPO
CPU_CONFIG = REPO / "training" / "configs" / "casia-b-sil-lt-cpu.yaml"
GPU_CONFIG = REPO / "training" / "configs" / "casia-b-sil-lt-gpu.yaml"
SMOKE_CONFIG = REPO / "training" / "configs" / "casia-b-sil-lt-smoke.yaml"
RANK1_COLUMN = "cross_view_rank1"
#: OUT's folder of per-model view tables and heatmaps (linked from results.md).
VIEWS = "views"


# ---------------------------------------------------------------------------- store
def unpack_archives(archives: Path, dest: Path, subjects: set[str] | None) -> Path:
    """The chosen subjects' pickles under ``dest`` (``SSS/CC-NN/VVV/VVV.pkl``), by the data's
    own ``unpack.sh`` (tar + zstd). A marker records what was unpacked, so a rerun skips it."""
    script = archives / "unpack.sh"
    if not script.is_file():
        raise SystemExit(f"{archives}: no unpack.sh (expected ../shared/data/casia-b-sil-all)")
    wanted = sorted(subjects) if subjects else []
    marker = dest / ".unpacked"
    if marker.is_file() and marker.read_text() == ",".join(wanted):
        print(f"{dest}: unpacked earlier, kept", flush=True)
        return dest
    result = subprocess.run(["bash", str(script), str(dest), *wanted], capture_output=True, text=True)
    if result.returncode != 0:
        raise StageFailed(f"unpack: {script} exited with {result.returncode}: {result.stderr.strip()}")
    print(result.stdout.strip(), flush=True)
    marker.write_text(",".join(wanted))
    return dest


def prepare_store(args: argparse.Namespace, chain: Chain, subjects: set[str] | None) -> Path:
    """The store the chain works on: the given one in place, its chosen subjects copied into
    OUT/store, or the pickles imported into OUT/store."""
    if args.store and subjects is None:
        return args.store.resolve()
    store = chain.out / "store"
    if args.store:
        if not (store / "manifest.parquet").is_file():
            chain.timed("copy", lambda: base.copy_subjects(args.store.resolve(), store, subjects))
        return store
    source = args.source.resolve() if args.source else None
    if args.archives:
        source = chain.timed("unpack", lambda: unpack_archives(args.archives.resolve(), chain.out / "pkl", subjects))
        subjects = None  # unpacked only those
    views = set(args.views.split(",")) if args.views else None
    chain.timed("import", lambda: base.import_pickles(source, store, subjects, args.workers, views))
    return store


def flow_pairs(store: Path) -> dict[str, int]:
    """Frame pairs of the store's sequences, and how many of them have flow (the manifest's)."""
    import pandas as pd

    manifest = pd.read_parquet(store / "manifest.parquet")
    pairs = (manifest["n_frames"].fillna(0).astype(int) - 1).clip(lower=0)
    done = manifest["status_flow"].fillna("") == "done"
    return {"pairs": int(pairs.sum()), "with_flow": int(pairs[done].sum()),
            "pairs_090": int(pairs[manifest["view"] == "090"].sum()), "sequences": len(manifest)}


def flow_stage(args: argparse.Namespace, chain: Chain, store: Path, tvl1: tuple[str, ...]) -> dict[str, Any]:
    """compute-flow, and what it cost: the pairs this chain computed and their pairs/s (wall),
    kept in OUT/flow.json so that a resumed chain still reports them."""
    record = chain.out / "flow.json"
    before = flow_pairs(store)
    spent = chain.stages.get("flow", 0.0)
    chain.timed("flow", lambda: base.compute_flow(store, chain.device, args.flow_backend, tvl1, args.workers))
    after = flow_pairs(store)
    computed, seconds = after["with_flow"] - before["with_flow"], chain.stages["flow"] - spent
    print(f"flow: {after['pairs']:,} pairs in {after['sequences']:,} sequences ({after['pairs_090']:,} at 090); "
          f"{computed:,} computed now in {seconds:.0f} s", flush=True)
    if computed:
        earlier = json.loads(record.read_text()) if record.is_file() else {"computed": 0, "seconds": 0.0}
        done = {"computed": earlier["computed"] + computed, "seconds": round(earlier["seconds"] + seconds, 1)}
        done["pairs_per_s"] = round(done["computed"] / done["seconds"], 1) if done["seconds"] > 0 else None
        record.write_text(json.dumps(done))
    return {**after, **(json.loads(record.read_text()) if record.is_file() else {"computed": 0})}


# ---------------------------------------------------------------------------- report
def view_reports(chain: Chain) -> tuple[str, dict[str, Path]]:
    """The field's table of the template, the master and the first seed of each student kind,
    as markdown for the results page and files under OUT/views (md + heatmap PNG)."""
    chosen: dict[tuple[str, Any], dict[str, Any]] = {}
    for run in chain.runs:
        chosen.setdefault((run["variant"], run["copy"]), run)
    sections, files = [], {}
    for run in chosen.values():
        evaluation = read_run_evaluation(run["path"])
        written = write_run_report(evaluation, chain.out / VIEWS, run["run"])
        files[f"views_{run['run']}"] = written["md"]
        sections.append(run_report_md(run["run"], view_tables(evaluation), f"{VIEWS}/{written['png'].name}"))
    return "\n".join(sections), files


def anchors_section(rows: list[dict[str, Any]], unit: str, n_test: int) -> str:
    """Our models (mean ± std over seeds) beside the published anchors."""
    groups = base.group_table(rows, base.rules_for(unit))
    ours = {g["model"]: {c: base._cell(g[f"{c} {RULE}"]) for c in CONDITIONS} for g in groups}
    return "\n".join(["## Beside the field", ""] + anchors_md(ours, n_test)) + "\n"


def flow_section(flow: dict[str, Any]) -> str:
    lines = ["## Flow (cheap TV-L1 preset)", "",
             f"{flow['pairs']:,} frame pairs in {flow['sequences']:,} sequences; {flow['pairs_090']:,} of them "
             f"at view 090 ({flow['pairs'] / max(flow['pairs_090'], 1):.1f}x)."]
    if flow.get("pairs_per_s"):
        lines.append(f"{flow['computed']:,} computed by this chain in {flow['seconds']:.0f} s: "
                     f"{flow['pairs_per_s']:.1f} pairs/s.")
    else:
        lines.append("The store held its flow already (computed outside this chain).")
    return "\n".join(lines) + "\n"


def split_facts(split: Path) -> dict[str, Any]:
    """The evaluated views and test subjects of a split (what the results page states)."""
    import pandas as pd

    from training.evaluate import view_order

    table = pd.read_parquet(split / "split.parquet")
    test = table[table.role.isin(("gallery", "probe"))]
    subjects = sorted(test["subject"].unique())
    return {"views": view_order(test["view"]), "test_subjects": subjects,
            "test_range": "-".join(dict.fromkeys([subjects[0], subjects[-1]])) if subjects else "none"}


def protocol_line(facts: dict[str, Any]) -> str:
    n = len(facts["views"])
    return (f"Cross-view rank-1 (%), {n} views ({', '.join(facts['views'])}): per probe view the mean over the "
            f"{n - 1} other gallery views (identical view excluded), then the mean over probe views; "
            f"test subjects {facts['test_range']} ({len(facts['test_subjects'])})")


# ---------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--archives", type=Path, help="Folder of SSS.tar.zst + unpack.sh (casia-b-sil-all).")
    given.add_argument("--source", type=Path, help="Folder of unpacked pickles SSS/CC-NN/VVV/VVV.pkl.")
    given.add_argument("--store", type=Path, help="An imported store, used in place (flow is added to it).")
    p.add_argument("--out", type=Path, required=True, help="Output folder; a rerun resumes.")
    p.add_argument("--subjects", help="Only these subjects, e.g. 001-002,075 (smoke runs).")
    p.add_argument("--views", default=None,
                   help="Only these views, e.g. 000,090,180 (smoke runs with --archives or --source; default all 11).")
    p.add_argument("--setting", default="large", choices=("large", "tune"),
                   help="large: train 001-074, test 075-099; tune: train 011-074, test 001-010 (model choice).")
    p.add_argument("--config", type=Path, help="Training config (default: the GPU, --cpu or --quick one).")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available).")
    p.add_argument("--steps-scale", type=float, default=1.0, help="Multiply every run's steps.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="Config override for every run, e.g. --set data.frames=20 (repeatable).")
    p.add_argument("--seeds", default=None, help="Student seeds (default 0,1,2; --quick: 0).")
    p.add_argument("--master-seeds", default="0", help="Master seeds; students copy the first (default 0).")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores); recorded.")
    p.add_argument("--flow-backend", choices=("auto", "torch", "opencv"), default="auto",
                   help="auto: torch on CUDA, OpenCV DualTVL1 on CPU workers otherwise.")
    p.add_argument("--tvl1", action="append", default=[], metavar="NAME=VALUE", help="TV-L1 override.")
    p.add_argument("--workers", type=int, default=None, help="Import/flow workers (0: no Dask).")
    p.add_argument("--template-array", default="gray", help="Store array of the template's GEIs.")
    p.add_argument("--quick", action="store_true", help="Smoke settings: the smoke config, no Dask, one seed.")
    p.add_argument("--cpu", action="store_true", help="The 2-core CPU recipe (casia-b-sil-lt-cpu.yaml).")
    p.add_argument("--publish", type=Path, default=None,
                   help="Also write the results to this .md/.json stem, e.g. benchmarks/results/casia-b-lt-cpu.")
    p.add_argument("--no-tensorrt", action="store_true", help="Skip the TensorRT export even if available.")
    args = p.parse_args(argv)
    if args.views and args.store:
        p.error("--views limits what is imported: give --archives or --source")
    args.seeds = base._int_list(p, "--seeds", args.seeds or ("0" if args.quick else "0,1,2"))
    args.master_seeds = base._int_list(p, "--master-seeds", args.master_seeds)
    args.command = "python -m benchmarks.casia_b_cross_view " + " ".join(sys.argv[1:] if argv is None else argv)
    return args


def resolve(args: argparse.Namespace) -> tuple[str, Path, tuple[str, ...]]:
    """Device, config and TV-L1 settings: the cheap preset everywhere (issue 22 measures it)."""
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.flow_backend == "auto":
        args.flow_backend = "torch" if device.startswith("cuda") else "opencv"
    default = SMOKE_CONFIG if args.quick else GPU_CONFIG if device.startswith("cuda") and not args.cpu else CPU_CONFIG
    if args.quick and args.workers is None:
        args.workers = 0
    return device, args.config or default, base.QUICK_TVL1 + tuple(args.tvl1)


def main(argv: list[str] | None = None) -> dict[str, Path]:
    import torch

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, config, tvl1 = resolve(args)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    chain = Chain(out, device, rank1_column=RANK1_COLUMN)
    try:
        return run_chain(args, chain, device, config, tvl1)
    except BaseException:
        chain.save_partial()
        raise


def run_chain(args: argparse.Namespace, chain: Chain, device: str, config: Path,
              tvl1: tuple[str, ...]) -> dict[str, Path]:
    import torch

    chain.load_stages()
    subjects = base.parse_subjects(args.subjects)
    store = prepare_store(args, chain, subjects)
    flow = flow_stage(args, chain, store, tvl1)
    split = chain.out / f"split-{args.setting}"
    chain.timed("split", lambda: base.build_split(store, split, args.views, args.setting, cross_view=True))
    facts = split_facts(split)
    chain.protocol = protocol_line(facts)
    template = base.template_entry(chain, store, split, args.template_array)
    sets = base.training_overrides(store, split, device, args.steps_scale, None, config) + args.overrides
    specs = base.plan_runs(config, sets, ["set"], chain.out / "runs", args.seeds, args.master_seeds)
    base.train_all(chain, specs, split)
    chain.runs.insert(0, template)  # the first row of every table
    unit = base.config_unit(config)
    base.export_best(chain, base.tensorrt_available(device) and not args.no_tensorrt, base.rules_for(unit)[-1])
    views_md, view_files = view_reports(chain)
    settings = {"device": device, "config": str(config), "setting": args.setting, "subjects": args.subjects or "all",
                "views": args.views or "all", "tvl1": list(tvl1), "flow_backend": args.flow_backend, "flow": flow,
                "test_subjects": facts["test_range"], "overrides": args.overrides,
                "steps_scale": args.steps_scale, "seeds": args.seeds, "master_seeds": args.master_seeds,
                "template": args.template_array,
                "torch_device_name": base._device_name(device), "command": args.command,
                **base.machine_facts(torch.get_num_threads())}
    rows = base.results_table(chain, base.rules_for(unit))
    extra = "\n".join([anchors_section(rows, unit, len(facts["test_subjects"])), flow_section(flow),
                       "## The field's table per model", "",
                       views_md])
    header = f"# GaitCopy on CASIA-B cross-view, {args.setting} setting ({settings['torch_device_name']})"
    paths = base.write_results(chain, header, settings, unit, extra)
    paths.update(view_files)
    if args.publish:
        paths.update(publish(paths, args.publish, settings, chain.out / VIEWS))
    return paths


def publish(paths: dict[str, Path], stem: Path, settings: dict[str, Any], views: Path) -> dict[str, Path]:
    """The 090 chain's publish, and the view tables and heatmaps beside the page in
    STEM-views/ (the page's links follow them)."""
    published = base.publish(paths, stem, settings)
    target = stem.parent / f"{stem.name}-{VIEWS}"
    shutil.copytree(views, target, dirs_exist_ok=True)
    md = published["published_md"]
    md.write_text(md.read_text().replace(f"]({VIEWS}/", f"]({target.name}/"))
    return {**published, "published_views": target}


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        main()
    except StageFailed as exc:
        sys.exit(f"error: {exc}")
