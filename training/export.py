"""``train-copy export``: a run's model -> a deployment bundle (TensorRT, ONNX or torch.export).

What is exported: only the signature. The graph maps float32 clips (N, 1, T, I, I), already
fitted to the run's input size I and scaled x/255 - 0.5 (``gaittools.deploy.net_input``, which
training applies too), to (N, d) float32 L2-normalised signatures (``SignatureNet``): logits are a
training device, and normalising inside the graph means no deployment can forget it. With
``--fp16`` the weights and arithmetic are half precision but the graph casts at its edges, so
every bundle has the same float32 interface.

Units. A run's ``data.unit`` decides what one input is, and the bundle records it (``unit``):

- ``clip`` (the 3D family): T = the run's clip length, a fixed axis;
- ``walk`` (the set networks): a whole walk as one set, so T is a DYNAMIC axis, 1 to
  ``--max-frames`` (default ``MAX_WALK_FRAMES``), in every format: one exported file serves
  walks of every length. Parity is checked on walks of several lengths (``PARITY_FRAMES``: one
  frame, a few, the training set size, a long walk) and fails if any length differs.

``--model master`` exports a run's flow master the same way (input float32 (N, 2, T, S, S) flow
times the run's ``flow_scale``; parity on the store's flow clips): useful for benchmarks and
evaluation, refused by ``gaittools identify``, which is flow-free.

Formats (file inside the bundle, described by ``gaittools.deploy.bundle``, which owns the format;
loaders in ``gaittools.deploy.runtime``, which needs no training code):

- ``onnx`` (``model.onnx``): torch.onnx's dynamo exporter (onnxscript), falling back to the
  TorchScript exporter if it fails; batch dimension dynamic (or fixed with ``--batch N``).
  Runs on ONNX Runtime (CPU, or CUDA with onnxruntime-gpu).
- ``exported-program`` (``model.pt2``): ``torch.export.export`` + ``torch.export.save``;
  reloads with ``torch.export.load`` on CPU or GPU.
- ``tensorrt`` (``model.trt.ep``): torch-tensorrt's dynamo path (``torch_tensorrt.dynamo.compile``
  on the exported program) saved as an ExportedProgram that ``torch.export.load`` reloads
  once ``torch_tensorrt`` is imported. Optional extra; needs CUDA. Its dynamic axes become an
  optimisation profile (min, opt, max shapes); a walk bundle's is built for one walk per call
  (batch 1, frames 1..max), since a profile is a box and 1,024 walks x max frames would not fit
  a GPU's memory.

Parity check after every export: the bundle is reloaded through ``gaittools.deploy.runtime`` (the
same code ``gaittools identify`` uses) and its signatures are compared with the eager fp32
model on real clips from the run's store (the split's held-out roles first; random clips only
when the store is absent, and the bundle says so). Pass: minimum cosine similarity >= 0.999
(fp32) or >= ``FP16_BOUND`` (fp16). The numbers are printed and stored in ``bundle.json``. A
failed check exits non-zero, deletes the model file and leaves the description, marked
``"status": "failed"``, in ``<name>.failed/``; a previous good export of the same name is kept.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import click
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gaittools.deploy import runtime as deploy
from gaittools.deploy.bundle import BUNDLE_FILE, MODEL_FILES, Bundle, describe, read_bundle, write_bundle_meta
from gaittools.deploy.clips import spread_indices
from training.model_build import model_from_run
from training.models import count_parameters
from training.runs import RunError

FP32_BOUND = 0.999
#: fp16 weights/activations (fp32 I/O). Measured on CPU (ONNX Runtime and torch.export,
#: student3d-small, real CASIA-B silhouette clips): min cosine 0.9999999, max |diff| 5e-5 -- but
#: with untrained weights; 0.995 is a stated bound that still fails a broken export (wrong
#: weights give cosines far below it) and leaves room for trained nets and TensorRT's kernels.
FP16_BOUND = 0.995
PARITY_CLIPS = 16
MAX_DYNAMIC_BATCH = 1024
#: A walk bundle's default bound on frames per input: about 20 s at 25 fps, many gait cycles.
#: Longer walks keep this many frames spread over the walk (``gaittools.deploy.clips``).
MAX_WALK_FRAMES = 512
#: Walk lengths of the parity check: a single frame (the smallest set), a few frames, the usual
#: training set size, and a whole CASIA-B walk (about 70-130 frames).
PARITY_FRAMES = (1, 7, 30, 91)


class ExportError(RuntimeError):
    """An export that failed (tool missing, export error, or failed parity)."""


class SignatureNet(nn.Module):
    """The deployed function: normalised clips -> L2-normalised signature (see module docstring)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.model = model.to(dtype)
        self.dtype = dtype

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        embedding = self.model(clips.to(self.dtype))["embedding"]
        return F.normalize(embedding.float(), dim=1)


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 over the embedding weights (names, shapes, float32 bytes): one per checkpoint."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------- exporters
def is_walk(clip: dict[str, Any]) -> bool:
    """Whether the settings describe a set network fed whole walks (``clip["unit"]`` "walk")."""
    return clip.get("unit", "clip") == "walk"


