"""Run directories: everything a training run leaves behind, and how it resumes.

Layout::

    RUN/config.yaml          the validated config the run was started with (all defaults filled)
    RUN/run.json             role (master / student), model name, master run, no-copy flag
    RUN/clips.parquet        the training clip index (ids shared by master signatures and students)
    RUN/checkpoints/step_NNNNNNNN.pt   model, optimizer, scheduler, step, RNG states and
                             train_s (training-loop seconds up to it, over every resume)
    RUN/checkpoints/last.txt the name of the newest complete checkpoint
    RUN/model.pt             final weights + what is needed to rebuild the model
    RUN/metrics.csv          step, losses, lr, clips/s (appended; a resume truncates rows
                             past its checkpoint so the file never holds two histories)
    RUN/tb/                  TensorBoard event files
    RUN/signatures.pt        (master) frozen signatures of every training clip and its mirror
    RUN/eval/                evaluation tables (CSV) and heatmaps (PNG)

Checkpoints are written to a temp file and renamed, and ``last.txt`` is replaced only after,
so a run killed while saving resumes from the previous checkpoint rather than a torn file.
"""

from __future__ import annotations

import csv
import json
import os
import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.config import Config, load_config, save_config

CHECKPOINTS = "checkpoints"


class RunError(RuntimeError):
    """A run directory that cannot be used as asked."""


class RunDir:
    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, path: str | os.PathLike[str], cfg: Config, info: dict[str, Any], resume: bool,
               unread: tuple[str, ...] = ()) -> RunDir:
        """Start a run (empty or absent dir), or reopen one for ``resume`` (same config, except
        settings under the ``unread`` prefixes, which this run's role never reads)."""
        run = cls(path)
        if run.config_path.is_file():
            if not resume:
                raise RunError(f"{run.path}: already holds a run; pass --resume to continue it "
                               "or choose another directory")
            old = load_config(run.config_path)
            differ = [key for key in _config_differences(old.to_dict(), cfg.to_dict())
                      if not key.startswith(unread)]
            if differ:
                raise RunError(f"{run.path}: --resume with a config that differs from the run's own "
                               f"{run.config_path} in {', '.join(differ)}; resume with that config, "
                               "or start a new run in another --out")
            return run
        if run.path.exists() and any(run.path.iterdir()):
            raise RunError(f"{run.path}: exists, is not empty and is not a run")
        run.path.mkdir(parents=True, exist_ok=True)
        (run.path / CHECKPOINTS).mkdir()
        save_config(cfg, run.config_path)
        _atomic_write(run.path / "run.json", json.dumps(info, indent=2).encode())
        return run

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    def config(self) -> Config:
        if not self.config_path.is_file():
            raise RunError(f"{self.path}: not a run directory (no config.yaml)")
        return load_config(self.config_path)

    def info(self) -> dict[str, Any]:
        return json.loads((self.path / "run.json").read_text())

    def update_info(self, **update: Any) -> None:
        info = self.info()
        info.update(update)
        _atomic_write(self.path / "run.json", json.dumps(info, indent=2).encode())

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, step: int, state: dict[str, Any], keep: int = 2) -> Path:
        """Write checkpoint ``step`` and keep the ``keep`` newest (0: every one)."""
        ckdir = self.path / CHECKPOINTS
        name = f"step_{step:08d}.pt"
        tmp = ckdir / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        torch.save({**state, "step": step, "rng": rng_state()}, tmp)
        os.replace(tmp, ckdir / name)
        _atomic_write(ckdir / "last.txt", name.encode())
        for old in sorted(ckdir.glob("step_*.pt"))[:-keep] if keep > 0 else []:
            old.unlink()
        return ckdir / name

    def checkpoints(self) -> list[Path]:
        """Every kept checkpoint, oldest first."""
        return sorted((self.path / CHECKPOINTS).glob("step_*.pt"))

    def last_checkpoint(self) -> Path | None:
        marker = self.path / CHECKPOINTS / "last.txt"
        if not marker.is_file():
            return None
        path = self.path / CHECKPOINTS / marker.read_text().strip()
        if not path.is_file():
            raise RunError(f"{marker}: names {path.name}, which is missing")
        return path

    def load_checkpoint(self, path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """The checkpoint with its tensors on ``map_location``, except the RNG states: torch's
        RNG setters need CPU ByteTensors, so a resume on CUDA must not move them."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        device = torch.device(map_location)
        if device.type == "cpu":
            return state
        return {key: value if key == "rng" else _to_device(value, device) for key, value in state.items()}

    # ------------------------------------------------------------------ metrics
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    def append_metrics(self, row: dict[str, Any]) -> None:
        new = not self.metrics_path.is_file()
        with open(self.metrics_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def truncate_metrics(self, after_step: int) -> None:
        """Drop rows logged after ``after_step`` (they belong to the killed part of the run)."""
        if not self.metrics_path.is_file():
            return
        with open(self.metrics_path, newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if int(r["step"]) <= after_step]
        if len(kept) == len(rows):
            return
        tmp = self.metrics_path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, self.metrics_path)

    def tensorboard(self) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.path / "tb"))

    # ------------------------------------------------------------------ final model
    def save_model(self, model: torch.nn.Module, model_info: dict[str, Any]) -> Path:
        path = self.path / "model.pt"
        tmp = path.with_name(f".model.{uuid.uuid4().hex[:8]}.tmp")
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({"state_dict": state, **model_info}, tmp)
        os.replace(tmp, path)
        return path

    def load_model_file(self) -> dict[str, Any]:
        path = self.path / "model.pt"
        if not path.is_file():
            raise RunError(f"{self.path}: no model.pt (the run has not finished training)")
        return torch.load(path, map_location="cpu", weights_only=False)


#: What a resumed run may change: how long it trains (extending a finished run is resuming)
#: and how many checkpoints it keeps.
RESUMABLE_CHANGES = ("train.steps", "train.epochs", "train.ckpt_keep",
                     "student_train.steps", "student_train.epochs", "student_train.ckpt_keep")


def _config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        dotted = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _config_differences(a, b, dotted + ".")
        elif a != b and dotted not in RESUMABLE_CHANGES:
            keys.append(dotted)
    return keys


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _to_device(value: Any, device: torch.device) -> Any:
    """Tensors anywhere inside dicts, lists and tuples moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
