"""OpenCV's DualTVL1 behind the same interface as :func:`gaittools.flow.tvl1`.

It is the reference the torch solver is checked against and the CPU path of ``compute-flow``.
A fresh OpenCV object is made per pair because OpenCV lowers its stored ``nscales`` for good
after one small image, which would silently change every later pair's result.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from gaittools.flow.params import TVL1Params


def _create(params: TVL1Params):
    import cv2

    return cv2.optflow.DualTVL1OpticalFlow_create(
        tau=params.tau, lambda_=params.lambda_, theta=params.theta, nscales=params.nscales,
        warps=params.warps, epsilon=params.epsilon, innnerIterations=params.inner_iterations,
        outerIterations=params.outer_iterations, scaleStep=params.scale_step,
        gamma=params.gamma, medianFiltering=params.median_filtering, useInitialFlow=False)


def _as_cv_image(frame: np.ndarray) -> np.ndarray:
    """uint8 stays uint8; other dtypes become float32 on 0-1, which OpenCV rescales to 0-255."""
    if frame.dtype == np.uint8:
        return np.ascontiguousarray(frame)
    return np.ascontiguousarray(frame, dtype=np.float32) / np.float32(255.0)


def opencv_pair(frame0: np.ndarray, frame1: np.ndarray, params: TVL1Params | None = None
                ) -> np.ndarray:
    """Flow (2, H, W) float32 for one (H, W) pair."""
    params = params or TVL1Params()
    flow = _create(params).calc(_as_cv_image(frame0), _as_cv_image(frame1), None)
    return np.ascontiguousarray(flow.transpose(2, 0, 1), dtype=np.float32)


def _as_batch(images, name: str) -> np.ndarray:
    array = np.asarray(images)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(f"{name} must be (B, H, W) or (H, W), got shape {array.shape}")
    if not (array.dtype == np.uint8 or np.issubdtype(array.dtype, np.floating)):
        array = array.astype(np.float32)
    return array


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def _pair_job(args) -> np.ndarray:
    frame0, frame1, params = args
    return opencv_pair(frame0, frame1, params)


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of OpenCV workers, one OpenCV thread each, to pass to :func:`opencv_tvl1`.

    Spawned, not forked: forking a process whose torch/OpenMP threads are running can hang.
    """
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)


def opencv_tvl1(I0, I1, params: TVL1Params | None = None, *, workers: int = 1,
                pool: ProcessPoolExecutor | None = None) -> np.ndarray:
    """OpenCV DualTVL1 flow (B, 2, H, W) float32 for (B, H, W) arrays on the 0-255 scale.

    Pairs run one at a time in this process (OpenCV uses its own threads), or, with
    ``workers`` > 1 or a ``pool`` from :func:`worker_pool`, in processes with one OpenCV
    thread each.
    """
    params = params or TVL1Params()
    frames0 = _as_batch(I0, "I0")
    frames1 = _as_batch(I1, "I1")
    if frames0.shape != frames1.shape:
        raise ValueError(f"I0 and I1 differ in shape: {frames0.shape} vs {frames1.shape}")
    jobs = [(frames0[i], frames1[i], params) for i in range(len(frames0))]
    if pool is not None:
        return np.stack(list(pool.map(_pair_job, jobs, chunksize=max(1, len(jobs) // 64))))
    if workers <= 1:
        return np.stack([_pair_job(job) for job in jobs])
    with worker_pool(min(workers, os.cpu_count() or 1, len(jobs))) as own_pool:
        return opencv_tvl1(frames0, frames1, params, pool=own_pool)
