"""benchmarks/learning_curve.py on the synthetic toy store: a master and a copy student of 4
steps, a checkpoint every 2 kept and evaluated, the curve written, and a rerun that evaluates
nothing again. Also the checkpoint bookkeeping it rests on (``train.ckpt_keep``, ``train_s``)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import yaml

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(path, toy):
    path.write_text(yaml.safe_dump({
        "data": {"store": str(toy.store.path), "split": str(toy.split), "unit": "walk", "frames": 6, "P": 4,
                 "K": 2, "workers": 0},
        "master": {"model": "setnet-flow", "options": {"widths": [4, 8, 8], "strip_dim": 8, "n_strips": 4}},
        "student": {"model": "setnet-gray", "options": {"widths": [4, 8, 8], "strip_dim": 8, "n_strips": 4}},
        "loss": {"ce_weight": 0.1, "triplet_mining": "batch_hard"},
        "train": {"steps": 4, "log_every": 1, "ckpt_every": 1000, "amp": False, "device": "cpu"},
        "eval": {"batch_size": 8, "k": 3},
    }))
    return path


@pytest.fixture(scope="module")
def curve(toy, tmp_path_factory):
    from benchmarks.learning_curve import main

    root = tmp_path_factory.mktemp("curve")
    argv = ["--store", str(toy.store.path), "--split", str(toy.split), "--config", str(_config(root / "c.yaml", toy)),
            "--out", str(root / "out"), "--every", "2", "--publish", str(root / "pub" / "curve")]
    return root, argv, main(argv)


def test_every_checkpoint_is_kept_and_becomes_a_point(curve):
    root, _, paths = curve
    table = pd.read_csv(paths["csv"])
    assert sorted(zip(table["run"], table["step"])) == [("master", 2), ("master", 4),
                                                        ("student-copy", 2), ("student-copy", 4)]
    for _, points in table.groupby("run"):
        assert points["minutes"].is_monotonic_increasing and (points["minutes"] > 0).all()
    assert table[["NM", "CL"]].stack().between(0, 100).all()  # the toy's probe sets
    assert paths["png"].stat().st_size > 0 and (root / "pub" / "curve.png").is_file()
    assert "| master | 4 |" in (root / "pub" / "curve.md").read_text()
    state = torch.load(root / "out" / "master" / "checkpoints" / "step_00000004.pt", weights_only=False)
    assert state["train_s"] > 0


def test_rerun_evaluates_nothing_again(curve, capsys):
    from benchmarks.learning_curve import main

    _, argv, paths = curve
    before = pd.read_csv(paths["csv"])
    main(argv)
    printed = capsys.readouterr().out
    assert "evaluating" not in printed and "master: finished earlier, kept" in printed
    pd.testing.assert_frame_equal(pd.read_csv(paths["csv"]), before)


def test_checkpoint_keep_counts(tmp_path):
    from training.config import config_from_dict
    from training.runs import RunDir

    run = RunDir.create(tmp_path / "r", config_from_dict({}), {"role": "master"}, resume=False)
    for step in range(1, 5):
        run.save_checkpoint(step, {"model": {}}, keep=2)
    assert [p.name for p in run.checkpoints()] == ["step_00000003.pt", "step_00000004.pt"]
    for step in range(5, 8):
        run.save_checkpoint(step, {"model": {}}, keep=0)
    assert len(run.checkpoints()) == 5  # 0 keeps every one
