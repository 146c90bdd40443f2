"""The results page's verdict on copying: copy beats no copy on a probe set only by more than
twice the larger seed std (issue 22's test), with the master and template levels beside it."""

from __future__ import annotations

from benchmarks.casia_b_sil_090 import SEQUENCE_RULE, copy_judgement, group_table, markdown


def _row(run: str, variant: str, copy: str, seed: int, nm: float, bg: float, cl: float) -> dict:
    row = {"run": run, "variant": variant, "copy": copy, "seed": seed, "parameters": 1000,
           "n_NM": 50, "n_BG": 50, "n_CL": 50, "train_s": 1.0, "eval_s": 1.0}
    row.update({f"{p} {SEQUENCE_RULE}": v for p, v in zip(("NM", "BG", "CL"), (nm, bg, cl))})
    return row


ROWS = [
    _row("template", "template", "", 0, 70.0, 55.0, 40.0),
    _row("master", "master", "", 0, 66.0, 55.0, 36.0),
    # copy: CL 60 +- 2 against no copy 50 +- 1 (gap 10 > 4: wins); BG 71 +- 3 against 70 +- 0 (loses)
    _row("student-set-copy-s0", "set", "yes", 0, 90.0, 68.0, 58.0),
    _row("student-set-copy-s1", "set", "yes", 1, 90.0, 71.0, 60.0),
    _row("student-set-copy-s2", "set", "yes", 2, 90.0, 74.0, 62.0),
    _row("student-set-nocopy-s0", "set", "no", 0, 91.0, 70.0, 49.0),
    _row("student-set-nocopy-s1", "set", "no", 1, 91.0, 70.0, 50.0),
    _row("student-set-nocopy-s2", "set", "no", 2, 91.0, 70.0, 51.0),
]


def _table_rows(lines: list[str]) -> dict[str, list[str]]:
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| ")]
    return {row[0]: row for row in cells[1:]}


def test_copying_wins_only_where_the_gap_exceeds_twice_the_larger_std():
    lines = copy_judgement(ROWS)
    table = _table_rows(lines)
    # columns: probe set, copy, no copy, master, template, gap, bar, verdict
    assert table["CL"][1:] == ["60.0 ± 2.0", "50.0 ± 1.0", "36.0", "40.0", "+10.0", "4.0", "yes"]
    assert table["BG"][5:] == ["+1.0", "6.0", "no"]
    assert table["NM"][5:] == ["-1.0", "0.0", "no"]
    assert lines[0] == "## Copying, judged"


def test_a_gap_equal_to_the_bar_does_not_win():
    rows = [r | {f"CL {SEQUENCE_RULE}": v} for r, v in zip(ROWS[2:], (52.0, 54.0, 56.0, 49.0, 50.0, 51.0))]
    assert _table_rows(copy_judgement(rows))["CL"][3:] == ["+4.0", "4.0", "no"]  # no master/template rows


def test_one_seed_a_side_gives_no_verdict_and_the_page_says_nothing():
    rows = [r for r in ROWS if r["seed"] == 0]
    assert copy_judgement(rows) == []
    page = markdown(rows, {}, [], "# page", unit="walk")
    assert "Copying, judged" not in page
    assert "Copying, judged" in markdown(ROWS, {}, [], "# page", unit="walk")


def test_group_table_keeps_its_mean_and_std():
    groups = {g["model"]: g for g in group_table(ROWS, (SEQUENCE_RULE,))}
    assert groups["set student, copy"][f"CL {SEQUENCE_RULE}"] == (60.0, 2.0)
    assert groups["set student, no copy"]["seeds"] == 3
