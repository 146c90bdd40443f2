"""The deployment bundle's format: ``bundle.json`` and its model file, owned here.

A bare ``model.onnx`` does not say how its input was made (clip length, crop size and mode,
scaling) nor which weights made it, so a gallery enrolled with one model could silently be
searched with another. A bundle is a directory that carries both::

    <bundle>/
      bundle.json          self-description (below); the file `--model` may also point at
      model.onnx | model.pt2 | model.trt.ep    the exported network

Written by ``train-copy export`` (``training.export``, through :func:`describe` and
:func:`write_bundle_meta`), read by ``gaittools.deploy.runtime`` (through :func:`read_bundle`): one
module owns the format, and the deployment side needs no training code.

``bundle.json`` (``bundle_version`` 1 for clip bundles, 2 for walk bundles)::

    bundle_format   "gaitcopy-signature-bundle"
    bundle_version  1 | 2                (2 adds ``unit`` "walk"; a clip bundle is still written
                                         as 1, so older gaittools keep reading it, while they
                                         refuse a walk bundle they would feed as clips)
    status          "ok" | "failed"      (a failed parity check leaves "failed": never loaded)
    unit            "clip" | "walk"      (absent: "clip"). clip: the network sees clips of T
                                         consecutive frames and a walk's signature is the mean of
                                         its clips' (the 3D family). walk: the network sees a walk
                                         as ONE set of any number of frames (the set networks)
    format          "onnx" | "exported-program" | "tensorrt"
    model_file      file name inside the bundle
    file_size, sha256                    of model_file (checked on load)
    weights_fingerprint                  sha256 of the checkpoint's weights: the same for every
                                         format exported from one checkpoint, so a gallery is
                                         portable across ONNX / .pt2 / TensorRT of one model
    precision       "fp32" | "fp16"      (fp16 casts inside the graph; I/O stay float32)
    input   {name, layout "NCTHW", shape [batch|null, C, T|null, S, S], dtype "float32",
             batch "dynamic" | N, max_batch, frames "dynamic" (walk) | T (clip), max_frames,
             modality "gray" (C=1) | "flow" (C=2, a master)}
    output  {name "signature", dim d, l2_normalised true, dtype "float32"}
    clip    {length T, step, crop_size S, input_size, crop_mode "person"|"frame", working_height}
            (crop_size: the stored crops' side, which enroll/identify crop to; input_size: the
            network's side, reached by ``gaittools.deploy.net_input.fit_to_input``, as in training;
            absent in older bundles, which took crop_size as the network's side; a walk bundle
            has length and step null: only the crop geometry applies)
    walk    {train_frames}                (walk bundles: the set size the network trained on,
                                         the fewest frames ``identify`` embeds as a walk)
    normalisation {scale 1/255, offset -0.5, formula "x / 255 - 0.5"}   (gray; a flow master:
                  {scale flow_scale, offset 0, formula "flow_px * flow_scale"})
    model   {name, role "student"|"master", options, parameters}
    source  {run, checkpoint, steps (training steps of the run)}
    parity  {clips | walks, clips_source, min_cosine, mean_cosine, max_abs_diff, bound, passed,
             device, by_frames [{frames, walks, min_cosine, max_abs_diff}] (walk bundles)}
    created, exporter {torch, onnx, onnxruntime, torch_tensorrt}
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gaittools.deploy.net_input import NORMALISATION

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = "gaitcopy-signature-bundle"
BUNDLE_VERSION = 2  #: the newest version this module reads (and writes for walk bundles)
UNITS = ("clip", "walk")
FORMATS = ("onnx", "exported-program", "tensorrt")
MODEL_FILES = {"onnx": "model.onnx", "exported-program": "model.pt2", "tensorrt": "model.trt.ep"}


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the path and the problem."""


