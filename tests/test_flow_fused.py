"""The fused Triton engine against the plain-torch reference it must reproduce.

On a CUDA machine the kernels run natively; elsewhere, when triton is installed, they run under
Triton's CPU interpreter (TRITON_INTERPRET=1, in a subprocess because the variable must be set
before triton is imported). Without triton these tests skip: the reference path is what the
CPU uses and it is tested in test_flow_tvl1.py.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
HAVE_TRITON = importlib.util.find_spec("triton") is not None
HAVE_CUDA = torch.cuda.is_available()

pytestmark = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed (the fused "
                                "engine is CUDA-only; the CPU uses the reference engine)")

# Runs in a fresh interpreter; prints one JSON line of maximum differences.
COMPARE = r"""
import json, math, sys, torch
from gaittools.flow.params import TVL1Params
from gaittools.flow.tvl1_torch import ReferenceEngine, tvl1
from gaittools.flow.imageops import median_filter_torch
from gaittools.flow import fused

device = torch.device(sys.argv[1])
gen = torch.Generator().manual_seed(0)
params = TVL1Params()
engine = fused.FusedEngine()
out = {}

flow = torch.randn(2, 1, 9, 11, generator=gen).to(device)
out["median5"] = (engine.median(flow, 5) - median_filter_torch(flow, 5)).abs().max().item()
out["median3"] = (engine.median(flow, 3) - median_filter_torch(flow, 3)).abs().max().item()

b, h, w = 3, 12, 17
u = (torch.randn(b, 2, h, w, generator=gen) * 0.5).to(device)
p = (torch.randn(b, 2, 2, h, w, generator=gen) * 0.3).to(device)
ix = torch.randn(b, h, w, generator=gen) * 20
iy = torch.randn(b, h, w, generator=gen) * 20
ix[:, 0, :3] = 0.0  # flat patches exercise the |grad|^2 guard
iy[:, 0, :3] = 0.0
rho = torch.randn(b, h, w, generator=gen) * 10
data = torch.stack((ix, iy, rho, ix * ix + iy * iy), 1).contiguous().to(device)
# pair 2 converges early: a huge threshold stops every pair after its first update, so
# compare a few iterations with a threshold that only pair 2 (scaled smaller) falls below.
u[2] *= 1e-3; p[2] *= 1e-3; data[2, :3] *= 1e-3; data[2, 3] *= 1e-6
u_ref, p_ref = u.clone(), p.clone()
u_fus, p_fus = u.clone(), p.clone()
threshold = 5.0
still_ref = ReferenceEngine().iterate(u_ref, p_ref, data, threshold, 7, params)
still_fus = engine.iterate(u_fus, p_fus, data, threshold, 7, params)
out["u"] = (u_ref - u_fus).abs().max().item()
out["p"] = (p_ref - p_fus).abs().max().item()
out["still_ref"] = still_ref.tolist()
out["still_fus"] = still_fus.tolist()
# the same input twice: the same iterates and stops, bit for bit (no float atomics)
u_again, p_again = u.clone(), p.clone()
still_again = engine.iterate(u_again, p_again, data, threshold, 7, params)
out["repeat_equal"] = bool(torch.equal(u_again, u_fus) and torch.equal(p_again, p_fus)
                           and torch.equal(still_again, still_fus))
# several pixel blocks per pair: the error is the blocks' sums added in order
big = TVL1Params()
hb, wb = 40, 60  # 2400 pixels: 3 blocks of fused.BLOCK
ub = (torch.randn(2, 2, hb, wb, generator=gen) * 0.5).to(device)
pb = (torch.randn(2, 2, 2, hb, wb, generator=gen) * 0.3).to(device)
gx, gy = torch.randn(2, hb, wb, generator=gen) * 20, torch.randn(2, hb, wb, generator=gen) * 20
db = torch.stack((gx, gy, torch.randn(2, hb, wb, generator=gen) * 10, gx * gx + gy * gy), 1).contiguous().to(device)
ur, pr, uf, pf = ub.clone(), pb.clone(), ub.clone(), pb.clone()
ReferenceEngine().iterate(ur, pr, db, 0.0, 3, big)
engine.iterate(uf, pf, db, 0.0, 3, big)
out["blocks_u"] = (ur - uf).abs().max().item()

