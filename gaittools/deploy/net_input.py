"""Stored crops -> network input: the ONE rule that training and deployment both apply.

The store keeps S x S crops (default S = 64); a network may want another side, ``input_size``
(GaitCopy's 3D-CNNs: 60, the CPU demos: 52). Training (``training.data.augment``, which
serves the training steps and the evaluation embeddings) and deployment
(``gaittools.deploy.runtime.SignatureModel``, which serves export parity, ``enroll`` and ``identify``)
both call :func:`fit_to_input` and :func:`normalise_gray`, so for the same crops they give the
same network input, bit for bit (``tests/test_net_input.py``).

The rule:

- ``input_size < S``: the CENTRE ``input_size`` x ``input_size`` window is cut, no resampling
  (the authors cut their 60 x 60 inputs from larger frames). When ``S - input_size`` is odd the
  extra pixel goes to the right/bottom margin: offset ``(S - input_size) // 2``. Pixels keep
  their scale, so flow displacements keep theirs.
- ``input_size == S``: unchanged.
- ``input_size > S``: bilinear resize with pixel centres aligned (``align_corners=False``, edge
  pixels repeated), computed in float32; flow displacements (``flow=True``) are multiplied by
  ``input_size / S``, since a magnified image has magnified motion.

Arrays may be numpy or torch (any device): the same index arithmetic runs on both, which is
what makes the two paths agree exactly. The spatial axes are the last two.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

#: Gray crops (uint8) -> network input: ``x * scale + offset``, i.e. x / 255 - 0.5.
NORMALISATION: dict[str, Any] = {"scale": 1.0 / 255.0, "offset": -0.5, "formula": "x / 255 - 0.5"}

Array = TypeVar("Array")


def cut_offset(size: int, input_size: int) -> int:
    """Where the centre window of a centre cut starts (see the module docstring)."""
    return (size - input_size) // 2


def fit_to_input(clips: Array, input_size: int, flow: bool = False) -> Array:
    """Crops (..., S, S) -> (..., input_size, input_size) by the rule in the module docstring.

    A cut returns a view with the input's dtype; a resize returns float32. ``flow=True`` marks
    displacement fields (in crop pixels), which a resize scales.
    """
    size = int(clips.shape[-1])
    if clips.shape[-2] != size:
        raise ValueError(f"crops must be square, got spatial shape {tuple(clips.shape[-2:])}")
    if input_size < 1:
        raise ValueError(f"input_size must be positive, got {input_size}")
    if input_size == size:
        return clips
    if input_size < size:
        o = cut_offset(size, input_size)
        return clips[..., o:o + input_size, o:o + input_size]
    return _upsample(clips, input_size, input_size / size if flow else 1.0)


def normalise_gray(x: Array, normalisation: dict[str, Any] | None = None) -> Array:
    """Gray values (0..255, any real dtype) -> float32 network values, ``x * scale + offset``."""
    norm = normalisation or NORMALISATION
    scale, offset = float(np.float32(norm["scale"])), float(np.float32(norm["offset"]))
    if _is_torch(x):
        return x.float() * scale + offset
    return np.asarray(x, np.float32) * np.float32(scale) + np.float32(offset)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _taps(size: int, input_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps along one axis: source indices i0, i1 and the weight of i1."""
    src = (np.arange(input_size, dtype=np.float64) + 0.5) * (size / input_size) - 0.5
    src = np.clip(src, 0, size - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, size - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _upsample(clips: Array, input_size: int, factor: float) -> Array:
    i0, i1, w = _taps(int(clips.shape[-1]), input_size)
    if _is_torch(clips):
        import torch

        x = clips.float()
        i0, i1 = torch.from_numpy(i0).to(x.device), torch.from_numpy(i1).to(x.device)
        w = torch.from_numpy(w).to(x.device)
    else:
        x = np.asarray(clips, np.float32)
    rows = x[..., i0, :] * (1 - w)[:, None] + x[..., i1, :] * w[:, None]
    out = rows[..., i0] * (1 - w) + rows[..., i1] * w
    return out * factor if factor != 1.0 else out
