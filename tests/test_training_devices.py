"""Training defects that only a GPU or several ranks would show, reproduced on the CPU.

- resume with the checkpoint mapped to another device (CUDA in real life, ``meta`` here);
- ``train.device: cuda`` (no index) against torch's real ``torch.cuda.set_device`` with the
  CUDA backend mocked underneath it;
- two gloo ranks (``torch.multiprocessing``) on different data: the plateau schedule takes one
  decision for both, and sharded master signatures equal the single-process ones.
"""

import socket

import pytest
import torch
import torch.multiprocessing as mp

from training.config import TrainConfig, config_from_dict
from training.embed import settings_from
from training.losses import LossSet
from training.runs import RunDir, set_rng_state
from training.signatures import compute_signatures
from training.model_build import build_net
from training.trainer import setup_device, train

TINY = [4, 8, 8, 16, 16, 16]


def test_resume_restores_rng_from_a_checkpoint_mapped_to_another_device(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    torch.manual_seed(3)
    path = run.save_checkpoint(1, {"model": {"w": torch.ones(2)}})
    expected = torch.rand(3)
    state = run.load_checkpoint(path, map_location="meta")
    assert state["model"]["w"].device.type == "meta"  # the model's tensors do move
    set_rng_state(state["rng"])  # torch.set_rng_state refuses anything but a CPU ByteTensor
    assert torch.equal(torch.rand(3), expected)


def test_cuda_without_index_means_this_ranks_gpu(monkeypatch):
    """torch.cuda.set_device(torch.device('cuda')) raises; 'cuda' must become cuda:LOCAL_RANK."""
    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch._C, "_cuda_setDevice", chosen.append, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = setup_device(TrainConfig(device="cuda"))
    assert ctx.device == torch.device("cuda", 1) and ctx.cuda
    assert chosen == [1]
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert setup_device(TrainConfig(device="cuda:1")).device == torch.device("cuda", 1)  # explicit wins
    assert chosen == [1, 1]


# ---------------------------------------------------------------------------- two gloo ranks
def _cfg(store, split):
    return config_from_dict({
        "data": {"store": str(store), "split": str(split), "P": 4, "K": 2, "workers": 0, "step": 10,
                 "flow_scale": 1.0},
        "master": {"model": "c3d", "embedding_dim": 16, "options": {"in_channels": 2, "widths": TINY}},
        "optim": {"lr": 2e-2, "schedule": "plateau", "plateau_patience": 0, "plateau_factor": 0.5},
        "train": {"log_every": 1, "steps": 8, "seed": 1},
        "eval": {"batch_size": 8},
    }, "test")


def _rank(rank: int, world: int, port: int, root, store, split, clips_path) -> None:
    import os

    from training.clips import load_clip_index

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = _cfg(store, split)
    ctx = setup_device(cfg.train)
    clips = load_clip_index(clips_path)
    torch.manual_seed(0)
    model = build_net(cfg.master, int(clips["label"].nunique()))
    losses = LossSet({"ce": 1.0, "triplet": 1.0}, margin=0.2)
    result = train(None, model, lambda out, raw, aug: losses(out, labels=raw.label), clips, cfg, "master", ctx)
    signatures = compute_signatures(model, clips, settings_from(cfg), ctx.device, ctx.rank, ctx.world)
    torch.save({"lr": [row["lr"] for row in result.history], "loss": [row["loss"] for row in result.history],
                "signatures": signatures, "model": model.state_dict()}, root / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, toy):
    from training.clips import build_clip_index, read_split, save_clip_index

    root = tmp_path_factory.mktemp("ddp")
    clips = build_clip_index(toy.store, read_split(toy.split), 25, 10, roles=("train",))  # one clip per walk
    save_clip_index(clips, root / "clips.parquet")
    mp.start_processes(_rank, args=(2, _free_port(), root, toy.store.path, toy.split, root / "clips.parquet"),
                       nprocs=2, start_method="spawn")
    return root, toy, clips, [torch.load(root / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_plateau_schedule_keeps_ranks_learning_rates_equal(two_ranks):
    _, _, _, (r0, r1) = two_ranks
    assert r0["loss"] != r1["loss"], "the ranks must see different data"
    assert r0["lr"] == r1["lr"]
    assert min(r0["lr"]) < max(r0["lr"]), "the plateau schedule must have acted"
    for key, value in r0["model"].items():
        assert torch.equal(value, r1["model"][key]), key


def test_sharded_signatures_equal_the_single_process_ones(two_ranks):
    root, toy, clips, (r0, r1) = two_ranks
    cfg = _cfg(toy.store.path, toy.split)
    model = build_net(cfg.master, int(clips["label"].nunique()))
    model.load_state_dict(r0["model"])
    single = compute_signatures(model, clips, settings_from(cfg), torch.device("cpu"))
    assert r0["signatures"].shape == single.shape == (len(clips), 2, 16)
    assert torch.equal(r0["signatures"], r1["signatures"])
    torch.testing.assert_close(r0["signatures"], single, atol=1e-5, rtol=0)


def test_bf16_is_decided_by_the_cpu_flags_where_torch_lacks_onednns_probe(monkeypatch):
    """oneDNN's bf16 probe is a private op; a torch without it must still choose, not crash
    every CPU run."""
    from training import trainer

    with_probe = trainer.bf16_supported(torch.device("cpu"))
    assert with_probe == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    monkeypatch.setattr(torch.ops, "mkldnn", object())  # a namespace without the op
    monkeypatch.setattr(trainer, "cpu_bf16_flags", lambda: {"avx512_bf16": False, "amx_bf16": True})
    assert trainer.bf16_supported(torch.device("cpu"))
    monkeypatch.setattr(trainer, "cpu_bf16_flags", lambda: {"avx512_bf16": False, "amx_bf16": False})
    assert not trainer.bf16_supported(torch.device("cpu"))
    assert trainer.precision(torch.device("cpu"), amp=True) == "fp32"
    assert trainer.bf16_supported(torch.device("cuda")) and not trainer.bf16_supported(torch.device("meta"))
