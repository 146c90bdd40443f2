"""The template baseline (training/template.py): GEI + PCA + LDA, run like a network.

The session's toy store (conftest ``toy``) trains on 4 subjects: an LDA fitted on 4 subjects
has 3 dimensions, and on its 4 test subjects it scored NM 25 / CL 50 (chance 25), so it cannot
show that the template separates unseen subjects. The separation test writes a toy of the same
walkers (``write_toy``) with 8 train and 8 test subjects, gray only (no flow: about 3 s).
The CLI tests use the session's toy.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from gaittools.store.zarr_store import Store
from training.clips import read_split
from training.evaluate import evaluate
from training.template import TemplateMap, fit_template, gei, walk_geis
from training.walks import build_walk_index


@pytest.fixture(scope="module")
def toy16(tmp_path_factory: pytest.TempPathFactory):
    from gaittools.synth.toystore import write_toy

    return write_toy(tmp_path_factory.mktemp("toy16"), subjects=16, train_subjects=8, flow=False)


def test_template_separates_unseen_subjects(toy16):
    split = read_split(toy16.split)
    train = build_walk_index(toy16.store, split, "gray", ("train",))
    test = build_walk_index(toy16.store, split, "gray", ("gallery", "probe"), labels={})
    train_geis, test_geis = walk_geis(toy16.store, train, "gray"), walk_geis(toy16.store, test, "gray")

    def rank1(labels: np.ndarray) -> float:
        """Sequence 1-NN rank-1 (%) over every probe of the split (8 test subjects: chance 12.5)."""
        template = fit_template(train_geis, labels)
        predictions = evaluate(template.embed(test_geis), test).predictions
        chosen = predictions[(predictions.method == "sequence-mean") & (predictions.gallery_view == "all")]
        return 100 * chosen.correct.mean()

    labels = train["label"].to_numpy()
    assert rank1(labels) >= 80  # measured 100 % of 16 probes; with shuffled labels 25-50 %
    assert rank1(np.random.default_rng(1).permutation(labels)) < 80  # the check can fail


def test_template_map_is_pca_then_lda():
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 6)
    x = rng.normal(size=(30, 40)) + labels[:, None] * rng.normal(size=40)
    pca = PCA(n_components=25, svd_solver="full").fit(x)  # capped: 30 walks - 5 subjects
    lda = LinearDiscriminantAnalysis().fit(pca.transform(x), labels)
    want = lda.transform(pca.transform(x[:7]))
    np.testing.assert_allclose(fit_template(x, labels, components=150).embed(x[:7]), want, rtol=1e-4, atol=1e-4)


def _tiny_store(path) -> Store:
    """One walk of 4 frames at 64 px whose frame 1 holds nobody (NaN box) but bright pixels."""
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (4, 64, 64), dtype=np.uint8)
    boxes = np.ones((4, 4), np.float32)
    boxes[1] = np.nan
    flow = rng.normal(size=(3, 2, 64, 64)).astype(np.float16)
    store = Store.create(path, dataset="casia-b")
    store.write_sequence("001-nm-01-090", {"gray": gray, "boxes": boxes, "flow": flow},
                         {"name": {"dataset": "casia-b", "seq_id": "001-nm-01-090"}})
    return store


def test_gei_is_the_mean_of_the_valid_frames_centre(tmp_path):
    store = _tiny_store(tmp_path / "store")
    split = pd.DataFrame([{"seq_id": "001-nm-01-090", "subject": "001", "condition": "nm", "seq_num": 1,
                           "view": "090", "role": "train", "probe_set": None}])
    gray, flow = store.read("001-nm-01-090", "gray"), store.read("001-nm-01-090", "flow").astype(np.float32)
    walk = build_walk_index(store, split, "gray")
    want = gray[[0, 2, 3], :, 10:54].astype(np.float64).mean(axis=0) / 255  # frame 1 holds nobody
    np.testing.assert_allclose(walk_geis(store, walk, "gray")[0], want.ravel(), rtol=1e-6)
    fields = build_walk_index(store, split, "flow")  # field i is i -> i+1: only 2 -> 3 has both
    want = np.hypot(flow[2, 0], flow[2, 1])[:, 10:54]
    np.testing.assert_allclose(walk_geis(store, fields, "flow")[0], want.ravel(), rtol=1e-6)
    # another crop side is fitted to 64 first (net_input's rule), then cut: same shape
    assert gei(np.zeros((2, 52, 52), np.uint8)).shape == (64, 44)


def _train_copy(*args: str):
    from training.cli import main

    return CliRunner().invoke(main, ["template", *map(str, args)])


def test_cli_writes_a_run_read_like_a_network_run(tmp_path, toy):
    out = tmp_path / "run"
    result = _train_copy("--store", toy.store.path, "--split", toy.split, "--out", out, "--array", "flow")
    assert result.exit_code == 0, result.output
    assert "clip-knn" in result.output and "sequence 1-NN" in result.output
    summary = pd.read_csv(out / "eval" / "summary.csv")  # what benchmarks' read_rank1 reads
    assert set(summary.method) == {"sequence-mean", "clip-knn"}
    assert set(summary.probe_set) == {"NM", "CL"} and (summary.n_probes == 4).all()
    for name in ("per_view", "pairs", "predictions"):
        assert (out / "eval" / f"{name}.csv").is_file()
    info = json.loads((out / "run.json").read_text())
    assert info["role"] == "template" and info["array"] == "flow" and info["n_train_walks"] == 16
    assert TemplateMap.load(out / "template.npz").projection.shape == (64 * 44, info["embedding_dim"])


def test_cli_errors_are_one_line(tmp_path, toy):
    result = _train_copy("--store", toy.store.path, "--split", toy.split, "--out", tmp_path / "a", "--array", "sil")
    assert result.exit_code == 2 and "has no sil" in result.output and not (tmp_path / "a").exists()
    empty = tmp_path / "empty"
    split = read_split(toy.split)
    empty.mkdir()
    split[split.role != "train"].to_parquet(empty / "split.parquet")
    result = _train_copy("--store", toy.store.path, "--split", empty, "--out", tmp_path / "b")
    assert result.exit_code == 2 and "no train walks" in result.output
    result = _train_copy("--store", toy.store.path, "--split", toy.split, "--out", tmp_path / "c", "--array", "x")
    assert result.exit_code == 2 and "'x' is not one of" in result.output
