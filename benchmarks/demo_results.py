"""The demo's results file: what `demo.sh` printed, with the machine that printed it.

Why a file: the README's demo table must be what a run wrote, not numbers typed by hand, and
a reader must be able to tell which machine and thread count produced them (CPU results are
bit-reproducible for a seed only at the same thread count).

    python -m benchmarks.demo_results OUT [--seconds N] [--cpu-seconds N] [--publish benchmarks/results/demo.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import pandas as pd

from benchmarks.machine import cpu_name
from training.config import Config
from training.evaluate import CLIP_KNN, SEQUENCE_MEAN, condition_order
from training.runs import RunDir

RUNS = {"master": "flow master", "student-copy": "copy student", "student-copy-s0": "copy student",
        "student-nocopy": "no-copy student"}


def run_config(run_dir: Path) -> Config:
    """The run's own validated config (the defaults where the folder holds no run)."""
    run = RunDir(run_dir)
    return run.config() if run.config_path.is_file() else Config()


def rule_label(method: str, config: Config) -> str | None:
    """How a table names a decision rule for a run; None where the run's unit does not use it.

    A set network (``data.unit: walk``) embeds each walk whole, so its rule is sequence 1-NN;
    the clip k-NN vote is the clip family's (the authors') rule, and over one row per walk it
    would be a vote among whole walks, which nobody reports."""
    if config.data.unit == "walk":
        return "sequence 1-NN (whole walk)" if method == SEQUENCE_MEAN else None
    return {SEQUENCE_MEAN: "sequence 1-NN (mean of clips)",
            CLIP_KNN: f"clip {config.eval.k}-NN vote"}.get(method, method)


def rank1_table(summary_csv: Path) -> str:
    """Same-view rank-1 per run and the decision rules its unit uses (``rule_label``), probe sets
    as columns in the field's order (NM, BG, CL), with n_probes."""
    summary = pd.read_csv(summary_csv)
    probe_sets = condition_order(summary["probe_set"])
    lines = ["| run | rule | " + " | ".join(probe_sets) + " | n_probes |",
             "|---|---|" + "---|" * (len(probe_sets) + 1)]
    configs = {run: run_config(summary_csv.parent / run) for run in summary["run"].unique()}
    for (run, method), rows in summary.groupby(["run", "method"], sort=False):
        rule = rule_label(method, configs[run])
        if rule is None:
            continue
        rows = rows.set_index("probe_set").reindex(probe_sets)
        cells = " | ".join(f"{v:.1f}" for v in rows["same_view_rank1"])
        lines.append(f"| {RUNS.get(run, run)} | {rule} | {cells} | {int(rows['n_probes'].max())} |")
    return "\n".join(lines)


def identify_lines(path: Path) -> tuple[str, int, int]:
    """The answers as a table (one row per walking track of a video), and how many name the
    video's subject (its first three characters) out of all answers."""
    answers = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    right = 0
    lines = ["| video | answer | distance | margin |", "|---|---|---|---|"]
    for a in answers:
        truth = Path(a["video"]).name[:3]
        right += a.get("identity") == truth
        distance = "" if a.get("distance") is None else f"{a['distance']:.3f}"
        margin = "" if a.get("margin") is None else f"{a['margin']:.3f}"
        track = "" if a.get("track") is None else f" track {a['track']} ({a['first_frame']}-{a['last_frame']})"
        lines.append(f"| {Path(a['video']).name}{track} | {a.get('identity') or a['status']} | {distance} | {margin} |")
    return "\n".join(lines), right, len(answers)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="The folder demo.sh wrote.")
    p.add_argument("--seconds", type=int, default=None, help="The demo's wall time.")
    p.add_argument("--cpu-seconds", type=int, default=None,
                   help="CPU time (user + system) of the demo's commands: on a shared machine the "
                        "wall time says more about the neighbours than about the demo.")
    p.add_argument("--publish", type=Path, default=None, help="Also copy the file here.")
    args = p.parse_args(argv)
    summary = args.out / "runs" / "summary.csv"
    identify = args.out / "identify.json"
    for path in (summary, identify):
        if not path.is_file():
            sys.exit(f"error: {path}: missing; run `bash demo.sh {args.out}` to the end first")
    import torch

    table, right, total = identify_lines(identify)
    walks = run_config(summary.parent / "student-copy").data.unit == "walk"
    track_note = ", each walking track embedded as one set" if walks else ""
    threads = int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))
    facts = [f"- machine: {cpu_name()}, {os.cpu_count()} cores; torch threads {threads}; Python "
             f"{platform.python_version()}, torch {torch.__version__}",
             f"- wall time: {args.seconds} s" if args.seconds is not None else "- wall time: not measured"]
    if args.cpu_seconds is not None:
        facts.append(f"- CPU time (user + system, all commands): {args.cpu_seconds} s")
    text = "\n".join(["# demo.sh results", "", *facts, "",
                      "Same-view rank-1 (%) on the synthetic test subjects 007-012 (gallery nm-01..04; "
                      "probes NM nm-05/06, BG bg-01/02, CL cl-01/02):", "", rank1_table(summary), "",
                      f"identify (flow-free, copy student{track_note}; gallery nm-01, probes cl-01): "
                      f"{right} of {total} right",
                      "", table, ""])
    result = args.out / "results.md"
    result.write_text(text)
    print(text)
    if args.publish:
        args.publish.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result, args.publish)
    return result


if __name__ == "__main__":
    main()
