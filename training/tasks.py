"""What each ``train-copy`` command does, as functions (the CLI only parses arguments).

- ``train_master``: flow master with CE and/or triplet; then frozen, and its signatures of
  every training clip and mirror stored in the run (``signatures.py``).
- ``train_student``: gray student copying those signatures (copy loss + optional triplet),
  or with ``no_copy`` the identification losses only: the baseline the method is measured
  against. It trains on the master run's clip table, so clip ids match the signatures.
- ``evaluate_run``: (``evaluate_model``, then the files) clip (or whole-walk) embeddings of the split's gallery and probe sequences ->
  ``training.evaluate`` tables, printed and written as CSV + PNGs (``training.plots``: rank-1
  bars, probe view x gallery view heatmaps) in ``RUN/eval``.

Models are built from a config and reloaded from runs by ``training.model_build``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from gaittools.store.zarr_store import Store
from training.clips import LENGTH, build_clip_index, load_clip_index, read_split, save_clip_index
from training.config import Config
from training.data import FLOW, GRAY, crop_size
from training.embed import embed_table, settings_from
from training.losses import LossSet, mean_target_loss
from training.model_build import build_net, load_run_model, model_modality
from training.monitor import CollapseGuard
from training.runs import RunDir, RunError, seed_everything
from training.signatures import SignatureTable, compute_signatures, save_signatures
from training.trainer import DeviceContext, barrier, precision, setup_device, train
from training.walks import build_walk_index, for_modality

CLIPS_FILE = "clips.parquet"


#: Settings a master never reads: one config serves the master and its students, so a resume of
#: the master after a change to the students' or the copy's settings is still the same run.
MASTER_UNREAD = ("student", "loss.copy")  # student.*, student_train (absent or not), loss.copy*


def _open_run(out: str | Path, cfg: Config, info: dict[str, Any], resume: bool, ctx: DeviceContext,
              unread: tuple[str, ...] = ()) -> RunDir:
    if ctx.is_main:
        run = RunDir.create(out, cfg, info, resume, unread)
    barrier(ctx)
    return RunDir(out) if not ctx.is_main else run


def _training_clips(run: RunDir, cfg: Config, ctx: DeviceContext) -> pd.DataFrame:
    """The run's clip table: built once by rank 0 and stored, so a resume uses the same one."""
    path = run.path / CLIPS_FILE
    if ctx.is_main and not path.is_file():
        store = Store(cfg.data.store)
        split = read_split(cfg.data.split)
        if cfg.data.unit == "walk":
            clips = build_walk_index(store, split, FLOW, roles=tuple(cfg.data.train_roles))
        else:
            clips = build_clip_index(store, split, cfg.data.clip_len, cfg.data.step,
                                     roles=tuple(cfg.data.train_roles))
        if clips.empty:
            raise ValueError(f"{cfg.data.split}: no training {cfg.data.unit}s in {store.path}")
        save_clip_index(clips, path)
        print(f"{len(clips)} training {cfg.data.unit}s of {clips['seq_id'].nunique()} sequences, "
              f"{clips['label'].nunique()} subjects", flush=True)
    barrier(ctx)
    return load_clip_index(path)


def _model_info(cfg: Config, role: str, model_cfg: Any, model: nn.Module, n_classes: int,
                size: int, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": role, "model": model_cfg.model, "model_options": dict(model_cfg.options),
        "embedding_dim": int(model.embedding_dim), "n_classes": n_classes, "modality": model_modality(model),
        "clip_len": cfg.data.clip_len, "step": cfg.data.step, "crop_size": size,
        "unit": cfg.data.unit, "frames": cfg.data.frames if cfg.data.unit == "walk" else None,
        "input_size": cfg.data.input_size or size, "flow_scale": cfg.data.flow_scale,
        "normalisation": "gray: x/255 - 0.5; flow: x * flow_scale",
        # CPU results are bit-reproducible for a seed only at the same thread count
        "torch_threads": torch.get_num_threads(), **extra,
    }


def train_master(cfg: Config, out: str | Path, resume: bool = False) -> RunDir:
    ctx = setup_device(cfg.train)
    run = _open_run(out, cfg, {"role": "master", "model": cfg.master.model}, resume, ctx, MASTER_UNREAD)
    clips = _training_clips(run, cfg, ctx)
    n_classes = int(clips["label"].nunique()) if cfg.loss.ce_weight > 0 else 0
    seed_everything(cfg.train.seed)  # the initial weights are part of what a seed reproduces
    model = build_net(cfg.master, n_classes)
    if model_modality(model) != FLOW:
        raise ValueError(f"master model {cfg.master.model!r} reads gray; a master must read flow")
    losses = LossSet({"ce": cfg.loss.ce_weight, "triplet": cfg.loss.triplet_weight},
                     margin=cfg.loss.triplet_margin, mining=cfg.loss.triplet_mining,
                         normalise=cfg.loss.triplet_normalise)
    guard = CollapseGuard(n_classes, raw_codes=not cfg.loss.triplet_normalise)
    result = train(run, model, lambda out_, raw, aug: losses(out_, labels=raw.label), clips, cfg, "master",
                   ctx, resume, terms=lambda: losses.terms, guard=guard)
    signatures = compute_signatures(model, clips, settings_from(cfg), ctx.device, ctx.rank, ctx.world)
    if ctx.is_main:
        size = crop_size(cfg.data.store, clips["seq_id"].iloc[0], FLOW)
        run.save_model(model, _model_info(cfg, "master", cfg.master, model, n_classes, size,
                                          {"clips_per_s": result.clips_per_s,
                                           "precision": precision(ctx.device, cfg.train.amp)}))
        save_signatures(run.path, clips, signatures, {"clip_len": cfg.data.clip_len, "step": cfg.data.step,
                                                      "flow_scale": cfg.data.flow_scale,
                                                      "master_model": cfg.master.model})
        run.update_info(finished=True, steps=result.steps, torch_threads=torch.get_num_threads())
    barrier(ctx)
    return run


