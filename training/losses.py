"""Losses for masters and students, matched to model outputs by name.

- ``ce``: cross-entropy on ``outputs["logits"]`` against subject ``labels``.
- ``triplet``: batch-all or batch-hard triplet loss on the L2-normalised
  ``outputs["embedding"]`` (Euclidean distance, margin 0.2 by default); per strip on
  ``outputs["strips"]`` where a set network gives them.
- ``smooth_l1`` / ``huber`` / ``mse``: copy losses between the student's L2-normalised
  embedding and the master's signature for the same clip (``targets``, stored normalised and
  re-normalised here, which changes nothing for unit vectors but guards against raw codes).

Copy losses average over every element (batch x d), like Keras' losses the authors used, so
their size does not depend on the batch but does shrink with d: for unit vectors the MSE is
||s - t||^2 / d. ``smooth_l1`` with beta 0.5 equals ``huber`` with delta 0.5 divided by 0.5;
both are offered because configs from either tradition name one or the other.

``LossSet`` combines them: ``LossSet({"smooth_l1": 1.0, "triplet": 0.1}, margin=0.25)``;
``total, parts = losses(outputs, labels=labels, targets=targets)``. ``parts`` holds each
unweighted term (detached 0-d tensors, so logging does not force a GPU sync until it
converts them) and ``"total"``.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from training.config import COPY_LOSSES

LOSS_NAMES: tuple[str, ...] = ("ce", "triplet", *COPY_LOSSES)
MINING: tuple[str, ...] = ("batch_all", "batch_hard")


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (..., B, B) of (..., B, d); clamped before the sqrt so the zero
    diagonal has a finite (zero) gradient."""
    norms = embeddings.square().sum(dim=-1)
    squared = norms[..., :, None] + norms[..., None, :] - 2 * embeddings @ embeddings.transpose(-1, -2)
    return squared.clamp_min(1e-12).sqrt()


def triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2,
                 mining: str = "batch_all", normalise: bool = True) -> torch.Tensor:
    """Triplet loss on L2-normalised embeddings (B, d), or per strip on strip codes (B, n, d).

    ``batch_all`` averages the hinge over the triplets that still violate the margin (the
    average over all triplets would be diluted by the many easy ones as training
    progresses); ``batch_hard`` uses each anchor's farthest positive and nearest negative.
    Strips: each strip is normalised and mined on its own (a coat changes the torso's
    neighbours, not the legs'), and the strips' losses are averaged. A batch without any
    valid triplet gives 0 (still part of the graph). ``normalise=False`` measures raw codes
    (OpenGait's GaitBase: a common offset of all codes then cancels in every distance)."""
    if mining not in MINING:
        raise ValueError(f"unknown triplet mining {mining!r}; known: {', '.join(MINING)}")
    codes = embeddings if embeddings.dim() == 3 else embeddings[:, None]
    codes = F.normalize(codes, dim=-1) if normalise else codes
    distances = pairwise_distances(codes.transpose(0, 1))  # (n, B, B)
    same = labels[:, None] == labels[None, :]
    not_self = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = same & not_self
    negative = ~same
    if mining == "batch_hard":
        hardest_positive = distances.masked_fill(~positive, float("-inf")).amax(dim=-1)
        hardest_negative = distances.masked_fill(~negative, float("inf")).amin(dim=-1)
        valid = positive.any(dim=1) & negative.any(dim=1)
        hinge = F.relu(hardest_positive - hardest_negative + margin)
        hinge = torch.where(valid, hinge, torch.zeros_like(hinge))
        return (hinge.sum(dim=-1) / valid.sum().clamp_min(1)).mean()
    valid = positive[:, :, None] & negative[:, None, :]  # (anchor, positive, negative)
    hinge = F.relu(distances[..., :, :, None] - distances[..., :, None, :] + margin) * valid
    return (hinge.sum(dim=(1, 2, 3)) / (hinge > 0).sum(dim=(1, 2, 3)).clamp_min(1)).mean()


def copy_loss(embedding: torch.Tensor, target: torch.Tensor, kind: str = "cosine",
              delta: float = 0.5, temperature: float = 0.1, strips: int = 1,
              centre: bool = False) -> torch.Tensor:
    """How far the student's signatures are from the master's (``target``, unit vectors).

    ``centre``: subtract the batch's mean from the student's signatures and from the targets
    first, so the term compares only what tells the batch's walks apart. Why: a set network
    trained with a triplet on raw codes carries a large offset shared by every walk (mean
    pairwise cosine 0.999), which the triplet ignores; against centred targets a cosine then
    cannot fall below the value of a student that learned nothing (measured on tune: 0.563
    against the mean target's 0.494 after 200 steps). A constant student scores 1 here.

    Why several: the obvious per-element average (``smooth_l1``/``huber``/``mse`` on normalised
    vectors, Keras-style) scales as ||s - t||^2 / d, so at d = 1024 its gradient is ~1e-3 of a
    triplet term's and the "copy" student is really trained by whatever else is in the sum.
    The scale-free terms below are O(1) per sample at any d:

    - ``cosine``: mean over the batch of 1 - cos(s, t) (= ||s/|s| - t||^2 / 2 per sample);
    - ``strip_cosine``: the same per horizontal strip of a set network (``strips`` strips of
      equal size), averaged: each body part copies the master's code of that part, so a strip
      the master finds weak is not drowned by the strong ones in one whole-vector cosine;
    - ``contrastive``: InfoNCE over the batch: each student signature must be nearer its own
      master signature than the other clips' (temperature ``temperature``), so it copies what
      tells clips apart, not just the common direction all signatures share;
    - ``relational``: mean squared difference between the batch's student and master cosine
      similarity matrices (copy the master's geometry, not its coordinates);
    - ``huber_sum``: the authors' loss: Huber(delta) summed over batch and dimensions, on the
      student's *unnormalised* output against the unit target;
    - ``smooth_l1``/``huber``/``mse``: per-element means on normalised vectors (earlier default).
    """
    if centre:
        embedding = embedding - embedding.mean(dim=0, keepdim=True)
        target = target - target.mean(dim=0, keepdim=True)
    if kind == "huber_sum":
        return F.huber_loss(embedding, target.to(embedding.dtype), delta=delta, reduction="sum")
    if kind == "strip_cosine":
        student = F.normalize(embedding.reshape(len(embedding), strips, -1), dim=2)
        master = F.normalize(target.to(student.dtype).reshape(student.shape), dim=2)
        return (1 - (student * master).sum(dim=2)).mean()
    student = F.normalize(embedding, dim=1)
    master = F.normalize(target.to(student.dtype), dim=1)
    if kind == "cosine":
        return (1 - (student * master).sum(dim=1)).mean()
    if kind == "contrastive":
        logits = student @ master.T / temperature
        return F.cross_entropy(logits, torch.arange(len(student), device=student.device))
    if kind == "relational":
        return (student @ student.T - master @ master.T).square().mean()
    if kind == "smooth_l1":
        return F.smooth_l1_loss(student, master, beta=delta)
    if kind == "huber":
        return F.huber_loss(student, master, delta=delta)
    if kind == "mse":
        return F.mse_loss(student, master)
    raise ValueError(f"unknown copy loss {kind!r}; known: {', '.join(COPY_LOSSES)}")


