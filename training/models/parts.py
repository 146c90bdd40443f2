"""The set-network family's parts: small tensor-in, tensor-out modules that networks compose.

A walk is a *set* of frames: each frame is embedded by the same 2D network (``FrameWise``), the
set is pooled by a maximum over its frames (``set_max``), and the pooled map is cut into
horizontal strips (``strip_pool``: head, torso, legs...) that keep their own linear maps
(``SeparateFCs``), so a coat or a bag spoils its strips and not the whole signature. A
``BNNeck`` puts a BatchNorm between the strip codes and the classifier that cross-entropy
trains, so the triplet term sees the raw codes and the classifier a normalised copy.

Tensors keep the frame axis second: ``(B, T, C, H, W)``. The model contract (``training.models``)
takes clips as ``(B, C, T, H, W)``; ``frames_first`` turns one into the other.

There is one implementation of each part: GaitSet's horizontal pyramid is ``strip_pool`` over
several bin counts.
"""
from __future__ import annotations

import torch
from torch import nn


def frames_first(clips: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, T, C, H, W) (a view where possible)."""
    return clips.transpose(1, 2)


class FrameWise(nn.Module):
    """Apply a 2D module to every frame of a set: (B, T, C, H, W) -> (B, T, C', H', W').

    Folding the frames into the batch makes one big 2D call instead of T small ones."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        batch, count = frames.shape[:2]
        out = self.module(frames.reshape(batch * count, *frames.shape[2:]))
        return out.reshape(batch, count, *out.shape[1:])


def set_max(frames: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, C, H, W): the maximum over a set's frames (order and count free)."""
    return frames.amax(dim=1)


def strip_rows(height: int, bins: tuple[int, ...]) -> list[tuple[int, int]]:
    """Row range [start, end) of every strip, with adaptive pooling's edges (neighbouring strips
    share a row where the bin count does not divide the height)."""
    return [(i * height // n, -(-(i + 1) * height // n)) for n in bins for i in range(n)]


def strip_pool(maps: torch.Tensor, bins: tuple[int, ...] = (16,)) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, sum(bins)): mean + max of every horizontal strip of every bin count.

    Equal to ``adaptive_avg_pool2d + adaptive_max_pool2d`` to (n, 1) per bin, but written as
    one matmul (strip means from row means) and one gather (strip maxima from row maxima, short
    strips padded by repeating their last row) over the static height: few graph nodes, and
    ``adaptive_max_pool2d`` has no ONNX export."""
    rows = strip_rows(maps.shape[2], bins)
    longest = max(end - start for start, end in rows)
    averaging = torch.tensor([[1.0 / (end - start) if start <= row < end else 0.0
                               for row in range(maps.shape[2])] for start, end in rows],
                             dtype=maps.dtype, device=maps.device)
    gather = torch.tensor([[min(start + j, end - 1) for j in range(longest)]
                           for start, end in rows], device=maps.device)
    means = maps.mean(dim=3) @ averaging.T
    maxima = maps.amax(dim=3)[:, :, gather].amax(dim=3)
    return means + maxima


class SeparateFCs(nn.Module):
    """One linear map per strip, no bias: (B, C, n) -> (B, n, d), as one batched matmul."""

    def __init__(self, n_strips: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_strips, in_dim, out_dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, strips: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bcs,scd->bsd", strips, self.weight)


class BNNeck(nn.Module):
    """BatchNorm over every strip's code, then a per-strip classifier: (B, n, d) -> (B, n, classes).

    Why a neck: cross-entropy wants features on a sphere-like, centred scale, triplet losses
    want the raw metric space; the BatchNorm between them lets both train the same codes
    without fighting (OpenGait's GaitBase does the same)."""

    def __init__(self, n_strips: int, dim: int, n_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(n_strips * dim)
        self.classifier = SeparateFCs(n_strips, dim, n_classes)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        normed = self.norm(codes.flatten(1)).reshape(codes.shape)
        return self.classifier(normed.transpose(1, 2))


def conv_bn(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    """3x3 conv (no bias: the BatchNorm has one) + BatchNorm + LeakyReLU."""
    return [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.LeakyReLU(0.01, inplace=True)]


class BasicBlock(nn.Module):
    """ResNet's basic block (two 3x3 convs with BatchNorm, identity or 1x1 shortcut)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class InputCut(nn.Module):
    """Square crops -> the network's own input: the centre ``width`` columns (OpenGait's 64 x 44
    cut; the sides of a walker's square crop are background), then a ``factor`` x average
    downscale (32 x 22 costs a quarter of 64 x 44). Part of the network, so deployment and
    every consumer of an exported model apply the same cut."""

    def __init__(self, width: int | None = None, factor: int = 1) -> None:
        super().__init__()
        self.width, self.factor = width, factor

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.width is not None and self.width < frames.shape[-1]:
            left = (frames.shape[-1] - self.width) // 2
            frames = frames[..., left:left + self.width]
        if self.factor > 1:
            shape = frames.shape
            pooled = nn.functional.avg_pool2d(frames.reshape(-1, *shape[-3:]), self.factor)
            frames = pooled.reshape(*shape[:-2], *pooled.shape[-2:])
        return frames
