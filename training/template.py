"""The template baseline: gait energy images (GEI) + PCA + LDA, a run without a network.

Why: users of the field know GEI. On same-view CASIA-B it beats every 3D clip network we
trained, in seconds, so it is the first row of every results table and a network that does
not beat it has no place there (issue 21). It is a run like the networks': same split, same
walk table (``training.walks``), same evaluator and the same ``RUN/eval`` files, so the
benchmarks read it back with the same code.

- GEI: the mean over every valid frame of a walk (``training.walks.walk_frames``: gray frames
  that hold the person; flow fields whose both frames hold the person) of the 64 x 44 centre
  of its crops. Crops of another side are fitted to 64 first by the networks' own rule
  (``gaittools.deploy.net_input.fit_to_input``), then the centre 44 columns are kept by the set
  networks' ``InputCut`` (the sides of a walker's square crop are background). Gray values
  are scaled to 0..1; for ``flow`` the image is the per-pixel flow magnitude |(dx, dy)| in
  pixels of the 64-px crop.
- PCA then LDA (scikit-learn), fitted on every walk of the split's ``train`` role; PCA keeps
  ``components`` (150) dimensions, capped at n_walks - n_subjects: centred walks span at most
  n_walks - 1 dimensions, and LDA needs a within-subject scatter of full rank, which the
  classic Fisherface cap guarantees (beyond it, sklearn's LDA drops the directions where that
  scatter vanishes). The fitted transform is one affine map, ``(gei - centre) @ projection``,
  stored in ``RUN/template.npz``; gallery and probe walks are embedded by it.
- Decision: one template per walk, so the evaluator's ``sequence-mean`` rule is sequence 1-NN
  (cosine, as for the networks). Its ``clip-knn`` rows over one row per walk are a k-NN vote
  among gallery walks, not the authors' clip rule: that rule does not apply to templates.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from gaittools.deploy.net_input import fit_to_input
from gaittools.store.zarr_store import Store
from training.clips import read_split
from training.data import FLOW, GRAY, crop_size
from training.evaluate import SEQUENCE_MEAN, Evaluation, evaluate
from training.models.parts import InputCut
from training.walks import build_walk_index, read_walk

#: Store arrays a template can be made of (``flow``: the GEI of the flow magnitude).
ARRAYS: tuple[str, ...] = ("gray", "sil", FLOW)
#: GEI height (crops are fitted to it) and width (its centre columns), OpenGait's 64 x 44.
GEI_SIZE, GEI_WIDTH = 64, 44
COMPONENTS = 150
MODEL_FILE = "template.npz"
#: The evaluator rule that is the template's own (sequence 1-NN over one row per walk).
RULE = SEQUENCE_MEAN
#: Probe conditions in the field's order (CASIA-B), for what is printed.
FIELD_ORDER: tuple[str, ...] = ("NM", "BG", "CL")


def walk_modality(array: str) -> str:
    """The walk-table modality of a store array (which frames a walk offers)."""
    if array not in ARRAYS:
        raise ValueError(f"array must be one of {', '.join(ARRAYS)}, not {array!r}")
    return FLOW if array == FLOW else GRAY


def gei(frames: np.ndarray, flow: bool = False) -> np.ndarray:
    """Stored frames of one walk -> its (64, 44) float32 GEI.

    ``frames``: the walk's valid frames as stored, uint8 (T, S, S) or, with ``flow``,
    float16 (T, 2, S, S). Fitting to 64 before the magnitude lets a resize scale the
    displacements with the image, as it does for the networks' input."""
    fitted = fit_to_input(np.asarray(frames), GEI_SIZE, flow=flow)
    if flow:
        dx, dy = (fitted[:, c].astype(np.float32) for c in (0, 1))
        images = np.sqrt(dx * dx + dy * dy)
    else:
        images = fitted.astype(np.float32) / np.float32(255.0)
    cut = InputCut(GEI_WIDTH)(torch.from_numpy(np.ascontiguousarray(images))).numpy()
    return cut.mean(axis=0, dtype=np.float64).astype(np.float32)


