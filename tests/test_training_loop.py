"""train-copy's loop: losses go down, a tiny student overfits, resume repeats the next step exactly."""

import csv

import pytest
import torch

from training.clips import load_clip_index
from training.config import config_from_dict
from training.runs import RunDir, RunError
from training.signatures import FILE as SIGNATURES, SignatureTable
from training.model_build import load_run_model
from training.tasks import train_master, train_student
from training.toydata import write_toy_split, write_toy_store

TINY = [4, 8, 8, 16, 16, 16]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    store = write_toy_store(root / "store", subjects=4, walks={"nm": 2}, frames=34, size=52)
    split = write_toy_split(store, root / "split", train_subjects=4)
    return root, store, split


def _cfg(root, split, schedule="none", **train):
    return config_from_dict({
        "data": {"store": str(root / "store"), "split": str(split), "P": 4, "K": 3, "workers": 0, "step": 3,
                 "flow_scale": 1.0},
        "master": {"model": "c3d", "embedding_dim": 32, "options": {"in_channels": 2, "widths": TINY}},
        "student": {"model": "c3d", "embedding_dim": 32,
                    "options": {"in_channels": 1, "widths": TINY, "dropout": 0.4}},
        "optim": {"lr": 5e-3, "schedule": schedule, "step_size": 2, "gamma": 0.5},
        "loss": {"copy_triplet_weight": 0.1},
        "train": {"log_every": 1, "ckpt_every": 1000, "seed": 5, **train},
        "eval": {"batch_size": 16},
    }, "test")


def _losses(run: RunDir) -> list[float]:
    with open(run.metrics_path) as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def _params(run_path) -> dict[str, torch.Tensor]:
    return torch.load(run_path / "model.pt", weights_only=False)["state_dict"]


def test_master_trains_freezes_and_stores_mirrored_signatures(toy):
    root, store, split = toy
    run = train_master(_cfg(root, split, steps=15), root / "master")
    losses = _losses(run)
    assert len(losses) == 15 and sum(losses[-3:]) / 3 < 0.85 * sum(losses[:3]) / 3, losses
    saved = torch.load(run.path / SIGNATURES, weights_only=False)
    sig = saved["signatures"].float()
    n = len(saved["clip_ids"])
    assert sig.shape == (n, 2, 32) and n > 0
    torch.testing.assert_close(sig.norm(dim=-1), torch.ones(n, 2), atol=2e-3, rtol=0)
    assert (sig[:, 0] - sig[:, 1]).norm(dim=-1).mean() > 1e-3  # a mirror is another motion
    model, info = load_run_model(run.path)
    assert info["modality"] == "flow" and info["role"] == "master"
    assert (run.path / "tb").is_dir() and (run.path / "config.yaml").is_file()
    with pytest.raises(RunError, match="--resume"):
        train_master(_cfg(root, split, steps=12), root / "master")


def test_student_copies_and_resume_repeats_the_next_step_exactly(toy):
    root, store, split = toy
    master = root / "master"
    if not (master / SIGNATURES).is_file():
        train_master(_cfg(root, split, steps=15), master)
    cfg = _cfg(root, split, schedule="step", steps=4, ckpt_every=3)
    full = train_student(cfg, root / "student-a", master)
    assert _losses(full)[-1] < _losses(full)[0]
    # the same run killed after step 3: only the step-3 checkpoint and 3 metric rows remain
    killed = root / "student-b"
    train_student(cfg, killed, master)
    # two runs with the same seed and thread count agree bit for bit
    assert all(torch.equal(v, _params(killed)[k]) for k, v in _params(full.path).items())
    assert RunDir(killed).info()["torch_threads"] == torch.get_num_threads()
    ckdir = killed / "checkpoints"
    (ckdir / "step_00000004.pt").unlink()
    (ckdir / "last.txt").write_text("step_00000003.pt")
    (killed / "model.pt").unlink()
    resumed = train_student(cfg, killed, master, resume=True)
    assert _losses(resumed) == _losses(full)  # step 4 logged once, with the same value
    a, b = _params(full.path), _params(resumed.path)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # targets: a flipped clip takes the mirrored signature
    clips = load_clip_index(full.path / "clips.parquet")
    table = SignatureTable(master, clips, "cpu")
    rows = torch.tensor([0, 0])
    t = table.targets(rows, torch.tensor([False, True]))
    assert torch.equal(t[0], table.signatures[0, 0]) and torch.equal(t[1], table.signatures[0, 1])


def test_tiny_student_overfits_four_subjects(toy):
    root, store, split = toy
    cfg = _cfg(root, split, steps=40)
    cfg.student.options["dropout"] = 0.0
    cfg.data.zoom, cfg.data.shift_px, cfg.data.flip = 0.0, 0.0, False
    cfg.data.gpu_resident = True  # the device-resident source (on the CPU here)
    cfg.optim.schedule = "none"
    run = train_student(cfg, root / "overfit", root / "master" if (root / "master" / SIGNATURES).is_file()
                        else train_master(_cfg(root, split, steps=2), root / "master").path, no_copy=True)
    losses = _losses(run)
    assert sum(losses[-5:]) / 5 < 0.25 * sum(losses[:5]) / 5, losses
    model, info = load_run_model(run.path)
    from training.embed import embed_clips, settings_from

    clips = load_clip_index(run.path / "clips.parquet")
    emb = embed_clips(model, clips, "gray", settings_from(cfg, workers=0), torch.device("cpu"), normalise=False)
    logits = model.classifier(emb)
    accuracy = (logits.argmax(1).numpy() == clips["label"].to_numpy()).mean()
    assert info["n_classes"] == 4 and accuracy == 1.0
