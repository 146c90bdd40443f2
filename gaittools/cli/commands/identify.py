"""``gaittools enroll``, ``identify`` and ``calibrate``: flow-free recognition with an exported student.

Both take ``--model BUNDLE`` (a directory written by ``train-copy export``; see
``gaittools.deploy.runtime``) and run on CPU (ONNX Runtime or torch.export) or GPU (TensorRT, torch,
or onnxruntime-gpu) per ``--device``. A walk bundle (a set network) embeds each walking track
as one set of its frames, a clip bundle pools its clips. Decisions about walks, clips, pooling,
distance, the unknown threshold, people-less and short videos are documented in
``gaittools.deploy.identify``.

One bad video never stops the others: it is reported (status "error", or skipped at enrolment)
and the command exits with status 1 after handling the rest.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from gaittools.deploy.identify import (
    DEFAULT_THRESHOLD,
    STATUS_ERROR,
    STATUS_OK,
    Answer,
    Gallery,
    GalleryError,
    answer_for,
    calibrate_threshold,
    evidence,
    resolve_threshold,
    signature_of_video,
    signatures_of_video,
)
from gaittools.cli.progress import Meter

DEVICE_HELP = "cpu, cuda[:N], or auto (CUDA when the backend and a GPU are there)."


def _load_model(model: Path, device: str, batch_size: int):  # -> SignatureModel
    from gaittools.deploy.runtime import BundleError, load_signature_model

    try:
        loaded = load_signature_model(model, device=device, batch_size=batch_size)
    except BundleError as exc:
        raise click.ClickException(str(exc)) from None
    if loaded.bundle.modality != "gray":
        raise click.ClickException(f"{model}: a {loaded.bundle.modality} master's bundle; identification "
                                   "is flow-free: export a gray student (`train-copy export RUN --model student`)")
    return loaded


def _background(path: Path | None, working_height: int | None) -> np.ndarray | None:
    """The empty-scene image at the model's working height (median of a clip, or an image)."""
    if path is None:
        return None
    from gaittools.person.extract import load_background
    from gaittools.sources.video import DEFAULT_WORKING_HEIGHT, VideoError

    try:
        return load_background(path, working_height or DEFAULT_WORKING_HEIGHT)
    except VideoError as exc:
        raise click.ClickException(str(exc)) from None


def _split_ids(ids: tuple[str, ...]) -> list[str]:
    return [part.strip() for item in ids for part in item.split(",") if part.strip()]


def _progress(meter: Meter, done: int, video: Path) -> None:
    meter.update(done)
    click.echo(f"[{done}/{int(meter.total)}] {video.name}  {meter.rate:.2f} videos/s, ETA {meter.eta()}", err=True)


@click.command("enroll")
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="Deployment bundle from `train-copy export`.")
@click.option("--ids", "ids", multiple=True, required=True,
              help="Identity of each video, in order (repeat the option or separate by commas).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Gallery file (.npz).")
@click.option("--append", is_flag=True, help="Add to an existing gallery (same model) instead of refusing.")
@click.option("--overwrite", is_flag=True, help="Replace an existing gallery.")
@click.option("--threshold", type=float, default=None,
              help=f"Unknown threshold to store with the gallery (default at identify: {DEFAULT_THRESHOLD}).")
@click.option("--background", type=click.Path(exists=True, path_type=Path), default=None,
              help="Empty-scene video or image for background subtraction (e.g. a CASIA-B bkgrd clip).")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
def enroll(videos: tuple[Path, ...], model_path: Path, ids: tuple[str, ...], out: Path, append: bool,
           overwrite: bool, threshold: float | None, background: Path | None, device: str,
           batch_size: int) -> None:
    """Enrol videos under their --ids into a gallery of --model signatures."""
    identities = _split_ids(ids)
    if len(identities) != len(videos):
        raise click.UsageError(f"{len(videos)} videos but {len(identities)} ids: give one id per video")
    if append and overwrite:
        raise click.UsageError("--append and --overwrite exclude each other")
    model = _load_model(model_path, device, batch_size)
    out = out if out.suffix == ".npz" else out.with_name(out.name + ".npz")
    gallery = _gallery_to_extend(out, model, append, overwrite, threshold)
    bg = _background(background, model.bundle.working_height)
    failures = 0
    meter = Meter(len(videos))
    for i, (video, identity) in enumerate(zip(videos, identities)):
        try:
            seq = signature_of_video(video, model, bg)
        except Exception as exc:  # noqa: BLE001 - one bad video must not stop the others
            click.echo(f"{video}: not enrolled: {exc}", err=True)
            failures += 1
            continue
        if seq.status != STATUS_OK or seq.signature is None:
            click.echo(f"{video}: not enrolled: {seq.status} ({seq.message})", err=True)
            failures += 1
            continue
        gallery.add(identity, seq.signature, str(video))
        click.echo(f"{video}: enrolled as {identity} ({evidence(seq.clips, seq.set_frames)}, "
                   f"{seq.person_frames} person frames)")
        _progress(meter, i + 1, video)
    if gallery.ids:
        path = gallery.save(out)
        click.echo(f"gallery {path}: {len(gallery.ids)} entries, {len(set(gallery.ids))} identities")
    else:
        click.echo("nothing enrolled: gallery not written", err=True)
    if failures:
        sys.exit(1)