def walk_geis(store: Store, walks: pd.DataFrame, array: str, threads: int = 4) -> np.ndarray:
    """(N, 64 * 44) GEIs of a walk table's rows, in order (reads run in ``threads`` threads:
    zarr decoding releases the GIL)."""
    modality = walk_modality(array)
    gray_array = array if modality == GRAY else GRAY

    def one(walk: Any) -> np.ndarray:
        return gei(read_walk(store, walk, modality, gray_array), flow=modality == FLOW).ravel()

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        rows = list(pool.map(one, walks.itertuples(index=False)))
    return np.stack(rows) if rows else np.zeros((0, GEI_SIZE * GEI_WIDTH), np.float32)


@dataclass
class TemplateMap:
    """The fitted PCA + LDA transform as one affine map: ``(gei - centre) @ projection``."""

    centre: np.ndarray  # (D,)
    projection: np.ndarray  # (D, d)

    def embed(self, geis: np.ndarray) -> np.ndarray:
        """(N, D) flattened GEIs -> (N, d) float32 embeddings."""
        return ((np.asarray(geis, np.float64) - self.centre) @ self.projection).astype(np.float32)

    def save(self, path: str | Path) -> None:
        np.savez(path, centre=self.centre, projection=self.projection)

    @classmethod
    def load(cls, path: str | Path) -> TemplateMap:
        with np.load(path) as data:
            return cls(data["centre"], data["projection"])


def pca_dimensions(components: int, n_walks: int, n_subjects: int, n_features: int) -> int:
    """PCA dimensions kept: ``components``, capped at n_walks - n_subjects (module docstring)."""
    return max(1, min(components, n_walks - n_subjects, n_features))


def fit_template(geis: np.ndarray, labels: np.ndarray, components: int = COMPONENTS) -> TemplateMap:
    """PCA then LDA on the training walks' GEIs (one label per walk), as one affine map.

    PCA (no whitening): z = (x - mean) @ C.T; LDA: (z - xbar) @ S. Since C's rows are
    orthonormal, both are (x - centre) @ P with centre = mean + xbar @ C and P = C.T @ S."""
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from threadpoolctl import threadpool_limits

    labels = np.asarray(labels)
    n_subjects = len(np.unique(labels))
    if n_subjects < 2:
        raise ValueError(f"LDA needs walks of at least two subjects, got {n_subjects}")
    x = np.asarray(geis, np.float64)
    pca = PCA(n_components=pca_dimensions(components, len(x), n_subjects, x.shape[1]), svd_solver="full")
    # one BLAS thread: on 740 x 2816 GEIs the fit took 0.5 CPU s with it and 4.5 with two
    # OpenBLAS threads spinning on a busy 2-core machine
    with threadpool_limits(limits=1, user_api="blas"):
        z = pca.fit_transform(x)
        lda = LinearDiscriminantAnalysis(solver="svd").fit(z, labels)
    d = lda.transform(z[:1]).shape[1]
    return TemplateMap(centre=pca.mean_ + lda.xbar_ @ pca.components_,
                       projection=pca.components_.T @ lda.scalings_[:, :d])


