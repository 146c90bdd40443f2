"""``train-copy``: train the flow master, the gray students that copy it, evaluate, export;
``template`` runs the GEI + PCA + LDA baseline (``training.template``) into a run directory.

Every training command takes ``--config`` (YAML, validated) and ``--set KEY=VALUE`` overrides
(``--set train.steps=200``), writes a run directory and continues one with ``--resume``.
Run under ``torchrun --nproc-per-node N -m training.cli ...`` for DDP: nothing else changes.
``export`` comes from ``training.export`` and is listed only when that module is installed.

Errors are one line (``gaittools.cli.errors``): exit 2 for a usage error (bad arguments, a
bad config, missing inputs). The training commands check their inputs (store, split, master
run) before they create the run directory, and a start that fails anyway (before the first
checkpoint) removes the directory it created, so the next try starts clean.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from gaittools import __version__
from gaittools.cli.errors import GuardedGroup, InputError
from training.config import Config, ConfigError, load_config
from training.runs import RunError

#: Commands that live in other modules, loaded only when used: name -> "module:attr".
LAZY_COMMANDS: dict[str, str] = {"export": "training.export:export"}


class TrainCopyGroup(GuardedGroup):
    extra_errors = (RunError, ConfigError)

    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = [n for n, target in LAZY_COMMANDS.items() if _module_exists(target)]
        return [*super().list_commands(ctx), *lazy]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in LAZY_COMMANDS:
            return command
        target = LAZY_COMMANDS[cmd_name]
        if not _module_exists(target):
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr, None)


def _module_exists(target: str) -> bool:
    try:
        return importlib.util.find_spec(target.split(":")[0]) is not None
    except ModuleNotFoundError:
        return False


def _config(path: str, overrides: tuple[str, ...]) -> Config:
    try:
        return load_config(path, overrides)
    except ConfigError as exc:
        raise InputError(str(exc)) from exc


def _check_inputs(cfg: Config, config_path: str) -> None:
    """The store and split a training command reads, checked before any run directory exists."""
    from gaittools.store.zarr_store import Store
    from training.clips import read_split

    for key, value, make in (("data.store", cfg.data.store, "gaittools extract-frames"),
                             ("data.split", cfg.data.split, "gaittools build-split")):
        if not value:
            raise InputError(f"{config_path}: {key} is not set (--set {key}=PATH)")
        if not Path(value).exists():
            raise InputError(f"{config_path}: {key} {value} does not exist (make it with `{make}`, "
                             f"or point the config at it: --set {key}=PATH)")
    Store(cfg.data.store)  # StoreError: not a store, other format
    read_split(cfg.data.split)  # ValueError naming the file: not a split table


def _has_progress(out: Path) -> bool:
    """Whether a run directory holds training worth keeping (a checkpoint or a model)."""
    return any(out.rglob("step_*.pt")) or any(out.rglob("model.pt"))


@contextmanager
def _clean_failed_start(out: str | Path) -> Iterator[None]:
    """Remove ``out`` again if this command created it and fails before saving any training."""
    out = Path(out)
    fresh = not out.exists() or not any(out.iterdir())
    try:
        yield
    except BaseException:
        if fresh and out.is_dir() and not _has_progress(out):
            shutil.rmtree(out, ignore_errors=True)
        raise


config_option = click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
                             help="YAML run configuration (see training/configs/).")
set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a config value, e.g. --set train.steps=200 (repeatable).")
resume_option = click.option("--resume", is_flag=True, help="Continue the run in OUT from its last checkpoint.")


@click.group(cls=TrainCopyGroup)
@click.version_option(__version__, prog_name="train-copy")
def main() -> None:
    """GaitCopy training: flow master -> gray students that copy its signatures -> evaluation."""


@main.command()
@config_option
@set_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to create.")
@resume_option
def master(config_path: str, overrides: tuple[str, ...], out: str, resume: bool) -> None:
    """Train the flow master, freeze it and store its signatures of every training clip."""
    from training.tasks import train_master

    cfg = _config(config_path, overrides)
    _check_inputs(cfg, config_path)
    with _clean_failed_start(out):
        train_master(cfg, out, resume)


@main.command()
@config_option
@set_option
@click.option("--master", "master_run", required=True, type=click.Path(exists=True, file_okay=False),
              help="The finished master run whose signatures are copied (and whose clips are used).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to create.")
@click.option("--no-copy", is_flag=True, help="Baseline: identification losses only, no copying.")
@resume_option
def student(config_path: str, overrides: tuple[str, ...], master_run: str, out: str, no_copy: bool,
            resume: bool) -> None:
    """Train a gray student to copy the master (or, with --no-copy, the baseline)."""
    from training.tasks import train_student

    cfg = _config(config_path, overrides)
    _check_inputs(cfg, config_path)
    _check_master(master_run)
    with _clean_failed_start(out):
        train_student(cfg, out, master_run, no_copy, resume)


def _check_master(master_run: str) -> None:
    from training.runs import RunDir

    run = RunDir(master_run)
    if not (run.path / "clips.parquet").is_file() or not (run.path / "model.pt").is_file():
        raise InputError(f"{run.path}: not a finished master run (no clips.parquet / model.pt); "
                         "train one with `train-copy master` and pass its directory to --master")


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--split", "split_dir", required=True, type=click.Path(exists=True), help="build-split output DIR.")
@click.option("--store", default=None, type=click.Path(exists=True, file_okay=False),
              help="Store to read (default: the run's).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available).")
@click.option("--workers", default=None, type=int, help="DataLoader workers (default: the run's).")
def evaluate(run: str, split_dir: str, store: str | None, device: str | None, workers: int | None) -> None:
    """Rank-1 tables of a run on a split: printed, and CSV + heatmap PNGs in RUN/eval."""
    from training.tasks import evaluate_run

    evaluate_run(run, split_dir, store, device, workers)


@main.command("run")
@click.argument("config_path", metavar="CONFIG", type=click.Path(exists=True, dir_okay=False))
@set_option
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Directory of the runs (default: the config's run.out).")
@resume_option
@click.option("--skip-export", is_flag=True, help="Do not export the copy student.")
def run_all(config_path: str, overrides: tuple[str, ...], out: str | None, resume: bool, skip_export: bool) -> None:
    """Master, copy student, no-copy student, evaluation of all three (and export) in one go.

    Writes OUT/master, OUT/student-copy, OUT/student-nocopy and OUT/summary.csv."""
    from training.tasks import run_everything

    cfg = _config(config_path, overrides)
    out = out or cfg.run.out
    if not out:
        raise click.UsageError(f"{config_path}: give --out or run.out")
    _check_inputs(cfg, config_path)
    with _clean_failed_start(out):
        run_everything(cfg, Path(out), resume, export=not skip_export and _module_exists(LAZY_COMMANDS["export"]))


@main.command()
@click.option("--store", "store_path", required=True, type=click.Path(exists=True, file_okay=False),
              help="The store (extract-frames output).")
@click.option("--split", "split_dir", required=True, type=click.Path(exists=True), help="build-split output DIR.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to create.")
@click.option("--array", default="gray", show_default=True, type=click.Choice(["gray", "sil", "flow"]),
              help="Store array the GEIs are made of (flow: the GEI of the flow magnitude).")
@click.option("--components", default=150, show_default=True, type=click.IntRange(1),
              help="PCA dimensions before LDA (capped at train walks - train subjects).")
def template(store_path: str, split_dir: str, out: str, array: str, components: int) -> None:
    """The template baseline, GEI + PCA + LDA: fitted on the split's train walks, evaluated on
    its gallery and probe walks (sequence 1-NN). Writes RUN/run.json, RUN/template.npz and
    RUN/eval (the same tables and plots as `train-copy evaluate`)."""
    from gaittools.store.zarr_store import Store
    from training.clips import read_split
    from training.template import run_template, summary_text

    Store(store_path)  # StoreError: not a store, other format
    read_split(split_dir)  # ValueError naming the file: not a split table
    with _clean_failed_start(out):
        result = run_template(store_path, split_dir, out, array, components)
    from training.runs import RunDir

    click.echo(summary_text(result, RunDir(out).info()))
    click.echo(f"wrote {Path(out) / 'eval'}")


@main.command("make-toy")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--subjects", default=16, show_default=True, type=click.IntRange(4, 999))
@click.option("--train-subjects", default=8, show_default=True, type=click.IntRange(2))
@click.option("--views", default="090", show_default=True, help="Comma-separated CASIA-B views.")
@click.option("--frames", default=45, show_default=True, type=click.IntRange(28))
@click.option("--size", default=64, show_default=True, type=click.IntRange(49), help="Crop size (px).")
@click.option("--seed", default=0, show_default=True, type=int)
def make_toy(out: str, subjects: int, train_subjects: int, views: str, frames: int, size: int, seed: int) -> None:
    """Write OUT/store + OUT/split of synthetic walkers, in seconds, for demos, tests and benchmarks.

    The walkers of `gaittools synth` (same seed, same subjects), walks nm-01..04, bg-01, cl-01;
    crops cut at the renderer's own person boxes and cheap torch TV-L1 flow go straight into the
    store (no videos, no extract-frames or compute-flow: demo.sh runs that real path). The split
    is build-split's: the first --train-subjects train, the rest enrol nm-01/02 and probe
    nm-03/04 (NM), bg-01 (BG), cl-01 (CL)."""
    from gaittools.synth import SynthError
    from gaittools.synth.toystore import write_toy

    if Path(out).exists() and any(Path(out).iterdir()):
        raise click.BadParameter(f"{out} exists and is not empty; choose a new folder", param_hint="OUT")
    try:
        toy = write_toy(out, subjects=subjects, train_subjects=train_subjects,
                        walks=("nm-01", "nm-02", "nm-03", "nm-04", "bg-01", "cl-01"), views=views.split(","),
                        frames=frames, crop_size=size,
                        probes={"NM": ("nm-03", "nm-04"), "BG": ("bg-01",), "CL": ("cl-01",)}, seed=seed)
    except SynthError as exc:  # a view that is not a CASIA-B view
        raise click.BadParameter(str(exc), param_hint="--views") from None
    click.echo(f"wrote {len(toy.store.seq_ids())} sequences to {toy.store.path} and the split to {toy.split}")


@main.command("show-config")
@click.argument("config_path", metavar="CONFIG", required=False, type=click.Path(exists=True, dir_okay=False))
@set_option
def show_config(config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Print a config with every default filled in (or the defaults, without CONFIG)."""
    import yaml

    from training.config import config_from_dict

    cfg = _config(config_path, overrides) if config_path else config_from_dict({}, "<defaults>", overrides)
    click.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


if __name__ == "__main__":
    main()
