"""Networks from a config, and a finished run's network back from its files.

One module for both, below the training loop (``training.trainer``), the commands
(``training.tasks``) and export (``training.export``), which all import it: building a model
from ``ModelConfig`` is the same act whether a run starts or a finished run is reloaded, and
keeping it here lets tasks and export share it without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from training.config import ModelConfig
from training.data import FLOW, GRAY
from training.runs import RunDir, RunError


def build_net(model_cfg: ModelConfig, n_classes: int) -> nn.Module:
    """A registered model; ``c3d`` is the 3D-CNN with ``options.widths`` of your choice
    (tiny widths make CPU tests and demos fast)."""
    options = dict(model_cfg.options)
    if model_cfg.embedding_dim is not None:
        options["embedding_dim"] = model_cfg.embedding_dim
    if model_cfg.model == "c3d":
        from training.models.c3d import C3DNet

        return C3DNet(n_classes=n_classes, **options)
    from training.models import build_model

    return build_model(model_cfg.model, n_classes=n_classes, **options)


def model_modality(model: nn.Module) -> str:
    """"gray" or "flow": what the model reads (every registered model says so)."""
    modality = getattr(model, "modality", None)
    if modality not in (GRAY, FLOW):
        raise ValueError(f"{type(model).__name__} does not say whether it reads gray or flow")
    return modality


def load_run_model(run_path: str | Path, checkpoint: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a run (CPU, eval mode) and its ``model.pt`` description; with
    ``checkpoint`` (one of ``RUN/checkpoints/step_*.pt``), the same network holding that
    checkpoint's weights instead (a learning curve evaluates a finished run's checkpoints)."""
    run = RunDir(run_path)
    saved = run.load_model_file()
    cfg = run.config()
    model_cfg = cfg.master if saved["role"] == "master" else cfg.student
    model = build_net(model_cfg, int(saved["n_classes"]))
    if checkpoint is None:
        model.load_state_dict(saved["state_dict"])
    else:
        model.load_state_dict(run.load_checkpoint(Path(checkpoint))["model"])
    model.eval()
    info = {k: v for k, v in saved.items() if k != "state_dict"}
    return model, info


def model_from_run(run_path: str | os.PathLike[str], which: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A finished run's model for deployment (``which`` = student | master; default: the
    run's own role) and the facts a bundle records about it.

    Rebuilt by ``load_run_model`` from ``RUN/model.pt``; a student run reaches its master
    through ``run.json``'s ``master_run``. The classifier head is dropped: only the embedding
    is exported, and the parameter count and fingerprint are those of what ships. A run that
    cannot give its model raises ``RunError``.
    """
    run = RunDir(run_path)
    cfg = run.config()
    info = run.info() if (run.path / "run.json").is_file() else {}
    role = info.get("role", "student")
    if which is not None and which != role:
        linked = info.get(f"{which}_run")
        if not linked:
            raise RunError(f"{run.path}: is a {role} run and names no {which}_run in run.json")
        return model_from_run(linked, which)
    model, saved = load_run_model(run.path)
    if getattr(model, "classifier", None) is not None:
        model.classifier = None
    details = {"role": saved.get("role", role), "model_name": saved.get("model", "?"),
               "options": saved.get("model_options", {}), "run": str(run.path.resolve()),
               "checkpoint": str(run.path / "model.pt"), "steps": info.get("steps"),
               "input_size": saved.get("input_size"), "crop_size": saved.get("crop_size"), "config": cfg}
    return model.eval(), details
