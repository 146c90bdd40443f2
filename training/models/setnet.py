"""Set networks: a walk's frames -> one 2D backbone per frame -> max over the set -> strips.

The family the field moved to (GaitSet, GaitPart, GaitBase) and the default for our masters and
students. Two backbones, both composed from ``training.models.parts``:

- ``plain``: 3x3 conv + BatchNorm + LeakyReLU pairs with a 2x max pool between stages
  (widths 16,16 / 32,32 / 64,64 by default: ~0.36 M parameters with 16 strips x 128);
- ``residual``: GaitBase-style, a 3x3 stem and one ResNet basic block per stage with strides
  1, 2, 2, 1 (widths chosen by measurement, ``benchmarks/train_speed.py``).

Then the set maximum, ``n_strips`` horizontal strips (mean + max), one linear map per strip
(``strip_dim`` each) and, for cross-entropy, a BN neck. Outputs:

- ``"embedding"`` (B, n_strips * strip_dim): what consumers L2-normalise and compare;
- ``"strips"`` (B, n_strips, strip_dim): the per-strip codes (triplet per strip, strip copy);
- ``"logits"`` (B, n_strips, n_classes) when ``n_classes > 0``;
- ``"features"`` (B, C, n_strips): the pooled strips before their maps, which every loss term
  reaches (where the trainer measures each term's share of the gradient).

Input: (B, C, T, H, W) with any T >= 1 (training draws T frames of a walk, evaluation and
deployment give every frame); square crops are cut and scaled by ``InputCut`` first.
"""
from __future__ import annotations

import torch
from torch import nn

from training.models.parts import (BasicBlock, BNNeck, FrameWise, InputCut, SeparateFCs, conv_bn,
                                   frames_first, set_max, strip_pool)

BACKBONES = ("plain", "residual")


def plain_backbone(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    """Conv pairs per width; a 2x max pool between consecutive stages."""
    layers: list[nn.Module] = []
    previous = in_channels
    for i, width in enumerate(widths):
        if i:
            layers.append(nn.MaxPool2d(2))
        layers += conv_bn(previous, width) + conv_bn(width, width)
        previous = width
    return nn.Sequential(*layers)


def residual_backbone(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    """GaitBase's shape: a stem at widths[0], then one basic block per width, strides 1, 2, 2, 1, ..."""
    strides = [1, 2, 2] + [1] * max(0, len(widths) - 3)
    layers: list[nn.Module] = conv_bn(in_channels, widths[0])
    previous = widths[0]
    for width, stride in zip(widths, strides):
        layers.append(BasicBlock(previous, width, stride))
        previous = width
    return nn.Sequential(*layers)


class SetNet(nn.Module):
    """Backbone per frame, set max, horizontal strips, separate FCs, BN neck."""

    def __init__(self, in_channels: int = 1, backbone: str = "plain", widths: tuple[int, ...] = (16, 32, 64),
                 n_strips: int = 16, strip_dim: int = 128, n_classes: int = 0,
                 input_width: int | None = 44, downscale: int = 1) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        widths = tuple(int(w) for w in widths)
        self.in_channels, self.n_strips, self.strip_dim = in_channels, n_strips, strip_dim
        self.embedding_dim = n_strips * strip_dim
        self.cut = InputCut(input_width, downscale)
        build = plain_backbone if backbone == "plain" else residual_backbone
        self.frames = FrameWise(build(in_channels, widths))
        self.fcs = SeparateFCs(n_strips, widths[-1], strip_dim)
        self.neck = BNNeck(n_strips, strip_dim, n_classes) if n_classes > 0 else None

    @property
    def modality(self) -> str:
        """Which store array feeds this model: 2 channels are flow (dx, dy), 1 is gray."""
        return "flow" if self.in_channels == 2 else "gray"

    def pooled(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, C', H', W'): the set's pooled map (what ``head`` reads)."""
        return set_max(self.frames(self.cut(frames_first(clips))))

    def head(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled_strips = strip_pool(pooled, (self.n_strips,))
        strips = self.fcs(pooled_strips)
        outputs = {"embedding": strips.flatten(1), "strips": strips, "features": pooled_strips}
        if self.neck is not None:
            outputs["logits"] = self.neck(strips)
        return outputs

    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.pooled(clips))
