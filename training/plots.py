"""PNG figures of evaluation results (matplotlib, Agg backend: no display needed).

- ``plot_view_matrices``: one heatmap per probe condition, probe view rows x gallery view
  columns, rank-1 in each cell; the diagonal (same view, excluded from cross-view
  rank-1) is outlined.
- ``plot_view_by_condition``: for runs with several views, one heatmap per method, probe
  conditions as rows, probe views as columns, cross-view rank-1 in each cell.
- ``plot_rank1_by_condition``: bars of rank-1 per condition for every method, each condition
  labelled with its number of probes; for runs with one view (TUM-GAID, single-view CASIA-B).
- ``save_evaluation_plots``: what fits the run, written into a directory as
  ``rank1_by_condition.png`` (the heatmap or the bars) and ``views_<method>.png``.

Every figure's title names the run, so a PNG found on its own says what it shows.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from training.evaluate import CLIP_KNN, Evaluation, condition_order, view_order  # noqa: E402


def plot_view_matrices(evaluation: Evaluation, method: str, path: str | Path) -> Path:
    """Heatmaps of the probe view x gallery view rank-1 for each probe condition."""
    probe_sets = condition_order(evaluation.pairs.loc[evaluation.pairs.method == method, "probe_set"])
    if not probe_sets:
        raise ValueError(f"no view-pair results for method {method!r}")
    fig, axes = plt.subplots(1, len(probe_sets), figsize=(5.2 * len(probe_sets), 4.8),
                             squeeze=False, layout="constrained")
    for ax, probe_set in zip(axes[0], probe_sets):
        matrix = evaluation.matrix(method, probe_set)
        image = ax.imshow(matrix.to_numpy(dtype=float), vmin=0, vmax=100, cmap="viridis")
        ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=90)
        ax.set_yticks(range(matrix.shape[0]), matrix.index)
        ax.set_xlabel("gallery view")
        ax.set_ylabel("probe view")
        row = evaluation.summary[(evaluation.summary.method == method)
                                 & (evaluation.summary.probe_set == probe_set)]
        cross = row.cross_view_rank1.iloc[0] if len(row) else np.nan
        ax.set_title(f"{probe_set}: cross-view rank-1 {cross:.1f}%")
        for i, probe_view in enumerate(matrix.index):
            for j, gallery_view in enumerate(matrix.columns):
                value = matrix.iat[i, j]
                if not np.isnan(value) and matrix.size <= 144:
                    ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if value < 60 else "black")
                if probe_view == gallery_view:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False,
                                               edgecolor="red", linewidth=1.2))
    fig.colorbar(image, ax=axes[0].tolist(), label="rank-1 (%)", shrink=0.8)
    fig.suptitle(f"{method}{_k_note(evaluation, [method])}: probe view x gallery view rank-1, "
                 f"red = same view (excluded)")
    return _save(fig, path)


def plot_rank1_by_condition(evaluation: Evaluation, path: str | Path, run_name: str = "") -> Path:
    """Grouped bars: rank-1 per probe condition, one bar per method; ticks give n_probes."""
    summary = evaluation.summary
    column = ("cross_view_rank1" if summary.cross_view_rank1.notna().any()
              else "all_views_rank1")
    table = summary.pivot(index="probe_set", columns="method", values=column)
    table = table.reindex(condition_order(table.index))
    n_probes = summary.groupby("probe_set")["n_probes"].max().reindex(table.index)
    fig, ax = plt.subplots(figsize=(2.4 + 1.4 * len(table), 3.8), layout="constrained")
    width = 0.8 / max(len(table.columns), 1)
    positions = np.arange(len(table))
    for i, method in enumerate(table.columns):
        bars = ax.bar(positions + i * width, table[method], width, label=method)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(positions + width * (len(table.columns) - 1) / 2,
                  [f"{name}\n(n={int(n)} probes)" for name, n in n_probes.items()])
    ax.set_ylim(0, 118)
    label = column.replace("_", " ").replace("rank1", "rank-1")
    ax.set_ylabel(f"{label} (%)")
    ax.set_title(f"{_run(run_name)}{label} by condition{_k_note(evaluation, table.columns)}", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", ncols=len(table.columns), frameon=False)
    return _save(fig, path)


def plot_view_by_condition(evaluation: Evaluation, path: str | Path, run_name: str = "") -> Path:
    """Heatmaps, one per method: probe condition x probe view, cross-view rank-1 in each cell."""
    per_view = evaluation.per_view
    methods = sorted(per_view.method.unique())
    if not methods or per_view.cross_view_rank1.isna().all():
        raise ValueError("no cross-view results to draw (a run with one view has none)")
    fig, axes = plt.subplots(1, len(methods), squeeze=False, layout="constrained",
                             figsize=(1.2 + 0.55 * per_view.probe_view.nunique() * len(methods), 3.6))
    for ax, method in zip(axes[0], methods):
        table = per_view[per_view.method == method].pivot(index="probe_set", columns="probe_view",
                                                            values="cross_view_rank1")
        table = table.reindex(index=condition_order(table.index), columns=view_order(table.columns))
        image = ax.imshow(table.to_numpy(dtype=float), vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set_xticks(range(table.shape[1]), table.columns, rotation=90)
        n_probes = evaluation.summary[evaluation.summary.method == method].set_index("probe_set")["n_probes"]
        ax.set_yticks(range(table.shape[0]), [f"{c} (n={int(n_probes.get(c, 0))})" for c in table.index])
        ax.set_xlabel("probe view")
        ax.set_title(method, fontsize=9)
        for i in range(table.shape[0]):
            for j in range(table.shape[1]):
                value = table.iat[i, j]
                if not np.isnan(value):
                    ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if value < 60 else "black")
    fig.colorbar(image, ax=axes[0].tolist(), label="cross-view rank-1 (%)", shrink=0.8)
    fig.suptitle(f"{_run(run_name)}cross-view rank-1 by condition and probe view{_k_note(evaluation, methods)}",
                 fontsize=10)
    return _save(fig, path)


def save_evaluation_plots(evaluation: Evaluation, out_dir: str | Path, run_name: str = "") -> list[Path]:
    """``rank1_by_condition.png``: the view x condition heatmap for a run with several views,
    titled bars for a run with one; and a probe x gallery view heatmap per method."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "rank1_by_condition.png"
    if evaluation.per_view.cross_view_rank1.notna().any():
        paths = [plot_view_by_condition(evaluation, target, run_name)]
    else:
        paths = [plot_rank1_by_condition(evaluation, target, run_name)]
    if evaluation.pairs.gallery_view.nunique() > 1:
        for method in sorted(evaluation.pairs.method.unique()):
            paths.append(plot_view_matrices(evaluation, method, out / f"views_{method}.png"))
    return paths


def _k_note(evaluation: Evaluation, methods: Iterable[str]) -> str:
    """k belongs to the clip vote alone: a title names it only where that rule is drawn."""
    methods = set(methods)
    if CLIP_KNN not in methods:
        return ""
    return f" (k={evaluation.k})" if methods == {CLIP_KNN} else f" ({CLIP_KNN} k={evaluation.k})"


def _run(run_name: str) -> str:
    return f"{run_name}: " if run_name else ""


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
