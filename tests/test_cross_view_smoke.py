"""CPU smoke run of the cross-view chain (benchmarks/casia_b_cross_view.py) on real silhouettes.

Three subjects' archives are unpacked by the data's own unpack.sh (001 and 002 train, 075 is
the test subject), three views are imported (000, 090, 180: the chain's stages at a size CI
affords), cheap TV-L1 flow is computed, the cross-view LT split is built, the template runs
where ``train-copy template`` exists, a 2-step set-network master and its copy and no-copy
students train, all are evaluated across views, the best student is exported with parity,
and the field's table is written. The numbers mean nothing at this size (one test subject:
every probe finds it); the shapes, the counts and the hand-off between stages are checked.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from conftest import DATA, need_data

ARCHIVES = DATA / "casia-b-sil-all"
VIEWS = ("000", "090", "180")
ARGV = ["--quick", "--archives", str(ARCHIVES), "--subjects", "001-002,075", "--views", ",".join(VIEWS),
        "--device", "cpu"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory):
    need_data(ARCHIVES / "unpack.sh")
    need_data("casia-b-sil-090", "075")  # unpack.sh takes view 090 from there
    if shutil.which("zstd") is None:
        pytest.skip("unpack.sh needs the zstd command (apt-get install zstd)")
    from benchmarks.casia_b_cross_view import main

    out = tmp_path_factory.mktemp("xview")
    return out, main([*ARGV, "--out", str(out)])


def test_store_holds_the_chosen_subjects_and_views_with_flow(chain):
    from gaittools.store.zarr_store import Store

    out, _ = chain
    ids = Store(out / "store").seq_ids()
    assert {s.split("-")[0] for s in ids} == {"001", "002", "075"}
    assert {s.rsplit("-", 1)[1] for s in ids} == set(VIEWS)
    assert len(ids) == 3 * 10 * len(VIEWS)
    manifest = pd.read_parquet(out / "store" / "manifest.parquet")
    assert (manifest["status_flow"] == "done").all()


def test_split_is_cross_view_lt(chain):
    out, _ = chain
    split = pd.read_parquet(out / "split-large" / "split.parquet")
    info = json.loads((out / "split-large" / "split.json").read_text())
    assert info["cross_view"] is True and info["setting"] == "large"
    assert set(split.loc[split.role == "train", "subject"]) == {"001", "002"}
    gallery = split[split.role == "gallery"]
    assert set(gallery["subject"]) == {"075"} and set(gallery["view"]) == set(VIEWS)
    assert len(gallery) == 4 * len(VIEWS)  # nm-01..04 at every view
    probes = split[split.role == "probe"].groupby("probe_set").size().to_dict()
    assert probes == {"NM": 2 * len(VIEWS), "BG": 2 * len(VIEWS), "CL": 2 * len(VIEWS)}


def test_every_run_is_evaluated_across_views_and_tabled(chain):
    from benchmarks.cross_view_table import read_run_evaluation, view_tables

    out, paths = chain
    rows = pd.read_csv(paths["csv"])
    networks = ["master", "student-set-copy-s0", "student-set-nocopy-s0"]
    assert [r for r in rows["run"] if r != "template"] == networks
    for name in rows["run"]:
        evaluation = read_run_evaluation(out / "runs" / name)
        tables = view_tables(evaluation)
        assert [t.condition for t in tables] == ["NM", "BG", "CL"]
        for t in tables:
            assert t.matrix.shape == (len(VIEWS), len(VIEWS)) and t.n_probes == 2 * len(VIEWS)
            row = rows.set_index("run").loc[name]
            assert row[f"{t.condition} sequence-mean"] == pytest.approx(t.mean, abs=0.01)
        assert (out / "views" / f"{name}-views.png").stat().st_size > 0
    page = paths["md"].read_text()
    assert "Beside the field" in page and "| GaitSet (published) | 50 | 95.0 | 87.2 | 70.4 |" in page
    assert "(identical view excluded)" in page and "views/master-views.png" in page


def test_template_runs_first(chain):
    out, paths = chain
    settings = json.loads(paths["json"].read_text())["settings"]
    rows = pd.read_csv(paths["csv"])
    assert rows["run"].iloc[0] == "template" and settings["template"] == "gray"
    assert (out / "runs" / "template" / "eval" / "summary.csv").is_file()


def test_best_student_exported_with_passed_parity_and_flow_measured(chain):
    _, paths = chain
    saved = json.loads(paths["json"].read_text())
    onnx = [e for e in saved["exports"] if e["format"] == "onnx"]
    assert len(onnx) == 1 and onnx[0]["passed"]
    flow = saved["settings"]["flow"]
    assert flow["pairs"] == flow["with_flow"] > 0 and flow["pairs_per_s"] > 0
    assert flow["pairs"] > 2.5 * flow["pairs_090"]  # three views' pairs, about 3x one view's


def test_rerun_resumes(chain, capsys):
    from benchmarks.casia_b_cross_view import main

    out, paths = chain
    before = pd.read_csv(paths["csv"])
    again = main([*ARGV, "--out", str(out)])
    printed = capsys.readouterr().out
    assert "unpacked earlier, kept" in printed and "master: finished earlier, kept" in printed
    pd.testing.assert_frame_equal(pd.read_csv(again["csv"]).drop(columns=["train_s", "eval_s"]),
                                  before.drop(columns=["train_s", "eval_s"]))
