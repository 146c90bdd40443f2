"""Do the networks learn at all, on real CASIA-B silhouettes? (the CASIA-B issue, section 0-1)

- At initialisation, different clips must get different embeddings (PyTorch's default Conv3d
  initialisation made the six-layer stack's output independent of its input).
- The copy term alone must be able to carry a student: from its starting value to a mean
  cosine >= 0.9 with per-clip master signatures within 300 steps on 16 fixed real clips.
- The gradient-share probe and the collapse guard see what they are meant to see.
"""
from __future__ import annotations

import math
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import need_data
from gaittools.sources.pickles import load_silhouettes
from training.losses import LossSet, copy_loss, mean_target_loss
from training.models.c3d import C3DNet
from training.monitor import CollapseGuard, embedding_cosine, gradient_shares

SMALL = (48, 96, 128, 128, 256, 512)  # student3d-small's widths
CLIP = 25


def real_clips(n: int, first_subject: int = 10) -> torch.Tensor:
    """(n, 1, 25, 64, 64) gray clips (x/255 - 0.5) of n different subjects' nm-01 walks."""
    silhouettes = need_data("casia-b-sil-090")
    clips = []
    for subject in range(first_subject, first_subject + 3 * n):
        path = silhouettes / f"{subject:03d}" / "nm-01" / "090" / "090.pkl"
        if not path.is_file():
            continue
        frames = load_silhouettes(path)
        if len(frames) >= CLIP + 10:
            clips.append(frames[10:10 + CLIP])
        if len(clips) == n:
            break
    assert len(clips) == n, f"{silhouettes}: fewer than {n} nm-01 walks of >= {CLIP + 10} frames"
    x = torch.from_numpy(np.stack(clips)).float() / 255.0 - 0.5
    return x[:, None]


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_initial_embeddings_depend_on_the_input(norm: str) -> None:
    torch.manual_seed(0)
    clips = real_clips(8)
    model = C3DNet(1, SMALL, 256, 0.0, 0, init="kaiming", norm=norm).eval()
    with torch.no_grad():
        cosine = embedding_cosine(model(clips)["embedding"])
    assert cosine < 0.95, f"8 different clips' embeddings at init: mean cosine {cosine:.4f}"


def test_pytorch_default_init_collapses() -> None:
    """The reason ``init`` exists: with PyTorch's default the embedding ignores the input."""
    torch.manual_seed(0)
    clips = real_clips(8)
    model = C3DNet(1, SMALL, 256, 0.0, 0, init="torch").eval()
    with torch.no_grad():
        assert embedding_cosine(model(clips)["embedding"]) > 0.999


