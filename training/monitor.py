"""What a training run watches besides its loss: who drives the gradient, and collapse.

Two failures cost this project weeks before they were seen (the CASIA-B issue):

- a loss term that is in the sum but not in the gradient. A copy loss averaged over d = 1024
  dimensions had ~2% of the gradient next to a triplet term at weight 0.1, so the "copy"
  student was a triplet student. ``gradient_shares`` measures each weighted term's share of
  the gradient norm at the code layer's input (the model's ``"features"`` output).
- collapse: every clip mapped to (nearly) the same signature, cross-entropy stuck at the
  uniform guess ln(classes), or a copy loss stuck at the distance to the *mean* target (the
  student learned the average signature). ``CollapseGuard`` turns each into one warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

#: A log window's mean pairwise cosine of L2-normalised embeddings above this is collapse.
COLLAPSED_COSINE = 0.98
#: A term within this fraction of its "learned nothing" value counts as stuck there.
STUCK_FRACTION = 0.97
#: Collapse and stuck terms are reported only after this fraction of the run (early windows
#: are noisy: a student may pass through a collapsed state and recover).
GRACE_FRACTION = 0.25


def gradient_shares(terms: dict[str, torch.Tensor], features: torch.Tensor) -> dict[str, float]:
    """``{"gradshare_<name>": share}``: each weighted term's gradient norm at ``features``
    divided by the sum of all terms' norms (so the shares sum to 1). Call before backward."""
    norms: dict[str, float] = {}
    for name, term in terms.items():
        grad = None
        if term.requires_grad:
            (grad,) = torch.autograd.grad(term, features, retain_graph=True, allow_unused=True)
        norms[name] = 0.0 if grad is None else float(grad.norm())
    total = sum(norms.values())
    return {f"gradshare_{name}": (value / total if total > 0 else 0.0) for name, value in norms.items()}


def embedding_cosine(embedding: torch.Tensor) -> float:
    """Mean pairwise cosine between a batch's embeddings (1.0 = all the same direction)."""
    n = len(embedding)
    if n < 2:
        return float("nan")
    unit = F.normalize(embedding.detach().float(), dim=1)
    sims = unit @ unit.T
    return float((sims.sum() - sims.diagonal().sum()) / (n * n - n))


@dataclass
class CollapseGuard:
    """Checks each logged row; returns each kind of warning once per run.

    ``n_classes``: the classifier's classes (0 = no cross-entropy); ``copy_name``: the main
    copy term's name in the row (its "mean target" value is logged as ``copy_mean_target``).

    ``raw_codes``: the triplet measures raw (not normalised) codes. Such codes share a large
    offset by design (the triplet's distances and the evaluation ignore it), so their mean
    pairwise cosine is ~0.99 in a healthy run and says nothing: it is not checked. Their
    collapse shows in the cross-entropy stuck at ln(classes) and the copy stuck at the mean
    target, which are. (Not the batch-hard triplet's value: a collapsed run sits at the margin,
    but so does a healthy one, for a moment, on its way down from above it.)"""

    n_classes: int = 0
    copy_name: str | None = None
    raw_codes: bool = False
    raised: set[str] = field(default_factory=set)

    def check(self, row: dict[str, float], total_steps: int) -> list[str]:
        """Warnings for one logged row of a run of ``total_steps`` steps."""
        found: list[tuple[str, str]] = []
        cosine = row.get("embedding_cosine", float("nan"))
        late = row["step"] >= GRACE_FRACTION * total_steps
        if late and not self.raw_codes and cosine > COLLAPSED_COSINE:
            found.append(("cosine", f"embeddings collapsed: mean pairwise cosine {cosine:.4f} in a batch "
                                    f"(> {COLLAPSED_COSINE}); check initialisation and learning rate"))
        if late and self.n_classes > 1 and "ce" in row:
            uniform = math.log(self.n_classes)
            if row["ce"] >= STUCK_FRACTION * uniform:
                found.append(("ce", f"cross-entropy {row['ce']:.3f} still at ln({self.n_classes}) = {uniform:.3f} "
                                    f"at step {row['step']}: the model is not learning"))
        if late and self.copy_name and self.copy_name in row and "copy_mean_target" in row:
            baseline = row["copy_mean_target"]
            if baseline > 0 and row[self.copy_name] >= STUCK_FRACTION * baseline:
                found.append(("copy", f"copy loss {row[self.copy_name]:.4g} is no better than the mean "
                                      f"target ({baseline:.4g}) at step {row['step']}: the student learned at most "
                                      "the average signature"))
        new = [message for kind, message in found if kind not in self.raised]
        self.raised.update(kind for kind, _ in found)
        return new
