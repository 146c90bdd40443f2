"""train-copy export: ONNX / torch.export bundles, their parity check, and reloading without training.

The model is a real (tiny-width) 3D-CNN student, or a tiny set network for walk bundles (whose
frame axis is dynamic); parity inputs are real CASIA-B silhouettes
(../shared/data/casia-b-sil-090) put in a store, as a run's store would hold them.
"""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import DATA, REPO, need_data
from gaittools.deploy import runtime as deploy
from gaittools.store.zarr_store import Store
from training import export as ex
from training.models.c3d import C3DNet
from training.models.setnet import SetNet

SIL = DATA / "casia-b-sil-090"
TINY = (4, 8, 8, 16, 16, 16)
CLIP = {"length": 25, "step": 5, "crop_size": 64, "crop_mode": "person", "working_height": 240}
WALK = {"unit": "walk", "frames": 30, "crop_size": 64, "crop_mode": "person", "working_height": 240}
SET_WIDTHS = (4, 8)


class _NumpyOnly(pickle.Unpickler):
    """The silhouette pickles hold one numpy array: refuse anything else."""

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if module.split(".")[0] == "numpy" and name in {"_reconstruct", "ndarray", "dtype", "scalar"}:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def _silhouettes(subject: str, walk: str) -> np.ndarray:
    path = need_data(SIL / subject / walk / "090" / "090.pkl")
    return np.asarray(_NumpyOnly(io.BytesIO(path.read_bytes())).load(), dtype=np.uint8)


def _tiny_student(seed: int = 0, n_classes: int = 0) -> C3DNet:
    torch.manual_seed(seed)
    return C3DNet(1, TINY, embedding_dim=32, dropout=0.4, n_classes=n_classes).eval()


def _tiny_setnet(seed: int = 0, n_classes: int = 0) -> SetNet:
    torch.manual_seed(seed)
    return SetNet(1, "plain", SET_WIDTHS, n_strips=4, strip_dim=8, n_classes=n_classes).eval()


@pytest.fixture(scope="module")
def real_clips() -> np.ndarray:
    clips = []
    for subject, walk in (("001", "nm-01"), ("002", "bg-01"), ("003", "cl-01")):
        sil = _silhouettes(subject, walk)
        clips += [sil[s:s + 25] for s in (0, 10) if s + 25 <= len(sil)]
    return np.stack(clips)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, real_clips) -> dict[str, deploy.Bundle]:
    out = tmp_path_factory.mktemp("bundles")
    model = _tiny_student()
    made = {}
    for fmt in ("onnx", "exported-program"):
        made[fmt] = ex.export_bundle(model, out / fmt, fmt, real_clips, "casia-b-sil-090",
                                     model_name="c3d", options={"widths": list(TINY)}, clip=CLIP,
                                     log=lambda _: None)
    return made


