"""Manifest + protocol -> the split table: which sequence trains, validates, enrols or probes.

The split is computed from what the protocol *expects* (every subject x sequence x view it
names) and then intersected with what the store *has*, because real stores lack sequences
(failed decodes, CASIA-B's known gaps). What is expected but absent is reported, never
silently dropped and never a crash: a protocol number computed on a partial test set must
be visibly so.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gaittools.sources.layouts import casia_b_id, tum_gaid_id
from gaittools.store.manifest import DONE, write_manifest
from gaittools.protocols.protocol import Protocol, Setting, resolve_subjects
from gaittools.store.zarr_store import atomic_write_text

ROLES: tuple[str, ...] = ("train", "val", "gallery", "probe")

#: Column -> dtype of split.parquet (and of the missing table).
SPLIT_COLUMNS: dict[str, str] = {
    "seq_id": "string",
    "subject": "string",
    "condition": "string",
    "seq_num": "Int64",
    "view": "string",
    "role": "string",
    "probe_set": "string",
}

#: dataset -> seq_id from (subject, condition, seq_num, view), the naming of gaittools.sources.layouts.
SEQ_IDS: dict[str, Callable[[int, str, int, str], str]] = {
    "casia-b": lambda s, c, n, v: casia_b_id(s, c, n, v),
    "tum-gaid": lambda s, c, n, v: tum_gaid_id(s, c, n),
}


class SplitError(ValueError):
    """A split that cannot be built as asked (wrong dataset, impossible options)."""


@dataclass(frozen=True)
class SplitOptions:
    """Choices on top of the protocol file; None means "as the protocol file says"."""

    setting: str | None = None
    views: tuple[str, ...] | None = None
    cross_view: bool | None = None
    with_optional_subject: bool | None = None
    val_fraction: float | None = None
    ids_dir: str | os.PathLike[str] | None = None
    #: With ``views``: train on every view of the protocol instead of the listed ones.
    train_all_views: bool = False


@dataclass
class Split:
    """The split table, what the store lacks, and the facts split.json records."""

    table: pd.DataFrame
    missing: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)


def build_split(manifest: pd.DataFrame, protocol: Protocol, options: SplitOptions = SplitOptions()) -> Split:
    """The split of ``manifest`` under ``protocol``; only extracted sequences count as present."""
    check_dataset(manifest, protocol)
    setting = protocol.setting(options.setting)
    with_optional = _optional_subject_choice(protocol, options.with_optional_subject)
    val_fraction = _val_fraction(protocol, options.val_fraction)
    eval_views = _eval_views(protocol, options.views)
    cross_view = _cross_view(setting, options, eval_views)
    train_ids, test_ids = resolve_subjects(protocol, setting, options.ids_dir)
    if protocol.optional_subject is not None and not with_optional:
        train_ids = train_ids - {protocol.optional_subject.id}
        test_ids = test_ids - {protocol.optional_subject.id}
    val_ids = validation_ids(train_ids, val_fraction, protocol.val_take)

    train_views = protocol.views if options.views is None or options.train_all_views else eval_views
    expected = expected_sequences(protocol, setting, sorted(train_ids - val_ids), sorted(val_ids),
                                  sorted(test_ids), eval_views, train_views)
    status = manifest.drop_duplicates("seq_id").set_index("seq_id")["status_extract"]
    present = expected["seq_id"].map(status).eq(DONE).fillna(False).astype(bool)
    table = expected[present].reset_index(drop=True)
    missing = expected[~present].reset_index(drop=True)
    missing["status"] = missing["seq_id"].map(status).fillna("absent").astype("string")

    info = {
        "dataset": protocol.dataset,
        "protocol": protocol.name,
        "setting": setting.name,
        "protocol_file": protocol.source,
        "views": list(eval_views),
        "train_views": list(train_views),
        "cross_view": cross_view,
        "optional_subject": None if protocol.optional_subject is None else {
            "id": _sid(protocol.optional_subject.id), "included": with_optional,
            "default": "include" if protocol.optional_subject.include_by_default else "exclude"},
        "val_fraction": val_fraction,
        "train_subjects": [_sid(i) for i in sorted(train_ids - val_ids)],
        "val_subjects": [_sid(i) for i in sorted(val_ids)],
        "test_subjects": [_sid(i) for i in sorted(test_ids)],
        "counts": role_counts(table, list(setting.probes)),
        "expected": role_counts(expected, list(setting.probes)),
        "missing": role_counts(missing, list(setting.probes)),
        "unused_in_store": int((manifest["status_extract"] == DONE).sum() - len(table)),
    }
    _check_evaluable(table, manifest, setting.name, eval_views)
    return Split(table=table, missing=missing, info=info)


def _check_evaluable(table: pd.DataFrame, manifest: pd.DataFrame, setting: str, views: Sequence[str]) -> None:
    """A split without gallery or probes would train and then evaluate nothing: refuse it."""
    for role in ("gallery", "probe"):
        if not (table["role"] == role).any():
            raise SplitError(
                f"setting {setting!r}, views {','.join(views)}: no {role} sequence of the test subjects "
                f"is in the store ({len(manifest)} sequences, subjects "
                f"{manifest['subject'].min()}-{manifest['subject'].max()}); choose the setting that "
                "matches the store (e.g. --protocol synth for the demo) or extract the test subjects")


def check_dataset(manifest: pd.DataFrame, protocol: Protocol) -> None:
    """Refuse a manifest of another dataset: its ids would simply never match (all missing)."""
    datasets = sorted(set(manifest["dataset"].dropna().astype(str)))
    others = [d for d in datasets if d != protocol.dataset]
    if others:
        raise SplitError(f"the manifest holds dataset(s) {datasets}, not {protocol.dataset!r} "
                         f"(protocol {protocol.source}); use that dataset's protocol or store")


def validation_ids(train_ids: frozenset[int] | set[int], fraction: float, take: str = "first") -> frozenset[int]:
    """The subject-disjoint validation slice: round(fraction x n) ids (>= 1 when fraction > 0)."""
    ordered = sorted(train_ids)
    if fraction <= 0:
        return frozenset()
    n_val = max(1, math.floor(fraction * len(ordered) + 0.5))
    if n_val >= len(ordered):
        raise SplitError(f"a validation fraction of {fraction} leaves none of the "
                         f"{len(ordered)} training subjects to train on")
    return frozenset(ordered[:n_val] if take == "first" else ordered[-n_val:])


def expected_sequences(protocol: Protocol, setting: Setting, train: Sequence[int], val: Sequence[int],
                       test: Sequence[int], eval_views: Sequence[str],
                       train_views: Sequence[str] | None = None) -> pd.DataFrame:
    """Every sequence the protocol asks for, with its role: the split before the store is seen."""
    make_id = SEQ_IDS.get(protocol.dataset)
    if make_id is None:
        raise protocol.error(f"no sequence naming for dataset {protocol.dataset!r}")
    rows: list[tuple[Any, ...]] = []

    def add(subjects: Sequence[int], spec: dict[str, tuple[int, ...]], views: Sequence[str], role: str,
            probe_set: str | None = None) -> None:
        for s in subjects:
            for cond, nums in spec.items():
                for n in nums:
                    for v in views:
                        rows.append((make_id(s, cond, n, v), _sid(s), cond, n, v, role, probe_set))

    train_views = protocol.views if train_views is None else train_views
    add(train, setting.train_sequences, train_views, "train")
    add(val, setting.train_sequences, train_views, "val")
    add(test, setting.gallery, eval_views, "gallery")
    for probe_set, spec in setting.probes.items():
        add(test, spec, eval_views, "probe", probe_set)
    df = pd.DataFrame(rows, columns=list(SPLIT_COLUMNS)).astype(SPLIT_COLUMNS)
    return df.sort_values(["role", "seq_id"], key=_role_order, kind="stable").reset_index(drop=True)


def role_counts(df: pd.DataFrame, probe_sets: Sequence[str]) -> dict[str, Any]:
    """Sequences per role and per probe set (in the protocol's order), and subjects per role."""
    return {
        "sequences": {r: int((df["role"] == r).sum()) for r in ROLES},
        "probe_sets": {p: int((df["probe_set"] == p).sum()) for p in probe_sets},
        "subjects": {r: int(df.loc[df["role"] == r, "subject"].nunique()) for r in ROLES},
        "total": int(len(df)),
    }


def write_split(split: Split, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write split.parquet, split.json and missing.txt; each file is replaced atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"table": out / "split.parquet", "info": out / "split.json", "missing": out / "missing.txt"}
    write_manifest(split.table, paths["table"])  # the manifest's atomic parquet writer
    atomic_write_text(paths["missing"], missing_text(split))
    atomic_write_text(paths["info"], json.dumps(split.info, indent=2) + "\n")
    return paths


def missing_text(split: Split) -> str:
    """missing.txt: a commented header, then ``seq_id<TAB>role<TAB>probe_set<TAB>status`` lines."""
    info = split.info
    lines = [
        f"# sequences the protocol expects and the store lacks: {len(split.missing)}",
        f"# {info['protocol_file']} setting {info['setting']!r}; status 'absent' = not in the "
        "manifest, otherwise the manifest's status_extract",
        "# seq_id\trole\tprobe_set\tstatus",
    ]
    for row in split.missing.itertuples(index=False):
        probe_set = row.probe_set if isinstance(row.probe_set, str) else "-"
        lines.append(f"{row.seq_id}\t{row.role}\t{probe_set}\t{row.status}")
    return "\n".join(lines) + "\n"


def summary_lines(split: Split) -> list[str]:
    """Counts per role for people: present / expected, and probe sets."""
    have, want = split.info["counts"], split.info["expected"]
    lines = [f"{split.info['dataset']} {split.info['setting']}: views {','.join(split.info['views']) or '(one)'}"
             f", cross_view={split.info['cross_view']}"]
    for role in ROLES:
        lines.append(f"  {role:8s} {have['sequences'][role]:6d} / {want['sequences'][role]:6d} sequences, "
                     f"{have['subjects'][role]:4d} subjects")
    for probe_set, n in want["probe_sets"].items():
        lines.append(f"    probe {probe_set:4s} {have['probe_sets'].get(probe_set, 0):6d} / {n:6d}")
    lines.append(f"  missing  {len(split.missing):6d}")
    return lines


# ---------------------------------------------------------------------------- option handling
def _optional_subject_choice(protocol: Protocol, choice: bool | None) -> bool:
    if protocol.optional_subject is None:
        if choice is not None:
            raise SplitError(f"{protocol.source}: this protocol has no optional subject to include or drop")
        return True
    return protocol.optional_subject.include_by_default if choice is None else choice


def _val_fraction(protocol: Protocol, fraction: float | None) -> float:
    if fraction is None:
        return protocol.val_fraction
    if not 0 <= fraction < 1:
        raise SplitError(f"--val-fraction {fraction} is not in [0, 1)")
    return float(fraction)


def _eval_views(protocol: Protocol, views: Sequence[str] | None) -> tuple[str, ...]:
    if views is None:
        return protocol.views
    unknown = [v for v in views if v not in protocol.views]
    if unknown or not views:
        raise SplitError(f"views {list(unknown) or list(views)} are not views of {protocol.dataset} "
                         f"({list(protocol.views)} in {protocol.source})")
    return tuple(dict.fromkeys(views))


def _cross_view(setting: Setting, options: SplitOptions, eval_views: Sequence[str]) -> bool:
    """Cross-view unless asked otherwise; naming views means the same-view protocol."""
    if options.cross_view is not None:
        cross = options.cross_view
    else:
        cross = setting.cross_view and options.views is None
    if cross and len(eval_views) < 2:
        raise SplitError(f"cross-view evaluation excludes identical views, so it needs two or more views "
                         f"(got {list(eval_views)})")
    return cross


def _sid(subject: int) -> str:
    return f"{subject:03d}"


def _role_order(col: pd.Series) -> pd.Series:
    if col.name == "role":
        return col.map({r: i for i, r in enumerate(ROLES)})
    return col

