"""Median of an odd number of same-shaped arrays by forgetful selection (min/max only).

A 5x5 median of every pixel needs the 13th of 25 values; sorting them is wasteful. Forgetful
selection keeps n//2 + 2 candidates, repeatedly drops the smallest and the largest (neither
can be the median) and takes in the next value, until three remain; the middle one is the
median. It uses only elementwise min and max, so the same code drives torch tensors on the
CPU and Triton blocks inside a GPU kernel (``fused.py``).
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def median_select(values: Sequence[T], minimum: Callable[[T, T], T],
                  maximum: Callable[[T, T], T]) -> T:
    """Elementwise median of an odd-length sequence of arrays."""
    n = len(values)
    if n % 2 == 0:
        raise ValueError(f"median_select needs an odd number of values, got {n}")
    if n == 1:
        return values[0]
    keep = n // 2 + 2
    work = list(values[:keep])
    pending = list(values[keep:])
    while True:
        work = _drop_min_max(work, minimum, maximum)
        if pending:
            work.append(pending.pop(0))
        if len(work) == 1:
            return work[0]


def _drop_min_max(work: list, minimum, maximum) -> list:
    """Move the minimum to the front and the maximum to the back, and drop both."""
    for i in range(1, len(work)):
        work[0], work[i] = minimum(work[0], work[i]), maximum(work[0], work[i])
    last = len(work) - 1
    for i in range(1, last):
        work[i], work[last] = minimum(work[i], work[last]), maximum(work[i], work[last])
    return work[1:last]
