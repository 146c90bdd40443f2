"""Run configuration: a YAML file read into dataclasses and validated before any work starts.

Why strict: a misspelt key (``lr`` under ``train`` instead of ``optim``) in a loose config is
silently ignored and an hours-long run trains with the default. Here every unknown key, wrong
type or out-of-range value is a ``ConfigError`` naming the file and the dotted key.

Format (every key optional; defaults shown by ``train-copy config-template``)::

    data:   {store, split, train_roles: [train], clip_len: 25, step: 5, input_size, P, K, workers, gpu_resident,
             flow_scale, shift_px, zoom, flip, cache_sequences, gray_array: gray|sil}
    master: {model: master3d, embedding_dim, options: {...}}         # build_model kwargs
    student: {model: student3d-small, embedding_dim, options: {...}}
    optim:  {name: adam|sgd, lr, weight_decay, momentum, schedule: none|step|cosine|plateau,
             step_size, gamma, plateau_patience, plateau_factor}
    loss:   {ce_weight, triplet_weight, triplet_margin, triplet_mining, triplet_normalise, copy: cosine|strip_cosine|contrastive|relational|huber_sum|smooth_l1|huber|mse, copy_extra, copy_temperature,
             copy_centre, copy_batch_centre, copy_delta, copy_weight, copy_triplet_weight, copy_triplet_margin}
    train:  {steps, epochs, amp, channels_last, seed, log_every, ckpt_every, ckpt_keep, device}
    eval:   {k, batch_size}
    export: {formats: [onnx|exported-program|tensorrt], fp16, batch: dynamic|N, opset}
    run:    {out}                                                    # train-copy run

Retired keys (``RETIRED``) are accepted and ignored, so that older configs and the
``config.yaml`` of older runs still load. A ``--set KEY=VALUE`` override that is wrong is
blamed on ``--set KEY``, not on the file it was applied to.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the key."""


@dataclass
class DataConfig:
    store: str = ""
    split: str = ""
    #: Split roles trained on; ["train", "val"] for the authors' final fine-tuning on both.
    train_roles: list[str] = field(default_factory=lambda: ["train"])
    clip_len: int = 25
    step: int = 5
    #: Side of the square network input; None = the store's crop size S. Smaller: the centre
    #: cut of the S x S crops; larger: a bilinear resize (``gaittools.deploy.net_input``, the rule
    #: that deployment applies too).
    input_size: int | None = None
    P: int = 8
    K: int = 4
    workers: int = 2
    gpu_resident: bool = False
    #: Flow (crop pixels) is multiplied by this. Walking limbs move a few px per frame at
    #: S=64, so 0.25 brings typical values to about unit range, like the gray input.
    flow_scale: float = 0.25
    #: Maximum shift in pixels at a 60-px input (the method's figure); scaled to input_size.
    shift_px: float = 5.0
    zoom: float = 0.04
    flip: bool = True
    #: Whole sequences each DataLoader worker keeps decoded (LRU).
    cache_sequences: int = 64
    #: The store array gray-modality models read: gray crops, or sil (the silhouettes
    #: extract-frames stores; OpenGait's input, for the field's silhouette baselines).
    gray_array: str = "gray"
    #: What a training sample is: "clip" (clip_len consecutive frames, the authors' 3D family)
    #: or "walk" (``frames`` drawn from the whole walk as a set: the set networks; evaluation
    #: then embeds every frame of a walk as one set).
    unit: str = "clip"
    #: Frames drawn per walk and step when ``unit`` is "walk" (GaitSet/GaitBase use 30).
    frames: int = 30


@dataclass
class ModelConfig:
    model: str = "master3d"
    #: Signature size d; None = the model's default (3D-CNNs 1024, GaitSet 62 x 128).
    embedding_dim: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "none"
    step_size: int = 1000
    gamma: float = 0.1
    plateau_patience: int = 5
    plateau_factor: float = 0.2


