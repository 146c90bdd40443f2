"""CASIA-B's cross-view table as the field prints it, with the published anchors beside it (issue 22).

Per probe condition (NM, BG, CL), from one run's evaluation (``training.evaluate.Evaluation``,
or the ``RUN/eval/*.csv`` files it wrote):

- the probe view x gallery view rank-1 matrix (11 x 11 on CASIA-B; the diagonal is the
  identical view);
- each probe view's mean over the other gallery views, the identical view excluded
  (``training.evaluate.cross_view_by_probe_view``: the evaluator's own per-view figure);
- the condition's mean over the probe views. This is OpenGait's convention and the number
  papers print (GaitSet, GaitPart, GaitGL, GaitBase): on a full matrix it equals the mean
  over the 110 off-diagonal pairs, and it weighs every view pair alike, however many probes
  a pair has.

Printed as papers print it (conditions as rows, probe views as columns, then the mean), with
the full matrices below it and as heatmaps (``training.plots.plot_view_matrices``). Beside
our rows, the published anchors: trained for tens of thousands of GPU steps and tested on
50 subjects (075-124). Ours are tested on 25 (075-099: the shared silhouettes stop at 099),
so each probe has half the distractors and the same rank-1 is easier to reach.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from training.evaluate import SEQUENCE_MEAN, Evaluation, condition_order, cross_view_by_probe_view

#: The decision rule of set networks and of the template: sequence 1-NN (one signature per walk).
RULE = SEQUENCE_MEAN
#: Published CASIA-B LT cross-view rank-1 (%), NM / BG / CL, identical views excluded, 50 test subjects.
ANCHORS: dict[str, tuple[float, float, float]] = {
    "GaitSet": (95.0, 87.2, 70.4),
    "GaitPart": (96.2, 91.5, 78.7),
    "GaitGL": (97.4, 94.5, 83.6),
    "GaitBase (OpenGait)": (97.6, 94.0, 77.4),
}
ANCHOR_NOTE = ("Published rows: LT protocol, test subjects 075-124 (50), trained for tens of thousands of GPU "
               "steps. Ours: test subjects 075-099 (25; the shared silhouettes stop at 099), so each probe "
               "has half the distractors and the same rank-1 is easier to reach.")
ANCHOR_SUBJECTS = 50
CONDITIONS: tuple[str, ...] = ("NM", "BG", "CL")


@dataclass
class ViewTable:
    """One condition of the field's table."""

    condition: str
    #: rank-1 (%), probe views as rows, gallery views as columns.
    matrix: pd.DataFrame
    #: each probe view's rank-1 over the other gallery views (identical view excluded).
    probe_view_mean: pd.Series
    #: probe walks of the condition (each is matched against every gallery view).
    n_probes: int

    @property
    def mean(self) -> float:
        """The condition's figure: the mean over probe views of ``probe_view_mean``."""
        return float(self.probe_view_mean.mean())


def view_tables(evaluation: Evaluation, method: str = RULE) -> list[ViewTable]:
    """The field's table of ``method``, one ``ViewTable`` per condition in the field's order."""
    pairs = evaluation.pairs[evaluation.pairs.method == method]
    if pairs.empty:
        raise KeyError(f"no view-pair results for method {method!r}")
    tables = []
    for condition in condition_order(pairs.probe_set.unique()):
        rows = pairs[pairs.probe_set == condition]
        matrix = evaluation.matrix(method, condition)
        means = cross_view_by_probe_view(rows, keys=()).reindex(matrix.index)
        # a probe walk appears once per gallery view: count each probe view's walks once
        n_probes = int(rows.groupby("probe_view")["n_probes"].max().sum())
        tables.append(ViewTable(condition, matrix, means, n_probes))
    return tables


def condition_means(tables: list[ViewTable]) -> dict[str, float]:
    """Condition -> its figure (what a results row and the anchors compare)."""
    return {t.condition: t.mean for t in tables}


# ---------------------------------------------------------------------------- markdown
def _num(value: float) -> str:
    return "" if pd.isna(value) else f"{value:.1f}"


def field_rows_md(tables: list[ViewTable]) -> list[str]:
    """Papers' layout: a row per condition, each probe view's cross-view rank-1, then the mean."""
    views = list(tables[0].matrix.index)
    lines = ["| probe | " + " | ".join(views) + " | mean |", "|---" * (len(views) + 2) + "|"]
    for t in tables:
        cells = [_num(t.probe_view_mean.get(v, float("nan"))) for v in views]
        lines.append(f"| {t.condition} (n={t.n_probes}) | " + " | ".join(cells) + f" | **{_num(t.mean)}** |")
    return lines


def matrix_md(table: ViewTable) -> list[str]:
    """The condition's full matrix; the identical-view cell in parentheses (not in any mean)."""
    m = table.matrix
    lines = [f"**{table.condition}** (probe view rows x gallery view columns, rank-1 %; "
             f"(x) = identical view, excluded; mean: {_num(table.mean)})", "",
             "| probe \\ gallery | " + " | ".join(m.columns) + " | mean excl. identical |",
             "|---" * (len(m.columns) + 2) + "|"]
    for probe_view in m.index:
        cells = [f"({_num(m.at[probe_view, g])})" if g == probe_view else _num(m.at[probe_view, g])
                 for g in m.columns]
        lines.append(f"| {probe_view} | " + " | ".join(cells) + f" | {_num(table.probe_view_mean[probe_view])} |")
    return lines


def anchors_md(ours: Mapping[str, Mapping[str, str | float]], n_test: int = 25) -> list[str]:
    """Our rows (name -> condition -> number or "mean ± sd" text; ``n_test`` test subjects)
    beside the published anchors (50 test subjects)."""
    lines = ["| model | test subjects | NM | BG | CL |", "|---|---|---|---|---|"]
    for name, row in ours.items():
        cells = [row[c] if isinstance(row[c], str) else _num(row[c]) for c in CONDITIONS]
        lines.append(f"| {name} (ours) | {n_test} | " + " | ".join(cells) + " |")
    for name, values in ANCHORS.items():
        lines.append(f"| {name} (published) | {ANCHOR_SUBJECTS} | " + " | ".join(_num(v) for v in values) + " |")
    return lines + ["", ANCHOR_NOTE]


def run_report_md(name: str, tables: list[ViewTable], heatmap: str | None = None) -> str:
    """One run's section: the field's rows, the heatmap's file, every matrix."""
    lines = [f"### {name}", "", "Cross-view rank-1 (%) per probe view, identical view excluded; "
             "mean = over probe views (OpenGait's convention).", ""]
    lines += field_rows_md(tables)
    if heatmap:
        lines += ["", f"![{name}: probe view x gallery view rank-1]({heatmap})"]
    for table in tables:
        lines += [""] + matrix_md(table)
    return "\n".join(lines) + "\n"


def write_run_report(evaluation: Evaluation, out_dir: str | Path, name: str, method: str = RULE
                     ) -> dict[str, Path]:
    """``OUT/<name>-views.md`` and the heatmaps ``OUT/<name>-views.png`` of one run."""
    from training.plots import plot_view_matrices

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_view_matrices(evaluation, method, out / f"{name}-views.png")
    md = out / f"{name}-views.md"
    md.write_text(run_report_md(name, view_tables(evaluation, method), png.name))
    return {"md": md, "png": png}


def read_run_evaluation(run: str | Path, k: int = 7) -> Evaluation:
    """The evaluation a run (network or template) wrote into ``RUN/eval``."""
    return Evaluation.read_csv(Path(run) / "eval", k)
