"""Rank-1 against training minutes, for the flow master and a student (issue 22, item 3).

What more CPU time, or a GPU, would buy: one master run and one student run per kind asked
for (``--students copy,nocopy``), each keeping a checkpoint every ``--every`` steps
(``train.ckpt_keep: 0``), then every checkpoint evaluated on the split. Meant for the ``tune``
setting (test 001-010, train 011-074): recipes are chosen there, never on 075-099.

x: the checkpoint's training-loop wall time (``train_s`` in the checkpoint, summed over
resumes; without the start-up that makes the training data resident, and, for the master,
without the signatures it stores at the end). A student's minutes are its own: it also needs
its master's. y: rank-1 per condition under the set networks' rule (sequence 1-NN), cross-view
where the split is (identical views excluded), same-view otherwise.

Resumable: finished runs are kept, a killed run continues from its last checkpoint, and each
evaluated checkpoint is a row of ``OUT/curve.csv`` that a rerun does not evaluate again.
Writes ``OUT/learning-curve.{csv,md,png}`` (``--publish STEM`` copies the .md and .png).

    python -m benchmarks.learning_curve --store /work/exp/xv/store --split /work/exp/xv/split-tune \\
        --config training/configs/casia-b-sil-lt-cpu.yaml --out /work/exp/xv/curve --every 50 \\
        --publish benchmarks/results/casia-b-lt-learning-curve
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks import casia_b_sil_090 as base
from benchmarks.cross_view_table import CONDITIONS, RULE

CURVE = "curve.csv"
STUDENTS = {"copy": [], "nocopy": ["--no-copy"]}


def curve_overrides(config: Path, every: int) -> list[str]:
    """Keep every checkpoint, one each ``every`` steps, in master and student runs alike.
    The log window must close at each checkpoint, so ``log_every`` becomes its gcd with ``every``."""
    import yaml

    raw = yaml.safe_load(config.read_text())
    sets = []
    for section in ("train", "student_train"):
        if section in raw:
            log_every = math.gcd(every, int((raw[section] or {}).get("log_every", 10)))
            sets += [f"{section}.ckpt_every={every}", f"{section}.ckpt_keep=0", f"{section}.log_every={log_every}"]
    return sets


def train_run(args: list[str], path: Path, name: str) -> None:
    """Train once: a finished run is kept, a partial one resumed."""
    state = base.run_state(path)
    if state == "finished":
        print(f"{name}: finished earlier, kept", flush=True)
        return
    base.train_copy(args + (["--resume"] if state == "partial" else []), name)


def train_runs(config: Path, sets: list[str], out: Path, students: list[str]) -> dict[str, Path]:
    """The master, then each asked student kind copying (or not) that master."""
    runs = {"master": out / "master"}
    train_run(base._with_sets(["master", "--config", str(config), "--out", str(runs["master"])], sets),
              runs["master"], "master")
    for kind in students:
        path = runs[f"student-{kind}"] = out / f"student-{kind}"
        args = ["student", "--config", str(config), "--master", str(runs["master"]), "--out", str(path)]
        train_run(base._with_sets(args + STUDENTS[kind], sets), path, f"student-{kind}")
    return runs


def rank1_by_condition(summary: pd.DataFrame) -> dict[str, float]:
    """Condition -> rank-1 of the rule: cross-view where there is one, else same-view."""
    rows = summary[summary.method == RULE].set_index("probe_set")
    column = "cross_view_rank1" if rows["cross_view_rank1"].notna().any() else "same_view_rank1"
    return {c: float(rows.loc[c, column]) for c in CONDITIONS if c in rows.index}


def checkpoint_point(run: Path, checkpoint: Path, split: Path, device: str) -> dict[str, Any]:
    """One point of the curve: a checkpoint's step, training minutes and rank-1 per condition."""
    import torch

    from training.tasks import evaluate_model

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    result = evaluate_model(run, split, device=device, checkpoint=checkpoint)
    ranks = rank1_by_condition(result.summary)
    return {"run": run.name, "step": int(state["step"]), "minutes": float(state.get("train_s", math.nan)) / 60,
            **ranks, "mean": sum(ranks.values()) / len(ranks)}


