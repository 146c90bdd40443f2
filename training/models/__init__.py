"""Model registry: every model maps (B, C, T, H, W) float clips to a dict of named outputs.

Outputs: ``"embedding"`` (B, d), the raw code that consumers L2-normalise, always;
``"logits"`` (B, n_classes) when built with ``n_classes > 0``. Losses pick outputs by name
(``training.losses``). Every model exposes ``in_channels``, ``embedding_dim`` and
``modality`` ("flow" for 2 channels, "gray" for 1), so the data path knows what to feed.

    name              family   input        d (default)     params (n_classes=0)
    master3d          3D-CNN   flow (2 ch)  1024            8,851,776
    student3d-large   3D-CNN   gray (1 ch)  1024            8,846,976
    student3d-medium  3D-CNN   gray (1 ch)  1024            4,316,352
    student3d-small   3D-CNN   gray (1 ch)  1024            2,084,000
    gaitset-flow      GaitSet  flow (2 ch)  62 x 128 = 7936 1,579,584
    gaitset-gray      GaitSet  gray (1 ch)  62 x 128 = 7936 1,578,784
    setnet-flow       SetNet   flow (2 ch)  16 x 128 = 2048 see ``python -m training.models``
    setnet-gray       SetNet   gray (1 ch)  16 x 128 = 2048 (plain conv backbone, widths option)
    gaitbase-flow     SetNet   flow (2 ch)  16 x 128 = 2048 (residual GaitBase-style backbone)
    gaitbase-gray     SetNet   gray (1 ch)  16 x 128 = 2048

The set networks (``setnet``) are the default family: whole walks as sets of frames, horizontal
strips with their own maps and a BN neck (``training.models.setnet``). They take ``widths``,
``n_strips``, ``strip_dim`` (or ``embedding_dim`` = n_strips x strip_dim), ``input_width``
(the centre columns kept, 44 of 64 as OpenGait) and ``downscale`` (2: 32 x 22 input).

Keyword arguments: all models take ``n_classes`` (default 0) and ``in_channels`` (to
override the modality); 3D-CNNs take ``embedding_dim`` (1024 TUM-GAID, 2048 CASIA-B) and
``dropout`` (0 master, 0.4 students); GaitSet takes ``strip_dim`` (128) or equivalently
``embedding_dim`` = 62 * strip_dim. Layer tables are in ``c3d`` and ``gaitset``;
``python -m training.models`` prints the counts.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from training.models.c3d import C3DNet, master3d, student3d
from training.models.gaitset import N_STRIPS, GaitSet
from training.models.setnet import SetNet

__all__ = ["MODEL_NAMES", "build_model", "count_parameters", "C3DNet", "GaitSet", "SetNet"]


def _gaitset(default_channels: int) -> Callable[..., GaitSet]:
    def build(in_channels: int = default_channels, strip_dim: int | None = None,
              embedding_dim: int | None = None, n_classes: int = 0) -> GaitSet:
        if embedding_dim is not None:
            if embedding_dim % N_STRIPS or (strip_dim and strip_dim * N_STRIPS != embedding_dim):
                raise ValueError(f"GaitSet embedding_dim must be {N_STRIPS} x strip_dim, "
                                 f"got embedding_dim={embedding_dim}, strip_dim={strip_dim}")
            strip_dim = embedding_dim // N_STRIPS
        return GaitSet(in_channels, strip_dim or 128, n_classes)
    return build


def _setnet(default_channels: int, backbone: str, widths: tuple[int, ...]) -> Callable[..., SetNet]:
    def build(in_channels: int = default_channels, embedding_dim: int | None = None, n_strips: int = 16,
              strip_dim: int | None = None, n_classes: int = 0, **options: Any) -> SetNet:
        if embedding_dim is not None:
            if embedding_dim % n_strips or (strip_dim and strip_dim * n_strips != embedding_dim):
                raise ValueError(f"set network embedding_dim must be n_strips ({n_strips}) x strip_dim, "
                                 f"got embedding_dim={embedding_dim}, strip_dim={strip_dim}")
            strip_dim = embedding_dim // n_strips
        options.setdefault("widths", widths)
        return SetNet(in_channels, backbone, n_strips=n_strips, strip_dim=strip_dim or 128,
                      n_classes=n_classes, **options)
    return build


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "master3d": master3d,
    "student3d-large": lambda **kw: student3d("large", **kw),
    "student3d-medium": lambda **kw: student3d("medium", **kw),
    "student3d-small": lambda **kw: student3d("small", **kw),
    "gaitset-flow": _gaitset(2),
    "gaitset-gray": _gaitset(1),
    "setnet-flow": _setnet(2, "plain", (16, 32, 64)),
    "setnet-gray": _setnet(1, "plain", (16, 32, 64)),
    "gaitbase-flow": _setnet(2, "residual", (32, 64, 128, 128)),
    "gaitbase-gray": _setnet(1, "residual", (32, 64, 128, 128)),
}
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; an unknown name or keyword is a clear error."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    try:
        return _BUILDERS[name](**kwargs)
    except TypeError as error:
        raise ValueError(f"bad arguments for model {name!r}: {error}") from None


def count_parameters(model: nn.Module) -> int:
    """Number of parameters, frozen ones included: what the model holds and ships (a frozen
    master counts in full; the model tables above count this way)."""
    return sum(p.numel() for p in model.parameters())
