"""Evaluation protocols as data: load a protocol file and refuse one that cannot be right.

Protocols (which subjects train, which sequences form the gallery and each probe set) live in
``manifests/*.yaml`` rather than in code, so that a setting from another paper is a new file,
not a code change, and so that evaluation reads the very definition ``build-split`` used.
``manifests/README.md`` describes the format. Every problem found here is reported as a
``ProtocolError`` whose message starts with the file it came from: a typo in a protocol file
would otherwise silently produce a different (and unpublishable) split.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

FORMAT = 1
PACKAGE = "manifests"

#: Datasets whose sequence naming build-split knows (gaittools.sources.layouts).
DATASETS: tuple[str, ...] = ("casia-b", "tum-gaid")

_TOP_KEYS = {
    "format", "dataset", "name", "description", "subjects", "views", "conditions",
    "default_setting", "cross_view", "optional_subject", "validation",
    "train_sequences", "gallery", "probes", "settings",
}
_SETTING_KEYS = {"description", "train", "test", "train_sequences", "gallery", "probes", "cross_view"}
_REQUIRED_TOP = ("format", "dataset", "subjects", "views", "conditions", "settings")
_ID_FILE_KEYS = {"ids_file", "within"}
_OPTIONAL_SUBJECT_KEYS = {"id", "default", "note"}
_VALIDATION_KEYS = {"fraction", "take", "note"}
_RANGE = re.compile(r"^\s*p?(\d+)\s*(?:-\s*p?(\d+)\s*)?$")


class ProtocolError(ValueError):
    """A protocol file (or an id list it names) that is malformed or contradicts itself."""


@dataclass(frozen=True)
class IdFiles:
    """Subject ids read from lists that ship with the dataset (not with gaittools)."""

    files: tuple[str, ...]
    within: frozenset[int] | None = None


SubjectSpec = frozenset[int] | IdFiles
#: condition -> sequence numbers, e.g. {"nm": (1, 2, 3, 4)}.
SequenceSpec = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class Setting:
    """One named setting of a protocol (CASIA-B ``large``, TUM-GAID ``temporal``...)."""

    name: str
    train: SubjectSpec
    test: SubjectSpec
    train_sequences: SequenceSpec
    gallery: SequenceSpec
    probes: dict[str, SequenceSpec]
    cross_view: bool


@dataclass(frozen=True)
class OptionalSubject:
    """A subject some papers drop (CASIA-B 005): kept or dropped by a command-line switch."""

    id: int
    include_by_default: bool
    note: str = ""


@dataclass(frozen=True)
class Protocol:
    """A validated protocol file."""

    source: str
    dataset: str
    name: str
    subjects: frozenset[int]
    views: tuple[str, ...]
    conditions: tuple[str, ...]
    default_setting: str
    settings: dict[str, Setting]
    val_fraction: float
    val_take: str
    optional_subject: OptionalSubject | None = None
    description: str = ""

    def setting(self, name: str | None) -> Setting:
        """The named setting (the file's default when None)."""
        name = name or self.default_setting
        if name not in self.settings:
            raise ProtocolError(
                f"{self.source}: no setting {name!r}; this protocol has {sorted(self.settings)}"
            )
        return self.settings[name]

    def error(self, problem: str) -> ProtocolError:
        return ProtocolError(f"{self.source}: {problem}")


# ---------------------------------------------------------------------------- finding files
def available_protocols() -> list[str]:
    """Names of the protocol files shipped in the ``manifests`` package."""
    root = importlib.resources.files(PACKAGE)
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def packaged_protocol(dataset: str) -> Protocol:
    """The protocol file shipped for ``dataset`` (``manifests/<dataset>.yaml``)."""
    resource = importlib.resources.files(PACKAGE) / f"{dataset}.yaml"
    if not resource.is_file():
        raise ProtocolError(
            f"no protocol shipped for {dataset!r} (have {available_protocols()}); "
            "pass your own with --protocol-file"
        )
    return parse_protocol(resource.read_text(encoding="utf-8"), f"{PACKAGE}/{dataset}.yaml")


def load_protocol(path: str | os.PathLike[str]) -> Protocol:
    """A user's protocol file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{path}: unreadable ({exc})") from exc
    return parse_protocol(text, str(path))


# ---------------------------------------------------------------------------- parsing
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def parse_protocol(text: str, source: str) -> Protocol:
    """Parse and validate protocol YAML; ``source`` names the file in every error."""
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise ProtocolError(f"{source}: not valid YAML ({exc})") from exc
    return _Parser(source).protocol(doc)


class _Parser:
    """Turns the YAML document into a Protocol, naming the key path of every problem."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, problem: str) -> ProtocolError:
        return ProtocolError(f"{self.source}: {where}: {problem}")

    def keys(self, where: str, value: Any, allowed: set[str], required: Iterable[str] = ()) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__}")
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            raise self.fail(where, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        absent = [k for k in required if k not in value]
        if absent:
            raise self.fail(where, f"missing key(s) {absent}")
        return dict(value)

    def protocol(self, doc: Any) -> Protocol:
        top = self.keys("top level", doc, _TOP_KEYS, _REQUIRED_TOP)
        if top["format"] != FORMAT:
            raise self.fail("format", f"{top['format']!r} is not a format this gaittools reads ({FORMAT})")
        dataset = top["dataset"]
        if dataset not in DATASETS:
            raise self.fail("dataset", f"{dataset!r} has no known sequence naming; use one of {list(DATASETS)}")
        subjects = self.ids("subjects", top["subjects"])
        views = self.views(top["views"])
        conditions = self.strings("conditions", top["conditions"])
        val_fraction, val_take = self.validation(top.get("validation", {}))
        defaults = {k: top[k] for k in ("train_sequences", "gallery", "probes") if k in top}
        cross_view = self.boolean("cross_view", top.get("cross_view", False))
        settings_doc = top["settings"]
        if not isinstance(settings_doc, Mapping) or not settings_doc:
            raise self.fail("settings", "expected a non-empty mapping of setting name -> setting")
        settings = {
            str(name): self.setting(str(name), body, defaults, conditions, subjects, cross_view)
            for name, body in settings_doc.items()
        }
        default_setting = str(top.get("default_setting", next(iter(settings))))
        if default_setting not in settings:
            raise self.fail("default_setting", f"{default_setting!r} is not one of {sorted(settings)}")
        optional = self.optional_subject(top["optional_subject"], subjects) if "optional_subject" in top else None
        return Protocol(
            source=self.source, dataset=dataset, name=str(top.get("name", dataset)), subjects=subjects,
            views=views, conditions=conditions, default_setting=default_setting, settings=settings,
            val_fraction=val_fraction, val_take=val_take, optional_subject=optional,
            description=str(top.get("description", "")).strip(),
        )

    def setting(self, name: str, body: Any, defaults: dict[str, Any], conditions: tuple[str, ...],
                universe: frozenset[int], cross_view: bool) -> Setting:
        where = f"settings.{name}"
        body = self.keys(where, body, _SETTING_KEYS, ("train", "test"))
        overrides = {k: v for k, v in body.items() if k not in ("train", "test", "description")}
        merged = {**defaults, **overrides}
        for key in ("train_sequences", "gallery", "probes"):
            if key not in merged:
                raise self.fail(where, f"no {key!r} (neither in the setting nor at the top level)")
        train = self.subject_spec(f"{where}.train", body["train"], universe)
        test = self.subject_spec(f"{where}.test", body["test"], universe)
        if isinstance(train, frozenset) and isinstance(test, frozenset) and train & test:
            raise self.fail(where, f"train and test subjects overlap: {format_ids(train & test)}")
        gallery = self.sequences(f"{where}.gallery", merged["gallery"], conditions)
        probes_doc = merged["probes"]
        if not isinstance(probes_doc, Mapping) or not probes_doc:
            raise self.fail(f"{where}.probes", "expected a mapping of probe set name -> sequences")
        probes = {str(k): self.sequences(f"{where}.probes.{k}", v, conditions) for k, v in probes_doc.items()}
        self.check_disjoint(where, gallery, probes)
        return Setting(
            name=name, train=train, test=test,
            train_sequences=self.sequences(f"{where}.train_sequences", merged["train_sequences"], conditions),
            gallery=gallery, probes=probes,
            cross_view=self.boolean(f"{where}.cross_view", merged.get("cross_view", cross_view)),
        )

    def check_disjoint(self, where: str, gallery: SequenceSpec, probes: dict[str, SequenceSpec]) -> None:
        """A sequence in two evaluation roles would be matched against itself."""
        owners: dict[tuple[str, int], str] = {(c, n): "gallery" for c, nums in gallery.items() for n in nums}
        for probe_set, spec in probes.items():
            for cond, nums in spec.items():
                for num in nums:
                    if (cond, num) in owners:
                        raise self.fail(
                            f"{where}.probes.{probe_set}",
                            f"sequence {cond}-{num:02d} is also in {owners[(cond, num)]}",
                        )
                    owners[(cond, num)] = f"probe set {probe_set}"

    def subject_spec(self, where: str, value: Any, universe: frozenset[int]) -> SubjectSpec:
        if isinstance(value, Mapping):
            body = self.keys(where, value, _ID_FILE_KEYS, ("ids_file",))
            files = body["ids_file"]
            files = (files,) if isinstance(files, str) else files
            if not isinstance(files, (list, tuple)) or not files or not all(isinstance(f, str) for f in files):
                raise self.fail(f"{where}.ids_file", "expected a file name or a list of file names")
            within = self.ids(f"{where}.within", body["within"], universe) if "within" in body else None
            return IdFiles(tuple(files), within)
        return self.ids(where, value, universe)

    def ids(self, where: str, value: Any, universe: frozenset[int] | None = None) -> frozenset[int]:
        """Subject ids from ``"001-074"``, ``5``, ``"005"`` or a list of those."""
        items = value if isinstance(value, list) else [value]
        ids: set[int] = set()
        for item in items:
            ids.update(self.range(where, item))
        if not ids:
            raise self.fail(where, "no ids")
        if universe is not None and not ids <= universe:
            raise self.fail(where, f"ids {format_ids(ids - universe)} are outside the dataset's subjects "
                                   f"{format_ids(universe)}")
        return frozenset(ids)

    def range(self, where: str, item: Any) -> range:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise self.fail(where, f"bad range {item!r}: expected 'A-B', a number or a list of those")
        m = _RANGE.match(str(item))
        if m is None:
            raise self.fail(where, f"bad range {item!r}: expected 'A-B' with A <= B, or a number")
        lo = int(m[1])
        hi = int(m[2]) if m[2] is not None else lo
        if hi < lo:
            raise self.fail(where, f"bad range {item!r}: it runs backwards ({hi} < {lo})")
        return range(lo, hi + 1)

    def sequences(self, where: str, value: Any, conditions: tuple[str, ...]) -> SequenceSpec:
        if not isinstance(value, Mapping) or not value:
            raise self.fail(where, "expected a mapping condition -> sequence numbers, e.g. {nm: '01-04'}")
        unknown = sorted(str(c) for c in value if c not in conditions)
        if unknown:
            raise self.fail(where, f"unknown condition(s) {unknown}; this dataset has {list(conditions)}")
        return {str(c): tuple(sorted(self.ids(f"{where}.{c}", v))) for c, v in value.items()}

    def views(self, value: Any) -> tuple[str, ...]:
        views = self.strings("views", value, allow_empty_string=True)
        if len(set(views)) != len(views):
            raise self.fail("views", "a view is listed twice")
        return views

    def strings(self, where: str, value: Any, allow_empty_string: bool = False) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(where, "expected a non-empty list")
        for v in value:
            if not isinstance(v, str) or (not v and not allow_empty_string):
                raise self.fail(where, f"{v!r} is not a string (quote views: \"000\")")
        return tuple(value)

    def boolean(self, where: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"expected true or false, got {value!r}")
        return value

    def validation(self, value: Any) -> tuple[float, str]:
        body = self.keys("validation", value, _VALIDATION_KEYS)
        fraction = body.get("fraction", 0.0)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise self.fail("validation.fraction", f"{fraction!r} is not a fraction in [0, 1)")
        take = body.get("take", "first")
        if take not in ("first", "last"):
            raise self.fail("validation.take", f"{take!r} is not 'first' or 'last'")
        return float(fraction), take

    def optional_subject(self, value: Any, universe: frozenset[int]) -> OptionalSubject:
        body = self.keys("optional_subject", value, _OPTIONAL_SUBJECT_KEYS, ("id", "default"))
        ids = self.ids("optional_subject.id", body["id"], universe)
        if len(ids) != 1:
            raise self.fail("optional_subject.id", "expected exactly one subject")
        if body["default"] not in ("include", "exclude"):
            raise self.fail("optional_subject.default", f"{body['default']!r} is not 'include' or 'exclude'")
        return OptionalSubject(next(iter(ids)), body["default"] == "include", str(body.get("note", "")).strip())


# ---------------------------------------------------------------------------- id lists
def resolve_subjects(protocol: Protocol, setting: Setting, ids_dir: str | os.PathLike[str] | None
                     ) -> tuple[frozenset[int], frozenset[int]]:
    """(train ids, test ids) of a setting, reading the dataset's id lists where it names them."""
    train = _resolve(protocol, setting.train, ids_dir, f"settings.{setting.name}.train")
    test = _resolve(protocol, setting.test, ids_dir, f"settings.{setting.name}.test")
    overlap = train & test
    if overlap:
        files = [f for spec in (setting.train, setting.test) if isinstance(spec, IdFiles) for f in spec.files]
        raise protocol.error(
            f"setting {setting.name!r}: train and test subjects overlap ({format_ids(overlap)})"
            + (f"; id lists {files} in {ids_dir}" if files else "")
        )
    return train, test


def _resolve(protocol: Protocol, spec: SubjectSpec, ids_dir: str | os.PathLike[str] | None,
             where: str) -> frozenset[int]:
    if isinstance(spec, frozenset):
        return spec
    if ids_dir is None:
        raise protocol.error(
            f"{where} reads {list(spec.files)}, the id lists that come with the dataset: "
            "pass the folder holding them with --ids-dir"
        )
    ids: set[int] = set()
    for name in spec.files:
        ids |= read_id_list(Path(ids_dir) / name, protocol.subjects)
    if spec.within is not None:
        ids &= spec.within
    if not ids:
        raise protocol.error(f"{where}: no subject left from {list(spec.files)}")
    return frozenset(ids)


def read_id_list(path: Path, universe: frozenset[int]) -> frozenset[int]:
    """Subject numbers from a whitespace/comma-separated list (``1``, ``001`` or ``p001``)."""
    try:
        tokens = path.read_text(encoding="utf-8").replace(",", " ").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{path}: cannot read the id list ({exc})") from exc
    ids: set[int] = set()
    for token in tokens:
        m = re.fullmatch(r"p?(\d+)", token)
        if m is None:
            raise ProtocolError(f"{path}: {token!r} is not a subject id (expected 1, 001 or p001)")
        ids.add(int(m[1]))
    if not ids:
        raise ProtocolError(f"{path}: the id list is empty")
    outside = ids - universe
    if outside:
        raise ProtocolError(f"{path}: ids {format_ids(outside)} are outside the dataset's subjects")
    return frozenset(ids)


def format_ids(ids: Iterable[int]) -> str:
    """Compact text for id sets in messages: ``001-004,009``."""
    runs: list[list[int]] = []
    for i in sorted(ids):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a:03d}" if a == b else f"{a:03d}-{b:03d}" for a, b in runs)
