"""``gaittools synth OUT``: write a synthetic CASIA-B or TUM-GAID dataset (and a preview)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from gaittools.sources.layouts import CASIA_B_VIEWS
from gaittools.cli.progress import Meter


def _views(text: str) -> list[str]:
    return list(CASIA_B_VIEWS) if text.strip().lower() == "all" else \
        [v for v in text.replace(" ", "").split(",") if v]


def _walks(text: str | None) -> int | list[str] | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else [w for w in text.replace(" ", "").split(",") if w]


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not WIDTHxHEIGHT, e.g. 320x240", param_hint="--size")
    return w, h


class _Progress:
    """Prints clips done, rate and ETA (``gaittools.cli.progress.Meter``) at most once a second."""

    def __init__(self) -> None:
        self.last = 0.0
        self.meter: Meter | None = None

    def __call__(self, done: int, total: int, elapsed: float) -> None:
        if self.meter is None:
            self.meter = Meter(total)
        self.meter.update(done)
        now = time.monotonic()
        if done < total and now - self.last < 1.0:
            return
        self.last = now
        click.echo(f"synth: {done}/{total} clips, {self.meter.rate:.1f} clips/s, ETA {self.meter.eta()}", err=True)


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--layout", type=click.Choice(["casia-b", "tum-gaid"]), default="casia-b",
              show_default=True, help="Dataset layout and file naming to imitate.")
@click.option("--subjects", type=click.IntRange(1, 999), default=8, show_default=True)
@click.option("--walks", default=None,
              help="Walks per subject: N (the first N of each condition) or names such as "
                   "nm-01,bg-01,cl-01 (TUM-GAID: n01,b01,s01). Default: all ten.")
@click.option("--views", default="000,090,180", show_default=True,
              help="CASIA-B views, comma-separated, or 'all' (ignored for TUM-GAID).")
@click.option("--frames", type=click.IntRange(1), default=40, show_default=True,
              help="Frames per clip.")
@click.option("--size", default="320x240", show_default=True, help="WIDTHxHEIGHT "
              "(real CASIA-B 320x240, TUM-GAID 640x480).")
@click.option("--fps", type=click.FloatRange(min=1.0), default=25.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Processes (default: one per CPU core). Output does not depend on it.")
@click.option("--overwrite", is_flag=True, help="Replace a synthetic dataset already in OUT.")
@click.option("--preview", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a PNG montage: rows conditions, columns views.")
@click.option("--scenes", default=None,
              help="Instead of a dataset, multi-person scenes with ground-truth tracks: "
                   "crossing,waver,pillar,row,pair,couples or 'all' (OUT/<scene>.avi, "
                   "OUT/ground_truth/<scene>.npz; 80 frames, couples 200 and twice as wide, unless "
                   "--frames is given).")
def synth(out: Path, layout: str, subjects: int, walks: str | None, views: str, frames: int,
          size: str, fps: float, seed: int, workers: int | None, overwrite: bool,
          preview: Path | None, scenes: str | None) -> None:
    """Generate a synthetic gait dataset in OUT, in the real dataset's layout, with ground
    truth in OUT/ground_truth (boxes, subjects' gait parameters, sequences)."""
    if scenes is not None:
        from gaittools.synth.crowd import SCENES, write_scenes

        names = list(SCENES) if scenes.strip().lower() == "all" else [s for s in scenes.replace(" ", "").split(",") if s]
        unknown = [n for n in names if n not in SCENES]
        if unknown or not names:
            raise click.BadParameter(f"{', '.join(unknown) or scenes!r}: scenes are {', '.join(SCENES)} or all",
                                     param_hint="--scenes")
        ctx = click.get_current_context()
        n = frames if ctx.get_parameter_source("frames") is not click.core.ParameterSource.DEFAULT else None
        written = write_scenes(out, names, n, _size(size), fps, seed)
        click.echo(f"wrote {len(written)} scenes to {out}")
        return
    from gaittools.synth import SynthError, generate_dataset, make_preview

    try:
        generate_dataset(out, layout=layout, subjects=subjects, walks=_walks(walks),
                         views=_views(views), frames=frames, size=_size(size), fps=fps,
                         seed=seed, workers=workers, overwrite=overwrite, progress=_Progress())
        if preview is not None:
            make_preview(out, preview)
    except (SynthError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {out}" + (f" and {preview}" if preview else ""))