def train_student(cfg: Config, out: str | Path, master_run: str | Path, no_copy: bool = False,
                  resume: bool = False) -> RunDir:
    ctx = setup_device(cfg.train_for("student"))
    master = RunDir(master_run)
    master_clips_path = master.path / CLIPS_FILE
    if not master_clips_path.is_file():
        raise RunError(f"{master.path}: not a finished master run (no {CLIPS_FILE})")
    mcfg = master.config()
    if mcfg.data.unit != cfg.data.unit:
        raise ValueError(f"student data.unit {cfg.data.unit!r} differs from the master's {mcfg.data.unit!r} "
                         f"({master.config_path}): a student copies signatures of the master's own units")
    if cfg.data.unit == "clip" and (mcfg.data.clip_len, mcfg.data.step) != (cfg.data.clip_len, cfg.data.step):
        raise ValueError(f"student clip_len/step {cfg.data.clip_len}/{cfg.data.step} differ from the "
                         f"master's {mcfg.data.clip_len}/{mcfg.data.step} ({master.config_path})")
    info = {"role": "student", "model": cfg.student.model, "master_run": str(Path(master_run).resolve()),
            "copy": not no_copy}
    run = _open_run(out, cfg, info, resume, ctx)
    clips = load_clip_index(master_clips_path)
    if cfg.data.unit == "walk":  # same walks and ids, the gray frames each offers
        clips = for_modality(Store(cfg.data.store), clips, GRAY)
    if ctx.is_main and not (run.path / CLIPS_FILE).is_file():
        save_clip_index(clips, run.path / CLIPS_FILE)
    if no_copy:
        n_classes = int(clips["label"].nunique()) if cfg.loss.ce_weight > 0 else 0
        losses = LossSet({"ce": cfg.loss.ce_weight, "triplet": cfg.loss.triplet_weight},
                         margin=cfg.loss.triplet_margin, mining=cfg.loss.triplet_mining,
                         normalise=cfg.loss.triplet_normalise)

        def objective(outputs: dict[str, torch.Tensor], raw: Any, aug: Any) -> Any:
            return losses(outputs, labels=raw.label)
    else:
        n_classes = int(clips["label"].nunique()) if cfg.loss.copy_ce_weight > 0 else 0
        table = SignatureTable(master.path, clips, ctx.device, centre=cfg.loss.copy_centre)
        losses = LossSet({cfg.loss.copy: cfg.loss.copy_weight, **cfg.loss.copy_extra,
                          "triplet": cfg.loss.copy_triplet_weight, "ce": cfg.loss.copy_ce_weight},
                         margin=cfg.loss.copy_triplet_margin, mining=cfg.loss.triplet_mining,
                         normalise=cfg.loss.triplet_normalise, copy_centre=cfg.loss.copy_batch_centre,
                         delta=cfg.loss.copy_delta, temperature=cfg.loss.copy_temperature)

        def objective(outputs: dict[str, torch.Tensor], raw: Any, aug: Any) -> Any:
            targets = table.targets(raw.clip, aug.flip)
            total, parts = losses(outputs, labels=raw.label, targets=targets)
            parts["copy_mean_target"] = mean_target_loss(targets, cfg.loss.copy, cfg.loss.copy_delta,
                                                         cfg.loss.copy_temperature, strips,
                                                         cfg.loss.copy_batch_centre)
            return total, parts
    seed_everything(cfg.train_for("student").seed)
    model = build_net(cfg.student, n_classes)
    strips = getattr(model, "n_strips", 1)
    if model_modality(model) != GRAY:
        raise ValueError(f"student model {cfg.student.model!r} reads flow; a student must read gray")
    if not no_copy and table.dim != model.embedding_dim:
        raise ValueError(f"student embedding_dim {model.embedding_dim} != master signature dimension "
                         f"{table.dim}; a student copies the master's code (set student.embedding_dim)")
    guard = CollapseGuard(n_classes, None if no_copy else cfg.loss.copy, raw_codes=not cfg.loss.triplet_normalise)
    result = train(run, model, objective, clips, cfg, "student", ctx, resume, terms=lambda: losses.terms,
                   guard=guard)
    if ctx.is_main:
        size = crop_size(cfg.data.store, clips["seq_id"].iloc[0], GRAY)
        run.save_model(model, _model_info(cfg, "student", cfg.student, model, n_classes, size,
                                          {"copy": not no_copy, "clips_per_s": result.clips_per_s,
                                           "precision": precision(ctx.device, cfg.train_for("student").amp)}))
        run.update_info(finished=True, steps=result.steps, torch_threads=torch.get_num_threads())
    barrier(ctx)
    return run