@dataclass
class LossConfig:
    ce_weight: float = 1.0
    triplet_weight: float = 1.0
    triplet_margin: float = 0.2
    #: batch_all (mean over violating triplets) or batch_hard.
    triplet_mining: str = "batch_all"
    #: Triplet distances between L2-normalised codes (true) or raw codes (false, OpenGait's
    #: GaitBase, where a BN neck keeps the scale in check).
    triplet_normalise: bool = True
    #: The copy objective (``training.losses.copy_loss``): cosine, strip_cosine, contrastive, relational,
    #: huber_sum (the authors'), smooth_l1, huber, mse.
    copy: str = "cosine"
    #: More copy terms added to ``copy``, name -> weight (e.g. {relational: 1.0}).
    copy_extra: dict[str, float] = field(default_factory=dict)
    #: Temperature of the contrastive copy term.
    copy_temperature: float = 0.1
    #: Copy the master's signatures minus their mean (re-normalised): training.signatures.
    copy_centre: bool = False
    #: Centre the student's signatures and the targets over the batch inside the copy term
    #: (``training.losses.copy_loss``'s ``centre``): for students whose raw codes share an offset.
    copy_batch_centre: bool = False
    copy_delta: float = 0.5
    copy_weight: float = 1.0
    copy_triplet_weight: float = 0.0
    copy_triplet_margin: float = 0.25


@dataclass
class TrainConfig:
    #: Optimiser steps; or ``epochs`` (passes over the training clips); neither = 1000 steps.
    steps: int | None = None
    epochs: float | None = None
    amp: bool = True
    channels_last: bool = True
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 500
    #: Checkpoints kept (the newest); 0 keeps every one, for learning curves
    #: (``benchmarks/learning_curve.py`` evaluates each).
    ckpt_keep: int = 2
    #: "auto" = cuda:LOCAL_RANK when CUDA is there, else cpu.
    device: str = "auto"


@dataclass
class EvalConfig:
    k: int = 7
    batch_size: int = 64


@dataclass
class ExportConfig:
    """What ``train-copy run`` exports (the copy student), via ``train-copy export``."""

    formats: list[str] = field(default_factory=lambda: ["onnx"])
    fp16: bool = False
    #: A batch size N, or "dynamic".
    batch: str = "dynamic"
    opset: int = 18


