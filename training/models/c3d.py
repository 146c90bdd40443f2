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
#: Weight initialisations: ``kaiming`` (He-normal for ReLU, zero biases: the default, see
#: ``init_weights``), ``glorot`` (Keras' default, the authors' framework), ``torch``
#: (PyTorch's own Conv3d default, kept only to reproduce the collapse it causes).
INITS: tuple[str, ...] = ("kaiming", "glorot", "torch")
#: Normalisation after each conv: ``none`` (the authors' networks) or ``batch`` (BatchNorm3d).
NORMS: tuple[str, ...] = ("none", "batch")
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

    Returns ``{"embedding": (B, d), "features": (B, widths[-1])}`` (the code layer's input) and, when ``n_classes > 0``, ``"logits": (B, n_classes)``
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
        init: str = "kaiming",
        norm: str = "none",
    ) -> None:
        super().__init__()
        if len(widths) != len(LAYER_GEOMETRY):
            raise ValueError(f"need {len(LAYER_GEOMETRY)} widths, got {list(widths)}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; known: {', '.join(INITS)}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")
        self.in_channels = in_channels
        self.embedding_dim = embedding_dim
        self.widths = tuple(widths)
        layers: list[nn.Module] = []
        previous = in_channels
        for width, (kernel, stride) in zip(widths, LAYER_GEOMETRY):
            layers.append(nn.Conv3d(previous, width, kernel, stride, bias=norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm3d(width))
            layers.append(nn.ReLU(inplace=True))
            previous = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        # Not named `code`: torch.fx's GraphModule.code would shadow it in torch.export.
        self.code_layer = nn.Conv3d(previous, embedding_dim, kernel_size=1)
        self.classifier = nn.Linear(embedding_dim, n_classes) if n_classes > 0 else None
        init_weights(self, init)

    @property
    def modality(self) -> str:
        """Which store array feeds this model: 2 channels are flow (dx, dy), 1 is gray."""
        return "flow" if self.in_channels == 2 else "gray"

    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.features(clips)
        # "features": what the code layer reads; the trainer measures each loss term's share
        # of the gradient there, so the code must be computed from this very tensor.
        features = x.mean(dim=(2, 3, 4))
        code = self.code_layer(self.dropout(features[:, :, None, None, None])).flatten(1)
        outputs = {"embedding": code, "features": features}
        if self.classifier is not None:
            outputs["logits"] = self.classifier(code)
        return outputs


def init_weights(model: nn.Module, init: str) -> None:
    """Initialise conv and linear layers in place.

    Why not PyTorch's default: Kaiming-uniform with a = sqrt(5) and uniform biases shrinks
    each ReLU layer's signal, so after six valid convs the code no longer depends on the input
    (mean pairwise cosine of real clips' codes 0.9998-1.0; students never left ln(classes)
    cross-entropy). He-normal weights with zero biases keep the signal's scale through the
    ReLUs (cosine 0.67-0.91); Glorot-uniform with zero biases is what the authors' Keras layers
    used. ``torch`` leaves the default in place."""
    if init == "torch":
        return
    for module in model.modules():
        if isinstance(module, (nn.Conv3d, nn.Conv2d, nn.Conv1d, nn.Linear)):
            if init == "kaiming":
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def master3d(in_channels: int = 2, embedding_dim: int = 1024, n_classes: int = 0,
             dropout: float = 0.0, init: str = "kaiming", norm: str = "none") -> C3DNet:
    """The flow master: documented widths, no dropout."""
    return C3DNet(in_channels, MASTER_WIDTHS, embedding_dim, dropout, n_classes, init, norm)


def student3d(size: str, in_channels: int = 1, embedding_dim: int = 1024,
              n_classes: int = 0, dropout: float = 0.4, init: str = "kaiming", norm: str = "none") -> C3DNet:
    """A gray student at one of the named widths (``large``, ``medium``, ``small``)."""
    if size not in STUDENT_WIDTHS:
        raise ValueError(f"unknown student size {size!r}; known: {sorted(STUDENT_WIDTHS)}")
    return C3DNet(in_channels, STUDENT_WIDTHS[size], embedding_dim, dropout, n_classes, init, norm)
