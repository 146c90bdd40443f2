"""The GPU cross-view recipe: its config builds GaitBase-like networks that train a step on a
CPU, and the budget that stops a device call stops it (and says so) rather than failing."""

from __future__ import annotations

import time

import pytest
import torch

from benchmarks.casia_b_cross_view import GPU_CONFIG

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_gpu_config_is_the_fields_scale_and_its_networks_train_a_step():
    from training.config import load_config
    from training.losses import LossSet
    from training.model_build import build_net

    cfg = load_config(GPU_CONFIG)
    assert (cfg.data.unit, cfg.data.P, cfg.data.K, cfg.data.frames) == ("walk", 8, 16, 30)
    assert cfg.train.steps >= 10_000 and cfg.train.amp and cfg.train.ckpt_every <= 1000
    master, student = build_net(cfg.master, n_classes=74), build_net(cfg.student, n_classes=74)
    assert master.modality == "flow" and student.modality == "gray"
    assert list(cfg.master.options["widths"]) == [64, 128, 256, 512]
    assert master.embedding_dim == student.embedding_dim == 16 * 256  # the student copies the whole code
    losses = LossSet({"ce": cfg.loss.ce_weight, "triplet": cfg.loss.triplet_weight}, margin=cfg.loss.triplet_margin,
                     mining=cfg.loss.triplet_mining, normalise=cfg.loss.triplet_normalise)
    walks = torch.rand(4, 2, 3, 64, 64)  # 4 walks of 3 flow fields: one step at a CPU's size
    loss, _ = losses(master(walks), labels=torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(loss) and master.fcs.weight.grad is not None


def test_the_budget_stops_work_and_lets_quick_work_finish():
    from benchmarks.gpu_cross_view import within

    start = time.perf_counter()
    assert within(0.2, lambda: time.sleep(5)) is False
    assert time.perf_counter() - start < 2
    assert within(5, lambda: None) is True
    time.sleep(0.3)  # the timer was disarmed: nothing fires after the call


def test_progress_names_each_run_and_its_newest_checkpoint(tmp_path):
    from benchmarks.gpu_cross_view import write_progress

    run = tmp_path / "runs" / "master"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("{}")
    (run / "checkpoints" / "last.txt").write_text("step_00001500.pt")
    (tmp_path / "stages.json").write_text('{"flow": 12.5, "master": 500.0}')
    text = write_progress(tmp_path, finished=False).read_text()
    assert "run again" in text and "| master | partial | 1500 |" in text and "| master | 500.0 |" in text