@torch.no_grad()
def mean_target_loss(target: torch.Tensor, kind: str, delta: float = 0.5, temperature: float = 0.1,
                     strips: int = 1, centre: bool = False) -> torch.Tensor:
    """The copy loss of a student that outputs the batch's mean target for every clip: the
    value a collapsed student sits at (``training.monitor.CollapseGuard`` compares with it)."""
    if centre:  # any constant student centres to zero; zeros keep rounding noise out of it
        return copy_loss(torch.zeros_like(target.float()), target.float(), kind, delta, temperature, strips, centre)
    mean = F.normalize(target.float().mean(dim=0, keepdim=True), dim=1).expand_as(target)
    return copy_loss(mean, target.float(), kind, delta, temperature, strips)


class LossSet(nn.Module):
    """Weighted sum of named losses over a model's outputs.

    ``weights`` maps loss names (``LOSS_NAMES``) to weights; a zero weight switches a loss
    off without removing it from a config. ``needs_labels`` / ``needs_targets`` tell the
    training loop what to pass."""

    def __init__(self, weights: Mapping[str, float], margin: float = 0.2,
                 mining: str = "batch_all", delta: float = 0.5, temperature: float = 0.1,
                 normalise: bool = True, copy_centre: bool = False) -> None:
        super().__init__()
        unknown = sorted(set(weights) - set(LOSS_NAMES))
        if unknown:
            raise ValueError(f"unknown loss names {unknown}; known: {', '.join(LOSS_NAMES)}")
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"loss weights must be >= 0, got {dict(weights)}")
        self.weights = {name: float(w) for name, w in weights.items() if w > 0}
        if not self.weights:
            raise ValueError(f"no loss has a positive weight in {dict(weights)}")
        if mining not in MINING:
            raise ValueError(f"unknown triplet mining {mining!r}; known: {', '.join(MINING)}")
        self.margin, self.mining, self.delta, self.temperature = margin, mining, delta, temperature
        self.normalise, self.copy_centre = normalise, copy_centre
        #: The weighted terms of the latest call, still in the graph: what the trainer's
        #: gradient-share probe differentiates (``training.trainer.gradient_shares``).
        self.terms: dict[str, torch.Tensor] = {}

    @property
    def needs_labels(self) -> bool:
        return "ce" in self.weights or "triplet" in self.weights

    @property
    def needs_targets(self) -> bool:
        return any(name in self.weights for name in COPY_LOSSES)

    def term(self, name: str, outputs: Mapping[str, torch.Tensor],
             labels: torch.Tensor | None, targets: torch.Tensor | None) -> torch.Tensor:
        """One unweighted loss; a missing input is a clear error naming what is missing."""
        if name in ("ce", "triplet") and labels is None:
            raise ValueError(f"loss {name!r} needs labels")
        if name in COPY_LOSSES and targets is None:
            raise ValueError(f"copy loss {name!r} needs master targets")
        if name == "ce":
            if "logits" not in outputs:
                raise ValueError("loss 'ce' needs a 'logits' output: build the model with "
                                 "n_classes > 0")
            logits = outputs["logits"].float()
            if logits.dim() == 3:  # one classifier per strip (BN neck): their mean loss
                return F.cross_entropy(logits.transpose(1, 2), labels[:, None].expand(-1, logits.shape[1]))
            return F.cross_entropy(logits, labels)
        if name == "triplet":
            codes = outputs["strips"] if "strips" in outputs else outputs["embedding"]
            return triplet_loss(codes.float(), labels, self.margin, self.mining, self.normalise)
        strips = outputs["strips"].shape[1] if "strips" in outputs else 1
        return copy_loss(outputs["embedding"].float(), targets, name, self.delta, self.temperature, strips,
                         self.copy_centre)

    def forward(self, outputs: Mapping[str, torch.Tensor], labels: torch.Tensor | None = None,
                targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: self.term(name, outputs, labels, targets) for name in self.weights}
        self.terms = {name: self.weights[name] * value for name, value in parts.items()}
        total = sum(self.terms.values())
        logged = {name: value.detach() for name, value in parts.items()}
        logged["total"] = total.detach()
        return total, logged