@dataclass
class RunConfig:
    out: str = ""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    master: ModelConfig = field(default_factory=ModelConfig)
    student: ModelConfig = field(default_factory=lambda: ModelConfig(model="student3d-small"))
    optim: OptimConfig = field(default_factory=OptimConfig)
    #: Optimiser settings for the student; None = the same as ``optim``.
    student_optim: OptimConfig | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: Training length of the student; None = the same as ``train``.
    student_train: TrainConfig | None = None
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self, source: str = "<config>") -> Config:
        """Check ranges and choices that types alone do not catch."""
        checks: list[tuple[bool, str]] = [
            (self.data.clip_len >= 2, "data.clip_len must be >= 2"),
            (self.data.step >= 1, "data.step must be >= 1"),
            (self.data.P >= 2, "data.P must be >= 2 (triplets need two subjects)"),
            (self.data.K >= 1, "data.K must be >= 1"),
            (self.data.unit in UNITS, f"data.unit must be one of {UNITS}"),
            (self.data.frames >= 1, "data.frames must be >= 1"),
            (self.data.workers >= 0, "data.workers must be >= 0"),
            (0 <= self.data.zoom < 0.5, "data.zoom must be in [0, 0.5)"),
            (self.data.flow_scale > 0, "data.flow_scale must be > 0"),
            (self.data.gray_array in ("gray", "sil"), "data.gray_array must be gray or sil"),
            (self.loss.copy in COPY_LOSSES, f"loss.copy must be one of {COPY_LOSSES}"),
            (all(k in COPY_LOSSES and k != self.loss.copy for k in self.loss.copy_extra),
             f"loss.copy_extra: keys must be copy losses of {COPY_LOSSES} other than loss.copy"),
            (self.loss.copy_temperature > 0, "loss.copy_temperature must be > 0"),
            (self.loss.triplet_mining in ("batch_all", "batch_hard"),
             "loss.triplet_mining must be batch_all or batch_hard"),
            (self.eval.k >= 1, "eval.k must be >= 1"),
        ]
        for name, opt in (("optim", self.optim), ("student_optim", self.student_optim)):
            if opt is not None:
                checks += [
                    (opt.name in OPTIMIZERS, f"{name}.name must be one of {OPTIMIZERS}"),
                    (opt.schedule in SCHEDULES, f"{name}.schedule must be one of {SCHEDULES}"),
                    (opt.lr > 0, f"{name}.lr must be > 0"),
                ]
        for name, tr in (("train", self.train), ("student_train", self.student_train)):
            if tr is not None:
                checks += [
                    (tr.steps is None or tr.epochs is None, f"{name}: give steps or epochs, not both"),
                    (tr.epochs is None or tr.epochs > 0, f"{name}.epochs must be > 0"),
                    (tr.steps is None or tr.steps >= 1, f"{name}.steps must be >= 1"),
                    (tr.log_every >= 1 and tr.ckpt_every >= 1, f"{name}: log_every/ckpt_every must be >= 1"),
                    (tr.ckpt_keep >= 0, f"{name}.ckpt_keep must be >= 0 (0 keeps every checkpoint)"),
                    # a checkpoint must close a log window, or a resumed run would average (and
                    # feed the plateau schedule) a different window than the original run
                    (tr.ckpt_every % tr.log_every == 0, f"{name}.ckpt_every must be a multiple of log_every"),
                ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{source}: {message}")
        return self

    def optim_for(self, role: str) -> OptimConfig:
        return self.student_optim if role == "student" and self.student_optim is not None else self.optim

    def train_for(self, role: str) -> TrainConfig:
        return self.student_train if role == "student" and self.student_train is not None else self.train


#: Keys that once existed and did nothing: read and dropped (see the module docstring).
RETIRED = frozenset({"data.eval_batch", "eval.protocols"})

#: Copy objectives, defined in ``training.losses.copy_loss``.
UNITS = ("clip", "walk")
COPY_LOSSES = ("cosine", "strip_cosine", "contrastive", "relational", "huber_sum", "smooth_l1", "huber", "mse")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("none", "step", "cosine", "plateau")


# ---------------------------------------------------------------------------- loading
def load_config(path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read and validate a YAML config; ``overrides`` are ``dotted.key=yaml-value`` strings."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    return config_from_dict(raw, str(path), overrides)


def config_from_dict(raw: Any, source: str = "<config>", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    raw = _apply_overrides(raw, overrides, source)
    overridden = frozenset(item.partition("=")[0] for item in overrides)
    cfg = _build(Config, raw, source, "", overridden)
    return cfg.validate(source)


def save_config(cfg: Config, path: str | os.PathLike[str]) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...], source: str) -> dict[str, Any]:
    import copy

    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{source}: override {item!r} is not KEY=VALUE")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: override {item!r}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def _blame(source: str, key: str, overridden: frozenset[str]) -> str:
    """Who set ``key``: the ``--set`` override that names it (or a section above it), else the file."""
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in overridden:
            return f"--set {'.'.join(parts[:i])}"
    return source


def _build(cls: type, raw: Any, source: str, prefix: str, overridden: frozenset[str] = frozenset()) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        key = prefix.rstrip(".")
        raise ConfigError(f"{_blame(source, key, overridden)}: {key or 'top level'} must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    raw = {k: v for k, v in raw.items() if f"{prefix}{k}" not in RETIRED}
    unknown = sorted(set(raw) - known, key=str)
    if unknown:
        where = prefix.rstrip(".") or "top level"
        key = f"{prefix}{unknown[0]!s}"
        raise ConfigError(
            f"{_blame(source, key, overridden)}: unknown key {key} in {where} (known: {', '.join(sorted(known))})"
        )
    values = {}
    for name, value in raw.items():
        key = f"{prefix}{name}"
        values[name] = _coerce(hints[name], value, _blame(source, key, overridden), key, overridden)
    return cls(**values)


def _coerce(tp: Any, value: Any, source: str, key: str, overridden: frozenset[str] = frozenset()) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, source, key, overridden)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, source, f"{key}.", overridden)
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list")
        return [_coerce(args[0], v, source, key) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, not {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, not {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key} must be a number, not {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be a string, not {value!r}")
        return str(value)
    return value