def _gallery_to_extend(out: Path, model, append: bool, overwrite: bool, threshold: float | None) -> Gallery:
    if out.exists() and not (append or overwrite):
        raise click.ClickException(f"{out}: exists; pass --append to add to it or --overwrite to replace it")
    if out.exists() and append:
        try:
            gallery = Gallery.load(out)
            gallery.check_model(model, out)
        except GalleryError as exc:
            raise click.ClickException(str(exc)) from None
        if threshold is not None:
            gallery.meta["threshold"] = threshold
        return gallery
    return Gallery.empty_for(model, threshold)


@click.command("identify")
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="Deployment bundle from `train-copy export` (the one the gallery was enrolled with).")
@click.option("--gallery", "gallery_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--threshold", type=float, default=None,
              help=f"Distance beyond which the answer is 'unknown' (default: the gallery's, else {DEFAULT_THRESHOLD}).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per walking track of each video (JSON lines) on stdout.")
@click.option("--background", type=click.Path(exists=True, path_type=Path), default=None,
              help="Empty-scene video or image for background subtraction.")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
def identify(videos: tuple[Path, ...], model_path: Path, gallery_path: Path, threshold: float | None,
             as_json: bool, background: Path | None, device: str, batch_size: int) -> None:
    """Who walks in each VIDEO: per walking track, its frames, the nearest enrolled identity
    and its distance, or 'unknown'."""
    model = _load_model(model_path, device, batch_size)
    try:
        gallery = Gallery.load(gallery_path)
        gallery.check_model(model, gallery_path)
    except GalleryError as exc:
        raise click.ClickException(str(exc)) from None
    limit = resolve_threshold(threshold, gallery, model)
    bg = _background(background, model.bundle.working_height)
    errors = 0
    meter = Meter(len(videos))
    for i, video in enumerate(videos):
        try:
            answers = [answer_for(str(video), seq, gallery, limit) for seq in signatures_of_video(video, model, bg)]
        except Exception as exc:  # noqa: BLE001 - report and go on with the next video
            answers = [Answer(str(video), STATUS_ERROR, threshold=limit, message=str(exc))]
            errors += 1
        for answer in answers:  # one per walking track
            _print_answer(answer, as_json)
        if not as_json:
            _progress(meter, i + 1, video)
    if errors:
        sys.exit(1)


def _print_answer(answer: Answer, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(answer.to_dict()))
        return
    who = answer.video
    if answer.track is not None:
        who += (f" track {answer.track} (frames {answer.first_frame}-{answer.last_frame}, "
                f"{answer.person_frames} with the person)")
    if answer.distance is not None:
        margin = f", margin {answer.margin:.3f} to the next identity" if answer.margin is not None else ""
        click.echo(f"{who}: {answer.identity}  (nearest {answer.nearest} at distance "
                   f"{answer.distance:.3f}{margin}, threshold {answer.threshold:.3f}, "
                   f"{evidence(answer.clips, answer.set_frames)})")
    else:
        click.echo(f"{who}: {answer.status}: {answer.message}")


@click.command("calibrate")
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--ids", "ids", multiple=True, required=True,
              help="True identity of each video, in order; ids not in the gallery must come out 'unknown'.")
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="The bundle the gallery was enrolled with.")
@click.option("--gallery", "gallery_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--background", type=click.Path(exists=True, path_type=Path), default=None,
              help="Empty-scene video or image for background subtraction.")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
def calibrate(videos: tuple[Path, ...], ids: tuple[str, ...], model_path: Path, gallery_path: Path,
              background: Path | None, device: str, batch_size: int) -> None:
    """Set the gallery's unknown threshold from labelled videos of validation identities.

    Give walks NOT enrolled of enrolled people and walks of people not in the gallery; the
    threshold with the lowest balanced error is stored in the gallery (see gaittools.deploy.identify).
    """
    identities = _split_ids(ids)
    if len(identities) != len(videos):
        raise click.UsageError(f"{len(videos)} videos but {len(identities)} ids: give one id per video")
    model = _load_model(model_path, device, batch_size)
    gallery = Gallery.load(gallery_path)
    gallery.check_model(model, gallery_path)
    bg = _background(background, model.bundle.working_height)
    labelled = []
    meter = Meter(len(videos))
    for i, (video, identity) in enumerate(zip(videos, identities)):
        seq = signature_of_video(video, model, bg)
        if seq.status != STATUS_OK or seq.signature is None:
            raise click.ClickException(f"{video}: {seq.status} ({seq.message}); calibrate on usable videos only")
        labelled.append((identity, seq.signature))
        _progress(meter, i + 1, video)
    result = calibrate_threshold(gallery, labelled)
    gallery.meta["threshold"] = result.threshold
    gallery.meta["calibration"] = result.to_dict()
    gallery.save(gallery_path)
    click.echo(f"{gallery_path}: unknown threshold {result.threshold:.3f} (on {result.enrolled_videos} videos of "
               f"enrolled people: {100 * result.enrolled_error:.0f}% not named; on {result.unknown_videos} of "
               f"people not enrolled: {100 * result.unknown_error:.0f}% named anyway)")
