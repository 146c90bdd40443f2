"""Load an exported GaitCopy student (a *deployment bundle*) without the training code.

A bundle is a directory holding an exported network and ``bundle.json``, which says how its
input is made and which weights made it; the format is defined, written and parsed by
``gaittools.deploy.bundle``. This module runs the network (ONNX Runtime, torch.export, TensorRT).

The exported graph maps a float32 (N, C, T, I, I) batch (I = input_size), already scaled by the
normalisation, to (N, d) float32 *L2-normalised* signatures: normalising inside the graph means
every backend returns directly comparable vectors and no consumer can forget it.
:class:`SignatureModel` hides all of that behind ``model(uint8 clips (N, T, S, S))`` (a
student; a flow master's bundle takes float flow (N, T, 2, S, S) in crop pixels instead, for
benchmarks and evaluation only: ``gaittools identify`` is flow-free and refuses it).

A clip bundle takes T = its clip length. A walk bundle (a set network, ``bundle.unit``
"walk") takes N walks of any T frames from 1 to its ``max_frames``, each walk one set, and
:meth:`SignatureModel.walk` embeds one walk of any length.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from gaittools.deploy.bundle import (BUNDLE_FILE, BUNDLE_FORMAT, BUNDLE_VERSION, FORMATS, MODEL_FILES, Bundle,
                              BundleError, read_bundle, sha256_of, write_bundle_meta)
from gaittools.deploy.clips import spread_indices
from gaittools.deploy.net_input import NORMALISATION, fit_to_input, normalise_gray

__all__ = ["BUNDLE_FILE", "BUNDLE_FORMAT", "BUNDLE_VERSION", "FORMATS", "MODEL_FILES", "NORMALISATION", "Bundle",
           "BundleError", "SignatureModel", "load_signature_model", "model_from_bundle", "normalise_clips",
           "read_bundle", "sha256_of", "write_bundle_meta"]

INSTALL_TENSORRT = (
    "TensorRT export/inference needs torch-tensorrt and a CUDA build of torch with a GPU: "
    "`pip install gaittools[tensorrt]` (pip install torch-tensorrt) with a CUDA torch wheel "
    "from https://download.pytorch.org/whl/ matching your CUDA version"
)
INSTALL_ONNXRUNTIME = "ONNX models need onnxruntime: `pip install gaittools[onnx]` (or onnxruntime-gpu)"


def normalise_clips(clips: np.ndarray, normalisation: dict[str, Any] | None = None,
                    input_size: int | None = None) -> np.ndarray:
    """Raw clips -> float32 network input, exactly as training's evaluation path makes it.

    gray uint8 (N, T, S, S) -> (N, 1, T, I, I) scaled x/255 - 0.5; flow (N, T, 2, S, S) in crop
    pixels -> (N, 2, T, I, I) times the bundle's flow scale. I = ``input_size`` (default S),
    reached by ``fit_to_input`` (the rule shared with training).
    """
    norm = normalisation or NORMALISATION
    size = input_size or clips.shape[-1]
    if clips.ndim == 4:
        return normalise_gray(fit_to_input(clips, size), norm)[:, None]
    if clips.ndim == 5 and clips.shape[2] == 2:
        scale, offset = np.float32(norm["scale"]), np.float32(norm["offset"])
        fitted = np.asarray(fit_to_input(clips, size, flow=True), np.float32)
        return np.ascontiguousarray(fitted.transpose(0, 2, 1, 3, 4)) * scale + offset
    raise ValueError(f"clips must be gray (N, T, S, S) or flow (N, T, 2, S, S), got shape {clips.shape}")


class SignatureModel:
    """One exported student behind one call: ``model(uint8 (N, T, S, S)) -> (N, d)`` unit vectors.

    Batches are cut to ``batch_size`` (or padded to a fixed-batch export's size) so callers can
    pass any number of clips; a walk bundle's batches also hold at most ``max_frames`` frames
    in all, which bounds memory whatever the walks' length.
    """

    def __init__(self, bundle: Bundle, runner: Callable[[np.ndarray], np.ndarray], device: str,
                 batch_size: int = 64) -> None:
        self.bundle = bundle
        self.device = device
        self._runner = runner
        self.batch_size = bundle.fixed_batch or batch_size

    @property
    def is_walk(self) -> bool:
        return self.bundle.is_walk

    @property
    def clip_len(self) -> int:
        return self.bundle.clip_len

    @property
    def clip_step(self) -> int:
        return self.bundle.clip_step

    @property
    def max_frames(self) -> int:
        return self.bundle.max_frames

    @property
    def crop_size(self) -> int:
        return self.bundle.crop_size

    @property
    def input_size(self) -> int:
        return self.bundle.input_size

    @property
    def fingerprint(self) -> str:
        return self.bundle.fingerprint

    @property
    def dim(self) -> int:
        return self.bundle.dim

    @property
    def backend(self) -> str:
        return self.bundle.format

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        clips = np.asarray(clips)
        self._check_shape(clips)
        if len(clips) == 0:
            return np.zeros((0, self.dim), np.float32)
        per_call = self._per_call(clips.shape[1])
        out = []
        for begin in range(0, len(clips), per_call):
            chunk = normalise_clips(clips[begin:begin + per_call], self.bundle.meta.get("normalisation"),
                                    self.bundle.input_size)
            n = len(chunk)
            if self.bundle.fixed_batch and n < self.bundle.fixed_batch:
                pad = np.zeros((self.bundle.fixed_batch - n, *chunk.shape[1:]), np.float32)
                chunk = np.concatenate([chunk, pad])
            out.append(np.asarray(self._runner(chunk), dtype=np.float32)[:n])
        return np.concatenate(out)

    def walk(self, frames: np.ndarray) -> np.ndarray:
        """(d,) signature of ONE walk given as all its frames (T, S, S) (flow: (T, 2, S, S)),
        embedded as one set; a walk longer than ``max_frames`` keeps that many frames spread
        over all of it (``gaittools.deploy.clips.spread_indices`` says why)."""
        if not self.is_walk:
            raise ValueError(f"{self.bundle.root}: a {self.bundle.unit} bundle; only a walk bundle embeds a walk "
                             "as one set (a clip bundle's walk is the mean of its clips' signatures)")
        frames = np.asarray(frames)
        return self(frames[spread_indices(len(frames), self.max_frames)][None])[0]

    def _check_shape(self, clips: np.ndarray) -> None:
        """A clip bundle takes exactly its clip length, a walk bundle 1..max_frames frames."""
        s = self.crop_size
        frame = (s, s) if self.bundle.modality == "gray" else (2, s, s)
        t = clips.shape[1] if clips.ndim == len(frame) + 2 else -1
        fits = 1 <= t <= self.max_frames if self.is_walk else t == self.clip_len
        if fits and tuple(clips.shape[2:]) == frame:
            return
        frames = f"T in 1..{self.max_frames}" if self.is_walk else str(self.clip_len)
        raise ValueError(f"{'walks' if self.is_walk else 'clips'} must be (N, {frames}, "
                         f"{', '.join(map(str, frame))}) for {self.bundle.root}, got {clips.shape}")

    def _per_call(self, frames: int) -> int:
        """Inputs per network call: the batch size, and for walks at most max_frames frames in all."""
        if self.bundle.fixed_batch or not self.is_walk:
            return self.batch_size
        return max(1, min(self.batch_size, self.max_frames // frames))


def load_signature_model(path: str | os.PathLike[str], device: str = "auto",
                         batch_size: int = 64) -> SignatureModel:
    """Load a bundle on ``device`` ("cpu", "cuda", "cuda:N" or "auto" = CUDA when usable)."""
    return model_from_bundle(read_bundle(path), device, batch_size)


def model_from_bundle(bundle: Bundle, device: str = "auto", batch_size: int = 64) -> SignatureModel:
    """The model of an already parsed bundle (the exporter uses it before the status is 'ok')."""
    loader = {"onnx": _onnx_runner, "exported-program": _torch_runner, "tensorrt": _tensorrt_runner}
    runner, resolved = loader[bundle.format](bundle, device)
    return SignatureModel(bundle, runner, resolved, batch_size)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _onnx_runner(bundle: Bundle, device: str) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BundleError(f"{bundle.model_path}: {INSTALL_ONNXRUNTIME}") from exc
    available = ort.get_available_providers()
    want_cuda = device.startswith("cuda") or (device == "auto" and "CUDAExecutionProvider" in available)
    if want_cuda and "CUDAExecutionProvider" not in available:
        raise BundleError(f"{bundle.model_path}: device {device!r} asked for, but this onnxruntime has no "
                          "CUDA provider (`pip install onnxruntime-gpu`), use --device cpu")
    providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if want_cuda
                 else ["CPUExecutionProvider"])
    session = ort.InferenceSession(str(bundle.model_path), providers=providers)
    input_name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: x})[0]

    return run, "cuda" if want_cuda else "cpu"


def _torch_device(device: str) -> str:
    if device == "auto":
        return "cuda" if _cuda_available() else "cpu"
    if device.startswith("cuda") and not _cuda_available():
        raise BundleError(f"device {device!r} asked for, but torch sees no CUDA GPU; use --device cpu")
    return device


def _program_runner(program: Any, device: str, bundle: Bundle,
                    move: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """Run an ExportedProgram on ``device``.

    ``move``: place it with torch.export's own pass (``move_to_device_pass``), which also moves
    the tensors the graph created at trace time (GaitSet's), where ``module().to()`` moves only
    parameters and buffers. A TensorRT program is not moved: its engines belong to the GPU
    they were built on. Any failure is a BundleError naming the bundle."""
    import torch

    try:
        if move:
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, device)
        module = program.module()
    except Exception as exc:  # noqa: BLE001 - one clear message, nothing swallowed
        raise BundleError(f"{bundle.model_path}: cannot place the exported program on {device} "
                          f"({type(exc).__name__}: {exc})") from exc

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = module(torch.from_numpy(x).to(device))
        return out.float().cpu().numpy()

    return run


def _torch_runner(bundle: Bundle, device: str) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    import torch

    resolved = _torch_device(device)
    program = torch.export.load(str(bundle.model_path))
    return _program_runner(program, resolved, bundle), resolved


def _tensorrt_runner(bundle: Bundle, device: str) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    if device == "cpu":
        raise BundleError(f"{bundle.model_path}: a TensorRT bundle runs on a CUDA GPU only; "
                          "export ONNX or exported-program for CPU inference")
    try:
        import torch
        import torch_tensorrt  # noqa: F401 - registers the tensorrt engine ops the program calls
    except ImportError as exc:
        raise BundleError(f"{bundle.model_path}: {INSTALL_TENSORRT}") from exc
    if not torch.cuda.is_available():
        raise BundleError(f"{bundle.model_path}: no CUDA GPU visible. {INSTALL_TENSORRT}")
    resolved = "cuda" if device == "auto" else device
    program = torch.export.load(str(bundle.model_path))
    return _program_runner(program, resolved, bundle, move=False), resolved
