"""``train-copy export``: a run's model -> a deployment bundle (TensorRT, ONNX or torch.export).

What is exported: only the signature. The graph maps float32 clips (N, 1, T, I, I), already
fitted to the run's input size I and scaled x/255 - 0.5 (``gaittools.deploy.net_input``, which
training applies too), to (N, d) float32 L2-normalised signatures (``SignatureNet``): logits are a
training device, and normalising inside the graph means no deployment can forget it. With
``--fp16`` the weights and arithmetic are half precision but the graph casts at its edges, so
every bundle has the same float32 interface.

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
  once ``torch_tensorrt`` is imported. Optional extra; needs CUDA.

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
def _example(batch: int, channels: int, clip_len: int, size: int, device: str) -> torch.Tensor:
    return torch.zeros(batch, channels, clip_len, size, size, device=device).uniform_(-0.5, 0.5)


def _batch_dim(batch: int | None) -> dict[str, dict[int, Any]] | None:
    if batch is not None:
        return None
    return {"clips": {0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)}}


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


def export_onnx(net: nn.Module, example: torch.Tensor, path: Path, batch: int | None, opset: int = 18) -> str:
    """Write ``path``; returns which torch.onnx exporter produced it."""
    try:
        torch.onnx.export(net, (example,), str(path), dynamo=True, external_data=False,
                          input_names=["clips"], output_names=["signature"], opset_version=opset,
                          dynamic_shapes=_batch_dim(batch), verbose=False)
        return "torch.onnx (dynamo)"
    except Exception as dynamo_error:  # noqa: BLE001 - fall back to the other exporter, say why
        path.unlink(missing_ok=True)
        click.echo(f"export: the dynamo ONNX exporter failed ({type(dynamo_error).__name__}: "
                   f"{dynamo_error}); trying the TorchScript exporter", err=True)
    axes = None if batch is not None else {"clips": {0: "batch"}, "signature": {0: "batch"}}
    torch.onnx.export(net, (example,), str(path), dynamo=False, input_names=["clips"],
                      output_names=["signature"], opset_version=opset, dynamic_axes=axes)
    return "torch.onnx (torchscript)"


def export_program(net: nn.Module, example: torch.Tensor, path: Path, batch: int | None) -> str:
    program = torch.export.export(net, (example,), dynamic_shapes=_batch_dim(batch))
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


def export_tensorrt(net: nn.Module, example: torch.Tensor, path: Path, batch: int | None) -> str:
    """torch-tensorrt (>= 2.5) through its documented entry points: ``torch_tensorrt.compile``
    with ``ir="dynamo"``, then ``torch_tensorrt.save`` as an ExportedProgram.

    ``enabled_precisions`` is explicit: the graph's own dtype (``SignatureNet`` casts the
    weights), so an fp16 export builds fp16 kernels and an fp32 one never drops to fp16."""
    trt = import_tensorrt()
    dtype = getattr(net, "dtype", torch.float32)
    tail = tuple(example.shape[1:])
    if batch is None:
        opt = max(1, min(64, MAX_DYNAMIC_BATCH))
        spec = trt.Input(min_shape=(1, *tail), opt_shape=(opt, *tail), max_shape=(MAX_DYNAMIC_BATCH, *tail),
                         dtype=torch.float32)
    else:
        spec = trt.Input(shape=tuple(example.shape), dtype=torch.float32)
    compiled = trt.compile(net, ir="dynamo", arg_inputs=[spec], enabled_precisions={dtype}, min_block_size=1)
    save_options: dict[str, Any] = {"dynamic_shapes": _batch_dim(batch)} if batch is None else {}
    trt.save(compiled, str(path), output_format="exported_program", arg_inputs=[example], **save_options)
    return f"torch-tensorrt {getattr(trt, '__version__', '?')} (dynamo, {str(dtype).removeprefix('torch.')})"


#: format -> exporter(net, example, path, batch[, opset]) -> the tool's name, for bundle.json
EXPORTERS: dict[str, Callable[..., str]] = {
    "onnx": export_onnx,
    "exported-program": export_program,
    "tensorrt": export_tensorrt,
}


# ---------------------------------------------------------------------------- parity
def parity(eager: nn.Module, model: deploy.SignatureModel, clips: np.ndarray, device: str) -> dict[str, Any]:
    """Cosine similarity of exported vs eager fp32 signatures on the same raw clips."""
    reference = eager_signatures(eager, clips, device, model.bundle.meta["normalisation"], model.input_size)
    exported = model(clips)
    cos = np.sum(reference * exported, axis=1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(exported, axis=1) + 1e-12)
    return {"clips": int(len(clips)), "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
            "max_abs_diff": float(np.abs(reference - exported).max())}


def eager_signatures(eager: nn.Module, clips: np.ndarray, device: str,
                     normalisation: dict[str, Any] | None = None, input_size: int | None = None,
                     batch: int = 32) -> np.ndarray:
    """Unit signatures of the eager model on raw clips: the reference every export must match."""
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
    clips: np.ndarray,
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
    log: Callable[[str], None] = click.echo,
) -> Bundle:
    """Export ``model`` (eval mode, any device) as a bundle at ``out_dir``; check parity.

    ``clip`` = {length, step, crop_size S, input_size (default S), crop_mode, working_height}.
    ``clips`` are the raw parity clips: uint8 gray (N, T, S, S), or flow (N, T, 2, S, S) in crop pixels for a
    2-channel master (``flow_scale`` = the training data path's multiplier). Returns the
    checked bundle; raises ``ExportError`` (leaving ``<out_dir>.failed/``) when parity fails.
    The bundle is built in a staging directory and swapped in whole.
    """
    if fmt not in EXPORTERS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(EXPORTERS)}")
    device = device or ("cuda" if fmt == "tensorrt" else "cpu")
    if fmt == "tensorrt":
        import_tensorrt()
    out_dir = Path(out_dir)
    stage = out_dir.with_name(f".{out_dir.name}.staging")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    model = _copy_of(model).eval().to(device)  # the caller's model stays where it is
    try:
        meta = _export_into(stage, model, fmt, model_name, role, options, clip, fp16, batch, device,
                            source, opset, flow_scale)
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
                 device: str, source: dict[str, Any] | None, opset: int, flow_scale: float) -> dict[str, Any]:
    """Write the model file into ``stage``; returns its description (status 'pending')."""
    net = SignatureNet(_copy_of(model), torch.float16 if fp16 else torch.float32).eval().to(device)
    t, size = int(clip["length"]), _input_size(clip)
    channels = int(getattr(model, "in_channels", 1))
    example = _example(batch or 2, channels, t, size, device)
    model_file = stage / MODEL_FILES[fmt]
    started = time.perf_counter()
    try:
        extra = {"opset": opset} if fmt == "onnx" else {}
        with _quiet_exporter():
            exporter = EXPORTERS[fmt](net, example, model_file, batch, **extra)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - one clear message for any exporter failure
        raise ExportError(f"{fmt} export of {model_name} failed: {type(exc).__name__}: {exc}") from exc
    meta = _meta(fmt, model_file, model, model_name, role, options, clip, fp16, batch, source, exporter,
                 time.perf_counter() - started, flow_scale)
    write_bundle_meta(stage, meta)
    return meta


def _parity_of_stage(stage: Path, meta: dict[str, Any], model: nn.Module, clips: np.ndarray,
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
    return (f"parity ({meta['format']}{fp16}, {n['clips']} clips from {n['clips_source']}): "
            f"min cosine {n['min_cosine']:.6f}, mean {n['mean_cosine']:.6f}, max |diff| "
            f"{n['max_abs_diff']:.2e}, bound {n['bound']} -> {'PASS' if n['passed'] else 'FAIL'}")


def _keep_failed(stage: Path, out_dir: Path, meta: dict[str, Any]) -> None:
    """Delete the model, keep its description as ``<out_dir>.failed``, raise."""
    meta["status"] = "failed"
    (stage / meta["model_file"]).unlink(missing_ok=True)
    write_bundle_meta(stage, meta)
    failed = out_dir.with_name(f"{out_dir.name}.failed")
    shutil.rmtree(failed, ignore_errors=True)
    os.replace(stage, failed)
    raise ExportError(f"{out_dir}: parity check failed (min cosine {meta['parity']['min_cosine']:.6f} "
                      f"< {meta['parity']['bound']}); model removed, description kept in {failed}")


def _copy_of(model: nn.Module) -> nn.Module:
    """A copy to move, cast (fp16) and wrap without touching the caller's model."""
    return copy.deepcopy(model)


def _meta(fmt: str, model_file: Path, model: nn.Module, model_name: str, role: str,
          options: dict[str, Any] | None, clip: dict[str, Any], fp16: bool, batch: int | None,
          source: dict[str, Any] | None, exporter: str, seconds: float, flow_scale: float) -> dict[str, Any]:
    t, size = int(clip["length"]), _input_size(clip)
    channels = int(getattr(model, "in_channels", 1))
    return describe(
        fmt=fmt, model_file=model_file, weights_fingerprint=weights_fingerprint(model), fp16=fp16, batch=batch,
        max_batch=MAX_DYNAMIC_BATCH, channels=channels,
        dim=int(getattr(model, "embedding_dim", 0)) or _probe_dim(model, t, size), clip=clip,
        model={"name": model_name, "role": role, "options": options or {}, "parameters": count_parameters(model)},
        source=source or {}, exporter={"tool": exporter, "seconds": round(seconds, 2), **_versions()},
        flow_scale=flow_scale,
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
    store's crop recipe (crop size, crop mode, working height) that inference must repeat.
    ``crop_size`` (the checkpoint's record of it) is used when the store is gone."""
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
    return {"length": cfg.data.clip_len, "step": cfg.data.step, "crop_size": size,
            "input_size": int(input_size or cfg.data.input_size or size),
            "crop_mode": extract.get("crop_mode", "person"),
            "working_height": extract.get("working_height")}


def parity_clips(cfg: Any, clip: dict[str, Any], n: int = PARITY_CLIPS, seed: int = 0,
                 modality: str = "gray") -> tuple[np.ndarray, str]:
    """Raw clips from the run's store (held-out roles first): uint8 gray (n, T, S, S) or flow
    (n, T, 2, S, S) px; random clips only when the store has none (and the source says so)."""
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
    rng = np.random.default_rng(seed)
    if modality == "flow":
        return rng.normal(0, 1.5, size=(n, t, 2, size, size)).astype(np.float32), f"random ({reason})"
    return rng.integers(0, 256, size=(n, t, size, size), dtype=np.uint8), f"random ({reason})"


def _store_clips(store_path: str, split: str, t: int, size: int, n: int, modality: str) -> np.ndarray:
    from gaittools.store.zarr_store import Store
    from training.clips import clip_starts, read_split, valid_frames

    store = Store(store_path)
    seq_ids = store.seq_ids()
    if split and Path(split).exists():
        table = read_split(split)
        order = {"probe": 0, "gallery": 1, "val": 2, "train": 3}
        table = table.assign(_o=table["role"].map(order).fillna(4)).sort_values(["_o", "seq_id"])
        present = set(seq_ids)
        seq_ids = [s for s in table["seq_id"] if s in present]
    per_sequence: list[list[np.ndarray]] = []
    for seq_id in seq_ids:  # up to n sequences, each offering clips half a clip apart
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
@click.option("--parity-clips", "n_clips", default=PARITY_CLIPS, show_default=True, type=click.IntRange(1))
def export(run: Path, fmt: str, fp16: bool, batch: str, which: str | None, out: Path | None,
           device: str | None, n_clips: int) -> None:
    """Export a run's model as a deployment bundle that `gaittools identify --model` loads.

    The exported graph returns L2-normalised signatures; a parity check against the eager model
    on clips from the run's store must pass (cosine >= 0.999 fp32, >= 0.995 fp16) or the export
    fails.
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
        clips, clips_source = parity_clips(cfg, clip, n_clips, modality=modality)
        target = out or default_bundle_dir(run, details["role"], fmt, fp16, batch_size)
        bundle = export_bundle(
            model, target, fmt, clips, clips_source, model_name=details["model_name"],
            role=details["role"], options=details["options"], clip=clip, fp16=fp16, batch=batch_size,
            device=device, source={k: details[k] for k in ("run", "checkpoint", "steps")},
            opset=cfg.export.opset, flow_scale=cfg.data.flow_scale,
        )
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    meta = bundle.meta
    click.echo(f"exported {meta['model']['name']} ({meta['model']['parameters']:,} parameters) as "
               f"{fmt} -> {bundle.model_path} ({meta['file_size'] / 1e6:.2f} MB); "
               f"description {bundle.root / BUNDLE_FILE}")
