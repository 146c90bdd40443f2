"""build-split: protocol files as data, exact role counts, missing reports, malformed files, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from gaittools.cli.main import main
from gaittools.sources.layouts import CASIA_B_VIEWS, casia_b_id, tum_gaid_id
from gaittools.store.manifest import to_frame, write_manifest
from gaittools.protocols.protocol import ProtocolError, load_protocol, packaged_protocol, parse_protocol
from gaittools.protocols.splits import SplitError, SplitOptions, build_split, validation_ids, write_split
from gaittools.store.zarr_store import Store

CASIA_WALKS = [("nm", n) for n in range(1, 7)] + [("bg", 1), ("bg", 2), ("cl", 1), ("cl", 2)]
N_VIEWS = len(CASIA_B_VIEWS)  # 11
PER_SUBJECT = len(CASIA_WALKS) * N_VIEWS  # 110 sequences per CASIA-B subject


def _row(dataset: str, seq_id: str, subject: int, cond: str, num: int, view: str, status: str = "done") -> dict:
    return dict(dataset=dataset, seq_id=seq_id, subject=f"{subject:03d}", condition=cond, seq_num=num,
                view=view, status_extract=status)


def casia_manifest(subjects=range(1, 125), drop=(), failed=()) -> pd.DataFrame:
    rows = []
    for s in subjects:
        for cond, num in CASIA_WALKS:
            for view in CASIA_B_VIEWS:
                seq_id = casia_b_id(s, cond, num, view)
                if seq_id in drop:
                    continue
                status = "failed" if seq_id in failed else "done"
                rows.append(_row("casia-b", seq_id, s, cond, num, view, status))
    return to_frame(rows)


@pytest.fixture(scope="module")
def full_casia() -> pd.DataFrame:
    return casia_manifest()


@pytest.fixture(scope="module")
def casia_protocol():
    return packaged_protocol("casia-b")


def _counts(split) -> dict[str, int]:
    t = split.table
    out = t["role"].value_counts().to_dict()
    out.update({f"probe_{k}": v for k, v in t.loc[t["role"] == "probe", "probe_set"].value_counts().items()})
    return {k: int(v) for k, v in out.items()}


def _n_val(n_train: int) -> int:
    """6 % of the training ids, rounded: 74 -> 4, 62 -> 4, 24 -> 1."""
    return int(n_train * 0.06 + 0.5)


# ------------------------------------------------------------------ CASIA-B counts
@pytest.mark.parametrize("setting,n_train_ids,n_test", [("large", 74, 50), ("medium", 62, 62), ("small", 24, 100)])
def test_casia_b_exact_counts_every_setting(full_casia, casia_protocol, setting, n_train_ids, n_test):
    split = build_split(full_casia, casia_protocol, SplitOptions(setting=setting))
    n_val = _n_val(n_train_ids)
    expected = {
        "train": (n_train_ids - n_val) * 10 * 11,  # every walk of every view
        "val": n_val * 10 * 11,
        "gallery": n_test * 4 * 11,  # nm-01..04
        "probe": n_test * 6 * 11,
        "probe_NM": n_test * 2 * 11, "probe_BG": n_test * 2 * 11, "probe_CL": n_test * 2 * 11,
    }
    assert _counts(split) == expected
    assert split.missing.empty
    assert split.info["val_subjects"] == [f"{i:03d}" for i in range(1, n_val + 1)]
    assert split.info["cross_view"] is True
    assert split.info["counts"]["sequences"] == {r: expected[r] for r in ("train", "val", "gallery", "probe")}
    # every (subject, seq) once: the whole of CASIA-B minus nothing for large (74*110 + 50*110)
    assert split.table["seq_id"].is_unique
    assert len(split.table) == 124 * PER_SUBJECT


def test_casia_b_roles_are_disjoint(full_casia, casia_protocol):
    t = build_split(full_casia, casia_protocol, SplitOptions(setting="large")).table
    subjects = {r: set(t.loc[t["role"] == r, "subject"]) for r in ("train", "val", "gallery", "probe")}
    assert subjects["train"].isdisjoint(subjects["gallery"] | subjects["probe"])
    assert subjects["val"].isdisjoint(subjects["train"] | subjects["gallery"] | subjects["probe"])
    assert subjects["gallery"] == subjects["probe"] == {f"{i:03d}" for i in range(75, 125)}
    assert set(t.loc[t["role"] == "gallery", "seq_id"]).isdisjoint(t.loc[t["role"] == "probe", "seq_id"])
    gallery = t[t["role"] == "gallery"]
    assert set(gallery["condition"]) == {"nm"} and set(gallery["seq_num"]) == {1, 2, 3, 4}
    nm_probe = t[t["probe_set"] == "NM"]
    assert set(nm_probe["condition"]) == {"nm"} and set(nm_probe["seq_num"]) == {5, 6}
    assert set(t.loc[t["probe_set"] == "CL", "condition"]) == {"cl"}
    assert t.loc[t["role"].isin(["train", "val", "gallery"]), "probe_set"].isna().all()


def test_subject_005_option(full_casia, casia_protocol):
    default = build_split(full_casia, casia_protocol, SplitOptions(setting="large"))
    without = build_split(full_casia, casia_protocol, SplitOptions(setting="large", with_optional_subject=False))
    assert "005" in set(default.table["subject"])  # documented default: OpenGait trains with 005
    assert default.info["optional_subject"] == {"id": "005", "included": True, "default": "include"}
    assert "005" not in set(without.table["subject"])
    # 73 training ids -> round(4.38) = 4 validation subjects, 69 train subjects
    assert _counts(without)["train"] == 69 * PER_SUBJECT
    assert _counts(without)["val"] == 4 * PER_SUBJECT
    assert without.missing.empty  # dropped on purpose, not missing
    assert without.info["optional_subject"]["included"] is False


def test_same_view_variant(full_casia, casia_protocol):
    split = build_split(full_casia, casia_protocol, SplitOptions(setting="large", views=("090",)))
    c = _counts(split)
    assert c["train"] == 70 * 10  # the listed view only: what the protocol uses is what counts
    assert c["gallery"] == 50 * 4 and c["probe"] == 50 * 6
    assert set(split.table["view"]) == {"090"} and split.info["train_views"] == ["090"]
    every = build_split(full_casia, casia_protocol, SplitOptions(setting="large", views=("090",),
                                                                 train_all_views=True))
    assert _counts(every)["train"] == 70 * PER_SUBJECT  # on request, training keeps every view
    assert c["probe_BG"] == 100
    assert set(split.table.loc[split.table["role"].isin(["gallery", "probe"]), "view"]) == {"090"}
    assert split.info["cross_view"] is False and split.info["views"] == ["090"]
    two = build_split(full_casia, casia_protocol, SplitOptions(views=("036", "090"), cross_view=True))
    assert two.info["cross_view"] is True and _counts(two)["gallery"] == 50 * 4 * 2
    with pytest.raises(SplitError, match="two or more views"):
        build_split(full_casia, casia_protocol, SplitOptions(views=("090",), cross_view=True))
    with pytest.raises(SplitError, match="not views of casia-b"):
        build_split(full_casia, casia_protocol, SplitOptions(views=("091",)))


def test_one_view_store_counts_only_its_view_and_refuses_an_empty_test_set(full_casia, casia_protocol):
    one_view = full_casia[full_casia["view"] == "090"].reset_index(drop=True)
    split = build_split(one_view, casia_protocol, SplitOptions(setting="large", views=("090",)))
    assert len(split.missing) == 0  # nothing from the other ten views is "missing"
    no_test = one_view[one_view["subject"].astype(int) <= 74].reset_index(drop=True)
    with pytest.raises(SplitError, match="no gallery sequence of the test subjects"):
        build_split(no_test, casia_protocol, SplitOptions(setting="large", views=("090",)))


def test_validation_fraction_is_configurable(full_casia, casia_protocol):
    split = build_split(full_casia, casia_protocol, SplitOptions(setting="large", val_fraction=0.1))
    assert split.info["val_subjects"] == [f"{i:03d}" for i in range(1, 8)]  # round(7.4) = 7
    assert _counts(split)["val"] == 7 * PER_SUBJECT
    none = build_split(full_casia, casia_protocol, SplitOptions(val_fraction=0.0))
    assert "val" not in _counts(none) and _counts(none)["train"] == 74 * PER_SUBJECT
    assert validation_ids({1, 2, 3}, 0.01) == {1}  # at least one when asked for any
    assert validation_ids({1, 2, 3, 4, 5}, 0.4, take="last") == {4, 5}
    with pytest.raises(SplitError, match="leaves none"):
        validation_ids({1}, 0.5)


def test_missing_sequences_are_reported(casia_protocol, tmp_path):
    dropped = {casia_b_id(80, "cl", 2, "090"), casia_b_id(10, "nm", 1, "000"), casia_b_id(2, "bg", 1, "180")}
    failed = {casia_b_id(100, "nm", 5, "018")}
    manifest = casia_manifest(drop=dropped, failed=failed)
    split = build_split(manifest, casia_protocol, SplitOptions(setting="large"))
    assert set(split.missing["seq_id"]) == dropped | failed
    assert split.info["missing"]["sequences"] == {"train": 1, "val": 1, "gallery": 0, "probe": 2}
    assert split.info["missing"]["probe_sets"] == {"NM": 1, "BG": 0, "CL": 1}
    assert _counts(split)["probe_CL"] == 1100 - 1
    assert not set(split.table["seq_id"]) & (dropped | failed)
    paths = write_split(split, tmp_path / "out")
    lines = [ln for ln in paths["missing"].read_text().splitlines() if not ln.startswith("#")]
    assert sorted(ln.split("\t")[0] for ln in lines) == sorted(dropped | failed)
    assert f"{casia_b_id(100, 'nm', 5, '018')}\tprobe\tNM\tfailed" in lines
    assert f"{casia_b_id(80, 'cl', 2, '090')}\tprobe\tCL\tabsent" in lines
    assert "expects and the store lacks: 4" in paths["missing"].read_text()


def test_other_dataset_is_refused(casia_protocol):
    tum = to_frame([_row("tum-gaid", tum_gaid_id(1, "n", 1), 1, "n", 1, "")])
    with pytest.raises(SplitError, match="not 'casia-b'"):
        build_split(tum, casia_protocol)


# ------------------------------------------------------------------ TUM-GAID
TUM_TRAIN = list(range(1, 11)) + list(range(33, 37))  # 14 training ids (10 of them recorded twice)
TUM_TEST = list(range(11, 33)) + list(range(37, 41))  # 26 test ids, 22 of them within 001-032


def tum_manifest(drop=()) -> pd.DataFrame:
    rows = []
    for s in range(1, 41):
        walks = [("n", n) for n in range(1, 7)] + [("b", 1), ("b", 2), ("s", 1), ("s", 2)]
        if s <= 32:  # the subjects recorded in both sessions
            walks += [("n", n) for n in range(7, 13)] + [("b", 3), ("b", 4), ("s", 3), ("s", 4)]
        for cond, num in walks:
            seq_id = tum_gaid_id(s, cond, num)
            if seq_id not in drop:
                rows.append(_row("tum-gaid", seq_id, s, cond, num, ""))
    return to_frame(rows)


@pytest.fixture()
def tum_ids(tmp_path) -> Path:
    ids = tmp_path / "ids"
    ids.mkdir()
    (ids / "tumgaidtrainvalids.lst").write_text("\n".join(str(i) for i in TUM_TRAIN) + "\n")
    (ids / "tumgaidtestids.lst").write_text(" ".join(f"{i:03d}" for i in TUM_TEST))
    return ids


def test_tum_gaid_standard_from_id_files(tum_ids):
    protocol = packaged_protocol("tum-gaid")
    split = build_split(tum_manifest(), protocol, SplitOptions(ids_dir=tum_ids))
    assert split.info["setting"] == "standard"
    # 14 training ids -> round(0.84) = 1 validation subject; 10 training walks each
    assert _counts(split) == {"train": 13 * 10, "val": 1 * 10, "gallery": 26 * 4, "probe": 26 * 6,
                              "probe_N": 26 * 2, "probe_B": 26 * 2, "probe_S": 26 * 2}
    assert split.info["val_subjects"] == ["001"]
    assert split.info["test_subjects"] == [f"{i:03d}" for i in TUM_TEST]
    t = split.table
    assert set(t.loc[t["role"] == "train", "seq_id"]) >= {"p002-n06", "p002-b02", "p002-s02"}
    assert not t["seq_id"].isin(["p002-n07", "p002-b03"]).any()  # session 2 never trains here
    assert split.missing.empty and split.info["cross_view"] is False


def test_tum_gaid_temporal_subset(tum_ids):
    protocol = packaged_protocol("tum-gaid")
    split = build_split(tum_manifest(drop={"p011-s04"}), protocol,
                        SplitOptions(setting="temporal", ids_dir=tum_ids))
    n_test = 22  # test ids within 001-032
    assert _counts(split) == {"train": 130, "val": 10, "gallery": n_test * 4, "probe": n_test * 6 - 1,
                              "probe_N": n_test * 2, "probe_B": n_test * 2, "probe_S": n_test * 2 - 1}
    assert split.info["test_subjects"] == [f"{i:03d}" for i in range(11, 33)]
    g = split.table[split.table["role"] == "gallery"]
    assert set(g["seq_num"]) == {7, 8, 9, 10}
    assert set(split.table.loc[split.table["probe_set"] == "N", "seq_num"]) == {11, 12}
    assert list(split.missing["seq_id"]) == ["p011-s04"]


def test_tum_gaid_needs_ids_dir_and_checks_id_files(tum_ids):
    protocol = packaged_protocol("tum-gaid")
    with pytest.raises(ProtocolError, match="--ids-dir"):
        build_split(tum_manifest(), protocol)
    (tum_ids / "tumgaidtestids.lst").write_text("10 11 12")  # 10 is also a training id
    with pytest.raises(ProtocolError, match=r"overlap \(010\)") as err:
        build_split(tum_manifest(), protocol, SplitOptions(ids_dir=tum_ids))
    assert "tum-gaid.yaml" in str(err.value) and "tumgaidtestids.lst" in str(err.value)
    (tum_ids / "tumgaidtestids.lst").write_text("11 x12")
    with pytest.raises(ProtocolError, match="tumgaidtestids.lst: 'x12' is not a subject id"):
        build_split(tum_manifest(), protocol, SplitOptions(ids_dir=tum_ids))
    with pytest.raises(SplitError, match="no optional subject"):
        build_split(tum_manifest(), protocol, SplitOptions(ids_dir=tum_ids, with_optional_subject=False))


# ------------------------------------------------------------------ malformed protocol files
GOOD = """
format: 1
dataset: casia-b
subjects: "001-010"
views: ["000", "090"]
conditions: [nm, bg, cl]
train_sequences: {nm: "01-06"}
gallery: {nm: "01-04"}
probes: {NM: {nm: "05-06"}}
settings:
  tiny: {train: "001-004", test: "005-010"}
