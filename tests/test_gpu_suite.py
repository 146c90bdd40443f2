"""benchmarks/gpu_suite.py at toy size on the CPU, so the script a device call runs does not rot."""

import json

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _no_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the fused engine is CUDA-only here


def test_tiny_suite_runs_every_section_and_writes_both_reports(tmp_path):
    from benchmarks.gpu_suite import SECTIONS, main

    # the references are generated data, made here with OpenCV (never committed)
    report = main(["--device", "cpu", "--tiny", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                   "--references", str(tmp_path / "refs")])
    assert (tmp_path / "refs" / "references.json").is_file()
    sections = report["sections"]
    assert list(sections) == list(SECTIONS)
    for name, entry in sections.items():
        assert entry["status"] == "ok", (name, entry.get("error"), entry.get("traceback"))
    tvl1 = {r["engine"]: r for r in sections["tvl1"]["rows"]}
    assert tvl1["reference"]["pairs_per_s"] > 0 and np.isfinite(tvl1["reference"]["epe_vs_opencv"])
    # a short schedule, yet clearly OpenCV's motion: well below the error of no flow at all
    assert tvl1["reference"]["epe_vs_opencv"] < 0.75 * tvl1["reference"]["epe_of_zero_flow"]
    assert tvl1["fused"]["status"] == "skipped" and "CUDA" in tvl1["fused"]["note"]
    assert tvl1["fused-graphs"]["status"] == "skipped" and "need a CUDA device" in tvl1["fused-graphs"]["note"]
    assert tvl1["reference"]["opencv_cpu_pairs_per_s"] > 0
    flow, batched, eager, graphed = sections["compute_flow"]["rows"]
    assert flow["engine"] == "reference" and flow["pairs"] == 2 * 3 and flow["casia_b_hours"] > 0
    assert flow["ticks"] > 0 and flow["pairs_per_tick"] >= 1 and 0 < flow["slot_occupancy"] <= 1
    assert [r["schedule"] for r in (flow, batched, eager)] == ["cohorts", "batch", "eager"]
    assert batched["pairs"] == eager["pairs"] == flow["pairs"]
    assert graphed["cuda_graphs"] and graphed["status"] == "skipped"
    assert [r["model"] for r in sections["training"]["rows"]] == ["master3d (tiny widths)",
                                                                   "student3d-small (tiny widths)"]
    assert all(r["random_clips_per_s"] > 0 and r["resident_clips_per_s"] > 0 for r in sections["training"]["rows"])
    (resume,) = sections["resume"]["rows"]
    assert resume["same_losses"] and resume["same_weights"]
    exports = {r["format"]: r for r in sections["export"]["rows"]}
    assert exports["onnx"]["min_cosine"] >= 0.999 and exports["exported-program"]["min_cosine"] >= 0.999
    assert exports["tensorrt"]["status"] == "skipped"
    saved = json.loads((tmp_path / "out" / "gpu_suite-cpu-tiny.json").read_text())
    assert saved["sections"].keys() == sections.keys()
    text = (tmp_path / "out" / "gpu_suite-cpu-tiny.md").read_text()
    assert "## tvl1: ok" in text and "| size | engine |" in text


def test_finished_sections_are_on_disk_before_the_next_one_runs(tmp_path, monkeypatch):
    """A device call cut off by its time limit still brings back what finished: the reports
    are rewritten after every section."""
    import benchmarks.gpu_suite as suite

    seen = []

    def first(s):
        return [{"status": "ok", "value": 1}]

    def second(s):  # the report of the first section is already written when this one starts
        seen.append(json.loads((tmp_path / "out" / "gpu_suite-cpu-tiny.json").read_text()))
        raise KeyboardInterrupt  # the time limit

    monkeypatch.setattr(suite, "SECTIONS", {"first": first, "second": second})
    with pytest.raises(KeyboardInterrupt):
        suite.main(["--device", "cpu", "--tiny", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w")])
    assert list(seen[0]["sections"]) == ["first"] and seen[0]["sections"]["first"]["rows"] == [{"status": "ok",
                                                                                                "value": 1}]


def test_the_timed_models_are_registered():
    """The full (device) run builds every name; one missing from the registry fails only there."""
    from benchmarks.gpu_suite import SPEED_MODELS
    from training.models import MODEL_NAMES

    assert set(SPEED_MODELS) <= set(MODEL_NAMES)