def evaluate_run(run_path: str | Path, split_dir: str | Path, store_path: str | None = None,
                 device: str | None = None, workers: int | None = None, echo: bool = True) -> Any:
    """Evaluate a finished run on a split's gallery and probe sequences; writes ``RUN/eval``
    (and prints the tables, unless ``echo`` is False: ``run_everything`` prints one summary)."""
    run = RunDir(run_path)
    result = evaluate_model(run.path, split_dir, store_path, device, workers)
    out = run.path / "eval"
    result.write_csv(out)
    from training.plots import save_evaluation_plots

    for path in save_evaluation_plots(result, out, run.path.name):
        print(f"wrote {path}", flush=True)
    if echo:
        print(result.to_text(), flush=True)
    return result


def evaluate_model(run_path: str | Path, split_dir: str | Path, store_path: str | None = None,
                   device: str | None = None, workers: int | None = None, checkpoint: str | Path | None = None
                   ) -> Any:
    """The evaluator's tables of a finished run's model on a split, written nowhere; with
    ``checkpoint``, of the weights of that checkpoint of the run (a learning curve's points)."""
    from training.evaluate import evaluate

    run = RunDir(run_path)
    cfg = run.config()
    if store_path:
        cfg.data.store = str(store_path)
    model, info = load_run_model(run.path, checkpoint)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev)
    split = read_split(split_dir)
    store = Store(cfg.data.store)
    walks = cfg.data.unit == "walk"
    if walks:
        clips = build_walk_index(store, split, info["modality"], roles=("gallery", "probe"), labels={})
    else:
        clips = build_clip_index(store, split, cfg.data.clip_len, cfg.data.step, roles=("gallery", "probe"),
                                 labels={}, loop_short=True)
    wanted = split[split["role"].isin(("gallery", "probe")) & split["seq_id"].isin(set(store.seq_ids()))]
    without = sorted(set(wanted["seq_id"]) - set(clips["seq_id"]))
    if without:
        print(f"warning: {len(without)} gallery/probe sequences hold no frame with the person "
              f"and are not evaluated (e.g. {without[0]})", flush=True)
    looped = 0 if walks else clips.loc[clips[LENGTH] < cfg.data.clip_len, "seq_id"].nunique()
    if looped:
        print(f"{looped} gallery/probe sequences shorter than one clip: embedded as one looped clip", flush=True)
    embeddings = embed_table(model, clips, info["modality"], settings_from(cfg, workers), dev,
                             progress=f"embedding {run.path.name}")
    return evaluate(embeddings, clips, k=cfg.eval.k)


STAGES = (("master", None), ("student-copy", False), ("student-nocopy", True))


def _finished(path: Path) -> bool:
    try:
        return bool(RunDir(path).info().get("finished"))
    except (OSError, ValueError):
        return False


def run_everything(cfg: Config, out: Path, resume: bool = False, export: bool = False) -> pd.DataFrame:
    """Master, copy and no-copy students, evaluation of each; ``OUT/summary.csv`` compares them.

    With ``resume``, finished stages are skipped and an unfinished one continues from its
    last checkpoint, so a killed ``train-copy run`` is restarted by running it again."""
    out.mkdir(parents=True, exist_ok=True)
    for name, no_copy in STAGES:
        path = out / name
        if resume and _finished(path):
            print(f"{name}: finished earlier, skipped", flush=True)
            continue
        partial = resume and (path / "config.yaml").is_file()
        if no_copy is None:
            train_master(cfg, path, resume=partial)
        else:
            train_student(cfg, path, out / "master", no_copy=no_copy, resume=partial)
    ctx = setup_device(cfg.train)
    if not ctx.is_main:
        return pd.DataFrame()
    tables = []
    for name, _ in STAGES:
        print(f"\n== {name} ==", flush=True)
        result = evaluate_run(out / name, cfg.data.split, echo=False)
        tables.append(result.summary.assign(run=name))
    summary = pd.concat(tables, ignore_index=True)
    summary = summary[["run", *[c for c in summary.columns if c != "run"]]]
    summary.to_csv(out / "summary.csv", index=False, float_format="%.2f")
    shown = summary.dropna(axis=1, how="all")  # a same-view run has no cross-view numbers
    print("\n" + shown.to_string(index=False, float_format="%.1f"), flush=True)
    if export:
        _export(out / "student-copy", cfg)
    return summary


def _export(run_path: Path, cfg: Config) -> None:
    """Export the copy student with ``train-copy export`` (training/export.py) and the config's formats."""
    from training.export import export as export_command

    for fmt in cfg.export.formats:
        args = [str(run_path), "--format", fmt, "--batch", str(cfg.export.batch)]
        export_command.main(args + (["--fp16"] if cfg.export.fp16 else []), standalone_mode=False)