def run_template(store_path: str | Path, split_dir: str | Path, out: str | Path, array: str = "gray",
                 components: int = COMPONENTS, threads: int = 4) -> Evaluation:
    """Fit on the split's train walks, evaluate its gallery and probe walks; write the run.

    ``out`` gets ``run.json`` (what the run is), ``template.npz`` (the map) and ``eval/``
    (the evaluator's CSV tables and plots, as ``train-copy evaluate`` writes them)."""
    from training.plots import save_evaluation_plots

    clock = _Clock()
    modality = walk_modality(array)
    store, split = Store(store_path), read_split(split_dir)
    train = build_walk_index(store, split, modality, roles=("train",), threads=threads)
    test = build_walk_index(store, split, modality, roles=("gallery", "probe"), labels={}, threads=threads)
    _check_walks(train, test, split_dir, store)
    size = crop_size(str(store_path), str(train["seq_id"].iloc[0]), array)  # KeyError: no such array
    out = _new_run_dir(out)
    clock.lap("index")
    train_geis, test_geis = walk_geis(store, train, array, threads), walk_geis(store, test, array, threads)
    clock.lap("gei")
    template = fit_template(train_geis, train["label"].to_numpy(), components)
    clock.lap("fit")
    result = evaluate(template.embed(test_geis), test)
    clock.lap("eval")
    template.save(out / MODEL_FILE)
    result.write_csv(out / "eval")
    save_evaluation_plots(result, out / "eval", out.name)
    n_subjects = int(train["label"].nunique())
    info = {
        "role": "template", "method": "GEI + PCA + LDA", "array": array, "modality": modality,
        "crop_size": size, "gei": [GEI_SIZE, GEI_WIDTH], "components": components,
        "pca_dimensions": pca_dimensions(components, len(train), n_subjects, train_geis.shape[1]),
        "embedding_dim": int(template.projection.shape[1]), "n_train_walks": len(train),
        "n_train_subjects": n_subjects, "n_eval_walks": len(test),
        "rule": f"{RULE} (sequence 1-NN, cosine); clip-knn does not apply to templates",
        "store": str(store_path), "split": str(split_dir), **clock.record(), "finished": True,
    }
    (out / "run.json").write_text(json.dumps(info, indent=2))
    return result


class _Clock:
    """Wall and CPU seconds per stage. CPU seconds (this process, all threads) are what the work
    costs: on a machine shared with training jobs the wall time mostly measures the queue."""

    def __init__(self) -> None:
        self.start = self.last = (time.perf_counter(), time.process_time())
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = (time.perf_counter(), time.process_time())
        self.laps[f"{name}_s"], self.laps[f"{name}_cpu_s"] = (round(n - l, 3) for n, l in zip(now, self.last))
        self.last = now

    def record(self) -> dict[str, float]:
        now = (time.perf_counter(), time.process_time())
        return {**self.laps, "wall_s": round(now[0] - self.start[0], 3), "cpu_s": round(now[1] - self.start[1], 3)}


def _check_walks(train: pd.DataFrame, test: pd.DataFrame, split_dir: str | Path, store: Store) -> None:
    """One-line errors for a split that gives the template nothing to fit or to evaluate."""
    if train.empty:
        raise ValueError(f"{split_dir}: no train walks with the person in {store.path} (the template "
                         "is fitted on the split's train role)")
    for role in ("gallery", "probe"):
        if not (test["role"] == role).any():
            raise ValueError(f"{split_dir}: no {role} walks with the person in {store.path}")


def _new_run_dir(out: str | Path) -> Path:
    """``out``, created; a folder that already holds something is refused (as for network runs)."""
    from training.runs import RunError

    path = Path(out)
    if path.exists() and any(path.iterdir()):
        raise RunError(f"{path}: exists and is not empty; choose a new --out")
    path.mkdir(parents=True, exist_ok=True)
    return path


def summary_text(result: Evaluation, info: dict[str, Any]) -> str:
    """The template's rank-1 per condition under its own rule, and what that rule is."""
    rows = result.summary[result.summary.method == RULE].dropna(axis=1, how="all")
    order = {name: i for i, name in enumerate(FIELD_ORDER)}  # NM, BG, CL, then the rest by name
    rows = (rows.assign(order=rows.probe_set.map(lambda p: order.get(p, len(order))))
            .sort_values(["order", "probe_set"]).drop(columns=["order", "method"]))
    return "\n".join([
        f"template {info['method']} on {info['array']}: {info['n_train_walks']} train walks of "
        f"{info['n_train_subjects']} subjects, PCA {info['pca_dimensions']} -> LDA {info['embedding_dim']}, "
        f"fit {info['fit_s']:.1f} s ({info['fit_cpu_s']:.1f} CPU s), wall {info['wall_s']:.1f} s "
        f"({info['cpu_s']:.1f} CPU s)",
        "Rank-1 (%), sequence 1-NN over one template per walk (the clip-knn rows in eval/summary.csv "
        "are a vote among gallery walks: the authors' clip rule does not apply to templates)",
        rows.to_string(index=False, float_format="%.2f")])