def _example(batch: int, channels: int, clip_len: int, size: int, device: str) -> torch.Tensor:
    return torch.zeros(batch, channels, clip_len, size, size, device=device).uniform_(-0.5, 0.5)


def _example_frames(clip: dict[str, Any], max_frames: int) -> int:
    """T of the tracing example: the clip length, or a walk's training set size. Never 1 for a
    walk: torch.export specialises an axis traced at size 1 and would refuse a dynamic one."""
    if not is_walk(clip):
        return int(clip["length"])
    return max(2, min(int(clip.get("frames") or 30), max_frames))


def _dynamic_shapes(batch: int | None, max_frames: int | None = None) -> dict[str, dict[int, Any]] | None:
    """torch.export's dynamic_shapes: batch (axis 0) unless fixed, frames (axis 2) for walks."""
    axes: dict[int, Any] = {}
    if batch is None:
        axes[0] = torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)
    if max_frames is not None:
        axes[2] = torch.export.Dim("frames", min=1, max=max_frames)
    return {"clips": axes} if axes else None


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence what torch's exporters say about things that do not concern us: "torchvision is
    not installed. Skipping torchvision::nms" (4 lines: we export no torchvision op) and pytree's
    FutureWarning about ``LeafSpec`` (torch's own deprecation, raised inside torch.export)."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    no_torchvision = _DropMessages("torchvision is not installed")  # a filter: torch resets levels
    registration.addFilter(no_torchvision)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        registration.removeFilter(no_torchvision)


class _DropMessages(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def export_onnx(net: nn.Module, example: torch.Tensor, path: Path, batch: int | None, opset: int = 18,
                max_frames: int | None = None) -> str:
    """Write ``path``; returns which torch.onnx exporter produced it. ``max_frames``: the frame
    axis is dynamic (a walk bundle; ONNX records no bound, ``SignatureModel`` keeps it)."""
    try:
        torch.onnx.export(net, (example,), str(path), dynamo=True, external_data=False,
                          input_names=["clips"], output_names=["signature"], opset_version=opset,
                          dynamic_shapes=_dynamic_shapes(batch, max_frames), verbose=False)
        return "torch.onnx (dynamo)"
    except Exception as dynamo_error:  # noqa: BLE001 - fall back to the other exporter, say why
        path.unlink(missing_ok=True)
        click.echo(f"export: the dynamo ONNX exporter failed ({type(dynamo_error).__name__}: "
                   f"{dynamo_error}); trying the TorchScript exporter", err=True)
    axes = _onnx_axes(batch, max_frames)
    torch.onnx.export(net, (example,), str(path), dynamo=False, input_names=["clips"],
                      output_names=["signature"], opset_version=opset, dynamic_axes=axes)
    return "torch.onnx (torchscript)"


def _onnx_axes(batch: int | None, max_frames: int | None) -> dict[str, dict[int, str]] | None:
    """The TorchScript exporter's dynamic_axes: the same axes as ``_dynamic_shapes``, by name."""
    clips = ({} if batch is not None else {0: "batch"}) | ({2: "frames"} if max_frames is not None else {})
    if not clips:
        return None
    return {"clips": clips, "signature": {0: "batch"}} if batch is None else {"clips": clips}


def export_program(net: nn.Module, example: torch.Tensor, path: Path, batch: int | None,
                   max_frames: int | None = None) -> str:
    program = torch.export.export(net, (example,), dynamic_shapes=_dynamic_shapes(batch, max_frames))
    torch.export.save(program, str(path))
    return "torch.export"


def import_tensorrt() -> Any:
    """torch_tensorrt, or an ExportError that says what to install."""
    try:
        import torch_tensorrt
    except ImportError as exc:
        raise ExportError(deploy.INSTALL_TENSORRT) from exc
    if not torch.cuda.is_available():
        raise ExportError(f"no CUDA GPU visible to torch {torch.__version__}. {deploy.INSTALL_TENSORRT}")
    return torch_tensorrt


def export_tensorrt(net: nn.Module, example: torch.Tensor, path: Path, batch: int | None,
                    max_frames: int | None = None) -> str:
    """torch-tensorrt (>= 2.5) through its documented entry points: ``torch_tensorrt.compile``
    with ``ir="dynamo"``, then ``torch_tensorrt.save`` as an ExportedProgram.

    ``enabled_precisions`` is explicit: the graph's own dtype (``SignatureNet`` casts the
    weights), so an fp16 export builds fp16 kernels and an fp32 one never drops to fp16.
    Dynamic axes (batch unless fixed, frames up to ``max_frames`` for a walk) become the
    profile's (min, opt, max); the example's sizes are the optimum."""
    trt = import_tensorrt()
    dtype = getattr(net, "dtype", torch.float32)
    dynamic = _dynamic_shapes(batch, max_frames)
    if dynamic is None:
        spec = trt.Input(shape=tuple(example.shape), dtype=torch.float32)
    else:
        low, opt, high = _profile(tuple(example.shape), batch, max_frames)
        spec = trt.Input(min_shape=low, opt_shape=opt, max_shape=high, dtype=torch.float32)
    compiled = trt.compile(net, ir="dynamo", arg_inputs=[spec], enabled_precisions={dtype}, min_block_size=1)
    save_options: dict[str, Any] = {"dynamic_shapes": dynamic} if dynamic is not None else {}
    trt.save(compiled, str(path), output_format="exported_program", arg_inputs=[example], **save_options)
    return f"torch-tensorrt {getattr(trt, '__version__', '?')} (dynamo, {str(dtype).removeprefix('torch.')})"


def _profile(shape: tuple[int, ...], batch: int | None,
             max_frames: int | None) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """TensorRT's (min, opt, max) shapes of an (N, C, T, H, W) input: batch 1..MAX_DYNAMIC_BATCH
    (opt 64) unless fixed; frames 1..max_frames (opt: the example's T) for a walk."""
    _, channels, t, height, width = shape
    n = (1, min(64, MAX_DYNAMIC_BATCH), MAX_DYNAMIC_BATCH) if batch is None else (batch,) * 3
    f = (1, t, max_frames) if max_frames is not None else (t,) * 3
    return tuple((n[i], channels, f[i], height, width) for i in range(3))  # type: ignore[return-value]


#: format -> exporter(net, example, path, batch[, opset][, max_frames]) -> the tool's name, for bundle.json
EXPORTERS: dict[str, Callable[..., str]] = {
    "onnx": export_onnx,
    "exported-program": export_program,
    "tensorrt": export_tensorrt,
}


# ---------------------------------------------------------------------------- parity
#: Parity inputs: one array of raw clips (a clip bundle), or several arrays of raw walks, each of
#: one length (a walk bundle), e.g. (n, 1, S, S), (n, 7, S, S), (n, 30, S, S), (n, 91, S, S).
ParityInputs = np.ndarray | list[np.ndarray]


def parity(eager: nn.Module, model: deploy.SignatureModel, clips: ParityInputs, device: str) -> dict[str, Any]:
    """Cosine similarity of exported vs eager fp32 signatures on the same raw inputs; for a
    walk bundle also per walk length (``by_frames``), since a dynamic axis can be right at the
    traced length and wrong at another."""
    groups = [clips] if isinstance(clips, np.ndarray) else list(clips)
    rows = [_group_parity(eager, model, group, device) for group in groups if len(group)]
    if not rows:
        raise ExportError("no parity input: the check needs at least one clip or walk")
    cos = np.concatenate([r.pop("cosines") for r in rows])
    numbers = {"walks" if model.is_walk else "clips": int(len(cos)), "min_cosine": float(cos.min()),
               "mean_cosine": float(cos.mean()), "max_abs_diff": max(r["max_abs_diff"] for r in rows)}
    if model.is_walk:
        numbers["by_frames"] = rows
    return numbers


def _group_parity(eager: nn.Module, model: deploy.SignatureModel, inputs: np.ndarray,
                  device: str) -> dict[str, Any]:
    """Parity of inputs of one length: per-input cosines, the worst cosine and |difference|."""
    reference = eager_signatures(eager, inputs, device, model.bundle.meta["normalisation"], model.input_size)
    exported = model(inputs)
    cos = np.sum(reference * exported, axis=1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(exported, axis=1) + 1e-12)
    return {"frames": int(inputs.shape[1]), "walks": int(len(inputs)), "min_cosine": float(cos.min()),
            "max_abs_diff": float(np.abs(reference - exported).max()), "cosines": cos}


def eager_signatures(eager: nn.Module, clips: np.ndarray, device: str,
                     normalisation: dict[str, Any] | None = None, input_size: int | None = None,
                     batch: int = 32) -> np.ndarray:
    """Unit signatures of the eager model on raw clips (or walks of one length): the reference
    every export must match."""
    net = SignatureNet(eager).eval().to(device)
    out = []
    with torch.inference_mode():
        for begin in range(0, len(clips), batch):
            x = deploy.normalise_clips(clips[begin:begin + batch], normalisation, input_size)
            x = torch.from_numpy(x).to(device)
            out.append(net(x).cpu().numpy())
    return np.concatenate(out)


# ---------------------------------------------------------------------------- the bundle
def export_bundle(
    model: nn.Module,
    out_dir: str | os.PathLike[str],
    fmt: str,
    clips: ParityInputs,
    clips_source: str,
    *,
    model_name: str,
    role: str = "student",
    options: dict[str, Any] | None = None,
    clip: dict[str, Any],
    fp16: bool = False,
    batch: int | None = None,
    device: str | None = None,
    source: dict[str, Any] | None = None,
    opset: int = 18,
    flow_scale: float = 0.25,
    max_frames: int = MAX_WALK_FRAMES,
    log: Callable[[str], None] = click.echo,
) -> Bundle:
    """Export ``model`` (eval mode, any device) as a bundle at ``out_dir``; check parity.

    ``clip`` = {length, step, crop_size S, input_size (default S), crop_mode, working_height};
    a set network fed whole walks adds unit "walk" and frames (its training set size), and
    its frame axis is exported dynamic up to ``max_frames``.
    ``clips`` are the raw parity inputs: uint8 gray (N, T, S, S), or flow (N, T, 2, S, S) in crop
    pixels for a 2-channel master (``flow_scale`` = the training data path's multiplier); for
    walks, a list of such arrays, one per walk length (``ParityInputs``). Returns the
    checked bundle; raises ``ExportError`` (leaving ``<out_dir>.failed/``) when parity fails.
    The bundle is built in a staging directory and swapped in whole.
    """
    if fmt not in EXPORTERS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(EXPORTERS)}")
    device = device or ("cuda" if fmt == "tensorrt" else "cpu")
    if fmt == "tensorrt":
        import_tensorrt()
    if is_walk(clip) and max_frames < 2:
        raise ExportError(f"a walk bundle's frame axis is dynamic: max_frames must be >= 2, got {max_frames}")
    if is_walk(clip) and fmt == "tensorrt" and batch is None:
        batch = 1  # one walk per call: see the module docstring
        log("export: a TensorRT walk bundle takes one walk per call (batch 1); frames stay dynamic")
    out_dir = Path(out_dir)
    stage = out_dir.with_name(f".{out_dir.name}.staging")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    model = _copy_of(model).eval().to(device)  # the caller's model stays where it is
    try:
        meta = _export_into(stage, model, fmt, model_name, role, options, clip, fp16, batch, device,
                            source, opset, flow_scale, max_frames)
        meta["parity"] = _parity_of_stage(stage, meta, model, clips, clips_source, device, fp16)
    except Exception:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log(_parity_line(meta))
    if not meta["parity"]["passed"]:
        _keep_failed(stage, out_dir, meta)
    meta["status"] = "ok"
    write_bundle_meta(stage, meta)
    _swap_in(stage, out_dir)
    return read_bundle(out_dir)


def _export_into(stage: Path, model: nn.Module, fmt: str, model_name: str, role: str,
                 options: dict[str, Any] | None, clip: dict[str, Any], fp16: bool, batch: int | None,
                 device: str, source: dict[str, Any] | None, opset: int, flow_scale: float,
                 max_frames: int) -> dict[str, Any]:
    """Write the model file into ``stage``; returns its description (status 'pending')."""
    net = SignatureNet(_copy_of(model), torch.float16 if fp16 else torch.float32).eval().to(device)
    t, size = _example_frames(clip, max_frames), _input_size(clip)
    channels = int(getattr(model, "in_channels", 1))
    example = _example(batch or 2, channels, t, size, device)
    model_file = stage / MODEL_FILES[fmt]
    started = time.perf_counter()
    try:
        extra: dict[str, Any] = {"opset": opset} if fmt == "onnx" else {}
        if is_walk(clip):
            extra["max_frames"] = max_frames
        with _quiet_exporter():
            exporter = EXPORTERS[fmt](net, example, model_file, batch, **extra)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - one clear message for any exporter failure
        raise ExportError(f"{fmt} export of {model_name} failed: {type(exc).__name__}: {exc}") from exc
    meta = _meta(fmt, model_file, model, model_name, role, options, clip, fp16, batch, source, exporter,
                 time.perf_counter() - started, flow_scale, max_frames)
    write_bundle_meta(stage, meta)
    return meta


def _parity_of_stage(stage: Path, meta: dict[str, Any], model: nn.Module, clips: ParityInputs,
                     clips_source: str, device: str, fp16: bool) -> dict[str, Any]:
    """Reload the staged file through the deployment loader and compare with the eager model."""
    loaded = deploy.model_from_bundle(Bundle(stage, meta), device)
    bound = FP16_BOUND if fp16 else FP32_BOUND
    numbers = parity(model, loaded, clips, device)
    numbers.update(clips_source=clips_source, bound=bound, device=device,
                   passed=bool(numbers["min_cosine"] >= bound))
    return numbers


def _parity_line(meta: dict[str, Any]) -> str:
    n = meta["parity"]
    fp16 = ", fp16" if meta["precision"] == "fp16" else ""
    inputs = f"{n['clips']} clips" if "clips" in n else f"{n['walks']} walks"
    by_frames = "".join(f"\n  T = {r['frames']:>4} frames ({r['walks']} walks): min cosine {r['min_cosine']:.6f}, "
                        f"max |diff| {r['max_abs_diff']:.2e}" + ("" if r["min_cosine"] >= n["bound"] else "  FAIL")
                        for r in n.get("by_frames", []))
    return (f"parity ({meta['format']}{fp16}, {inputs} from {n['clips_source']}): "
            f"min cosine {n['min_cosine']:.6f}, mean {n['mean_cosine']:.6f}, max |diff| "
            f"{n['max_abs_diff']:.2e}, bound {n['bound']} -> {'PASS' if n['passed'] else 'FAIL'}{by_frames}")


def _failed_lengths(parity_numbers: dict[str, Any]) -> str:
    """' at T = 1, 91 frames' for the walk lengths below the bound ('' for clips)."""
    bad = [str(r["frames"]) for r in parity_numbers.get("by_frames", []) if r["min_cosine"] < parity_numbers["bound"]]
    return f" at T = {', '.join(bad)} frames" if bad else ""


def _keep_failed(stage: Path, out_dir: Path, meta: dict[str, Any]) -> None:
    """Delete the model, keep its description as ``<out_dir>.failed``, raise."""
    meta["status"] = "failed"
    (stage / meta["model_file"]).unlink(missing_ok=True)
    write_bundle_meta(stage, meta)
    failed = out_dir.with_name(f"{out_dir.name}.failed")
    shutil.rmtree(failed, ignore_errors=True)
    os.replace(stage, failed)
    raise ExportError(f"{out_dir}: parity check failed{_failed_lengths(meta['parity'])} (min cosine "
                      f"{meta['parity']['min_cosine']:.6f} < {meta['parity']['bound']}); model removed, "
                      f"description kept in {failed}")


def _copy_of(model: nn.Module) -> nn.Module:
    """A copy to move, cast (fp16) and wrap without touching the caller's model."""
    return copy.deepcopy(model)


def _meta(fmt: str, model_file: Path, model: nn.Module, model_name: str, role: str,
          options: dict[str, Any] | None, clip: dict[str, Any], fp16: bool, batch: int | None,
          source: dict[str, Any] | None, exporter: str, seconds: float, flow_scale: float,
          max_frames: int) -> dict[str, Any]:
    t, size = _example_frames(clip, max_frames), _input_size(clip)
    channels = int(getattr(model, "in_channels", 1))
    return describe(
        fmt=fmt, model_file=model_file, weights_fingerprint=weights_fingerprint(model), fp16=fp16, batch=batch,
        max_batch=MAX_DYNAMIC_BATCH, channels=channels,
        dim=int(getattr(model, "embedding_dim", 0)) or _probe_dim(model, t, size), clip=clip,
        model={"name": model_name, "role": role, "options": options or {}, "parameters": count_parameters(model)},
        source=source or {}, exporter={"tool": exporter, "seconds": round(seconds, 2), **_versions()},
        flow_scale=flow_scale, max_frames=max_frames if is_walk(clip) else None,
    )


def _input_size(clip: dict[str, Any]) -> int:
    """The network's input side: ``clip["input_size"]``, else the crop size."""
    return int(clip.get("input_size") or clip["crop_size"])


def _probe_dim(model: nn.Module, t: int, size: int) -> int:
    device = next(model.parameters()).device
    channels = int(getattr(model, "in_channels", 1))
    with torch.inference_mode():
        return int(model(torch.zeros(1, channels, t, size, size, device=device))["embedding"].shape[1])


def _versions() -> dict[str, str]:
    versions = {"torch": torch.__version__}
    for name in ("onnx", "onnxruntime", "onnxscript", "torch_tensorrt"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - absent optional tools are simply not listed
            pass
    return versions


def _swap_in(stage: Path, target: Path) -> None:
    """Replace ``target`` by ``stage`` so that a crash leaves the old or the new bundle, whole."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(stage, target)
    shutil.rmtree(old, ignore_errors=True)


def clip_settings(cfg: Any, store_path: str | None, input_size: int | None = None,
                  crop_size: int | None = None) -> dict[str, Any]:
    """Clip geometry for the bundle: the run's clip length/step and network input size, the
    store's crop recipe (crop size, crop mode, working height) that inference must repeat;
    a run on whole walks (``data.unit: walk``) adds unit "walk" and its training set size
    (``data.frames``). ``crop_size`` (the checkpoint's record of it) is used when the store is gone."""
    extract: dict[str, Any] = {}
    if store_path and Path(store_path).exists():
        from gaittools.store.zarr_store import Store

        store = Store(store_path)
        seq_ids = store.seq_ids()
        if seq_ids:
            extract = store.attrs_of(seq_ids[0]).get("extract", {}) or {}
            if "gray" in store.arrays_of(seq_ids[0]):
                crop_size = int(store.group(seq_ids[0])["gray"].shape[-1])
    size = int(crop_size or extract.get("crop_size") or input_size or cfg.data.input_size or 64)
    settings = {"length": cfg.data.clip_len, "step": cfg.data.step, "crop_size": size,
                "input_size": int(input_size or cfg.data.input_size or size),
                "crop_mode": extract.get("crop_mode", "person"),
                "working_height": extract.get("working_height")}
    if getattr(cfg.data, "unit", "clip") == "walk":
        settings.update(unit="walk", frames=int(cfg.data.frames), length=None, step=None)
    return settings


def parity_clips(cfg: Any, clip: dict[str, Any], n: int = PARITY_CLIPS, seed: int = 0,
                 modality: str = "gray", max_frames: int = MAX_WALK_FRAMES) -> tuple[ParityInputs, str]:
    """Raw parity inputs from the run's store (held-out roles first): n clips, uint8 gray
    (n, T, S, S) or flow (n, T, 2, S, S) px; for a walk bundle, walks of every length in
    ``PARITY_FRAMES`` up to ``max_frames`` (``parity_walks``). Random inputs only when the
    store has none (and the source says so)."""
    if is_walk(clip):
        lengths = tuple(sorted({min(t, max_frames) for t in PARITY_FRAMES}))
        return parity_walks(cfg, clip, n, seed, modality, lengths)
    t, size = int(clip["length"]), int(clip["crop_size"])
    store_path = cfg.data.store
    if store_path and Path(store_path).exists():
        clips = _store_clips(store_path, cfg.data.split, t, size, n, modality)
        if len(clips):
            return clips, f"store {store_path}"
        reason = f"store {store_path} holds no clip of {t} frames"
    else:
        reason = f"store {store_path or '(none in config)'} absent"
    click.echo(f"export: {reason}; parity is checked on {n} RANDOM clips", err=True)
    return _random_inputs(n, t, size, modality, np.random.default_rng(seed)), f"random ({reason})"


def parity_walks(cfg: Any, clip: dict[str, Any], n: int = PARITY_CLIPS, seed: int = 0,
                 modality: str = "gray", lengths: tuple[int, ...] = PARITY_FRAMES) -> tuple[list[np.ndarray], str]:
    """One array per length in ``lengths`` of about n / len(lengths) raw walks each, cut from
    the store's walks (held-out roles first, a different walk for each input where the store
    has enough): T frames spread over a walk, or, for a walk shorter than T, its frames repeated
    in order (the input is still T real crops). Random walks when the store has none."""
    size, per_length = int(clip["crop_size"]), max(1, -(-n // len(lengths)))
    store_path = cfg.data.store
    if store_path and Path(store_path).exists():
        walks = _store_walks(store_path, cfg.data.split, per_length * len(lengths), modality)
        if walks:
            return cut_walks(walks, lengths, per_length), f"store {store_path}"
        reason = f"store {store_path} holds no walk with the person"
    else:
        reason = f"store {store_path or '(none in config)'} absent"
    click.echo(f"export: {reason}; parity is checked on RANDOM walks", err=True)
    rng = np.random.default_rng(seed)
    return [_random_inputs(per_length, t, size, modality, rng) for t in lengths], f"random ({reason})"


def cut_walks(walks: list[np.ndarray], lengths: tuple[int, ...], per_length: int) -> list[np.ndarray]:
    """(per_length, T, ...) for each T: walks taken in turn, T frames each (see ``parity_walks``)."""
    groups = []
    for i, t in enumerate(lengths):
        picked = [walks[(i * per_length + j) % len(walks)] for j in range(per_length)]
        groups.append(np.stack([w[spread_indices(len(w), t)] if len(w) >= t else np.resize(w, (t, *w.shape[1:]))
                                for w in picked]))
    return groups


def _random_inputs(n: int, t: int, size: int, modality: str, rng: np.random.Generator) -> np.ndarray:
    """n random raw inputs of t frames: uint8 gray, or flow in crop pixels."""
    if modality == "flow":
        return rng.normal(0, 1.5, size=(n, t, 2, size, size)).astype(np.float32)
    return rng.integers(0, 256, size=(n, t, size, size), dtype=np.uint8)


def _held_out_first(store: Any, split: str) -> list[str]:
    """The store's sequences, those of the split's held-out roles first (probe, gallery, val,
    train): parity is best checked on crops the network never trained on."""
    from training.clips import read_split

    seq_ids = store.seq_ids()
    if split and Path(split).exists():
        table = read_split(split)
        order = {"probe": 0, "gallery": 1, "val": 2, "train": 3}
        table = table.assign(_o=table["role"].map(order).fillna(4)).sort_values(["_o", "seq_id"])
        present = set(seq_ids)
        seq_ids = [s for s in table["seq_id"] if s in present]
    return seq_ids


def _store_clips(store_path: str, split: str, t: int, size: int, n: int, modality: str) -> np.ndarray:
    from gaittools.store.zarr_store import Store
    from training.clips import clip_starts, valid_frames

    store = Store(store_path)
    per_sequence: list[list[np.ndarray]] = []
    for seq_id in _held_out_first(store, split):  # up to n sequences, each offering clips half a clip apart
        if len(per_sequence) >= n or modality not in store.arrays_of(seq_id):
            continue
        starts = clip_starts(valid_frames(store, seq_id), t, max(1, t // 2))
        if starts:
            data = store.read(seq_id, modality)
            per_sequence.append([data[s:s + t] for s in starts[:n]])
    clips = [seq[i] for i in range(n) for seq in per_sequence if i < len(seq)][:n]  # round robin
    if not clips:
        return np.zeros((0, t, size, size), np.uint8)
    return np.stack([c.astype(np.float32) if modality == "flow" else c for c in clips])


def _store_walks(store_path: str, split: str, n: int, modality: str) -> list[np.ndarray]:
    """Up to n whole walks of the store: every frame a walk offers (``training.walks``, the
    frames evaluation embeds), flow as float32."""
    from gaittools.store.zarr_store import Store
    from training.clips import valid_frames
    from training.walks import walk_frames

    store = Store(store_path)
    walks = []
    for seq_id in _held_out_first(store, split):
        if len(walks) >= n:
            break
        if modality not in store.arrays_of(seq_id):
            continue
        frames = walk_frames(valid_frames(store, seq_id), modality)
        if len(frames):
            data = store.read(seq_id, modality)[frames]
            walks.append(data.astype(np.float32) if modality == "flow" else data)
    return walks


def _parse_batch(value: str) -> int | None:
    if value == "dynamic":
        return None
    try:
        batch = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a positive integer nor 'dynamic'") from None
    if batch < 1:
        raise click.BadParameter("batch must be >= 1")
    return batch


def default_bundle_dir(run: Path, role: str, fmt: str, fp16: bool, batch: int | None) -> Path:
    name = f"{role}-{fmt}" + ("-fp16" if fp16 else "") + (f"-b{batch}" if batch else "")
    return run / "exports" / name


@click.command("export")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(list(EXPORTERS)), default="onnx", show_default=True,
              help="onnx (ONNX Runtime), exported-program (torch.export .pt2), tensorrt (torch-tensorrt).")
@click.option("--fp16", is_flag=True, help="Half-precision weights and arithmetic (float32 I/O).")
@click.option("--batch", default="dynamic", show_default=True, help="Batch size N, or 'dynamic'.")
@click.option("--model", "which", type=click.Choice(["student", "master"]), default=None,
              help="Which network of the run (default: the run's own role).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Bundle directory (default RUN/exports/<model>-<format>[-fp16][-bN]).")
@click.option("--device", default=None, help="Device for export and parity (default cpu; cuda for tensorrt).")
@click.option("--parity-clips", "n_clips", default=PARITY_CLIPS, show_default=True, type=click.IntRange(1),
              help="Parity inputs: clips, or for a walk bundle walks spread over the lengths "
                   f"{', '.join(map(str, PARITY_FRAMES))}.")
@click.option("--max-frames", default=MAX_WALK_FRAMES, show_default=True, type=click.IntRange(2),
              help="Walk bundles: the most frames one walk may hold (the dynamic frame axis's bound).")
def export(run: Path, fmt: str, fp16: bool, batch: str, which: str | None, out: Path | None,
           device: str | None, n_clips: int, max_frames: int) -> None:
    """Export a run's model as a deployment bundle that `gaittools identify --model` loads.

    The exported graph returns L2-normalised signatures; a parity check against the eager model
    on clips from the run's store must pass (cosine >= 0.999 fp32, >= 0.995 fp16) or the export
    fails. A set network trained on whole walks (data.unit: walk) is exported with a dynamic
    frame axis and checked on walks of several lengths.
    """
    batch_size = _parse_batch(batch)
    try:
        if fmt == "tensorrt":
            import_tensorrt()
        try:
            model, details = model_from_run(run, which)
        except RunError as exc:
            raise ExportError(f"{exc}; train the run first") from None
        cfg = details.pop("config")
        modality = "flow" if getattr(model, "in_channels", 1) == 2 else "gray"
        clip = clip_settings(cfg, cfg.data.store, details.get("input_size"), details.get("crop_size"))
        clips, clips_source = parity_clips(cfg, clip, n_clips, modality=modality, max_frames=max_frames)
        target = out or default_bundle_dir(run, details["role"], fmt, fp16, batch_size)
        bundle = export_bundle(
            model, target, fmt, clips, clips_source, model_name=details["model_name"],
            role=details["role"], options=details["options"], clip=clip, fp16=fp16, batch=batch_size,
            device=device, source={k: details[k] for k in ("run", "checkpoint", "steps")},
            opset=cfg.export.opset, flow_scale=cfg.data.flow_scale, max_frames=max_frames,
        )
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    meta = bundle.meta
    click.echo(f"exported {meta['model']['name']} ({meta['model']['parameters']:,} parameters, "
               f"unit {meta['unit']}) as {fmt} -> {bundle.model_path} ({meta['file_size'] / 1e6:.2f} MB, "
               f"{meta['exporter']['seconds']} s); description {bundle.root / BUNDLE_FILE}")
