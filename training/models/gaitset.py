"""The GaitSet family: the same network on flow (a master) or on gray (a student).

GaitSet treats a clip as an unordered *set* of frames: frame-level 2D convs, then set
pooling (the max over frames), so the signature does not depend on frame order or count.
Layer table (3x3 convs use padding 1, the first conv 5x5 padding 2; no biases, no batch
norm, LeakyReLU(0.01))::

    frame stage                             global stage (on set-pooled maps)
    conv 5x5 C->32, conv 3x3 32->32         g = set_max(x)
    maxpool 2                               conv 32->64, conv 64->64, maxpool 2
    conv 3x3 32->64, conv 3x3 64->64        g = g + set_max(x)
    maxpool 2                               conv 64->128, conv 128->128
    conv 3x3 64->128, conv 3x3 128->128     g = g + set_max(x);  x = set_max(x)

Horizontal pyramid pooling cuts each 128-channel map (x and g) into 1, 2, 4, 8 and 16
horizontal strips (31 per branch, 62 in all); a strip's feature is its mean plus its max.
Each strip has its own fully connected layer 128 -> ``strip_dim`` (no bias: a (62, 128,
strip_dim) weight tensor). The embedding is the concatenation of the 62 strip codes:
62 x 128 = 7,936 values at the default ``strip_dim`` = 128. Consumers L2-normalise the whole
7,936-d vector, so all strips are compared together with one Euclidean distance.

Strips follow adaptive pooling's bin edges, so heights that a bin count does not divide
(a 60 x 60 crop leaves 15 rows for 16 strips) still work: neighbouring strips then share a row.

Parameters (``n_classes=0``): gaitset-gray 1,578,784 (method notes: ~1.58 M with 62 strips x
128 d), gaitset-flow 1,579,584 (the first conv sees 2 channels: +800). The FC strips hold
62 * 128 * 128 = 1,015,808 of them.
"""
from __future__ import annotations

import torch
from torch import nn

from training.models.parts import SeparateFCs, set_max, strip_pool

PYRAMID_BINS: tuple[int, ...] = (1, 2, 4, 8, 16)
N_STRIPS: int = 2 * sum(PYRAMID_BINS)  # 62: two branches (frame-set and global)


def _conv(in_channels: int, out_channels: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
            nn.LeakyReLU(0.01, inplace=True)]


def _set_max(frames: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*T, C, H, W) -> (B, C, H, W): the max over each clip's frames."""
    return set_max(frames.reshape(batch, -1, *frames.shape[1:]))


class GaitSet(nn.Module):
    """GaitSet on (B, C, T, H, W) clips; returns ``{"embedding": (B, 62*strip_dim)}`` and
    ``"logits"`` (a linear layer on the raw embedding) when ``n_classes > 0``."""

    def __init__(self, in_channels: int = 1, strip_dim: int = 128, n_classes: int = 0) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.strip_dim = strip_dim
        self.embedding_dim = N_STRIPS * strip_dim
        self.frame_block1 = nn.Sequential(*_conv(in_channels, 32, 5), *_conv(32, 32, 3),
                                          nn.MaxPool2d(2))
        self.frame_block2 = nn.Sequential(*_conv(32, 64, 3), *_conv(64, 64, 3), nn.MaxPool2d(2))
        self.frame_block3 = nn.Sequential(*_conv(64, 128, 3), *_conv(128, 128, 3))
        self.global_block1 = nn.Sequential(*_conv(32, 64, 3), *_conv(64, 64, 3), nn.MaxPool2d(2))
        self.global_block2 = nn.Sequential(*_conv(64, 128, 3), *_conv(128, 128, 3))
        self.strip_fc = SeparateFCs(N_STRIPS, 128, strip_dim)
        self.classifier = nn.Linear(self.embedding_dim, n_classes) if n_classes > 0 else None

    @property
    def modality(self) -> str:
        """Which store array feeds this model: 2 channels are flow (dx, dy), 1 is gray."""
        return "flow" if self.in_channels == 2 else "gray"

    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = clips.shape[0]
        frames = clips.transpose(1, 2).flatten(0, 1)  # (B*T, C, H, W)
        x = self.frame_block1(frames)
        g = self.global_block1(_set_max(x, batch))
        x = self.frame_block2(x)
        g = self.global_block2(g + _set_max(x, batch))
        x = _set_max(self.frame_block3(x), batch)
        g = g + x
        strips = torch.cat([strip_pool(x, PYRAMID_BINS), strip_pool(g, PYRAMID_BINS)], dim=2)  # (B, 128, 62)
        codes = self.strip_fc(strips)
        embedding = codes.flatten(1)
        outputs = {"embedding": embedding, "features": strips}  # the strip FCs' input
        if self.classifier is not None:
            outputs["logits"] = self.classifier(embedding)
        return outputs
