"""Evaluation figures: a view x condition heatmap for runs with several views, titled bars with
n_probes for runs with one; every title names the run."""

from __future__ import annotations

import numpy as np
import pytest

from test_evaluate import clip_table, one_hot
from training import plots
from training.evaluate import evaluate


@pytest.fixture
def drawn(monkeypatch):
    """The figures save_evaluation_plots makes, by file name, as (titles, axes texts)."""
    seen: dict[str, dict] = {}
    original = plots._save

    def keep(fig, path):
        axes = fig.get_axes()
        seen[path.name] = {"suptitle": fig._suptitle.get_text() if fig._suptitle else "",
                           "titles": [ax.get_title() for ax in axes],
                           "ticks": [t.get_text() for ax in axes for t in ax.get_xticklabels() + ax.get_yticklabels()],
                           "images": sum(len(ax.get_images()) for ax in axes),
                           "bars": sum(len(ax.patches) for ax in axes)}
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return seen


def _evaluation(views: tuple[str, ...]):
    clips = clip_table(subjects=4, clips_per_sequence=2, views=views)
    embeddings = one_hot(clips.subject.astype(int).to_numpy(), 6) + 0.5 * np.random.default_rng(2).normal(
        size=(len(clips), 6))
    return evaluate(embeddings, clips)


def test_cross_view_run_gets_a_view_by_condition_heatmap(tmp_path, drawn):
    plots.save_evaluation_plots(_evaluation(("000", "090", "180")), tmp_path, run_name="student-copy")
    figure = drawn["rank1_by_condition.png"]
    assert figure["images"] == 2 and figure["bars"] == 0  # one heatmap per method, no bars
    assert figure["suptitle"].startswith("student-copy: cross-view rank-1 by condition and probe view")
    assert {"000", "090", "180"} <= set(figure["ticks"]) and any("(n=" in t for t in figure["ticks"])


def test_same_view_run_gets_titled_bars_with_n_probes(tmp_path, drawn):
    evaluation = _evaluation(("090",))
    paths = plots.save_evaluation_plots(evaluation, tmp_path, run_name="master")
    assert [p.name for p in paths] == ["rank1_by_condition.png"]
    figure = drawn["rank1_by_condition.png"]
    assert figure["images"] == 0 and figure["bars"] > 0
    assert figure["titles"][0].startswith("master: all views rank-1 by condition")
    n = evaluation.summary.groupby("probe_set")["n_probes"].max()
    assert all(f"{name}\n(n={count} probes)" in figure["ticks"] for name, count in n.items())


def test_only_the_clip_vote_figures_name_k(tmp_path, drawn):
    """k is the clip vote's parameter; a sequence 1-NN figure that printed it would misname its rule."""
    plots.save_evaluation_plots(_evaluation(("000", "090", "180")), tmp_path, run_name="student")
    assert "k=" not in drawn["views_sequence-mean.png"]["suptitle"]
    assert drawn["views_clip-knn.png"]["suptitle"].startswith("clip-knn (k=7):")
    assert "(clip-knn k=7)" in drawn["rank1_by_condition.png"]["suptitle"]  # both rules drawn side by side
