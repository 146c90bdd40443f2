"""The field's cross-view table (benchmarks/cross_view_table.py) on hand-made evaluations.

The numbers are chosen so that a wrong convention gives a different answer: including the
identical view, weighting probe views by their probe counts, or mixing in another rule's rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.cross_view_table import (ANCHORS, anchors_md, condition_means, field_rows_md, matrix_md,
                                         view_tables, write_run_report)
from training.evaluate import Evaluation, evaluate

VIEWS = ("000", "090", "180")
#: probe view -> rank-1 against gallery views 000, 090, 180 (diagonal = identical view).
NM = {"000": (100, 50, 70), "090": (40, 100, 80), "180": (90, 60, 100)}
#: probes per pair, per probe view: unequal, so a probe-weighted mean differs.
N_PROBES = {"000": 2, "090": 2, "180": 4}


def _pairs(method: str, probe_set: str, rows: dict[str, tuple[int, ...]]) -> list[dict]:
    return [{"method": method, "probe_set": probe_set, "probe_view": p, "gallery_view": g,
             "n_probes": N_PROBES[p], "rank1": float(value)}
            for p, values in rows.items() for g, value in zip(VIEWS, values)]


def hand_made() -> Evaluation:
    """NM as above; CL all 10 off the diagonal; BG given first; a clip-knn rule that must not leak in."""
    cl = {p: tuple(100 if p == g else 10 for g in VIEWS) for p in VIEWS}
    bg = {p: (0, 0, 0) for p in VIEWS}
    rows = (_pairs("sequence-mean", "CL", cl) + _pairs("sequence-mean", "BG", bg)
            + _pairs("sequence-mean", "NM", NM) + _pairs("clip-knn", "NM", {p: (0, 0, 0) for p in VIEWS}))
    pairs = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # any row order
    empty = pd.DataFrame()
    return Evaluation(summary=empty, per_view=empty, pairs=pairs, predictions=empty, k=7)


def test_identical_view_is_excluded_and_probe_views_weigh_alike():
    tables = view_tables(hand_made())
    assert [t.condition for t in tables] == ["NM", "BG", "CL"]  # the field's order
    nm = tables[0]
    assert list(nm.matrix.index) == list(VIEWS) and list(nm.matrix.columns) == list(VIEWS)
    assert nm.matrix.loc["090", "180"] == 80 and nm.matrix.loc["180", "000"] == 90
    # (50 + 70) / 2, (40 + 80) / 2, (90 + 60) / 2: the diagonal's 100s are in no mean
    assert nm.probe_view_mean.to_dict() == {"000": 60.0, "090": 60.0, "180": 75.0}
    assert nm.mean == pytest.approx(65.0)  # not 67.5 (probe-weighted), not 76.7 (diagonal in)
    assert nm.n_probes == 8
    assert condition_means(tables) == {"NM": pytest.approx(65.0), "BG": 0.0, "CL": pytest.approx(10.0)}


def test_markdown_marks_the_identical_view_and_prints_the_means():
    tables = view_tables(hand_made())
    rows = "\n".join(field_rows_md(tables))
    assert "| NM (n=8) | 60.0 | 60.0 | 75.0 | **65.0** |" in rows
    matrix = "\n".join(matrix_md(tables[0]))
    assert "| 000 | (100.0) | 50.0 | 70.0 | 60.0 |" in matrix
    page = "\n".join(anchors_md({"copy student": {"NM": "65.0 ± 1.0", "BG": 0.0, "CL": 10.0}}))
    assert "| copy student (ours) | 25 | 65.0 ± 1.0 | 0.0 | 10.0 |" in page
    assert "| GaitSet (published) | 50 | 95.0 | 87.2 | 70.4 |" in page and len(ANCHORS) == 4
    assert "075-099" in page and "50" in page


def test_the_table_agrees_with_the_evaluator_and_survives_its_files(tmp_path):
    """On a real evaluation the table's means are the evaluator's cross-view summary, and the
    CSV files read back give the same table (views stay "000", not 0)."""
    rng = np.random.default_rng(0)
    rows = []
    for subject in ("075", "076", "077"):
        for view in VIEWS:
            rows += [(f"{subject}-nm-0{n}-{view}", subject, view, "gallery", None) for n in (1, 2)]
            rows += [(f"{subject}-nm-05-{view}", subject, view, "probe", "NM"),
                     (f"{subject}-cl-01-{view}", subject, view, "probe", "CL")]
    clips = pd.DataFrame(rows, columns=["seq_id", "subject", "view", "role", "probe_set"])
    centres = {s: rng.normal(size=8) for s in clips.subject.unique()}
    emb = np.stack([centres[s] + rng.normal(scale=1.2, size=8) for s in clips.subject])
    result = evaluate(emb, clips, k=1)
    tables = view_tables(result)
    summary = result.summary[result.summary.method == "sequence-mean"].set_index("probe_set")
    for t in tables:
        assert t.mean == pytest.approx(summary.loc[t.condition, "cross_view_rank1"])
        assert t.n_probes == summary.loc[t.condition, "n_probes"] == 9
    result.write_csv(tmp_path / "eval")
    again = view_tables(Evaluation.read_csv(tmp_path / "eval"))
    assert list(again[0].matrix.index) == list(VIEWS)
    assert [t.mean for t in again] == pytest.approx([t.mean for t in tables])
    written = write_run_report(result, tmp_path / "views", "toy")
    assert written["png"].stat().st_size > 0 and "toy-views.png" in written["md"].read_text()
