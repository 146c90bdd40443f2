"""Protocol metrics on clip embeddings: rank-1 per condition, per view and per view pair.

Input: one embedding per clip (N, d) and a DataFrame with one row per clip, aligned with
the embeddings, with columns ``seq_id``, ``subject``, ``view``, ``role`` ("gallery" or
"probe"; other roles are ignored) and ``probe_set`` (the probe condition, e.g. NM/BG/CL or
N/B/S; ignored for gallery rows; a probe without one goes to "all"). A missing view
(TUM-GAID) counts as one view, "none"; numeric views sort by angle ("18" before "108").

Two decision rules, both reported (column ``method``):

- ``sequence-mean``: each sequence's signature is the mean of its L2-normalised clip
  embeddings, re-normalised; a probe takes the subject of the nearest gallery sequence.
- ``clip-knn``: each probe clip takes the majority subject among its k (7) nearest gallery
  clips; the probe video takes the majority of its clips' votes (the authors' rule). Ties:
  a clip prefers the subject whose nearest neighbour ranks higher; a video prefers the
  subject with more neighbour votes over all its clips, then the first subject.

Distances are Euclidean between normalised vectors, so nearest = largest cosine.

Gallery restrictions (column ``gallery_view``): every gallery view on its own, giving the
probe view x gallery view matrix, and ``"all"`` (the whole gallery). CASIA-B's cross-view
rank-1 averages each probe view's row with the identical view excluded, then averages the
probe views per condition; same-view rank-1 is the diagonal; TUM-GAID's per-condition
rank-1 is ``all_views_rank1`` (one view, no cross-view pairs). Accuracies are in percent.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

SEQUENCE_MEAN, CLIP_KNN = "sequence-mean", "clip-knn"
METHODS: tuple[str, ...] = (SEQUENCE_MEAN, CLIP_KNN)
ALL_VIEWS = "all"
NO_VIEW = "none"
REQUIRED_COLUMNS: tuple[str, ...] = ("seq_id", "subject", "view", "role", "probe_set")
NO_PROBE_SET = "all"


def view_order(views) -> list[str]:
    """Views sorted by angle where they are numbers ("18" before "108"), else by name."""
    def key(view: str) -> tuple[float, str]:
        try:
            return float(view), view
        except ValueError:
            return float("inf"), view
    return sorted(set(views), key=key)


#: Probe conditions in the order the field prints them: CASIA-B's NM, BG, CL; TUM-GAID's
#: N, B, S (manifests/tum-gaid.yaml), which alphabetically would print B, N, S.
FIELD_CONDITIONS: tuple[str, ...] = ("NM", "BG", "CL", "N", "B", "S")


def condition_order(conditions) -> list[str]:
    """Probe conditions in the field's order (NM, BG, CL; N, B, S), any others after them by
    name: tables and figures print them as papers do, not alphabetically."""
    given = set(conditions)
    return [c for c in FIELD_CONDITIONS if c in given] + sorted(given - set(FIELD_CONDITIONS))


def _in_condition_order(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``table`` sorted by ``keys``, its ``probe_set`` column in ``condition_order``: the
    evaluator's tables (CSV files, ``to_text``) list NM before BG and CL."""
    rank = {name: i for i, name in enumerate(condition_order(table["probe_set"]))}
    return table.sort_values(keys, key=lambda c: c.map(rank) if c.name == "probe_set" else c,
                             kind="stable").reset_index(drop=True)


def cross_view_by_probe_view(pairs: pd.DataFrame, keys: Sequence[str] = ("method", "probe_set")) -> pd.Series:
    """Each probe view's rank-1 averaged over the other gallery views, the identical view
    excluded (CASIA-B's cross-view figure, as OpenGait computes it): one implementation for
    the evaluator's ``per_view`` table and for the field's printed table."""
    cross = pairs[pairs.probe_view != pairs.gallery_view]
    return cross.groupby([*keys, "probe_view"])["rank1"].mean()


