"""The set-network family: its parts, the walk sampler, whole-walk embedding and training.

Each test runs the real code on generated tensors or the session's synthetic toy store and
checks a property a wrong implementation would break: strips against adaptive pooling, the
set maximum's indifference to frame order and repetition, draws that cover the whole walk and
repeat for a seed, every probe counted at evaluation, bf16 close to fp32, a walk master and
student that train, copy and evaluate end to end.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from training.config import config_from_dict
from training.models import build_model
from training.models.parts import BNNeck, FrameWise, InputCut, SeparateFCs, set_max, strip_pool
from training.walks import FRAMES, ResidentWalks, build_walk_index, draw_frames, walk_frames


# ---------------------------------------------------------------------------- parts
@pytest.mark.parametrize("height,strips", [(16, 16), (8, 16), (11, 4), (16, 1)])
def test_strip_pool_equals_adaptive_mean_plus_max(height, strips):
    maps = torch.randn(3, 5, height, 7)
    reference = (F.adaptive_avg_pool2d(maps, (strips, 1)) + F.adaptive_max_pool2d(maps, (strips, 1))).squeeze(3)
    out = strip_pool(maps, (strips,))
    assert out.shape == (3, 5, strips)
    torch.testing.assert_close(out, reference)


def test_separate_fcs_give_each_strip_its_own_map():
    fcs = SeparateFCs(4, 6, 3)
    strips = torch.randn(2, 6, 4)
    out = fcs(strips)
    assert out.shape == (2, 4, 3)
    for s in range(4):  # strip s is mapped by weight s alone
        torch.testing.assert_close(out[:, s], strips[:, :, s] @ fcs.weight[s])


def test_framewise_and_set_max_ignore_frame_order_and_repeats():
    conv = FrameWise(torch.nn.Conv2d(1, 4, 3, padding=1))
    frames = torch.randn(2, 5, 1, 8, 6)
    pooled = set_max(conv(frames))
    shuffled = frames[:, torch.tensor([4, 2, 0, 1, 3])]
    repeated = torch.cat([frames, frames[:, :2]], dim=1)
    torch.testing.assert_close(set_max(conv(shuffled)), pooled)
    torch.testing.assert_close(set_max(conv(repeated)), pooled)
    torch.testing.assert_close(conv(frames)[1, 3], conv.module(frames[1, 3][None])[0])


def test_bn_neck_classifies_every_strip():
    neck = BNNeck(4, 3, 7)
    assert neck(torch.randn(5, 4, 3)).shape == (5, 4, 7)


def test_input_cut_takes_the_centre_columns_then_averages():
    frames = torch.arange(2 * 64 * 64, dtype=torch.float32).reshape(1, 2, 1, 64, 64)
    out = InputCut(44, 2)(frames)
    assert out.shape == (1, 2, 1, 32, 22)
    centre = frames[..., 10:54]
    torch.testing.assert_close(out[0, 1, 0, 3, 5], centre[0, 1, 0, 6:8, 10:12].mean())


@pytest.mark.parametrize("name", ["setnet-gray", "gaitbase-gray"])
def test_set_network_takes_any_frame_count(name):
    model = build_model(name, widths=(4, 8, 8, 8) if "base" in name else (4, 8, 8)).eval()
    with torch.no_grad():
        for frames in (1, 3, 17):
            out = model(torch.randn(2, 1, frames, 64, 64))
            assert out["embedding"].shape == (2, model.embedding_dim)


def test_tiny_network_bf16_forward_is_close_to_fp32():
    torch.manual_seed(0)
    model = build_model("setnet-gray", widths=(8, 16, 16), downscale=2).eval()
    x = torch.randn(4, 1, 10, 64, 64)
    with torch.no_grad():
        fp32 = F.normalize(model(x)["embedding"], dim=1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = F.normalize(model(x)["embedding"].float(), dim=1)
    cosine = (fp32 * bf16).sum(dim=1)
    assert cosine.min() > 0.995, cosine  # bf16 keeps ~3 significant digits per value


# ---------------------------------------------------------------------------- walks
def test_walk_frames_per_modality():
    valid = np.array([0, 1, 1, 1, 0, 1, 1, 0], dtype=bool)
    assert walk_frames(valid, "gray").tolist() == [1, 2, 3, 5, 6]
    assert walk_frames(valid, "flow").tolist() == [1, 2, 5]  # both ends of the field valid
    assert walk_frames(np.array([0, 1, 0], bool), "flow").tolist() == [1]  # fallback: starts valid
    assert walk_frames(np.array([1], bool), "flow").tolist() == []


def test_draws_cover_the_whole_walk_and_repeat_for_a_seed():
    counts = np.array([90, 12, 3])
    first = draw_frames(counts, 30, seed=4, step=7)
    assert np.array_equal(first, draw_frames(counts, 30, seed=4, step=7))
    assert not np.array_equal(first, draw_frames(counts, 30, seed=4, step=8))
    assert len(set(first[0])) == 30 and (np.diff(first[0]) > 0).all()  # no repeats where 90 >= 30
    assert set(first[2]) <= {0, 1, 2}  # short walks repeat their own frames
    seen = np.concatenate([draw_frames(counts, 30, seed=4, step=s)[0] for s in range(20)])
    assert seen.min() < 5 and seen.max() > 84  # the whole span, not a window at its start


def test_resident_walks_gather_the_drawn_frames(toy):
    split = pd.read_parquet(toy.split / "split.parquet")
    walks = build_walk_index(toy.store, split, "gray", roles=("train",))
    assert len(walks) == walks["seq_id"].nunique() and (walks["length"] > 0).all()
    source = ResidentWalks(str(toy.store.path), walks, "gray", frames_per_walk=6, seed=1)
    batch = source.batch([0, 3], step=2)
    picks = draw_frames(source.counts[[0, 3]], 6, seed=1, step=2)
    gray = toy.store.read(walks["seq_id"].iloc[3], "gray")
    expected = gray[np.asarray(walks[FRAMES].iloc[3])[picks[1]]]
    assert batch.x.shape == (2, 6, *gray.shape[1:])
    assert np.array_equal(batch.x[1].numpy(), expected)
    assert batch.label.tolist() == walks["label"].iloc[[0, 3]].tolist()


# ---------------------------------------------------------------------------- training and evaluation
def _walk_cfg(store, split, steps: int):
    return config_from_dict({
        "data": {"store": str(store.path), "split": str(split), "unit": "walk", "frames": 8, "P": 4, "K": 2,
                 "workers": 0, "flow_scale": 1.0},
        "master": {"model": "setnet-flow", "options": {"widths": [4, 8, 8], "strip_dim": 8, "n_strips": 4}},
        "student": {"model": "setnet-gray", "options": {"widths": [4, 8, 8], "strip_dim": 8, "n_strips": 4}},
        "optim": {"lr": 3e-3},
        "loss": {"ce_weight": 0.1, "triplet_mining": "batch_hard", "copy": "strip_cosine"},
        "train": {"steps": steps, "log_every": 1, "ckpt_every": 1000, "seed": 2},
        "eval": {"batch_size": 8},
    }, "test")


@pytest.fixture(scope="module")
def walk_runs(toy, tmp_path_factory):
    from training.tasks import train_master, train_student

    root = tmp_path_factory.mktemp("walkruns")
    cfg = _walk_cfg(toy.store, toy.split, steps=4)
    master = train_master(cfg, root / "master")
    student = train_student(cfg, root / "student", master.path)
    return toy, master, student


def test_walk_master_stores_one_signature_per_walk_and_mirror(walk_runs):
    toy, master, _ = walk_runs
    saved = torch.load(master.path / "signatures.pt", weights_only=False)
    walks = pd.read_parquet(master.path / "clips.parquet")
    assert saved["signatures"].shape == (len(walks), 2, 32)
    assert walks["clip_id"].str.endswith(":walk").all()
    mirrored = saved["signatures"].float()
    assert ((mirrored[:, 0] - mirrored[:, 1]).abs().amax(dim=1) > 1e-3).all()  # a mirror is another walk


def test_walk_student_copies_on_gray_frames(walk_runs):
    _, master, student = walk_runs
    walks = pd.read_parquet(student.path / "clips.parquet")
    master_walks = pd.read_parquet(master.path / "clips.parquet")
    assert walks["clip_id"].tolist() == master_walks["clip_id"].tolist()
    # gray walks offer the last valid frame of each run too: at least as many frames as flow
    assert (walks["length"] >= master_walks["length"]).all()
    info = torch.load(student.path / "model.pt", weights_only=False)
    assert info["unit"] == "walk" and info["frames"] == 8 and info["precision"] in ("fp32", "bf16-autocast")


def test_copy_student_with_cross_entropy_learns_classes_beside_the_copy(walk_runs, tmp_path):
    """loss.copy_ce_weight gives the copy student the no-copy student's classifier, so that the
    two differ by the copy term alone; at 0 (the authors' copy) it has none."""
    from training.tasks import train_student

    toy, master, plain = walk_runs
    cfg = _walk_cfg(toy.store, toy.split, steps=3)
    cfg.loss.copy_ce_weight = 0.1
    student = train_student(cfg, tmp_path / "student-ce", master.path)
    metrics = pd.read_csv(student.path / "metrics.csv")
    n_subjects = pd.read_parquet(student.path / "clips.parquet")["label"].nunique()
    assert {"ce", "strip_cosine"} <= set(metrics.columns) and (metrics["ce"] > 0).all()
    assert metrics["ce"].iloc[0] == pytest.approx(np.log(n_subjects), rel=0.5)  # a fresh classifier's CE
    assert "ce" not in pd.read_csv(plain.path / "metrics.csv").columns


def test_whole_walk_evaluation_counts_every_probe(walk_runs):
    from training.tasks import evaluate_run

    toy, master, _ = walk_runs
    split = pd.read_parquet(toy.split / "split.parquet")
    probes = split[split["role"] == "probe"]
    result = evaluate_run(master.path, toy.split, echo=False)
    counted = result.summary.groupby("probe_set")["n_probes"].max().to_dict()
    assert counted == probes.groupby("probe_set").size().to_dict()


def _embed(net, walks, toy, modality, amp=False):
    from training.embed import embed_walks, settings_from

    settings = settings_from(_walk_cfg(toy.store, toy.split, 1))
    settings.amp = amp
    return embed_walks(net, walks, modality, settings, torch.device("cpu"))


def test_short_walks_are_embedded_not_dropped(walk_runs):
    """A walk of one frame has no flow field: it is embedded from a zero field, and a walk of
    two frames from its one field, so the probes of CASIA-B's few-frame walks still count."""
    from training.model_build import load_run_model

    toy, master, _ = walk_runs
    net, _ = load_run_model(master.path)
    split = pd.read_parquet(toy.split / "split.parquet")
    walks = build_walk_index(toy.store, split, "flow", roles=("probe",), labels={}).iloc[:3].copy()
    walks[FRAMES] = [np.array([], np.int64), np.array([4], np.int64), walks[FRAMES].iloc[2]]
    walks["length"] = [len(f) for f in walks[FRAMES]]
    emb = _embed(net, walks, toy, "flow")
    assert emb.shape == (3, net.embedding_dim) and torch.isfinite(emb).all()
    assert (emb.norm(dim=1) > 0.99).all()


def test_padding_a_walk_by_repeating_its_frames_leaves_its_signature(walk_runs):
    from training.model_build import load_run_model

    toy, _, student = walk_runs
    net, _ = load_run_model(student.path)
    split = pd.read_parquet(toy.split / "split.parquet")
    walks = build_walk_index(toy.store, split, "gray", roles=("gallery",), labels={})
    walks.loc[walks.index[0], "length"] = 5  # lengths differ: the batch pads the shorter walks
    walks[FRAMES] = [f[:5] if i == 0 else f for i, f in enumerate(walks[FRAMES])]
    together = _embed(net, walks, toy, "gray")
    alone = torch.cat([_embed(net, walks.iloc[[i]], toy, "gray") for i in range(len(walks))])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
