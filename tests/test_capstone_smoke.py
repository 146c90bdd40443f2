"""CPU smoke run of the capstone chain (benchmarks/casia_b_sil_090.py) on real silhouettes.

The chain imports a few subjects' OpenGait pickles, computes cheap TV-L1 flow, builds the
same-view split, trains the flow master and the 3D and GaitSet students with and without copy
loss for a few steps, evaluates all five and exports the best student. The numbers mean
nothing at this size; what is checked is that every stage ran and handed real, well-formed
outputs to the next: a store with flow, a split with the three probe sets, five finished runs
with rank-1 tables, an ONNX bundle whose parity check passed, and the result tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, need_data

SIL = DATA / "casia-b-sil-090"
TRAIN, TEST = ("001", "002", "003"), ("075", "076")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    need_data(SIL / "001" / "nm-01" / "090" / "090.pkl")
    from benchmarks.casia_b_sil_090 import main

    out = tmp_path_factory.mktemp("capstone")
    paths = main(["--source", str(SIL), "--out", str(out), "--subjects", "001-003,075-076", "--quick",
                  "--device", "cpu", "--gaitset-steps", "1"])
    return out, paths


def test_store_holds_gray_and_flow_of_the_chosen_subjects(chain):
    from gaittools.store.zarr_store import Store

    out, _ = chain
    store = Store(out / "store")
    ids = store.seq_ids()
    assert {s.split("-")[0] for s in ids} == set(TRAIN + TEST)
    assert len(ids) == 10 * len(TRAIN + TEST)
    seq = "075-nm-01-090"
    gray, flow = store.read(seq, "gray"), store.read(seq, "flow")
    assert gray.dtype == np.uint8 and gray.shape[1:] == (64, 64)
    assert flow.shape == (gray.shape[0] - 1, 2, 64, 64)
    assert np.abs(flow.astype(np.float32)).max() > 0.1  # a walking silhouette moves


def test_split_is_the_same_view_protocol(chain):
    out, _ = chain
    split = pd.read_parquet(out / "split" / "split.parquet")
    train = split[split["role"] == "train"]
    assert set(train["subject"]) == set(TRAIN)
    gallery = split[split["role"] == "gallery"]
    assert set(gallery["subject"]) == set(TEST)
    assert set(gallery["condition"]) == {"nm"} and set(gallery["seq_num"].astype(int)) == {1, 2, 3, 4}
    probes = split[split["role"] == "probe"]
    assert sorted(probes["probe_set"].unique()) == ["BG", "CL", "NM"]
    assert set(split["view"]) == {"090"}


def test_every_stage_ran_and_results_are_valid(chain):
    out, paths = chain
    summary = json.loads(paths["json"].read_text())
    stages = summary["stages_s"]
    expected = {"import", "flow", "split", "template", "master", "export-onnx"}
    students = [f"student-{v}-{c}-s0" for v in ("3d", "gaitset") for c in ("copy", "nocopy")]
    expected |= set(students) | {f"eval-{r}" for r in ["master", *students]}
    assert expected <= set(stages), expected - set(stages)
    assert all(seconds > 0 for seconds in stages.values())
    rows = pd.read_csv(paths["csv"])
    assert list(rows["run"]) == ["template", "master", *students]  # the template baseline first
    template = rows.iloc[0]
    rows = rows.iloc[1:]
    assert template["variant"] == "template"
    with np.load(out / "runs" / "template" / "template.npz") as fitted:  # its map's size
        assert template["parameters"] == sum(fitted[name].size for name in fitted.files) > 0
    for probe_set in ("NM", "BG", "CL"):
        for rule in ("sequence-mean", "clip-knn"):
            column = f"{probe_set} {rule}"
            assert rows[column].between(0, 100).all() and rows[column].notna().all(), rows[column]
        # every probe counted, short sequences included: 2 test subjects x 2 walks
        assert (rows[f"n_{probe_set}"] == 4).all()
    assert (rows["parameters"] > 1000).all()
    gaitset = rows[rows["variant"] == "gaitset"]["parameters"]
    assert (gaitset > 500_000).all()  # the real GaitSet trunk, not the tiny smoke 3D-CNN
    for name in rows["run"]:
        run = out / "runs" / name
        assert (run / "eval" / "summary.csv").is_file()
        assert json.loads((run / "run.json").read_text())["finished"] is True
    markdown = paths["md"].read_text()
    assert "| master |" in markdown and "student-gaitset-copy-s0" in markdown
    assert markdown.index("| template (GEI + PCA + LDA) |") < markdown.index("| flow master |")
    assert "3D student, copy" in markdown  # the mean ± std table per model


def test_best_student_exported_with_passed_parity(chain):
    out, paths = chain
    exports = json.loads(paths["json"].read_text())["exports"]
    onnx = [e for e in exports if e["format"] == "onnx"]
    assert len(onnx) == 1 and onnx[0]["passed"] and onnx[0]["min_cosine"] >= 0.999
    bundle = Path(onnx[0]["path"])
    assert bundle.is_dir() and any(bundle.glob("*.onnx"))
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["parity"]["passed"]
    rows = pd.read_csv(paths["csv"]).set_index("run")
    columns = [f"{p} clip-knn" for p in ("NM", "BG", "CL")]
    best = rows.loc[[r for r in rows.index if r not in ("master", "template")], columns].sum(axis=1).idxmax()
    assert onnx[0]["run"] == best


def test_rerun_resumes_and_keeps_finished_runs(chain, capsys):
    """A second call on the same --out trains nothing again and reports the same numbers."""
    from benchmarks.casia_b_sil_090 import main

    out, paths = chain
    before = pd.read_csv(paths["csv"])
    again = main(["--source", str(SIL), "--out", str(out), "--subjects", "001-003,075-076", "--quick",
                  "--device", "cpu", "--gaitset-steps", "1"])
    printed = capsys.readouterr().out
    assert "master: finished earlier, kept" in printed
    pd.testing.assert_frame_equal(pd.read_csv(again["csv"]).drop(columns=["train_s", "eval_s"]),
                                  before.drop(columns=["train_s", "eval_s"]))


def test_bad_subjects_option_is_a_clear_error():
    from benchmarks.casia_b_sil_090 import parse_subjects

    assert parse_subjects("001-003,075") == {"001", "002", "003", "075"}
    with pytest.raises(SystemExit, match="not NNN"):
        parse_subjects("1-x")


def test_pack_and_unpack_round_trip(chain, tmp_path):
    from benchmarks.pack_store import pack, unpack
    from gaittools.store.zarr_store import Store

    out, _ = chain
    with pytest.raises(SystemExit, match="holds flow"):  # the chain's store has flow by now
        pack(out / "store", tmp_path / "refused.tar.gz")
    archive = pack(out / "store", tmp_path / "store.tar.gz", with_flow=True)
    restored = Store(unpack(archive, tmp_path / "restored"))
    original = Store(out / "store")
    assert restored.seq_ids() == original.seq_ids()
    seq = "002-cl-02-090"
    assert np.array_equal(restored.read(seq, "gray"), original.read(seq, "gray"))
    assert np.array_equal(restored.read(seq, "flow"), original.read(seq, "flow"))
    with pytest.raises(SystemExit, match="already exists"):
        unpack(archive, tmp_path / "restored")
