"""Loading OpenGait silhouette pickles without letting a pickle run code.

A pickle names the functions that rebuild its objects, and ``pickle.load`` calls them: a file
from the internet can name ``os.system``. ``load_array`` uses an unpickler whose
``find_class`` admits only what numpy needs to rebuild an ndarray (its reconstructor, the
ndarray and dtype classes, and the buffer helper of protocol 5), in both the numpy 1 and
numpy 2 module spellings; anything else is refused with ``UnsafePickle`` naming the file and
the global it asked for. The result must be a numpy array.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

#: (module, name) pairs a numpy-array pickle may reference, and nothing else.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
) | frozenset(
    (module, name)
    for module in ("numpy.core.numeric", "numpy._core.numeric")
    for name in ("_frombuffer",)
) | frozenset({("numpy", "ndarray"), ("numpy", "dtype"),
             # protocol 2 stores array bytes as latin-1 text re-encoded by this pure function
             ("_codecs", "encode")})


class UnsafePickle(pickle.UnpicklingError):
    """A pickle that asks for something other than numpy arrays."""


class PickleError(ValueError):
    """A pickle that is unreadable or holds something other than what was expected."""


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickle(f"{self.source}: refused: the pickle asks for {module}.{name}, "
                           f"only numpy arrays are admitted")


def loads_array(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Unpickle bytes that must hold one numpy array."""
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), source).load()
    except UnsafePickle:
        raise
    except Exception as exc:  # truncated, not a pickle, bad protocol...
        raise PickleError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, np.ndarray):
        raise PickleError(f"{source}: holds a {type(obj).__name__}, not a numpy array")
    return obj


def load_array(path: str | os.PathLike[str]) -> np.ndarray:
    """Load a pickle file that must hold one numpy array (refusing anything else)."""
    path = Path(path)
    if not path.is_file():
        raise PickleError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise PickleError(f"{path}: empty file (0 bytes)")
    return loads_array(path.read_bytes(), str(path))


def load_silhouettes(path: str | os.PathLike[str], notes: list[str] | None = None) -> np.ndarray:
    """An OpenGait pickle: uint8 (T, h, w) silhouettes with at least one frame.

    Other dtypes are converted when their meaning is clear, and the conversion is said in
    ``notes`` (extract-frames lists it as the sequence's warning): bool -> 0/255; floats in
    [0, 1] (some OpenGait exports store silhouettes as x / 255) -> x * 255, rounded, because
    cast as they are they would be 0/1, nearly black crops; any number in [0, 255] -> uint8.
    """
    arr = load_array(path)
    if arr.ndim != 3:
        raise PickleError(f"{path}: expected silhouettes (T, h, w), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise PickleError(f"{path}: no frames (shape {arr.shape})")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if not np.issubdtype(arr.dtype, np.number) or arr.min() < 0 or arr.max() > 255:
        raise PickleError(f"{path}: expected uint8 silhouettes (0-255), got {arr.dtype} "
                          f"in [{arr.min()}, {arr.max()}]" if np.issubdtype(arr.dtype, np.number)
                          else f"{path}: expected uint8 silhouettes, got {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and arr.max() <= 1.0:
        if notes is not None:
            notes.append(f"{arr.dtype} silhouettes in [0, 1] scaled by 255 to uint8 0-255")
        return np.rint(arr * 255.0).astype(np.uint8)
    return np.rint(arr).astype(np.uint8)


def square_silhouettes(sil: np.ndarray) -> np.ndarray:
    """The inverse of the centre cut: (T, h, w) with w < h padded with zero columns on both
    sides to (T, h, h), so an imported 64 x 44 pickle is not stretched into a square."""
    T, h, w = sil.shape
    if w >= h:
        return sil
    left = (h - w) // 2
    return np.pad(sil, ((0, 0), (0, 0), (left, h - w - left)))
