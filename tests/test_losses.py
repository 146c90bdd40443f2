"""Losses: hand-computed values, edge cases, LossSet bookkeeping, and that optimising a
real model with them lowers them."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from training.losses import LossSet, copy_loss, mean_target_loss, triplet_loss
from training.models import build_model


def unit_circle(*degrees: float) -> torch.Tensor:
    radians = torch.tensor(degrees) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], dim=1)


def chord(degrees: float) -> float:
    """Euclidean distance between two unit vectors `degrees` apart."""
    return 2 * math.sin(math.radians(degrees) / 2)


def test_triplet_batch_all_and_batch_hard_by_hand():
    # Anchors of class 0 at 0 and 30 degrees, class 1 at 60 and 180 degrees.
    embeddings = unit_circle(0, 30, 60, 180) * 3.0  # scale: the loss normalises first
    labels = torch.tensor([0, 0, 1, 1])
    margin = 0.5
    # Every (anchor, positive, negative) hinge, distances as chords of the angle gaps.
    hinges = []
    for a, p, negatives in [(0, 30, (60, 180)), (30, 0, (60, 180)),
                            (60, 180, (0, 30)), (180, 60, (0, 30))]:
        for n in negatives:
            hinges.append(max(chord(abs(a - p)) - chord(abs(a - n)) + margin, 0.0))
    active = [h for h in hinges if h > 0]
    expected_all = sum(active) / len(active)
    got_all = triplet_loss(embeddings, labels, margin, "batch_all")
    assert got_all.item() == pytest.approx(expected_all, rel=1e-5)
    # Batch-hard: farthest positive, nearest negative per anchor.
    # anchor 0: positive 30, nearest negative 60; anchor 30: 0 and 60; anchor 60: 180 and
    # 30; anchor 180: 60 and 30.
    expected_hard = [max(chord(p) - chord(n) + margin, 0)
                     for p, n in [(30, 60), (30, 30), (120, 30), (120, 150)]]
    got_hard = triplet_loss(embeddings, labels, margin, "batch_hard")
    assert got_hard.item() == pytest.approx(sum(expected_hard) / 4, rel=1e-5)


def test_triplet_is_zero_when_classes_are_apart_and_without_valid_triplets():
    separated = unit_circle(0, 1, 180, 181)
    labels = torch.tensor([0, 0, 1, 1])
    assert triplet_loss(separated, labels, 0.2).item() == 0.0
    assert triplet_loss(separated, labels, 0.2, "batch_hard").item() == 0.0
    one_class = torch.randn(4, 8, requires_grad=True)
    loss = triplet_loss(one_class, torch.zeros(4, dtype=torch.long))
    loss.backward()  # part of the graph, finite, zero
    assert loss.item() == 0.0 and torch.isfinite(one_class.grad).all()
    with pytest.raises(ValueError, match="mining"):
        triplet_loss(separated, labels, mining="semi_hard")


def test_copy_losses_by_hand():
    target = F.normalize(torch.randn(3, 16), dim=1)
    for kind in ("smooth_l1", "huber", "mse"):
        # Zero when the student's code points the same way as the master's signature.
        assert copy_loss(target * 5.0, target, kind).item() == pytest.approx(0.0, abs=1e-7)
    student = torch.tensor([[1.0, 0.0]])
    master = torch.tensor([[0.0, 1.0]])  # element differences: 1 and 1 (> delta 0.5)
    assert copy_loss(student, master, "mse").item() == pytest.approx(1.0)
    assert copy_loss(student, master, "smooth_l1").item() == pytest.approx(1 - 0.25)  # |x| - beta/2
    assert copy_loss(student, master, "huber").item() == pytest.approx(0.5 * (1 - 0.25))
    close = torch.tensor([[0.8, 0.6]])  # differences 0.8 - 0.6 = 0.2 and 0.6 - 0.8: quadratic zone
    assert copy_loss(close, close.flip(1), "smooth_l1").item() == pytest.approx(0.5 * 0.04 / 0.5)
    assert copy_loss(student, master, "cosine").item() == pytest.approx(1.0)  # orthogonal: 1 - cos
    assert copy_loss(student * 3, student, "cosine").item() == pytest.approx(0.0, abs=1e-7)
    # the authors' loss: summed Huber(0.5) on the raw output (3, 0) against (1, 0): |2| - 0.25
    assert copy_loss(student * 3, student, "huber_sum").item() == pytest.approx(0.5 * (2 - 0.25))
    with pytest.raises(ValueError, match="unknown copy loss"):
        copy_loss(student, master, "l7")


def test_batch_centred_copy_ignores_a_shared_offset():
    """A student whose codes are the master's plus one large offset shared by every walk (what
    a raw-code triplet leaves) copies perfectly once both are centred over the batch, and far
    from perfectly without; a constant student scores 1 (nothing of the walks' differences)."""
    torch.manual_seed(0)
    target = F.normalize(torch.randn(8, 32), dim=1)
    offset = 20.0 * torch.randn(1, 32)
    student = 3.0 * target + offset
    for kind, strips in (("cosine", 1), ("strip_cosine", 4)):
        assert copy_loss(student, target, kind, strips=strips, centre=True).item() == pytest.approx(0.0, abs=1e-5)
        assert copy_loss(student, target, kind, strips=strips).item() > 0.5
        constant = offset.round().expand(8, -1)  # integers: the batch mean is exact
        assert copy_loss(constant, target, kind, strips=strips, centre=True).item() == pytest.approx(1.0)
        assert mean_target_loss(target, kind, strips=strips, centre=True).item() == pytest.approx(1.0)
    losses = LossSet({"strip_cosine": 1.0}, copy_centre=True)
    _, parts = losses({"embedding": student, "strips": student.reshape(8, 4, 8)}, targets=target)
    assert parts["strip_cosine"].item() == pytest.approx(0.0, abs=1e-5)


def test_loss_set_weights_parts_and_errors():
    torch.manual_seed(0)
    outputs = {"embedding": torch.randn(6, 8), "logits": torch.randn(6, 3)}
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    targets = F.normalize(torch.randn(6, 8), dim=1)
    losses = LossSet({"ce": 1.0, "triplet": 0.5, "smooth_l1": 2.0, "mse": 0.0}, margin=0.3)
    total, parts = losses(outputs, labels=labels, targets=targets)
    assert set(parts) == {"ce", "triplet", "smooth_l1", "total"}  # zero weight: switched off
    assert parts["ce"].item() == pytest.approx(F.cross_entropy(outputs["logits"], labels).item())
    assert parts["triplet"].item() == pytest.approx(triplet_loss(outputs["embedding"], labels,
                                                                 0.3).item())
    expected = parts["ce"] + 0.5 * parts["triplet"] + 2.0 * parts["smooth_l1"]
    assert total.item() == pytest.approx(expected.item()) == pytest.approx(parts["total"].item())
    assert losses.needs_labels and losses.needs_targets
    assert not LossSet({"mse": 1}).needs_labels
    with pytest.raises(ValueError, match="unknown loss names"):
        LossSet({"arcface": 1.0})
    with pytest.raises(ValueError, match="no loss has a positive weight"):
        LossSet({"ce": 0.0})
    with pytest.raises(ValueError, match="needs master targets"):
        LossSet({"huber": 1.0})(outputs, labels=labels)
    with pytest.raises(ValueError, match="n_classes > 0"):
        LossSet({"ce": 1.0})({"embedding": outputs["embedding"]}, labels=labels)


def _optimise(model, losses, clips, labels=None, targets=None, steps=12, lr=3e-3):
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        total, parts = losses(model(clips), labels=labels, targets=targets)
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        history.append(parts)
    return history


def test_identification_losses_go_down_on_four_classes():
    """CE + triplet on a real (small) GaitSet: 4 subjects x 2 clips of 4 frames."""
    torch.manual_seed(0)
    model = build_model("gaitset-gray", strip_dim=8, n_classes=4)
    clips = torch.randn(8, 1, 4, 16, 16)
    labels = torch.arange(4).repeat_interleave(2)
    history = _optimise(model, LossSet({"ce": 1.0, "triplet": 1.0}), clips, labels, steps=30)
    for part in ("ce", "triplet", "total"):
        assert history[-1][part] < 0.5 * history[0][part], part


def test_copy_loss_goes_down_towards_master_signatures():
    """A 3D student learns to reproduce fixed 'master' signatures for its clips."""
    torch.manual_seed(0)
    model = build_model("student3d-small", embedding_dim=64, dropout=0.0)
    clips = torch.randn(2, 1, 25, 49, 49)  # the smallest crop the 3D stack accepts
    targets = F.normalize(torch.randn(2, 64), dim=1)
    history = _optimise(model, LossSet({"mse": 1.0}), clips, targets=targets, steps=8, lr=1e-3)
    assert history[-1]["mse"] < 0.3 * history[0]["mse"]
