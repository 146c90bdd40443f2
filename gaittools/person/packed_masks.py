"""Binary masks of whole sequences, bit-packed, and the morphology localisation needs on them.

Layout: ``packed[j, y, t]`` (uint32) holds columns 32j..32j+31 of row y of frame t, column x
in bit x % 32; bits past the mask's width are 0. Why: a 120 x 160 mask is 5 words a row, so a
morphological operation is a few dozen whole-sequence numpy operations on 1/8 of the bytes of
a bool mask, instead of one OpenCV call per frame (OpenCV's per-frame non-rectangular kernels
were the dearest step of localisation), and per-column questions (occupied? how many pixels?
sum of x?) are popcounts. Frames come last so that every shift, by a column (across words) or
by a row, is one operation over long contiguous runs of memory; 32-bit words keep the padding
small (a 160-wide frame is 5 words, not 3 x 64 = 192 bits). Dilation and erosion equal
OpenCV's ``dilate``/``erode`` with the same kernel and its default border (tested).
"""

from __future__ import annotations

import numpy as np

WORD = np.uint32
BITS = 32
ONE = WORD(1)
LOW_BITS = np.array([(1 << k) - 1 for k in range(BITS + 1)], WORD)  # [k]: bits 0..k-1
#: BIT_PLANES[k]: the bits i of a word whose index i has bit k set (weights for sums of x).
BIT_PLANES = np.array([sum(1 << i for i in range(BITS) if i >> k & 1) for k in range(5)], WORD)


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """bool (T, h, w) -> uint32 (ceil(w / 32), h, T); bits past w are 0."""
    T, h, w = masks.shape
    packed = np.zeros((T, h, -(-w // BITS) * 4), np.uint8)
    packed[..., :-(-w // 8)] = np.packbits(masks, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed.view(WORD).transpose(2, 1, 0))


def unpack_masks(packed: np.ndarray, w: int) -> np.ndarray:
    """The bool (T, h, w) masks of ``pack_masks``."""
    rows = np.ascontiguousarray(packed.transpose(2, 1, 0))
    return np.unpackbits(rows.view(np.uint8), axis=-1, count=w, bitorder="little").view(bool)


def column_masks(lo: np.ndarray, hi: np.ndarray, words: int) -> np.ndarray:
    """uint32 (words, N): bits of columns lo..hi-1 (per item of ``lo``/``hi``)."""
    base = BITS * np.arange(words)[:, None]
    lo = np.clip(lo[None] - base, 0, BITS)
    hi = np.clip(hi[None] - base, 0, BITS)
    return LOW_BITS[np.maximum(hi, lo)] & ~LOW_BITS[lo]


def _widen(packed: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Dilation by 3 columns (x-1, x, x+1); outside the frame counts as empty."""
    out = packed << ONE
    out |= packed >> ONE
    out |= packed
    out[1:] |= packed[:-1] >> WORD(BITS - 1)  # bits crossing into the next word
    out[:-1] |= packed[1:] << WORD(BITS - 1)
    out &= valid  # bits pushed past the last column
    return out


def _heighten(packed: np.ndarray, ry: int) -> np.ndarray:
    """Dilation by 2 ry + 1 rows of the same frame; outside the frame counts as empty."""
    if ry == 0:
        return packed
    out = packed.copy()
    for s in range(1, ry + 1):
        out[:, s:] |= packed[:, :-s]
        out[:, :-s] |= packed[:, s:]
    return out


def dilate(packed: np.ndarray, kernel: tuple[tuple[int, int], ...], valid: np.ndarray) -> np.ndarray:
    """Dilation by a kernel given as a union of centred rectangles (rx, ry), rx decreasing
    and ry increasing. Written Horner-like, V_a(H_a x | V_b(H_b x | V_c(H_c x))), so that
    widenings are shared and each row shift is done once."""
    rxs, rys = [k[0] for k in kernel], [k[1] for k in kernel]
    assert rxs == sorted(rxs, reverse=True) and rys == sorted(rys), kernel
    widened = [packed]
    for _ in range(rxs[0]):
        widened.append(_widen(widened[-1], valid))
    out, below = None, 0
    for rx, ry in reversed(kernel):
        if out is not None:
            out = _heighten(out, below - ry) | widened[rx]
        else:
            out = widened[rx]
        below = ry
    return _heighten(out, below)


def erode(packed: np.ndarray, kernel: tuple[tuple[int, int], ...], valid: np.ndarray) -> np.ndarray:
    """Erosion with outside the frame counting as foreground (OpenCV's default border), as
    the complement of the dilation of the complement."""
    out = dilate(~packed & valid, kernel, valid)
    np.invert(out, out=out)
    return out & valid
