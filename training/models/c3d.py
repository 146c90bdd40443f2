"""The 3D-CNN family: the flow master and the gray students that copy it.

One stack of six valid-padding ``Conv3d`` + ReLU layers (no batch norm, as in the authors'
networks) followed by a 1x1x1 conv "code" layer whose output is the gait signature. The
master sees 2-channel TV-L1 flow (dx, dy); the students see 1-channel gray (x/255 - 0.5,
done by the data path) and add dropout 0.4 before the code layer.

Layer table (kernel and stride as (t, h, w); output sizes for a 25 x 60 x 60 and a
25 x 64 x 64 clip)::

    layer  kernel  stride   25x60x60 in -> out      25x64x64 in -> out
    conv1  3x5x5   1,2,2    23 x 28 x 28            23 x 30 x 30
    conv2  3x3x3   1,2,2    21 x 13 x 13            21 x 14 x 14
    conv3  3x3x3   2,2,2    10 x  6 x  6            10 x  6 x  6
    conv4  3x3x3   2,2,2     4 x  2 x  2             4 x  2 x  2
    conv5  3x2x2   1,1,1     2 x  1 x  1             2 x  1 x  1
    conv6  2x1x1   1,1,1     1 x  1 x  1             1 x  1 x  1
    code   1x1x1   1,1,1     d x 1 x 1 x 1           d x 1 x 1 x 1

Both the paper's 60 x 60 crops and our store's 64 x 64 crops reduce to exactly 1 x 1 x 1 at
conv6, so the network is the authors' one there. For longer clips or larger crops the
remaining (t, h, w) grid is averaged to 1 x 1 x 1 *before* the code layer: the code layer is
linear, so averaging before or after it gives the same signature, and averaging first is
cheaper and keeps dropout where the authors put it. On 25 x 60 x 60 / 64 x 64 the average is
an identity. The smallest input the stack accepts is T >= 23, H, W >= 49.

Named variants (parameters counted with biases, ``n_classes=0``, d = 1024)::

    name              input    widths conv1..conv6            dropout  params     vs master
    master3d          flow 2   64-128-256-512-512-512         0        8,851,776  x1.00
    student3d-large   gray 1   64-128-256-512-512-512         0.4      8,846,976  x1.00
    student3d-medium  gray 1   64-128-192-256-384-512         0.4      4,316,352  x2.05
    student3d-small   gray 1   48-96-128-128-256-512          0.4      2,084,000  x4.25

The master and small-student widths are the documented ones (method notes: ~8.85 M and
~2.08 M, x4.25); the medium widths are our choice, placed between them (about half the
master). At d = 2048 (CASIA-B) each count grows by 512 * 1024 + 1024 = 525,312.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

MASTER_WIDTHS: tuple[int, ...] = (64, 128, 256, 512, 512, 512)
STUDENT_WIDTHS: dict[str, tuple[int, ...]] = {
    "large": MASTER_WIDTHS,
    "medium": (64, 128, 192, 256, 384, 512),
    "small": (48, 96, 128, 128, 256, 512),
}
# (kernel, stride) per conv layer, as (t, h, w).
LAYER_GEOMETRY: tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...] = (
    ((3, 5, 5), (1, 2, 2)),
    ((3, 3, 3), (1, 2, 2)),
    ((3, 3, 3), (2, 2, 2)),
    ((3, 3, 3), (2, 2, 2)),
    ((3, 2, 2), (1, 1, 1)),
    ((2, 1, 1), (1, 1, 1)),
)


class C3DNet(nn.Module):
    """Six valid Conv3d + ReLU, global average, dropout, 1x1x1 code conv (+ optional classifier).

    Returns ``{"embedding": (B, d)}`` and, when ``n_classes > 0``, ``"logits": (B, n_classes)``
    from a linear layer on the raw code (so cross-entropy shapes the same signature that
    triplet and copy losses see).
    """

    def __init__(
        self,
        in_channels: int = 2,
        widths: Sequence[int] = MASTER_WIDTHS,
        embedding_dim: int = 1024,
        dropout: float = 0.0,
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        if len(widths) != len(LAYER_GEOMETRY):
            raise ValueError(f"need {len(LAYER_GEOMETRY)} widths, got {list(widths)}")
        self.in_channels = in_channels
        self.embedding_dim = embedding_dim
        self.widths = tuple(widths)
        layers: list[nn.Module] = []
        previous = in_channels
        for width, (kernel, stride) in zip(widths, LAYER_GEOMETRY):
            layers += [nn.Conv3d(previous, width, kernel, stride), nn.ReLU(inplace=True)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        # Not named `code`: torch.fx's GraphModule.code would shadow it in torch.export.
        self.code_layer = nn.Conv3d(previous, embedding_dim, kernel_size=1)
        self.classifier = nn.Linear(embedding_dim, n_classes) if n_classes > 0 else None

    @property
    def modality(self) -> str:
        """Which store array feeds this model: 2 channels are flow (dx, dy), 1 is gray."""
        return "flow" if self.in_channels == 2 else "gray"

    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.features(clips)
        x = x.mean(dim=(2, 3, 4), keepdim=True)
        code = self.code_layer(self.dropout(x)).flatten(1)
        outputs = {"embedding": code}
        if self.classifier is not None:
            outputs["logits"] = self.classifier(code)
        return outputs


def master3d(in_channels: int = 2, embedding_dim: int = 1024, n_classes: int = 0,
             dropout: float = 0.0) -> C3DNet:
    """The flow master: documented widths, no dropout."""
    return C3DNet(in_channels, MASTER_WIDTHS, embedding_dim, dropout, n_classes)


def student3d(size: str, in_channels: int = 1, embedding_dim: int = 1024,
              n_classes: int = 0, dropout: float = 0.4) -> C3DNet:
    """A gray student at one of the named widths (``large``, ``medium``, ``small``)."""
    if size not in STUDENT_WIDTHS:
        raise ValueError(f"unknown student size {size!r}; known: {sorted(STUDENT_WIDTHS)}")
    return C3DNet(in_channels, STUDENT_WIDTHS[size], embedding_dim, dropout, n_classes)