@pytest.mark.parametrize("fmt", ["onnx", "exported-program"])
def test_export_bundle_parity_and_description(bundles, real_clips, fmt):
    bundle = bundles[fmt]
    meta = json.loads((bundle.root / deploy.BUNDLE_FILE).read_text())
    assert meta["status"] == "ok" and meta["format"] == fmt
    assert meta["parity"]["passed"] and meta["parity"]["min_cosine"] >= ex.FP32_BOUND
    assert meta["parity"]["clips"] == len(real_clips)
    assert meta["file_size"] == bundle.model_path.stat().st_size
    assert meta["sha256"] == deploy.sha256_of(bundle.model_path)
    assert meta["input"]["shape"] == [None, 1, 25, 64, 64] and meta["input"]["batch"] == "dynamic"
    assert meta["model"]["parameters"] == sum(p.numel() for p in _tiny_student().parameters())
    assert meta["weights_fingerprint"] == ex.weights_fingerprint(_tiny_student())
    assert meta["normalisation"]["formula"] == "x / 255 - 0.5"
    # Unseen clips, an odd batch size (dynamic batch): unit vectors equal to the eager model's.
    clips = np.random.default_rng(1).integers(0, 256, (5, 25, 64, 64), dtype=np.uint8)
    got = deploy.load_signature_model(bundle.root, device="cpu", batch_size=3)(clips)
    want = ex.eager_signatures(_tiny_student(), clips, "cpu")
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_fresh_process_reloads_without_training(bundles, real_clips, tmp_path):
    np.save(tmp_path / "clips.npy", real_clips[:4])
    root = bundles["onnx"].root.parent
    script = (
        "import sys, numpy as np\n"
        "from gaittools.deploy.runtime import load_signature_model\n"
        f"clips = np.load({str(tmp_path / 'clips.npy')!r})\n"
        "for fmt in ('onnx', 'exported-program'):\n"
        f"    m = load_signature_model({str(root)!r} + '/' + fmt, device='cpu')\n"
        f"    np.save({str(tmp_path)!r} + '/' + fmt + '.npy', m(clips))\n"
        "assert not any(n == 'training' or n.startswith('training.') for n in sys.modules), 'imported training'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    want = ex.eager_signatures(_tiny_student(), real_clips[:4], "cpu")
    for fmt in ("onnx", "exported-program"):
        np.testing.assert_allclose(np.load(tmp_path / f"{fmt}.npy"), want, atol=1e-5)


def test_fixed_batch_and_fp16(tmp_path, real_clips):
    model = _tiny_student(seed=3)
    bundle = ex.export_bundle(model, tmp_path / "b", "exported-program", real_clips, "casia-b-sil-090",
                              model_name="c3d", clip=CLIP, fp16=True, batch=4, log=lambda _: None)
    assert bundle.meta["precision"] == "fp16" and bundle.meta["input"]["batch"] == 4
    assert bundle.meta["parity"]["bound"] == ex.FP16_BOUND
    assert bundle.meta["parity"]["min_cosine"] >= ex.FP16_BOUND
    loaded = deploy.load_signature_model(bundle.root, device="cpu")
    assert loaded.batch_size == 4
    out = loaded(real_clips[:6])  # 6 clips through a batch-4 program: padded last batch
    assert out.shape == (6, 32)


def test_failed_parity_fails_export_and_keeps_previous(tmp_path, real_clips, monkeypatch):
    target = tmp_path / "bundle"
    ex.export_bundle(_tiny_student(), target, "exported-program", real_clips, "real", model_name="c3d",
                     clip=CLIP, log=lambda _: None)
    good_sha = json.loads((target / deploy.BUNDLE_FILE).read_text())["sha256"]
    broken = _tiny_student(seed=99)  # an exporter that writes other weights: parity must catch it

    def wrong_exporter(net, example, path, batch):
        return ex.export_program(ex.SignatureNet(broken), example, path, batch)

    monkeypatch.setitem(ex.EXPORTERS, "exported-program", wrong_exporter)
    with pytest.raises(ex.ExportError, match="parity check failed"):
        ex.export_bundle(_tiny_student(), target, "exported-program", real_clips, "real", model_name="c3d",
                         clip=CLIP, log=lambda _: None)
    failed = tmp_path / "bundle.failed"
    meta = json.loads((failed / deploy.BUNDLE_FILE).read_text())
    assert meta["status"] == "failed" and not meta["parity"]["passed"]
    assert not (failed / meta["model_file"]).exists()
    with pytest.raises(deploy.BundleError, match="status is 'failed'"):
        deploy.read_bundle(failed)
    # the earlier good export is untouched and still loads
    assert deploy.read_bundle(target).meta["sha256"] == good_sha


def test_exported_program_is_placed_by_torch_export_and_failures_are_not_swallowed(bundles, real_clips,
                                                                                    monkeypatch):
    """The program moves with torch.export's pass (trace-time tensors too); if it cannot be
    placed, loading fails with the bundle's path instead of running half on another device."""
    import torch.export.passes

    moved: list[str] = []
    real_pass = torch.export.passes.move_to_device_pass
    monkeypatch.setattr(torch.export.passes, "move_to_device_pass",
                        lambda ep, device: (moved.append(str(device)), real_pass(ep, device))[1])
    model = deploy.load_signature_model(bundles["exported-program"].root, device="cpu")
    assert moved == ["cpu"] and model(real_clips[:2]).shape == (2, 32)

    def refuses(ep, device):
        raise RuntimeError(f"no room on {device}")

    monkeypatch.setattr(torch.export.passes, "move_to_device_pass", refuses)
    with pytest.raises(deploy.BundleError, match=r"model\.pt2: cannot place the exported program on cpu "
                                                 r"\(RuntimeError: no room on cpu\)"):
        deploy.load_signature_model(bundles["exported-program"].root, device="cpu")


def test_tampered_model_file_is_refused(bundles, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundles["onnx"].root, copy)
    with open(copy / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(deploy.BundleError, match="checksum"):
        deploy.read_bundle(copy)


def _has_tensorrt() -> tuple[bool, str]:
    try:
        import torch_tensorrt  # noqa: F401
    except ImportError:
        return False, f"torch-tensorrt not installed: {deploy.INSTALL_TENSORRT}"
    if not torch.cuda.is_available():
        return False, "TensorRT needs a CUDA GPU; none visible"
    return True, ""


def test_tensorrt_missing_gives_install_hint(tmp_path, real_clips):
    ok, _ = _has_tensorrt()
    if ok:
        pytest.skip("torch-tensorrt and CUDA are present: the install hint does not apply")
    with pytest.raises(ex.ExportError, match=r"pip install gaittools\[tensorrt\]"):
        ex.export_bundle(_tiny_student(), tmp_path / "trt", "tensorrt", real_clips, "real",
                         model_name="c3d", clip=CLIP, log=lambda _: None)
    assert not (tmp_path / "trt").exists()


def test_tensorrt_export_uses_the_documented_api_with_explicit_precision(tmp_path, monkeypatch):
    """No GPU here: torch_tensorrt is replaced by a recorder of how it is called (one call each,
    the documented keywords; nothing guessed by catching TypeError)."""
    import types

    calls: list[tuple[str, dict]] = []

    class Input:
        def __init__(self, **spec):
            self.spec = spec

    def compile_(module, **options):
        calls.append(("compile", options))
        return module

    def save(module, path, **options):
        calls.append(("save", options))
        Path(path).write_bytes(b"engine")

    monkeypatch.setitem(sys.modules, "torch_tensorrt",
                        types.SimpleNamespace(Input=Input, compile=compile_, save=save, __version__="2.9"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    example = torch.zeros(2, 1, 25, 64, 64)
    for dtype, batch in ((torch.float32, None), (torch.float16, 4)):
        calls.clear()
        tool = ex.export_tensorrt(ex.SignatureNet(_tiny_student(), dtype), example, tmp_path / "m.ep", batch)
        (_, compiled), (_, saved) = calls
        assert compiled["ir"] == "dynamo" and compiled["enabled_precisions"] == {dtype}
        spec = compiled["arg_inputs"][0].spec
        if batch is None:
            assert spec["min_shape"][0] == 1 and spec["max_shape"][0] == ex.MAX_DYNAMIC_BATCH
            assert repr(saved["dynamic_shapes"]) == repr(ex._dynamic_shapes(None))  # Dim has no __eq__
        else:
            assert spec["shape"] == (2, 1, 25, 64, 64) and "dynamic_shapes" not in saved
        assert saved["output_format"] == "exported_program" and saved["arg_inputs"][0] is example
        assert tool.endswith(f", {str(dtype).removeprefix('torch.')})")


@pytest.mark.gpu
def test_tensorrt_export_parity(tmp_path, real_clips):
    ok, reason = _has_tensorrt()
    if not ok:
        pytest.skip(reason)
    bundle = ex.export_bundle(_tiny_student(), tmp_path / "trt", "tensorrt", real_clips, "real",
                              model_name="c3d", clip=CLIP, log=lambda _: None)
    assert bundle.meta["parity"]["min_cosine"] >= ex.FP32_BOUND
    loaded = deploy.load_signature_model(bundle.root, device="cuda")
    np.testing.assert_allclose(loaded(real_clips[:3]), ex.eager_signatures(_tiny_student(), real_clips[:3], "cpu"),
                               atol=1e-3)


# ---------------------------------------------------------------------------- the CLI on a run
def _store_with_silhouettes(path: Path) -> Store:
    store = Store.create(path, dataset="casia-b")
    for subject in ("076", "077"):
        sil = _silhouettes(subject, "nm-05")
        windows = np.where(sil.reshape(len(sil), -1).any(axis=1)[:, None], 1.0, np.nan).astype(np.float32)
        store.write_sequence(f"{subject}-nm-05-090", {"gray": sil, "windows": np.repeat(windows, 4, axis=1)},
                             {"name": {"seq_id": f"{subject}-nm-05-090"},
                              "extract": {"crop_mode": "person", "crop_size": 64, "working_height": 240}})
    return store


def _student_run(tmp_path: Path, store: Path) -> Path:
    from training.config import config_from_dict
    from training.runs import RunDir

    cfg = config_from_dict({"data": {"store": str(store), "input_size": 60},
                            "student": {"model": "c3d", "embedding_dim": 32,
                                        "options": {"in_channels": 1, "widths": list(TINY), "dropout": 0.4}}})
    run = RunDir.create(tmp_path / "run", cfg, {"role": "student", "model": "c3d"}, resume=False)
    trained = _tiny_student(seed=5, n_classes=3)  # the classifier head is dropped by export
    run.save_model(trained, {"role": "student", "model": "c3d", "model_options": {"widths": list(TINY)},
                             "embedding_dim": 32, "n_classes": 3, "modality": "gray", "clip_len": 25,
                             "step": 5, "crop_size": 64, "input_size": 60, "flow_scale": 0.25})
    run.update_info(finished=True, steps=7)
    return run.path


def test_cli_export_run_uses_store_clips(tmp_path):
    store = _store_with_silhouettes(tmp_path / "store")
    run = _student_run(tmp_path, store.path)
    result = CliRunner().invoke(ex.export, [str(run), "--format", "exported-program", "--parity-clips", "6"])
    assert result.exit_code == 0, result.output
    bundle = deploy.read_bundle(run / "exports" / "student-exported-program")
    meta = bundle.meta
    assert meta["parity"]["clips_source"] == f"store {store.path}" and meta["parity"]["clips"] == 6
    assert "min cosine" in result.output and "PASS" in result.output
    assert meta["source"]["steps"] == 7 and meta["model"]["name"] == "c3d"
    assert meta["clip"]["crop_mode"] == "person" and meta["clip"]["working_height"] == 240
    assert (meta["clip"]["crop_size"], meta["clip"]["input_size"]) == (64, 60)  # crop 64, cut 60
    assert meta["input"]["shape"][-2:] == [60, 60]
    assert meta["model"]["parameters"] == sum(p.numel() for p in _tiny_student().parameters())  # no head
    trained = _tiny_student(seed=5, n_classes=3)
    clips = store.read("076-nm-05-090", "gray")[None, :25]
    np.testing.assert_allclose(deploy.load_signature_model(bundle.root, device="cpu")(clips),
                               ex.eager_signatures(trained, clips, "cpu", input_size=60), atol=1e-5)


def test_cli_export_bad_batch_and_missing_weights(tmp_path):
    from training.config import config_from_dict
    from training.runs import RunDir

    cfg = config_from_dict({"student": {"model": "c3d", "embedding_dim": 32,
                                        "options": {"in_channels": 1, "widths": list(TINY)}}})
    run = RunDir.create(tmp_path / "run", cfg, {"role": "student"}, resume=False)
    result = CliRunner().invoke(ex.export, [str(run.path), "--batch", "zero"])
    assert result.exit_code != 0 and "dynamic" in result.output
    result = CliRunner().invoke(ex.export, [str(run.path), "--format", "exported-program"])
    assert result.exit_code != 0 and "train the run first" in result.output


def test_master_export_takes_flow_and_identify_refuses_it(tmp_path):
    from gaittools.cli.main import main

    torch.manual_seed(1)
    master = C3DNet(2, TINY, embedding_dim=32).eval()
    flow = np.random.default_rng(2).normal(0, 1.5, (4, 25, 2, 64, 64)).astype(np.float32)
    bundle = ex.export_bundle(master, tmp_path / "master", "exported-program", flow, "random", model_name="c3d",
                              role="master", clip=CLIP, flow_scale=0.25, log=lambda _: None)
    assert bundle.meta["input"]["modality"] == "flow" and bundle.meta["input"]["shape"][1] == 2
    assert bundle.meta["normalisation"]["scale"] == 0.25
    loaded = deploy.load_signature_model(bundle.root, device="cpu")
    with torch.no_grad():
        x = torch.from_numpy(flow).permute(0, 2, 1, 3, 4) * 0.25
        want = torch.nn.functional.normalize(master(x)["embedding"], dim=1).numpy()
    np.testing.assert_allclose(loaded(flow), want, atol=1e-5)
    gallery = tmp_path / "g.npz"
    gallery.write_bytes(b"")
    result = CliRunner().invoke(main, ["identify", str(tmp_path / "v.avi"), "--model", str(bundle.root),
                                       "--gallery", str(gallery)])
    assert result.exit_code != 0 and "flow-free" in result.output


def test_onnx_export_is_quiet(tmp_path, capfd):
    """No "torchvision is not installed" lines nor pytree FutureWarnings from torch's exporter."""
    clips = np.random.default_rng(0).integers(0, 256, (2, 25, 64, 64), dtype=np.uint8)
    ex.export_bundle(_tiny_student(), tmp_path / "b", "onnx", clips, "random", model_name="c3d", clip=CLIP,
                     log=lambda line: None)
    err = capfd.readouterr().err
    assert "torchvision" not in err and "FutureWarning" not in err, err


# ---------------------------------------------------------------------------- walk bundles (set networks)
@pytest.fixture(scope="module")
def real_walks() -> list[np.ndarray]:
    """Whole silhouette walks: their frames with the person (the frames a walk offers)."""
    walks = [_silhouettes(subject, walk) for subject, walk in (("001", "nm-01"), ("002", "bg-01"), ("003", "cl-01"))]
    return [w[w.reshape(len(w), -1).any(axis=1)] for w in walks]


@pytest.fixture(scope="module")
def walk_bundles(tmp_path_factory, real_walks) -> dict[str, deploy.Bundle]:
    """One ONNX and one torch.export bundle of a tiny set network, frames dynamic up to 100."""
    out = tmp_path_factory.mktemp("walk-bundles")
    parity_walks = ex.cut_walks(real_walks, ex.PARITY_FRAMES, 2)
    return {fmt: ex.export_bundle(_tiny_setnet(), out / fmt, fmt, parity_walks, "casia-b-sil-090",
                                  model_name="setnet-gray", clip=WALK, max_frames=100, log=lambda _: None)
            for fmt in ("onnx", "exported-program")}


@pytest.mark.parametrize("fmt", ["onnx", "exported-program"])
def test_walk_bundle_parity_on_several_lengths_and_description(walk_bundles, fmt):
    meta = walk_bundles[fmt].meta
    assert meta["status"] == "ok" and meta["unit"] == "walk" and meta["bundle_version"] == 2
    assert meta["input"]["shape"] == [None, 1, None, 64, 64]
    assert (meta["input"]["frames"], meta["input"]["max_frames"]) == ("dynamic", 100)
    assert meta["clip"]["length"] is None and meta["walk"] == {"train_frames": 30}
    by_frames = meta["parity"]["by_frames"]
    assert [r["frames"] for r in by_frames] == list(ex.PARITY_FRAMES) and meta["parity"]["walks"] == 8
    assert all(r["walks"] == 2 and r["min_cosine"] >= ex.FP32_BOUND for r in by_frames)
    bundle = deploy.read_bundle(walk_bundles[fmt].root)
    assert bundle.is_walk and bundle.max_frames == 100 and bundle.train_frames == 30
    with pytest.raises(deploy.BundleError, match="walk bundle has no clip length"):
        _ = bundle.clip_len


@pytest.mark.parametrize("fmt", ["onnx", "exported-program"])
def test_one_exported_walk_file_serves_every_length(walk_bundles, real_walks, fmt):
    """The frame axis is really dynamic: the same file, walks of 1 to 100 frames (traced at 30),
    one set each, equal to the eager model; several walks of one length in one call too."""
    model = deploy.load_signature_model(walk_bundles[fmt].root, device="cpu")
    eager = _tiny_setnet()
    for t in (1, 2, 7, 30, 64, 100):
        [walks] = ex.cut_walks(real_walks, (t,), len(real_walks))
        np.testing.assert_allclose(model(walks), ex.eager_signatures(eager, walks, "cpu"), atol=1e-5)
    with pytest.raises(ValueError, match=r"T in 1\.\.100"):
        model(np.zeros((1, 101, 64, 64), np.uint8))
    with pytest.raises(ValueError, match="walks must be"):
        model(np.zeros((1, 0, 64, 64), np.uint8))


def test_onnx_walk_graph_declares_the_frame_axis_symbolic(walk_bundles):
    import onnx

    graph = onnx.load(str(walk_bundles["onnx"].model_path)).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[2].dim_param and not dims[2].dim_value  # a named axis, not a traced 30
    assert [d.dim_value for d in dims[3:]] == [64, 64]


def test_a_walk_longer_than_the_bound_is_spread_over_the_whole_walk(walk_bundles, real_walks):
    from gaittools.deploy.clips import spread_indices

    model = deploy.load_signature_model(walk_bundles["exported-program"].root, device="cpu")
    long_walk = np.concatenate(real_walks[:2])  # > 100 frames
    assert len(long_walk) > model.max_frames
    kept = long_walk[spread_indices(len(long_walk), 100)]
    np.testing.assert_allclose(model.walk(long_walk), ex.eager_signatures(_tiny_setnet(), kept[None], "cpu")[0],
                               atol=1e-5)
    np.testing.assert_array_equal(spread_indices(5, 9), np.arange(5))
    assert spread_indices(1000, 4).tolist() == [0, 333, 666, 999]


def test_walk_parity_fails_if_any_length_differs(tmp_path, real_walks, monkeypatch):
    """An export right at the traced length but wrong at another must fail, naming the length."""
    real_load = deploy.model_from_bundle

    def wrong_at_91(bundle, device="auto", batch_size=64):
        model = real_load(bundle, device, batch_size)
        runner = model._runner
        model._runner = lambda x: -runner(x) if x.shape[2] == 91 else runner(x)
        return model

    monkeypatch.setattr(deploy, "model_from_bundle", wrong_at_91)
    with pytest.raises(ex.ExportError, match=r"parity check failed at T = 91 frames"):
        ex.export_bundle(_tiny_setnet(), tmp_path / "b", "exported-program",
                         ex.cut_walks(real_walks, ex.PARITY_FRAMES, 1), "real", model_name="setnet-gray",
                         clip=WALK, log=lambda _: None)
    meta = json.loads((tmp_path / "b.failed" / deploy.BUNDLE_FILE).read_text())
    assert [r["frames"] for r in meta["parity"]["by_frames"] if r["min_cosine"] < ex.FP32_BOUND] == [91]


def test_tensorrt_walk_profile_has_a_dynamic_frame_axis(tmp_path, monkeypatch):
    """No GPU here: the recorder of test_tensorrt_export_uses_the_documented_api... sees a
    walk's profile: one walk per call, frames from 1 to the bound, traced length as optimum."""
    import types

    calls: dict[str, dict] = {}

    class Input:
        def __init__(self, **spec):
            self.spec = spec

    def save(module, path, **options):
        calls["save"] = options
        Path(path).write_bytes(b"engine")

    monkeypatch.setitem(sys.modules, "torch_tensorrt", types.SimpleNamespace(
        Input=Input, compile=lambda module, **options: calls.setdefault("compile", options) and module,
        save=save, __version__="2.9"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    example = torch.zeros(1, 1, 30, 64, 64)
    ex.export_tensorrt(ex.SignatureNet(_tiny_setnet()), example, tmp_path / "m.ep", 1, max_frames=512)
    spec = calls["compile"]["arg_inputs"][0].spec
    assert (spec["min_shape"], spec["opt_shape"], spec["max_shape"]) == (
        (1, 1, 1, 64, 64), (1, 1, 30, 64, 64), (1, 1, 512, 64, 64))
    assert repr(calls["save"]["dynamic_shapes"]) == repr(ex._dynamic_shapes(1, 512))


def _walk_run(tmp_path: Path, store: Path) -> Path:
    from training.config import config_from_dict
    from training.runs import RunDir

    options = {"widths": list(SET_WIDTHS), "n_strips": 4, "strip_dim": 8}
    cfg = config_from_dict({"data": {"store": str(store), "unit": "walk", "frames": 30},
                            "student": {"model": "setnet-gray", "options": options}})
    run = RunDir.create(tmp_path / "walk-run", cfg, {"role": "student", "model": "setnet-gray"}, resume=False)
    run.save_model(_tiny_setnet(seed=5, n_classes=3), {
        "role": "student", "model": "setnet-gray", "model_options": options, "embedding_dim": 32, "n_classes": 3,
        "modality": "gray", "unit": "walk", "frames": 30, "crop_size": 64, "input_size": 64, "flow_scale": 0.25})
    run.update_info(finished=True, steps=3)
    return run.path


def test_cli_export_walk_run_checks_store_walks_of_several_lengths(tmp_path):
    store = _store_with_silhouettes(tmp_path / "store")
    run = _walk_run(tmp_path, store.path)
    result = CliRunner().invoke(ex.export, [str(run), "--format", "onnx", "--parity-clips", "4"])
    assert result.exit_code == 0, result.output
    for t in ex.PARITY_FRAMES:
        assert f"T = {t:>4} frames (1 walks)" in result.output
    assert "unit walk" in result.output and "PASS" in result.output
    bundle = deploy.read_bundle(run / "exports" / "student-onnx")
    assert bundle.is_walk and bundle.meta["parity"]["clips_source"] == f"store {store.path}"
    assert bundle.max_frames == ex.MAX_WALK_FRAMES and bundle.meta["model"]["name"] == "setnet-gray"
    walk = store.read("077-nm-05-090", "gray")
    walk = walk[walk.reshape(len(walk), -1).any(axis=1)]
    np.testing.assert_allclose(deploy.load_signature_model(bundle.root, device="cpu").walk(walk),
                               ex.eager_signatures(_tiny_setnet(seed=5, n_classes=3), walk[None], "cpu")[0],
                               atol=1e-5)
