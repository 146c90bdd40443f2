"""train-copy export: ONNX / torch.export bundles, their parity check, and reloading without training.

The model is a real (tiny-width) 3D-CNN student; parity clips are real CASIA-B silhouettes
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

SIL = DATA / "casia-b-sil-090"
TINY = (4, 8, 8, 16, 16, 16)
CLIP = {"length": 25, "step": 5, "crop_size": 64, "crop_mode": "person", "working_height": 240}


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
            assert repr(saved["dynamic_shapes"]) == repr(ex._batch_dim(None))  # Dim has no __eq__
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