@dataclass
class Evaluation:
    """Tidy result tables (rank-1 in percent); ``matrix`` pivots ``pairs`` into the view x
    view table.

    - summary: method, probe_set, cross_view_rank1, same_view_rank1, all_views_rank1, n_probes
    - per_view: method, probe_set, probe_view, cross_view_rank1, same_view_rank1
    - pairs: method, probe_set, probe_view, gallery_view, n_probes, rank1
    - predictions: method, gallery_view, seq_id, subject, probe_set, view, predicted, correct
    """

    summary: pd.DataFrame
    per_view: pd.DataFrame
    pairs: pd.DataFrame
    predictions: pd.DataFrame
    k: int

    def matrix(self, method: str, probe_set: str) -> pd.DataFrame:
        """Rank-1 (%), probe views as rows, gallery views as columns (diagonal = same view)."""
        rows = self.pairs[(self.pairs.method == method) & (self.pairs.probe_set == probe_set)]
        if rows.empty:
            raise KeyError(f"no results for method {method!r}, probe set {probe_set!r}")
        matrix = rows.pivot(index="probe_view", columns="gallery_view", values="rank1")
        return matrix.reindex(index=view_order(matrix.index), columns=view_order(matrix.columns))

    def write_csv(self, out_dir: str | Path) -> list[Path]:
        """Write the four tables as CSV files in ``out_dir``; returns their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in ("summary", "per_view", "pairs", "predictions"):
            path = out / f"{name}.csv"
            getattr(self, name).to_csv(path, index=False, float_format="%.3f")
            paths.append(path)
        return paths

    @classmethod
    def read_csv(cls, out_dir: str | Path, k: int = 7) -> Evaluation:
        """The tables ``write_csv`` wrote (views and subjects kept as text: "000" stays "000").
        ``k`` is not in the files: give the run's ``eval.k`` where the clip vote matters."""
        out = Path(out_dir)
        text = {c: str for c in ("probe_view", "gallery_view", "view", "subject", "predicted", "seq_id")}
        tables = {name: pd.read_csv(out / f"{name}.csv", dtype=text)
                  for name in ("summary", "per_view", "pairs", "predictions")}
        return cls(**tables, k=k)

    def to_text(self) -> str:
        """The summary and the cross-view rank-1 per probe view, as printable tables."""
        table = self.per_view.pivot_table(index=["method", "probe_set"], columns="probe_view",
                                          values="cross_view_rank1", dropna=False)
        table = table[view_order(table.columns)]
        order = condition_order(table.index.get_level_values("probe_set"))
        table = table.reindex(sorted(table.index, key=lambda i: (i[0], order.index(i[1]))))
        parts = [f"Rank-1 (%), clip-knn k={self.k}", self.summary.dropna(axis=1, how="all").to_string(
            index=False, float_format="%.2f")]  # no all-NaN cross-view column in a same-view run
        if table.notna().any().any():
            table["mean"] = table.mean(axis=1)
            parts += ["", "Cross-view rank-1 (%) per probe view (identical view excluded)",
                      table.to_string(float_format="%.1f")]
        return "\n".join(parts)


def _check_inputs(embeddings: np.ndarray | torch.Tensor, clips: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in clips.columns]
    if missing:
        raise ValueError(f"clip table lacks columns {missing}; needs {list(REQUIRED_COLUMNS)}")
    if embeddings.ndim != 2 or len(embeddings) != len(clips):
        raise ValueError(f"embeddings of shape {tuple(embeddings.shape)} do not match "
                         f"{len(clips)} clip rows (need (n_clips, d))")
    for role in ("gallery", "probe"):
        if not (clips.role == role).any():
            raise ValueError(f"no {role} clips in the clip table")


def _sequence_table(clips: pd.DataFrame) -> pd.DataFrame:
    """One row per sequence; a sequence whose clips disagree on subject/view/role is an error."""
    columns = ["subject", "view", "role", "probe_set"]
    varying = clips.groupby("seq_id", sort=False)[columns[:3]].nunique(dropna=False)
    bad = varying[(varying > 1).any(axis=1)]
    if not bad.empty:
        raise ValueError(f"clips of sequences {list(bad.index[:5])} disagree on subject/view/role")
    return clips.groupby("seq_id", sort=False)[columns].first().reset_index()