"""


def _write(tmp_path: Path, text: str, name: str = "proto.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_good_user_file_loads(tmp_path):
    protocol = load_protocol(_write(tmp_path, GOOD))
    split = build_split(casia_manifest(range(1, 11)), protocol, SplitOptions(val_fraction=0))
    assert _counts(split) == {"train": 4 * 6 * 2, "gallery": 6 * 4 * 2, "probe": 6 * 2 * 2, "probe_NM": 24}


@pytest.mark.parametrize("edit,problem", [
    (("tiny: {train", "tiny: {trian"), r"settings.tiny: unknown key\(s\) \['trian'\]"),
    (("format: 1", "format: 1\nsplits: {}"), r"top level: unknown key\(s\) \['splits'\]"),
    (('test: "005-010"', 'test: "004-010"'), "train and test subjects overlap: 004"),
    (('train: "001-004"', 'train: "004-001"'), "runs backwards"),
    (('train: "001-004"', 'train: "001-0x4"'), "bad range '001-0x4'"),
    (('test: "005-010"', 'test: "005-011"'), "outside the dataset's subjects"),
    (('probes: {NM: {nm: "05-06"}}', 'probes: {NM: {nm: "04-06"}}'), "nm-04 is also in gallery"),
    (('probes: {NM: {nm: "05-06"}}', 'probes: {NM: {xx: "05-06"}}'), r"unknown condition\(s\) \['xx'\]"),
    (("format: 1", "format: 1\nformat: 1"), "duplicate key 'format'"),
    (("dataset: casia-b", "dataset: oumvlp"), "no known sequence naming"),
    (('views: ["000", "090"]', "views: [000, 090]"), "not a string"),
])
def test_malformed_protocol_files_name_the_file_and_problem(tmp_path, edit, problem):
    old, new = edit
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new, 1), "broken.yaml")
    with pytest.raises(ProtocolError, match=problem) as err:
        load_protocol(path)
    assert str(err.value).startswith(str(path))


def test_shipped_protocols_are_valid_and_documented():
    casia = packaged_protocol("casia-b")
    assert set(casia.settings) == {"large", "medium", "small", "tune", "synth"} and casia.default_setting == "large"
    assert casia.settings["tune"].train != casia.settings["large"].train  # 001-010 held out
    assert casia.views == CASIA_B_VIEWS and casia.val_fraction == 0.06
    assert casia.optional_subject is not None and casia.optional_subject.id == 5
    tum = packaged_protocol("tum-gaid")
    assert set(tum.settings) == {"standard", "temporal"} and tum.views == ("",)
    readme = Path(__file__).resolve().parents[1] / "manifests" / "README.md"
    assert "optional_subject" in readme.read_text()
    with pytest.raises(ProtocolError, match="no protocol shipped"):
        packaged_protocol("oumvlp")
    with pytest.raises(ProtocolError, match="not valid YAML"):
        parse_protocol("a: [", "x.yaml")


# ------------------------------------------------------------------ CLI
def _store_with_manifest(path: Path, dataset: str, manifest: pd.DataFrame) -> Path:
    store = Store.create(path, dataset=dataset)
    write_manifest(manifest, store.manifest_path)
    return path


def test_cli_writes_the_three_files(tmp_path):
    dropped = {casia_b_id(30, "bg", 2, "054")}
    store = _store_with_manifest(tmp_path / "store", "casia-b", casia_manifest(drop=dropped))
    out = tmp_path / "split"
    result = CliRunner().invoke(main, ["build-split", "casia-b", str(store), "--protocol", "small",
                                       "--out", str(out), "--without-005"])
    assert result.exit_code == 0, result.output
    assert "missing" in result.output and "gallery" in result.output
    table = pd.read_parquet(out / "split.parquet")
    assert list(table.columns) == ["seq_id", "subject", "condition", "seq_num", "view", "role", "probe_set"]
    info = json.loads((out / "split.json").read_text())
    # 23 training ids without 005 -> round(1.38) = 1 validation subject (001)
    assert info["counts"]["sequences"] == {"train": 22 * PER_SUBJECT, "val": PER_SUBJECT,
                                           "gallery": 100 * 44, "probe": 100 * 66 - 1}
    assert info["counts"]["probe_sets"] == {"NM": 2200, "BG": 2199, "CL": 2200}
    assert info["val_subjects"] == ["001"] and info["optional_subject"]["included"] is False
    assert info["protocol_file"] == "manifests/casia-b.yaml" and info["setting"] == "small"
    assert (table["role"] == "train").sum() == 22 * PER_SUBJECT
    assert casia_b_id(30, "bg", 2, "054") in (out / "missing.txt").read_text()


def test_cli_accepts_a_store_imported_from_opengait_pickles(tmp_path):
    store = _store_with_manifest(tmp_path / "store", "opengait-pkl", casia_manifest())
    out = tmp_path / "split"
    result = CliRunner().invoke(main, ["build-split", "casia-b", str(store), "--protocol", "large",
                                       "--views", "090", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "split.json").read_text())["counts"]["sequences"]["gallery"] == 50 * 4
    refused = CliRunner().invoke(main, ["build-split", "tum-gaid", str(store), "--out", str(out)])
    assert refused.exit_code != 0 and "opengait-pkl" in refused.output


def test_cli_same_view_from_a_manifest_file_and_refusals(tmp_path):
    manifest_path = tmp_path / "m.parquet"
    write_manifest(casia_manifest(), manifest_path)
    out = tmp_path / "sv"
    result = CliRunner().invoke(main, ["build-split", "casia-b", str(manifest_path), "--out", str(out),
                                       "--views", "090"])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "split.json").read_text())
    assert info["views"] == ["090"] and info["cross_view"] is False
    assert info["counts"]["sequences"]["gallery"] == 200

    tum_store = _store_with_manifest(tmp_path / "tum", "tum-gaid", tum_manifest())
    refused = CliRunner().invoke(main, ["build-split", "casia-b", str(tum_store), "--out", str(tmp_path / "x")])
    assert refused.exit_code != 0 and "a store of dataset 'tum-gaid', not 'casia-b'" in refused.output
    assert not (tmp_path / "x").exists()

    bad = _write(tmp_path, GOOD.replace("tiny: {train", "tiny: {trian"), "mine.yaml")
    broken = CliRunner().invoke(main, ["build-split", "casia-b", str(manifest_path), "--out", str(out),
                                       "--protocol-file", str(bad)])
    assert broken.exit_code != 0 and str(bad) in broken.output and "trian" in broken.output


def test_cli_tum_gaid_with_ids_dir(tmp_path, tum_ids):
    store = _store_with_manifest(tmp_path / "tum", "tum-gaid", tum_manifest())
    out = tmp_path / "t"
    result = CliRunner().invoke(main, ["build-split", "tum-gaid", str(store), "--protocol", "temporal",
                                       "--ids-dir", str(tum_ids), "--out", str(out)])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "split.json").read_text())
    assert info["counts"]["sequences"]["gallery"] == 22 * 4 and info["optional_subject"] is None