def evaluate_checkpoints(runs: dict[str, Path], split: Path, out: Path, device: str) -> pd.DataFrame:
    """Every kept checkpoint of every run, evaluated once (rows already in OUT/curve.csv are kept)."""
    from training.runs import RunDir

    path = out / CURVE
    done = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["run", "step"])
    seen = set(zip(done["run"], done["step"].astype(int)))
    rows = done.to_dict("records")
    for name, run in runs.items():
        for checkpoint in RunDir(run).checkpoints():
            step = int(checkpoint.stem.split("_")[1])
            if (name, step) in seen:
                continue
            print(f"{name} step {step}: evaluating", flush=True)
            rows.append(checkpoint_point(run, checkpoint, split, device))
            pd.DataFrame(rows).to_csv(path, index=False, float_format="%.3f")  # a killed rerun keeps it
    return pd.DataFrame(rows).sort_values(["run", "step"], kind="stable").reset_index(drop=True)


def plot_curve(curve: pd.DataFrame, path: Path, title: str) -> Path:
    """One panel per condition: rank-1 against training minutes, a line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = [c for c in CONDITIONS if c in curve.columns]
    fig, axes = plt.subplots(1, len(conditions), figsize=(4.2 * len(conditions), 3.6), squeeze=False,
                             layout="constrained", sharey=True)
    for ax, condition in zip(axes[0], conditions):
        for run, points in curve.groupby("run", sort=False):
            ax.plot(points["minutes"], points[condition], marker="o", markersize=3, label=run)
        ax.set_title(condition)
        ax.set_xlabel("training minutes")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("rank-1 (%)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def curve_markdown(curve: pd.DataFrame, title: str, png: str, facts: dict[str, Any]) -> str:
    cols = ["run", "step", "minutes", *[c for c in CONDITIONS if c in curve.columns], "mean"]
    lines = [f"# {title}", "", f"![learning curve]({png})", "",
             "Rank-1 (%), sequence 1-NN; cross-view (identical views excluded) where the split is. "
             "Minutes: the run's training loop up to the checkpoint (a student's own, without its master's).", "",
             "| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    for row in curve[cols].itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row) + " |")
    lines += ["", "| fact | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in facts.items()]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, required=True, help="The store (with flow).")
    p.add_argument("--split", type=Path, required=True, help="build-split output (the tune setting).")
    p.add_argument("--config", type=Path, required=True, help="Training config of master and students.")
    p.add_argument("--out", type=Path, required=True, help="Output folder; a rerun resumes.")
    p.add_argument("--every", type=int, default=50, help="Steps between checkpoints (points of the curve).")
    p.add_argument("--students", default="copy", help="Student kinds, of copy,nocopy (default copy).")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="Config override for every run (repeatable).")
    p.add_argument("--publish", type=Path, default=None, help="Also write STEM.md and STEM.png.")
    args = p.parse_args(argv)
    args.students = [s for s in args.students.split(",") if s]
    unknown = [s for s in args.students if s not in STUDENTS]
    if unknown or args.every < 1:
        p.error(f"--students: unknown {unknown} (known {sorted(STUDENTS)}); --every must be >= 1")
    args.command = "python -m benchmarks.learning_curve " + " ".join(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> dict[str, Path]:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    store, split = args.store.resolve(), args.split.resolve()
    sets = (base.training_overrides(store, split, args.device, 1.0, None, args.config)
            + curve_overrides(args.config, args.every) + list(args.overrides))
    runs = train_runs(args.config, sets, out, args.students)
    curve = evaluate_checkpoints(runs, split, out, args.device)
    title = f"Learning curve: {split.name}, {args.config.name}"
    paths = {"csv": out / "learning-curve.csv", "png": plot_curve(curve, out / "learning-curve.png", title)}
    curve.to_csv(paths["csv"], index=False, float_format="%.3f")
    facts = {"command": args.command, "store": store, "split": split, **base.machine_facts(_threads())}
    paths["md"] = out / "learning-curve.md"
    paths["md"].write_text(curve_markdown(curve, title, paths["png"].name, facts))
    if args.publish:
        args.publish.parent.mkdir(parents=True, exist_ok=True)
        png = shutil.copyfile(paths["png"], args.publish.with_suffix(".png"))
        paths["published_md"] = args.publish.with_suffix(".md")
        paths["published_md"].write_text(curve_markdown(curve, title, Path(png).name, facts))
    print(paths["md"].read_text(), flush=True)
    return paths


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    try:
        main()
    except base.StageFailed as exc:
        sys.exit(f"error: {exc}")