def _normalise(vectors: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(vectors.float(), dim=1)


def _sequence_signatures(clip_vectors: torch.Tensor, clip_seq: torch.Tensor,
                         n_sequences: int) -> torch.Tensor:
    sums = torch.zeros(n_sequences, clip_vectors.shape[1], device=clip_vectors.device)
    return _normalise(sums.index_add_(0, clip_seq, clip_vectors))


def _nearest(probe: torch.Tensor, gallery: torch.Tensor, k: int,
             chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarities and gallery indices of each probe's k nearest gallery rows, best first."""
    k = min(k, len(gallery))
    found = [(probe[start:start + chunk] @ gallery.T).topk(k, dim=1)
             for start in range(0, len(probe), chunk)]
    return torch.cat([f.values for f in found]), torch.cat([f.indices for f in found])


def _clip_votes(neighbours: torch.Tensor, n_subjects: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, k) neighbour subjects, best first -> each clip's vote and its counts per subject."""
    k = neighbours.shape[1]
    counts = torch.zeros(len(neighbours), n_subjects, dtype=torch.long, device=neighbours.device)
    counts.scatter_add_(1, neighbours, torch.ones_like(neighbours))
    rank_bonus = torch.arange(k, 0, -1, device=neighbours.device).expand_as(neighbours)
    first = torch.zeros_like(counts).scatter_reduce_(1, neighbours, rank_bonus, reduce="amax")
    return (counts * (k + 1) + first).argmax(dim=1), counts


def _video_vote(clip_vote: torch.Tensor, clip_counts: torch.Tensor, clip_seq: torch.Tensor,
                n_sequences: int) -> torch.Tensor:
    """Majority of clip votes per sequence; ties go to the subject with more neighbour votes."""
    n_subjects = clip_counts.shape[1]
    votes = torch.zeros(n_sequences, n_subjects, dtype=torch.long, device=clip_vote.device)
    votes.index_put_((clip_seq, clip_vote), torch.ones_like(clip_vote), accumulate=True)
    counts = torch.zeros_like(votes).index_add_(0, clip_seq, clip_counts)
    scale = int(clip_counts.sum(dim=1).max()) * len(clip_seq) + 1
    return (votes * scale + counts).argmax(dim=1)


def evaluate(embeddings: np.ndarray | torch.Tensor, clips: pd.DataFrame, k: int = 7,
             chunk: int = 4096) -> Evaluation:
    """Rank-1 tables for both decision rules over every gallery restriction.

    ``embeddings`` may be a numpy array or a tensor (on any device: the matching runs
    there). ``chunk`` bounds the probe-clips x gallery-clips similarity block in memory.
    The whole-gallery k-NN merges the per-view k-NN lists instead of searching again."""
    _check_inputs(embeddings, clips)
    clips = clips.reset_index(drop=True).copy()
    clips["view"] = clips["view"].astype("string").fillna(NO_VIEW).astype(str)
    clips["probe_set"] = clips["probe_set"].astype("string").fillna(NO_PROBE_SET).astype(str)
    vectors = _normalise(torch.as_tensor(embeddings if torch.is_tensor(embeddings)
                                         else np.asarray(embeddings)))
    device = vectors.device
    sequences = _sequence_table(clips)
    codes, subjects = pd.factorize(sequences.subject.astype(str))
    seq_index = pd.Series(np.arange(len(sequences)), index=sequences.seq_id)
    clip_seq_np = np.array(clips.seq_id.map(seq_index), dtype=np.int64)
    clip_seq = torch.as_tensor(clip_seq_np, device=device)
    seq_subject = torch.as_tensor(codes, device=device)
    signatures = _sequence_signatures(vectors, clip_seq, len(sequences))

    probe_seq = np.flatnonzero(sequences.role.to_numpy() == "probe")
    probe_clip = np.flatnonzero(clips.role.to_numpy() == "probe")
    probe_vectors = vectors[torch.as_tensor(probe_clip, device=device)]
    probe_clip_seq = torch.as_tensor(np.searchsorted(probe_seq, clip_seq_np[probe_clip]),
                                     device=device)
    is_gallery = sequences.role.to_numpy() == "gallery"
    results: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    merged_sims, merged_subjects = [], []
    for gallery_view in [*view_order(sequences.view[is_gallery]), ALL_VIEWS]:
        chosen = is_gallery & ((sequences.view == gallery_view).to_numpy()
                               | (gallery_view == ALL_VIEWS))
        gallery_seq = torch.as_tensor(np.flatnonzero(chosen), device=device)
        nearest_seq = (signatures[probe_seq] @ signatures[gallery_seq].T).argmax(dim=1)
        if gallery_view == ALL_VIEWS:
            sims = torch.cat(merged_sims, dim=1)
            neighbours = torch.cat(merged_subjects, dim=1).gather(
                1, sims.topk(min(k, sims.shape[1]), dim=1).indices)
        else:
            gallery_clip = torch.as_tensor(np.flatnonzero(chosen[clip_seq_np]), device=device)
            sims, nearest = _nearest(probe_vectors, vectors[gallery_clip], k, chunk)
            neighbours = seq_subject[clip_seq[gallery_clip]][nearest]
            merged_sims.append(sims)
            merged_subjects.append(neighbours)
        clip_vote, clip_counts = _clip_votes(neighbours, len(subjects))
        results[gallery_view] = (seq_subject[gallery_seq][nearest_seq],
                                 _video_vote(clip_vote, clip_counts, probe_clip_seq,
                                             len(probe_seq)))
    return _tables(_predictions(results, sequences.iloc[probe_seq], subjects), k)


def _predictions(results: dict[str, tuple[torch.Tensor, torch.Tensor]], probes: pd.DataFrame,
                 subjects: pd.Index) -> pd.DataFrame:
    """One row per (method, gallery view, probe sequence) with the predicted subject."""
    records = [pd.DataFrame({
        "method": method, "gallery_view": gallery_view, "seq_id": probes.seq_id.to_numpy(),
        "subject": probes.subject.astype(str).to_numpy(),
        "probe_set": probes.probe_set.to_numpy(), "view": probes.view.to_numpy(),
        "predicted": subjects[predicted.cpu().numpy()]})
        for gallery_view, by_method in results.items()
        for method, predicted in zip(METHODS, by_method)]
    predictions = pd.concat(records, ignore_index=True)
    predictions["correct"] = predictions.predicted == predictions.subject
    return predictions


def _tables(predictions: pd.DataFrame, k: int) -> Evaluation:
    """Aggregate per-probe predictions into the pair, per-view and summary tables."""
    keys = ["method", "probe_set"]
    by_view = (predictions[predictions.gallery_view != ALL_VIEWS]
               .rename(columns={"view": "probe_view"}))
    pairs = (by_view.groupby([*keys, "probe_view", "gallery_view"], sort=True)["correct"]
             .agg(n_probes="size", rank1="mean").reset_index())
    pairs["rank1"] *= 100
    same = pairs.probe_view == pairs.gallery_view
    per_view = (cross_view_by_probe_view(pairs, keys)
                .rename("cross_view_rank1").to_frame()
                .join(pairs[same].set_index([*keys, "probe_view"])["rank1"]
                      .rename("same_view_rank1"), how="outer").reset_index())
    overall = predictions[predictions.gallery_view == ALL_VIEWS]
    summary = (overall.groupby(keys)["correct"].agg(all_views_rank1="mean", n_probes="size")
               .reset_index())
    summary["all_views_rank1"] *= 100
    view_means = per_view.groupby(keys)[["cross_view_rank1", "same_view_rank1"]].mean()
    summary = summary.join(view_means, on=keys)[
        [*keys, "cross_view_rank1", "same_view_rank1", "all_views_rank1", "n_probes"]]
    return Evaluation(summary=_in_condition_order(summary, keys),
                      per_view=_in_condition_order(per_view, [*keys, "probe_view"]),
                      pairs=_in_condition_order(pairs, [*keys, "probe_view", "gallery_view"]),
                      predictions=predictions, k=k)