@dataclass(frozen=True)
class Bundle:
    """A parsed ``bundle.json`` with its directory."""

    root: Path
    meta: dict[str, Any]

    @property
    def format(self) -> str:
        return self.meta["format"]

    @property
    def model_path(self) -> Path:
        return self.root / self.meta["model_file"]

    @property
    def unit(self) -> str:
        """"clip" or "walk" (see the module docstring); bundles older than walks are clip bundles."""
        return str(self.meta.get("unit", "clip"))

    @property
    def is_walk(self) -> bool:
        return self.unit == "walk"

    @property
    def clip_len(self) -> int:
        return int(self._clip_value("length"))

    @property
    def clip_step(self) -> int:
        return int(self._clip_value("step"))

    def _clip_value(self, key: str) -> Any:
        if self.is_walk:
            raise BundleError(f"{self.root}: a walk bundle has no clip {key}: it embeds a walk as one set")
        return self.meta["clip"][key]

    @property
    def max_frames(self) -> int:
        """The most frames one input may hold: a walk bundle's bound, a clip bundle's clip length."""
        return int(self.meta["input"].get("max_frames") or self.clip_len)

    @property
    def train_frames(self) -> int:
        """A walk bundle's training set size (the fewest frames ``identify`` embeds)."""
        return int(self.meta.get("walk", {}).get("train_frames") or 1)

    @property
    def crop_size(self) -> int:
        return int(self.meta["clip"]["crop_size"])

    @property
    def input_size(self) -> int:
        """The network's input side (older bundles: the crop size)."""
        return int(self.meta["clip"].get("input_size") or self.crop_size)

    @property
    def crop_mode(self) -> str:
        return str(self.meta["clip"].get("crop_mode", "person"))

    @property
    def working_height(self) -> int | None:
        value = self.meta["clip"].get("working_height")
        return int(value) if value else None

    @property
    def dim(self) -> int:
        return int(self.meta["output"]["dim"])

    @property
    def fingerprint(self) -> str:
        return str(self.meta["weights_fingerprint"])

    @property
    def modality(self) -> str:
        return str(self.meta["input"].get("modality", "gray"))

    @property
    def fixed_batch(self) -> int | None:
        batch = self.meta["input"].get("batch", "dynamic")
        return None if batch == "dynamic" else int(batch)


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe(*, fmt: str, model_file: Path, weights_fingerprint: str, fp16: bool, batch: int | None,
             max_batch: int, channels: int, dim: int, clip: dict[str, Any], model: dict[str, Any],
             source: dict[str, Any], exporter: dict[str, Any], flow_scale: float = 0.25,
             max_frames: int | None = None) -> dict[str, Any]:
    """A new bundle's description (status "pending" until its parity check passes).

    ``clip`` = {length, step, crop_size, input_size (default crop_size), crop_mode,
    working_height}, plus unit "walk" and frames (the training set size) for a set network,
    whose frame axis is dynamic up to ``max_frames``; ``channels`` 1 (a gray student) or 2 (a
    flow master, whose input is flow_px * ``flow_scale``).
    """
    unit = str(clip.get("unit", "clip"))
    if unit not in UNITS:
        raise BundleError(f"unit must be one of {UNITS}, got {unit!r}")
    walk = unit == "walk"
    if walk and not max_frames:
        raise BundleError("a walk bundle needs max_frames, the bound of its dynamic frame axis")
    t = None if walk else int(clip["length"])
    size = int(clip.get("input_size") or clip["crop_size"])
    flow = channels == 2
    meta = {
        "bundle_format": BUNDLE_FORMAT,
        "bundle_version": 2 if walk else 1,
        "status": "pending",
        "unit": unit,
        "format": fmt,
        "model_file": model_file.name,
        "file_size": model_file.stat().st_size,
        "sha256": sha256_of(model_file),
        "weights_fingerprint": weights_fingerprint,
        "precision": "fp16" if fp16 else "fp32",
        "input": {"name": "clips", "layout": "NCTHW", "shape": [batch, channels, t, size, size],
                  "dtype": "float32", "modality": "flow" if flow else "gray",
                  "batch": "dynamic" if batch is None else batch, "max_batch": max_batch if batch is None else batch,
                  "frames": "dynamic" if walk else t, "max_frames": int(max_frames) if walk else t},
        "output": {"name": "signature", "dim": int(dim), "l2_normalised": True, "dtype": "float32"},
        "clip": {"length": t, "step": None if walk else int(clip["step"]), "crop_size": int(clip["crop_size"]),
                 "input_size": size, "crop_mode": clip.get("crop_mode", "person"),
                 "working_height": clip.get("working_height")},
        "normalisation": ({"scale": flow_scale, "offset": 0.0, "formula": f"flow_px * {flow_scale}"} if flow
                          else dict(NORMALISATION)),
        "model": model,
        "source": source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "exporter": exporter,
    }
    if walk:
        meta["walk"] = {"train_frames": int(clip.get("frames") or 1)}
    return meta


def write_bundle_meta(root: str | os.PathLike[str], meta: dict[str, Any]) -> Path:
    """Write ``bundle.json`` atomically (a crash never leaves a half-written description)."""
    path = Path(root) / BUNDLE_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_bundle(path: str | os.PathLike[str], verify: bool = True) -> Bundle:
    """Parse and check a bundle given as its directory, its ``bundle.json`` or its model file."""
    path = Path(path)
    root = path if path.is_dir() else path.parent
    meta_path = root / BUNDLE_FILE
    if not meta_path.is_file():
        raise BundleError(f"{path}: not a GaitCopy model bundle (no {BUNDLE_FILE}; "
                          "make one with `train-copy export RUN`)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{meta_path}: unreadable bundle description ({exc})") from exc
    if meta.get("bundle_format") != BUNDLE_FORMAT:
        raise BundleError(f"{meta_path}: bundle_format is {meta.get('bundle_format')!r}, not {BUNDLE_FORMAT!r}")
    if int(meta.get("bundle_version", -1)) > BUNDLE_VERSION:
        raise BundleError(f"{meta_path}: bundle_version {meta['bundle_version']} is newer than this "
                          f"gaittools reads ({BUNDLE_VERSION}); upgrade gaittools")
    missing = [k for k in ("format", "model_file", "input", "output", "clip", "weights_fingerprint")
               if k not in meta]
    if missing:
        raise BundleError(f"{meta_path}: missing keys {missing}")
    if meta.get("unit", "clip") not in UNITS:
        raise BundleError(f"{meta_path}: unknown unit {meta['unit']!r} (known: {UNITS})")
    if meta["format"] not in FORMATS:
        raise BundleError(f"{meta_path}: unknown format {meta['format']!r} (known: {FORMATS})")
    if meta.get("status") != "ok":
        parity = meta.get("parity", {})
        raise BundleError(f"{meta_path}: export status is {meta.get('status')!r} "
                          f"(parity: {parity}); this model must not be used")
    bundle = Bundle(root, meta)
    if not bundle.model_path.is_file():
        raise BundleError(f"{bundle.model_path}: model file of the bundle is missing")
    if verify and meta.get("sha256") and sha256_of(bundle.model_path) != meta["sha256"]:
        raise BundleError(f"{bundle.model_path}: checksum differs from {meta_path} (file changed or corrupt)")
    return bundle