def test_copy_term_alone_carries_a_student() -> None:
    """16 real clips, one per-clip target each (random unit vectors: no shared direction to
    fall back on); the cosine copy loss alone lifts the mean cosine to >= 0.9."""
    torch.manual_seed(0)
    clips = real_clips(16, first_subject=20)
    targets = F.normalize(torch.randn(16, 64), dim=1)
    model = C3DNet(1, (8, 16, 16, 32, 32, 64), 64, 0.0, 0, init="kaiming", norm="batch")
    losses = LossSet({"cosine": 1.0})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def agreement() -> float:
        model.eval()
        with torch.no_grad():
            out = F.normalize(model(clips)["embedding"], dim=1)
        model.train()
        return float((out * targets).sum(dim=1).mean())

    start = agreement()
    for _ in range(300):
        loss, _ = losses(model(clips), targets=targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = agreement()
    assert start < 0.3, start
    assert end >= 0.9, f"mean cosine student-master {start:.3f} -> {end:.3f} after 300 steps"


def test_copy_losses_are_scale_free_in_d() -> None:
    """The reason the default changed: per-element means shrink as 1/d, cosine does not."""
    torch.manual_seed(0)
    grads = {}
    for kind in ("cosine", "smooth_l1"):
        for d in (64, 1024):
            student = (3.0 * F.normalize(torch.randn(32, d), dim=1)).requires_grad_()
            target = F.normalize(torch.randn(32, d), dim=1)
            copy_loss(student, target, kind).backward()
            grads[kind, d] = float(student.grad.norm())
    assert grads["cosine", 1024] / grads["cosine", 64] > 0.5
    assert grads["smooth_l1", 1024] / grads["smooth_l1", 64] < 0.3


def test_contrastive_and_relational_reward_the_right_pairing() -> None:
    torch.manual_seed(0)
    target = F.normalize(torch.randn(8, 32), dim=1)
    shuffled = target[torch.roll(torch.arange(8), 1)]
    for kind in ("contrastive", "cosine"):
        assert copy_loss(target, target, kind) < copy_loss(shuffled, target, kind)
    assert float(copy_loss(target, target, "relational")) == pytest.approx(0.0, abs=1e-6)
    assert float(copy_loss(torch.ones(8, 32), target, "relational")) > 0.1


def test_mean_target_loss_is_what_a_collapsed_student_scores() -> None:
    torch.manual_seed(0)
    target = F.normalize(torch.randn(16, 32) + 2.0, dim=1)
    mean = F.normalize(target.mean(dim=0, keepdim=True), dim=1).expand_as(target)
    assert float(mean_target_loss(target, "cosine")) == pytest.approx(float(copy_loss(mean, target, "cosine")))
    assert float(mean_target_loss(target, "cosine")) > float(copy_loss(target, target, "cosine"))


def test_gradient_shares_follow_the_weights() -> None:
    """A term at 100x the weight of an equal-sized term has ~99% of the gradient."""
    torch.manual_seed(0)
    features = torch.randn(8, 16, requires_grad=True)
    embedding = features @ torch.randn(16, 16)
    target = F.normalize(torch.randn(8, 16), dim=1)
    terms = {"cosine": 100.0 * copy_loss(embedding, target, "cosine"),
             "mse": 1.0 * copy_loss(embedding, target, "cosine")}
    shares = gradient_shares(terms, features)
    assert shares["gradshare_cosine"] == pytest.approx(100 / 101, rel=1e-4)
    assert sum(shares.values()) == pytest.approx(1.0)


def test_collapse_guard_warns_once_per_kind() -> None:
    guard = CollapseGuard(n_classes=74, copy_name="cosine")
    early = {"step": 10, "ce": math.log(74), "embedding_cosine": 0.999}
    assert guard.check(early, total_steps=100) == []  # within the grace period a stuck CE or collapse is normal
    stuck = {"step": 50, "ce": math.log(74) * 0.99, "embedding_cosine": 0.999,
             "cosine": 0.30, "copy_mean_target": 0.30}
    warnings = guard.check(stuck, total_steps=100)
    assert len(warnings) == 3
    assert any("ln(74)" in w for w in warnings) and any("mean target" in w for w in warnings)
    assert guard.check(stuck, total_steps=100) == []  # each kind once
    healthy = CollapseGuard(n_classes=74, copy_name="cosine")
    assert healthy.check({"step": 50, "ce": 1.0, "embedding_cosine": 0.3, "cosine": 0.1,
                          "copy_mean_target": 0.3}, total_steps=100) == []


def test_raw_code_runs_are_not_judged_by_their_shared_direction() -> None:
    """Raw codes share an offset (cosine ~0.99 when healthy): no warning for that; a
    cross-entropy stuck at ln(classes) still is one."""
    guard = CollapseGuard(n_classes=74, raw_codes=True)
    assert guard.check({"step": 50, "embedding_cosine": 0.999, "triplet": 0.2, "ce": 1.0}, total_steps=100) == []
    warnings = guard.check({"step": 60, "embedding_cosine": 0.999, "ce": math.log(74)}, total_steps=100)
    assert len(warnings) == 1 and "ln(74)" in warnings[0]
    assert CollapseGuard(n_classes=74).check({"step": 50, "embedding_cosine": 0.999, "ce": 1.0}, 100)  # normalised
