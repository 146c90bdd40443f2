"""Evaluation metrics on hand-made embeddings where the right answer is known, a loop
reference for the vectorised k-NN vote, the CSV writer and the PNG plots."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from training.evaluate import evaluate
from training.plots import save_evaluation_plots

VIEWS = ("000", "090", "180")
# (condition, sequence number, role, probe set): a tiny CASIA-B-like protocol.
WALKS = (("nm", 1, "gallery", None), ("nm", 2, "gallery", None),
         ("nm", 5, "probe", "NM"), ("cl", 1, "probe", "CL"))


def clip_table(subjects: int, clips_per_sequence: int, views=VIEWS, walks=WALKS) -> pd.DataFrame:
    rows = [dict(seq_id=f"{s:03d}-{cond}-{num:02d}-{view}", subject=f"{s:03d}", view=view,
                 role=role, probe_set=probe_set, clip=c)
            for s in range(subjects) for cond, num, role, probe_set in walks
            for view in views for c in range(clips_per_sequence)]
    return pd.DataFrame(rows)


def one_hot(index: np.ndarray, size: int) -> np.ndarray:
    return np.eye(size, dtype=np.float32)[index]


def row(evaluation, method: str, probe_set: str) -> pd.Series:
    summary = evaluation.summary
    return summary[(summary.method == method) & (summary.probe_set == probe_set)].iloc[0]


def test_perfect_embeddings_score_100_everywhere():
    clips = clip_table(subjects=5, clips_per_sequence=3)
    rng = np.random.default_rng(0)
    # The subject's direction plus a little noise: every rule must find the subject.
    embeddings = 10 * one_hot(clips.subject.astype(int).to_numpy(), 8) + 0.1 * rng.normal(
        size=(len(clips), 8))
    evaluation = evaluate(embeddings, clips)
    assert len(evaluation.summary) == 4  # 2 methods x 2 probe sets
    for column in ("cross_view_rank1", "same_view_rank1", "all_views_rank1"):
        assert (evaluation.summary[column] == 100).all(), column
    assert (evaluation.summary.n_probes == 5 * 3).all()
    matrix = evaluation.matrix("clip-knn", "CL")
    assert list(matrix.index) == list(VIEWS) and list(matrix.columns) == list(VIEWS)


def test_only_identical_views_match_cross_view_exclusion_shows_it():
    """Embeddings that encode the view, not the walker: subject s seen from view v looks
    like subject (s + v) mod S. Within a view every subject is distinct (same-view 100%),
    across views every probe is closest to another subject (cross-view 0%). A small view
    code makes the same view the nearest of all, so the whole gallery scores 100%."""
    clips = clip_table(subjects=5, clips_per_sequence=2)
    view_index = clips.view.map({v: i for i, v in enumerate(VIEWS)}).to_numpy()
    embeddings = (one_hot((clips.subject.astype(int).to_numpy() + view_index) % 5, 8)
                  + 0.3 * one_hot(5 + view_index, 8))
    evaluation = evaluate(embeddings, clips, k=3)
    for method in ("sequence-mean", "clip-knn"):
        for probe_set in ("NM", "CL"):
            result = row(evaluation, method, probe_set)
            assert result.same_view_rank1 == 100
            assert result.cross_view_rank1 == 0
            assert result.all_views_rank1 == 100  # the whole gallery includes the same view
        matrix = evaluation.matrix(method, "NM").to_numpy()
        assert (np.diag(matrix) == 100).all() and (matrix[~np.eye(3, dtype=bool)] == 0).all()
    per_view = evaluation.per_view
    assert (per_view.cross_view_rank1 == 0).all() and (per_view.same_view_rank1 == 100).all()


def test_hand_computed_rank1_per_pair_view_and_condition():
    """Two views, three subjects, one gallery sequence per (subject, view). Gallery vectors
    are one-hot; each probe is 0.8 x (the gallery vector it should match in view A) + 0.6 x
    (the one in view B), so its nearest gallery sequence is chosen per gallery view, and
    view A wins when the whole gallery is searched."""
    views = ("A", "B")
    walks = (("nm", 1, "gallery", None), ("nm", 5, "probe", "NM"), ("cl", 1, "probe", "CL"))
    clips = clip_table(subjects=3, clips_per_sequence=1, views=views, walks=walks)
    slot = {(s, v): i for i, (s, v) in enumerate((s, v) for s in range(3) for v in views)}
    # predicted subject in (gallery view A, gallery view B) for each probe (set, subject, view)
    intended = {("NM", 0, "A"): (0, 0), ("NM", 1, "A"): (1, 1), ("NM", 2, "A"): (2, 0),
                ("NM", 0, "B"): (1, 0), ("NM", 1, "B"): (1, 1), ("NM", 2, "B"): (0, 2),
                ("CL", 0, "A"): (0, 1), ("CL", 1, "A"): (2, 2), ("CL", 2, "A"): (2, 1),
                ("CL", 0, "B"): (1, 2), ("CL", 1, "B"): (0, 1), ("CL", 2, "B"): (0, 0)}
    embeddings = np.zeros((len(clips), len(slot)), dtype=np.float32)
    for i, clip in clips.iterrows():
        subject = int(clip.subject)
        if clip.role == "gallery":
            embeddings[i, slot[subject, clip.view]] = 1
        else:
            in_a, in_b = intended[clip.probe_set, subject, clip.view]
            embeddings[i, slot[in_a, "A"]] = 0.8
            embeddings[i, slot[in_b, "B"]] = 0.6
    evaluation = evaluate(embeddings, clips)
    for method in ("sequence-mean", "clip-knn"):
        nm = evaluation.matrix(method, "NM")
        # probe A: gallery A right for 0, 1, 2 (3/3); gallery B right for 0, 1 (2/3)
        # probe B: gallery A right for 1 (1/3); gallery B right for 0, 1, 2 (3/3)
        np.testing.assert_allclose(nm.to_numpy(), [[100, 200 / 3], [100 / 3, 100]])
        cl = evaluation.matrix(method, "CL")
        # probe A: gallery A right for 0, 2 (2/3); gallery B right for none (0/3)
        # probe B: gallery A right for none (0/3); gallery B right for 1 (1/3)
        np.testing.assert_allclose(cl.to_numpy(), [[200 / 3, 0], [0, 100 / 3]])
        nm_row, cl_row = row(evaluation, method, "NM"), row(evaluation, method, "CL")
        assert nm_row.cross_view_rank1 == pytest.approx((200 / 3 + 100 / 3) / 2)
        assert nm_row.same_view_rank1 == pytest.approx(100)
        assert cl_row.cross_view_rank1 == pytest.approx(0)
        assert cl_row.same_view_rank1 == pytest.approx((200 / 3 + 100 / 3) / 2)
        # Whole gallery: the view-A match (0.8) wins.
        # NM predictions 0,1,2 | 1,1,0 -> 4/6 right; CL 0,2,2 | 1,0,0 -> 2/6 right
        assert nm_row.all_views_rank1 == pytest.approx(400 / 6)
        assert cl_row.all_views_rank1 == pytest.approx(200 / 6)


def test_knn_majority_vote_per_clip_and_per_video():
    """Probe video of subject B with three clips. Each clip's single nearest gallery clip
    is subject A's, but 4 of its 5 nearest are B's (clip vote B, k=5); the third clip's
    neighbours are mostly C's. The video takes the clips' majority: B."""
    gallery = ["A"] + ["B"] * 4 + ["C"] * 4
    clips = pd.DataFrame({
        "seq_id": ["gA"] + ["gB"] * 4 + ["gC"] * 4 + ["probe"] * 3,
        "subject": gallery + ["B"] * 3, "view": "090",
        "role": ["gallery"] * 9 + ["probe"] * 3, "probe_set": [None] * 9 + ["N"] * 3})
    a, b, c = np.eye(3, dtype=np.float32)
    embeddings = np.stack([a, b, b, b, b, c, c, c, c,
                           0.60 * a + 0.55 * b + 0.10 * c,   # nearest A, then 4 x B
                           0.60 * a + 0.55 * b + 0.10 * c,
                           0.60 * a + 0.10 * b + 0.55 * c])  # nearest A, then 4 x C
    evaluation = evaluate(embeddings, clips, k=5)
    predictions = evaluation.predictions.set_index(["method", "gallery_view"])
    assert predictions.loc[("clip-knn", "090"), "predicted"] == "B"
    assert predictions.loc[("clip-knn", "all"), "predicted"] == "B"
    assert evaluate(embeddings, clips, k=1).predictions.query(
        "method == 'clip-knn'").predicted.eq("A").all()  # one neighbour: A
    # The TUM-GAID-like single view: no cross-view pairs, the whole gallery is the headline.
    summary = evaluation.summary.set_index("method")
    assert summary.loc["clip-knn", "all_views_rank1"] == 100
    assert np.isnan(summary.loc["clip-knn", "cross_view_rank1"])


def reference_knn(embeddings, clips, k):
    """Loop version of the clip-knn rule for every gallery restriction (nearest-first
    tie-breaks, then more neighbour votes, then the subject seen first)."""
    vectors = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    order = list(dict.fromkeys(clips.subject))
    gallery = clips[clips.role == "gallery"]
    predicted = {}
    for restriction in [*sorted(gallery.view.unique()), "all"]:
        chosen = gallery if restriction == "all" else gallery[gallery.view == restriction]
        for seq_id, probe in clips[clips.role == "probe"].groupby("seq_id"):
            votes, counts = {}, {}
            for i in probe.index:
                similarity = vectors[chosen.index] @ vectors[i]
                nearest = chosen.subject.to_numpy()[np.argsort(-similarity, kind="stable")[:k]]
                tally = {s: list(nearest).count(s) for s in nearest}
                best = max(tally.values())
                vote = next(s for s in nearest if tally[s] == best)
                votes[vote] = votes.get(vote, 0) + 1
                for s, n in tally.items():
                    counts[s] = counts.get(s, 0) + n
            predicted[restriction, seq_id] = max(
                order, key=lambda s: (votes.get(s, 0), counts.get(s, 0), -order.index(s)))
    return predicted


def test_vectorised_knn_matches_a_loop_reference_on_noisy_data():
    clips = clip_table(subjects=6, clips_per_sequence=4)
    rng = np.random.default_rng(1)
    subject = one_hot(clips.subject.astype(int).to_numpy(), 12)
    view = one_hot(clips.view.map({v: i for i, v in enumerate(VIEWS)}).to_numpy() + 6, 12)
    embeddings = (subject + view + 0.6 * rng.normal(size=subject.shape)).astype(np.float32)
    evaluation = evaluate(torch.from_numpy(embeddings), clips, k=7, chunk=5)  # tiny chunks
    expected = reference_knn(embeddings, clips, 7)
    knn = evaluation.predictions[evaluation.predictions.method == "clip-knn"]
    got = {(r.gallery_view, r.seq_id): r.predicted for r in knn.itertuples()}
    assert got == expected
    accuracy = np.mean([p == s.split("-")[0] for (_, s), p in expected.items()])
    assert 0.2 < accuracy < 1.0  # noisy enough that the tie rules and votes matter


def test_bad_inputs_are_clear_errors():
    clips = clip_table(subjects=2, clips_per_sequence=2)
    embeddings = np.ones((len(clips), 4), dtype=np.float32)
    with pytest.raises(ValueError, match="lacks columns \\['view'\\]"):
        evaluate(embeddings, clips.drop(columns="view"))
    with pytest.raises(ValueError, match="do not match"):
        evaluate(embeddings[:-1], clips)
    with pytest.raises(ValueError, match="no gallery clips"):
        evaluate(embeddings, clips.assign(role="probe"))
    broken = clips.copy()
    broken.loc[0, "subject"] = "999"
    with pytest.raises(ValueError, match="disagree"):
        evaluate(np.ones((len(broken), 4), dtype=np.float32), broken)


def test_csv_tables_text_and_png_plots(tmp_path):
    clips = clip_table(subjects=4, clips_per_sequence=2)
    rng = np.random.default_rng(2)
    embeddings = one_hot(clips.subject.astype(int).to_numpy(), 6) + 0.5 * rng.normal(
        size=(len(clips), 6))
    evaluation = evaluate(embeddings, clips)
    written = evaluation.write_csv(tmp_path / "tables")
    assert [p.name for p in written] == ["summary.csv", "per_view.csv", "pairs.csv",
                                         "predictions.csv"]
    pd.testing.assert_frame_equal(pd.read_csv(written[0]).round(2),
                                  evaluation.summary.reset_index(drop=True).round(2),
                                  check_dtype=False)
    text = evaluation.to_text()
    assert "Cross-view rank-1" in text and "clip-knn" in text and "sequence-mean" in text
    pngs = save_evaluation_plots(evaluation, tmp_path / "plots")
    assert {p.name for p in pngs} == {"rank1_by_condition.png", "views_clip-knn.png",
                                      "views_sequence-mean.png"}
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_numeric_views_sort_by_angle_and_probes_without_a_set_are_kept():
    clips = clip_table(subjects=3, clips_per_sequence=1, views=("18", "108", "0"))
    clips.loc[clips.role == "probe", "probe_set"] = None
    embeddings = one_hot(clips.subject.astype(int).to_numpy(), 3)
    evaluation = evaluate(embeddings, clips)
    assert list(evaluation.summary.probe_set.unique()) == ["all"]
    assert (evaluation.summary.n_probes == 3 * 3 * 2).all()  # both walks of every view
    matrix = evaluation.matrix("sequence-mean", "all")
    assert list(matrix.index) == ["0", "18", "108"] == list(matrix.columns)


def test_probe_sets_come_in_the_fields_order_not_alphabetically():
    """NM, BG, CL (not BG, CL, NM) in every table and in the printed text; unknown sets after."""
    from training.evaluate import condition_order

    assert condition_order(["CL", "NM", "BG", "NM"]) == ["NM", "BG", "CL"]
    assert condition_order(["S", "all", "B", "N"]) == ["N", "B", "S", "all"]
    walks = WALKS + (("bg", 1, "probe", "BG"),)
    clips = clip_table(subjects=3, clips_per_sequence=1, views=("090",), walks=walks)
    evaluation = evaluate(one_hot(clips.subject.astype(int).to_numpy(), 3), clips)
    for table in (evaluation.summary, evaluation.per_view, evaluation.pairs):
        for _, rows in table.groupby("method"):
            assert list(rows.probe_set) == ["NM", "BG", "CL"]
    lines = [line.split() for line in evaluation.to_text().splitlines()[2:5]]
    assert [line[1] for line in lines] == ["NM", "BG", "CL"]
