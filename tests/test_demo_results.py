"""benchmarks/demo_results.py: the demo's results file from a run folder (no training here)."""
from __future__ import annotations

import json

import pandas as pd
import yaml

from benchmarks.demo_results import main


def fake_demo(out, unit: str) -> None:
    """What demo.sh leaves behind, minus the models: summary.csv, run configs, identify.json."""
    rows = [dict(run=run, method=method, probe_set=probe_set, cross_view_rank1=None,
                 same_view_rank1=value, all_views_rank1=value, n_probes=12)
            for run in ("master", "student-copy", "student-nocopy")
            for method in ("clip-knn", "sequence-mean")
            for probe_set, value in (("BG", 50.0), ("CL", 25.0), ("NM", 100.0))]  # alphabetical, as groupby wrote it
    (out / "runs").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(out / "runs" / "summary.csv", index=False)
    for run in ("master", "student-copy", "student-nocopy"):
        (out / "runs" / run).mkdir()
        (out / "runs" / run / "config.yaml").write_text(yaml.safe_dump({"data": {"unit": unit}, "eval": {"k": 7}}))
    answers = [{"video": f"/x/{s}-cl-01-090.avi", "identity": s if s != "009" else "008", "status": "ok",
                "distance": 0.1, "margin": 0.2, "track": 0, "first_frame": 0, "last_frame": 35}
               for s in ("007", "008", "009")]
    (out / "identify.json").write_text("\n".join(json.dumps(a) for a in answers))


def test_walk_runs_show_the_sequence_rule_with_columns_nm_bg_cl(tmp_path):
    fake_demo(tmp_path, "walk")
    text = main([str(tmp_path), "--seconds", "5", "--cpu-seconds", "8", "--publish", str(tmp_path / "pub" / "demo.md")])
    text = text.read_text()
    assert "| run | rule | NM | BG | CL | n_probes |" in text
    assert "| flow master | sequence 1-NN (whole walk) | 100.0 | 50.0 | 25.0 | 12 |" in text
    assert "vote" not in text  # the clip k-NN vote is the clip family's rule
    assert "2 of 3 right" in text and "wall time: 5 s" in text and "all commands): 8 s" in text
    assert (tmp_path / "pub" / "demo.md").read_text() == text


def test_clip_runs_show_both_rules_named(tmp_path):
    fake_demo(tmp_path, "clip")
    text = main([str(tmp_path)]).read_text()
    assert "| copy student | clip 7-NN vote | 100.0 | 50.0 | 25.0 | 12 |" in text
    assert "| copy student | sequence 1-NN (mean of clips) | 100.0 | 50.0 | 25.0 | 12 |" in text