# every pair stops at once: the kernels must skip them and the periodic check end the loop
u_ref, p_ref = u.clone(), p.clone()
u_fus, p_fus = u.clone(), p.clone()
stop_ref = ReferenceEngine().iterate(u_ref, p_ref, data, 1e30, fused.SYNC_EVERY + 3, params)
stop_fus = engine.iterate(u_fus, p_fus, data, 1e30, fused.SYNC_EVERY + 3, params)
out["stopped_u"] = (u_ref - u_fus).abs().max().item()
out["stopped_p"] = (p_ref - p_fus).abs().max().item()
out["stopped_any"] = bool(stop_ref.any() or stop_fus.any())

# the graphed engine's block: static buffers padded to a power of two (3 pairs -> 4), then
# reused for 2 pairs with stale padding; on CUDA it replays a captured graph, here it launches
graphed = fused.GraphedFusedEngine(capture=device.type == "cuda")
out["bucket"] = [fused.graph_bucket(n) for n in (1, 2, 3, 4, 5, 1000)]
for n in (3, 2):
    u_g, p_g, u_f, p_f = u[:n].clone(), p[:n].clone(), u[:n].clone(), p[:n].clone()
    still_g = graphed.iterate(u_g, p_g, data[:n].contiguous(), threshold, 7, params)
    still_f = engine.iterate(u_f, p_f, data[:n].contiguous(), threshold, 7, params)
    out[f"graphed_equal_{n}"] = bool(torch.equal(u_g, u_f) and torch.equal(p_g, p_f) and torch.equal(still_g, still_f))
out["graphed_blocks"] = len(graphed.blocks)

g = torch.Generator().manual_seed(1)
base = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 44, 52, generator=g) * 255, 3, 1, 1)[0]
i0 = torch.cat([base[:, 2:42, 2:50], base[:, 1:41, 3:51]]).to(device)
i1 = torch.cat([base[:, 3:43, 1:49], base[:, 1:41, 3:51]]).to(device)
small = TVL1Params(nscales=1, warps=1, outer_iterations=1, inner_iterations=8)
out["tvl1"] = (tvl1(i0, i1, small, engine="fused") - tvl1(i0, i1, small, engine="reference")
               ).abs().max().item()
print(json.dumps(out))
"""


def _compare(device: str, interpret: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    done = subprocess.run([sys.executable, "-c", COMPARE, device], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check(result: dict) -> None:
    assert result["median5"] == 0.0
    assert result["median3"] == 0.0
    assert result["u"] < 1e-4
    assert result["p"] < 1e-4
    assert result["still_ref"] == result["still_fus"]
    assert result["still_ref"] == [True, True, False], "the test must exercise early stopping"
    assert result["repeat_equal"]
    assert result["blocks_u"] < 1e-3
    assert result["stopped_u"] < 1e-4 and result["stopped_p"] < 1e-4
    assert not result["stopped_any"]
    assert result["tvl1"] < 1e-3
    assert result["bucket"] == [1, 2, 4, 4, 8, 1024]
    assert result["graphed_equal_3"] and result["graphed_equal_2"], "the graphed block must be the fused engine"
    assert result["graphed_blocks"] == 2  # buckets 4 and 2


def test_kernels_do_not_recompile_per_step():
    """step and n_pairs change every launch; specialising on them recompiles (1, multiples of 16)."""
    from gaittools.flow import fused

    for kernel in (fused._primal_kernel, fused._dual_kernel):
        if hasattr(kernel, "params"):  # a JIT function
            unspecialised = {param.name for param in kernel.params if param.do_not_specialize}
        else:  # TRITON_INTERPRET=1 in this process: the interpreter keeps the jit options
            unspecialised = set(kernel.kwargs["do_not_specialize"])
        assert {"step", "n_pairs"} <= unspecialised, kernel


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_CUDA, reason="no CUDA device")
def test_fused_matches_reference_on_cuda():
    _check(_compare("cuda", interpret=False))


@pytest.mark.skipif(HAVE_CUDA, reason="CUDA present: the native kernels are tested instead")
def test_fused_matches_reference_in_triton_interpreter():
    _check(_compare("cpu", interpret=True))
