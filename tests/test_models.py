"""Models: parameter counts against the documented figures, forward/backward, output
contract, set-pooling invariance, and export (torch.export, ONNX, no graph breaks)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from training.models import MODEL_NAMES, build_model, count_parameters
from training.models.c3d import LAYER_GEOMETRY, MASTER_WIDTHS, STUDENT_WIDTHS
from training.models.gaitset import N_STRIPS, PYRAMID_BINS
from training.models.parts import strip_pool

# Figures from docs/gaitcopy-method.md (d = 1024 for the 3D nets, 62 strips x 128 for GaitSet).
DOCUMENTED = {"master3d": 8.85e6, "student3d-small": 2.08e6, "gaitset-gray": 1.58e6}


def layer_table_count(in_channels: int, widths: tuple[int, ...], d: int) -> int:
    """Parameters of the 3D stack from the layer table alone: weights + biases per conv."""
    total, previous = 0, in_channels
    for width, (kernel, _) in zip(widths, LAYER_GEOMETRY):
        total += previous * width * int(np.prod(kernel)) + width
        previous = width
    return total + previous * d + d


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_parameter_counts_match_the_documented_figures(name):
    count = count_parameters(build_model(name))
    print(f"{name}: {count:,} parameters")
    assert abs(count - DOCUMENTED[name]) / DOCUMENTED[name] < 0.01


def test_3d_counts_follow_the_layer_table_and_code_size():
    assert count_parameters(build_model("master3d")) == layer_table_count(2, MASTER_WIDTHS, 1024)
    for size, widths in STUDENT_WIDTHS.items():
        model = build_model(f"student3d-{size}", embedding_dim=2048)
        assert count_parameters(model) == layer_table_count(1, widths, 2048)
    master = count_parameters(build_model("master3d"))
    small = count_parameters(build_model("student3d-small"))
    medium = count_parameters(build_model("student3d-medium"))
    assert 4.2 < master / small < 4.3  # the paper's "up to x4.2 smaller"
    assert small < medium < master


def test_gaitset_count_is_convs_plus_one_fc_per_strip():
    convs = (1 * 32 * 25 + 32 * 32 * 9 + 32 * 64 * 9 + 64 * 64 * 9 + 64 * 128 * 9
             + 128 * 128 * 9) + (32 * 64 * 9 + 64 * 64 * 9 + 64 * 128 * 9 + 128 * 128 * 9)
    assert count_parameters(build_model("gaitset-gray")) == convs + N_STRIPS * 128 * 128
    assert count_parameters(build_model("gaitset-flow")) == convs + 32 * 25 + N_STRIPS * 128 * 128
    with_head = build_model("gaitset-gray", n_classes=10)
    assert count_parameters(with_head) == convs + N_STRIPS * 128 * 128 + 7936 * 10 + 10


# 3D nets need T >= 23 and H, W >= 49; GaitSet takes any size, so it is tested small.
SHAPES = {name: (25, 64, 64) if "3d" in name else (6, 20, 20) for name in MODEL_NAMES}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward_outputs_and_gradients(name):
    torch.manual_seed(0)
    model = build_model(name, n_classes=5)
    clips = torch.randn(2, model.in_channels, *SHAPES[name])
    outputs = model(clips)
    strips = getattr(model, "n_strips", None)  # set networks: per-strip codes and classifiers
    assert set(outputs) == {"embedding", "features", "logits"} | ({"strips"} if strips else set())
    assert outputs["embedding"].shape == (2, model.embedding_dim)
    assert outputs["features"].shape[0] == 2  # what the code layer reads (gradient-share probe)
    (on_path,) = torch.autograd.grad(outputs["embedding"].square().sum(), outputs["features"], retain_graph=True)
    assert on_path.abs().sum() > 0  # the embedding is computed from "features"
    labels = torch.tensor([1, 3])
    if strips:
        assert outputs["strips"].shape == (2, strips, model.strip_dim)
        assert outputs["logits"].shape == (2, strips, 5)
        logits, labels = outputs["logits"].flatten(0, 1), labels.repeat_interleave(strips)
    else:
        assert outputs["logits"].shape == (2, 5)
        logits = outputs["logits"]
    (F.cross_entropy(logits, labels) + outputs["embedding"].square().mean()).backward()
    for pname, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), pname
        assert parameter.grad.abs().sum() > 0, f"{pname} got no gradient"
    assert model.modality == ("flow" if name.endswith(("flow", "master3d")) else "gray")
    assert set(build_model(name)(clips)) == {"embedding", "features"} | ({"strips"} if strips else set())


@pytest.mark.parametrize("name,shape", [("student3d-small", (25, 60, 60)),
                                        ("student3d-small", (31, 72, 80)),
                                        ("gaitset-gray", (25, 60, 60)),
                                        ("gaitset-gray", (5, 64, 44))])
def test_other_clip_sizes(name, shape):
    """The paper's 60x60, larger clips (averaged before the code layer), GaitSet's 64x44."""
    model = build_model(name).eval()
    with torch.no_grad():
        embedding = model(torch.randn(1, 1, *shape))["embedding"]
    assert embedding.shape == (1, model.embedding_dim) and torch.isfinite(embedding).all()


def test_3d_stack_reduces_paper_and_store_clips_to_one_cell():
    """25x60x60 and 25x64x64 end at exactly 1x1x1, so the global average is an identity."""
    model = build_model("master3d")
    for size in (60, 64):
        assert model.features(torch.zeros(1, 2, 25, size, size)).shape[2:] == (1, 1, 1)


def test_dropout_only_in_students_and_only_in_training():
    torch.manual_seed(0)
    clips = torch.randn(2, 1, 25, 64, 64)
    student = build_model("student3d-small")
    assert not torch.equal(student(clips)["embedding"], student(clips)["embedding"])
    student.eval()
    assert torch.equal(student(clips)["embedding"], student(clips)["embedding"])
    master = build_model("master3d")
    flow = torch.randn(1, 2, 25, 64, 64)
    assert torch.equal(master(flow)["embedding"], master(flow)["embedding"])


def test_gaitset_is_a_set_function_of_the_frames():
    """Set pooling: shuffling a clip's frames leaves the embedding unchanged."""
    torch.manual_seed(0)
    model = build_model("gaitset-flow").eval()
    clips = torch.randn(2, 2, 7, 16, 16)
    shuffled = clips[:, :, torch.randperm(7)]
    with torch.no_grad():
        torch.testing.assert_close(model(clips)["embedding"], model(shuffled)["embedding"])
        # ...but each clip of the batch is pooled on its own.
        single = model(clips[1:])["embedding"][0]
    torch.testing.assert_close(model(clips)["embedding"][1], single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("height", [16, 15, 7, 3])
def test_horizontal_pyramid_matches_adaptive_pooling(height):
    maps = torch.randn(2, 3, height, 5)
    reference = torch.cat([F.adaptive_avg_pool2d(maps, (n, 1)) + F.adaptive_max_pool2d(maps, (n, 1))
                           for n in (1, 2, 4, 8, 16)], dim=2).squeeze(3)
    torch.testing.assert_close(strip_pool(maps, PYRAMID_BINS), reference)


def test_registry_errors_and_gaitset_sizes():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        build_model("resnet")
    with pytest.raises(ValueError, match="bad arguments for model 'master3d'"):
        build_model("master3d", strip_dim=3)
    assert build_model("gaitset-gray", embedding_dim=62 * 16).embedding_dim == 62 * 16
    assert build_model("gaitset-gray", strip_dim=16).embedding_dim == 62 * 16
    with pytest.raises(ValueError, match="62 x strip_dim"):
        build_model("gaitset-gray", embedding_dim=1000)
    assert build_model("student3d-medium", in_channels=2).modality == "flow"


def _export(model: torch.nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=1024)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


@pytest.mark.parametrize("name,shape", [("student3d-small", (25, 60, 60)),
                                        ("gaitset-gray", (4, 20, 20))])
def test_torch_export_with_a_dynamic_batch(name, shape):
    torch.manual_seed(0)
    model = build_model(name).eval()
    exported = _export(model, torch.randn(2, 1, *shape))
    clips = torch.randn(3, 1, *shape)
    with torch.no_grad():
        expected = model(clips)["embedding"]
    torch.testing.assert_close(exported.module()(clips)["embedding"], expected)


@pytest.mark.slow
def test_gaitset_exports_to_onnx(tmp_path):
    """GaitSet's strip pooling avoids adaptive_max_pool2d, which ONNX lacks; a 20x20 crop
    leaves 5 rows, so strips of the 8- and 16-bin levels overlap."""
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = build_model("gaitset-gray").eval()
    program = torch.onnx.export(_export(model, torch.randn(2, 1, 4, 20, 20)), verbose=False)
    program.save(tmp_path / "gaitset.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "gaitset.onnx"))
    clips = torch.randn(3, 1, 4, 20, 20)
    got = session.run(None, {session.get_inputs()[0].name: clips.numpy()})[0]
    with torch.no_grad():
        expected = model(clips)["embedding"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name,shape", [("student3d-small", (25, 64, 64)),
                                        ("gaitset-gray", (4, 20, 20))])
def test_one_graph_for_torch_compile(name, shape):
    model = build_model(name, n_classes=3)
    explanation = torch._dynamo.explain(model)(torch.randn(2, 1, *shape))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
