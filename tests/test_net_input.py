"""Stored crops -> network input: one rule, and training and deployment really share it.

The identity check runs the two real paths on the same crops: training's evaluation input
(``training.data.augment`` with identity parameters, what ``training.embed`` feeds the network)
and what ``gaittools identify`` feeds the exported model (``signature_of_crops`` through
``SignatureModel``). They must be equal bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gaittools.deploy import runtime as deploy
from gaittools.deploy.identify import signature_of_crops
from gaittools.deploy.net_input import fit_to_input, normalise_gray
from training.data import AugmentParams, augment


def _gray(n: int, t: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, t, size, size), dtype=np.uint8)


def test_a_smaller_input_is_the_centre_cut_without_resampling():
    crops = _gray(2, 3, 64)
    cut = fit_to_input(crops, 60)
    assert cut.shape == (2, 3, 60, 60) and cut.dtype == np.uint8
    np.testing.assert_array_equal(cut, crops[..., 2:62, 2:62])
    odd = fit_to_input(crops, 59)  # the extra pixel goes to the right/bottom margin
    np.testing.assert_array_equal(odd, crops[..., 2:61, 2:61])
    assert fit_to_input(crops, 64) is crops
    flow = torch.randn(1, 2, 2, 64, 64)
    assert torch.equal(fit_to_input(flow, 52, flow=True), flow[..., 6:58, 6:58])  # pixel scale kept


def test_a_larger_input_is_bilinear_and_scales_flow():
    crops = _gray(2, 3, 20).astype(np.float32)
    up = fit_to_input(crops, 33)
    reference = F.interpolate(torch.from_numpy(crops), size=(33, 33), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(up, reference.numpy(), atol=1e-3)
    assert torch.equal(fit_to_input(torch.from_numpy(crops), 33), torch.from_numpy(up))  # numpy == torch
    flow = np.ones((1, 2, 2, 20, 20), np.float32)
    np.testing.assert_allclose(fit_to_input(flow, 30, flow=True), 1.5)
    with pytest.raises(ValueError, match="square"):
        fit_to_input(np.zeros((2, 8, 9)), 4)


def _recording_model(length: int, step: int, crop: int, size: int | None) -> tuple[deploy.SignatureModel, list]:
    seen: list[np.ndarray] = []
    clip = {"length": length, "step": step, "crop_size": crop, "crop_mode": "person"}
    if size is not None:
        clip["input_size"] = size
    meta = {"clip": clip, "output": {"dim": 2}, "input": {"batch": "dynamic"}, "weights_fingerprint": "x",
            "model": {"name": "recorder"}, "normalisation": dict(deploy.NORMALISATION)}

    def run(x: np.ndarray) -> np.ndarray:
        seen.append(x.copy())
        return np.tile([[1.0, 0.0]], (len(x), 1)).astype(np.float32)

    return deploy.SignatureModel(deploy.Bundle(Path("/nowhere"), meta), run, "cpu"), seen


@pytest.mark.parametrize("crop,size", [(64, 60), (64, 52), (32, 32), (24, 40)])
def test_training_eval_input_equals_what_identify_feeds_the_model(crop, size):
    gray = _gray(1, 30, crop, seed=crop + size)[0]
    windows = np.zeros((30, 4), np.float32)
    model, seen = _recording_model(length=8, step=5, crop=crop, size=size)
    result = signature_of_crops(model, gray, windows)
    assert result.status == "ok" and result.clips == 5
    deployed = np.concatenate(seen)
    clips = torch.from_numpy(np.stack([gray[s:s + 8] for s in range(0, 23, 5)]))
    trained = augment(clips, AugmentParams.identity(len(clips)), size, flow_scale=0.25).numpy()
    assert deployed.shape == trained.shape == (5, 1, 8, size, size)
    np.testing.assert_array_equal(deployed, trained)


def test_flow_master_inputs_agree_and_old_bundles_keep_their_meaning():
    flow = np.random.default_rng(1).normal(0, 2, (3, 6, 2, 64, 64)).astype(np.float16)
    trained = augment(torch.from_numpy(flow), AugmentParams.identity(3), 60, flow_scale=0.25).numpy()
    deployed = deploy.normalise_clips(flow.astype(np.float32), {"scale": 0.25, "offset": 0.0}, 60)
    np.testing.assert_allclose(deployed, trained, rtol=0, atol=1e-6)
    model, seen = _recording_model(length=4, step=2, crop=16, size=None)  # a bundle before input_size
    assert model.input_size == 16
    model(_gray(2, 4, 16))
    np.testing.assert_array_equal(seen[0], normalise_gray(_gray(2, 4, 16))[:, None])
