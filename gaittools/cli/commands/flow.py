"""``gaittools flow`` and ``gaittools show-flow``: TV-L1 between two images, and flow pictures.

For users checking a pair by hand, and for comparing the torch solver with OpenCV's on the same
pair (run it twice with ``--backend``). Heavy imports (torch, cv2) happen inside the commands.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import click
import numpy as np


def _read_gray(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise click.ClickException(f"{path}: cannot read as an image (missing, empty or not an "
                                   f"image format OpenCV decodes)")
    return image


def _write_png(path: Path, rgb: np.ndarray) -> None:
    """Write atomically so an interrupted run never leaves a truncated picture."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        if not cv2.imwrite(tmp, np.ascontiguousarray(rgb[..., ::-1])):
            raise click.ClickException(f"{path}: OpenCV could not write the PNG")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _torch_device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise click.ClickException(
            f"--device cuda: CUDA is not available here (torch {torch.__version__}, "
            f"built with CUDA {torch.version.cuda}); use --device cpu or --backend opencv")
    return torch.device(name)


@click.command("flow")
@click.argument("frame0", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("frame1", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the flow (Middlebury .flo).")
@click.option("--png", "png_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the flow in the Middlebury colour coding.")
@click.option("--backend", type=click.Choice(["torch", "opencv"]), default="torch",
              show_default=True, help="Our batched solver, or OpenCV's DualTVL1.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Device for --backend torch.")
def flow(frame0: Path, frame1: Path, out_path: Path, png_path: Path | None, backend: str,
         device: str) -> None:
    """TV-L1 optical flow from FRAME0 to FRAME1 (gray; colour images are converted)."""
    from gaittools.flow import flow_to_color, opencv_tvl1, tvl1, write_flo

    image0, image1 = _read_gray(frame0), _read_gray(frame1)
    if image0.shape != image1.shape:
        raise click.ClickException(f"{frame0} is {image0.shape[1]}x{image0.shape[0]} but {frame1} "
                                   f"is {image1.shape[1]}x{image1.shape[0]}: frames must match")
    if backend == "opencv" and device != "cpu":
        raise click.ClickException("--backend opencv runs on the CPU only; drop --device cuda")
    start = time.perf_counter()
    if backend == "torch":
        import torch

        target = _torch_device(device)
        result = tvl1(torch.from_numpy(image0[None]).to(target),
                      torch.from_numpy(image1[None]).to(target))[0].cpu().numpy()
    else:
        result = opencv_tvl1(image0[None], image1[None])[0]
    seconds = time.perf_counter() - start
    write_flo(out_path, result)
    if png_path is not None:
        _write_png(png_path, flow_to_color(result))
    magnitude = np.sqrt((result.astype(np.float64) ** 2).sum(axis=0))
    click.echo(f"{out_path}: {image0.shape[1]}x{image0.shape[0]} flow by {backend}"
               f"{'/' + device if backend == 'torch' else ''} in {seconds:.2f}s, "
               f"mean |flow| {magnitude.mean():.3f} px, max {magnitude.max():.3f} px")


@click.command("show-flow")
@click.argument("flo_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="PNG to write.")
@click.option("--max-flow", type=float, default=None,
              help="Magnitude drawn fully saturated (default: the largest in the file).")
def show_flow(flo_path: Path, out_path: Path, max_flow: float | None) -> None:
    """Draw a .flo file in the Middlebury colour coding (hue = direction, saturation = speed)."""
    from gaittools.flow import FloError, flow_to_color, read_flo

    try:
        field = read_flo(flo_path)
    except FloError as exc:
        raise click.ClickException(str(exc)) from exc
    if max_flow is not None and not max_flow > 0:
        raise click.ClickException(f"--max-flow must be > 0, got {max_flow}")
    _write_png(out_path, flow_to_color(field, max_flow))
    click.echo(f"{out_path}: {field.shape[2]}x{field.shape[1]} flow picture")
