"""Finding the sequences of a dataset folder, named by the dataset's own rules.

``discover(root, dataset)`` lists every sequence with its parsed name (gaittools.sources.layouts),
its kind (video file, frame folder, OpenGait pickle) and, for CASIA-B, the empty-scene clip
``SSS-bkgrd-VVV`` of its subject and view when the folder has it. A file whose name does not
parse is not guessed at: it goes to ``skipped`` with the reason, and the run goes on.

``dataset="auto"`` picks the layout when the folder is unambiguous: OpenGait pickles, CASIA-B
clip names, TUM-GAID ``pNNN/CNN`` frame folders; a folder matching none of them is ``generic``;
one matching several (pickles beside CASIA-B videos, say) is an error that asks for
``--dataset``.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gaittools.sources.layouts import (
    FRAME_SUFFIXES,
    VIDEO_SUFFIXES,
    BadName,
    SequenceName,
    casia_b_background_id,
    parse_casia_b,
    parse_casia_b_background,
    parse_generic,
    parse_opengait_pickle,
    parse_tum_gaid,
    tum_gaid_id_from_folder,
)

DATASETS = ("casia-b", "tum-gaid", "generic", "opengait-pkl")
KINDS = ("video", "frames", "pickle")


class SourceError(ValueError):
    """A dataset folder that cannot be used as asked (missing, ambiguous, empty)."""


@dataclass(frozen=True)
class SourceSequence:
    """One sequence to extract: what it is called and where its data lies."""

    name: SequenceName
    path: Path
    kind: str  # one of KINDS
    background: Path | None = None  # an empty-scene clip of the same camera set-up

    @property
    def seq_id(self) -> str:
        return self.name.seq_id


@dataclass
class Discovery:
    """What a dataset folder holds."""

    dataset: str
    root: Path
    sequences: list[SourceSequence] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    backgrounds: dict[str, Path] = field(default_factory=dict)  # background id -> clip


def discover(root: str | os.PathLike[str], dataset: str = "auto") -> Discovery:
    """The sequences under ``root`` for ``dataset`` (or the one detected), sorted by id."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"{root}: not a folder")
    if dataset == "auto":
        dataset = detect_dataset(root)
    finders = {"casia-b": _casia_b, "tum-gaid": _tum_gaid, "generic": _generic, "opengait-pkl": _opengait}
    if dataset not in finders:
        raise SourceError(f"unknown dataset {dataset!r}; one of {', '.join(DATASETS)} or auto")
    found = finders[dataset](root)
    found.sequences = _unique(found.sequences, found.skipped)
    return found


def detect_dataset(root: Path) -> str:
    """The one layout ``root`` matches; ``generic`` when none; SourceError when several."""
    matches = []
    pickles = list(_files(root, (".pkl",)))
    if any(_parses(parse_opengait_pickle, p) for p in pickles):
        matches.append("opengait-pkl")
    videos = list(_files(root, VIDEO_SUFFIXES))
    if any(_parses(parse_casia_b, v.stem) or parse_casia_b_background(v.stem) for v in videos):
        matches.append("casia-b")
    if _tum_gaid_folders(root):
        matches.append("tum-gaid")
    if len(matches) > 1:
        raise SourceError(f"{root}: holds {' and '.join(matches)} data; choose with --dataset")
    return matches[0] if matches else "generic"


# ---------------------------------------------------------------------------- layouts
def _casia_b(root: Path) -> Discovery:
    found = Discovery("casia-b", root)
    videos = sorted(_files(root, VIDEO_SUFFIXES))
    for v in videos:
        bg = parse_casia_b_background(v.stem)
        if bg:
            found.backgrounds[casia_b_background_id(*bg)] = v
    for v in videos:
        if parse_casia_b_background(v.stem):
            continue
        try:
            name = parse_casia_b(v.stem)
        except BadName as exc:
            found.skipped.append((str(v), str(exc)))
            continue
        background = found.backgrounds.get(casia_b_background_id(name.subject, name.view))
        found.sequences.append(SourceSequence(name, v, "video", background))
    return found


def _tum_gaid(root: Path) -> Discovery:
    found = Discovery("tum-gaid", root)
    for folder in _tum_gaid_folders(root):
        seq_id = tum_gaid_id_from_folder(folder)
        try:
            name = parse_tum_gaid(seq_id)
        except BadName as exc:
            found.skipped.append((str(folder), str(exc)))
            continue
        found.sequences.append(SourceSequence(name, folder, "frames"))
    for v in sorted(_files(root, VIDEO_SUFFIXES)):
        found.skipped.append((str(v), "a video file; TUM-GAID sequences are frame folders pNNN/CNN"))
    return found


def _tum_gaid_folders(root: Path) -> list[Path]:
    """Folders ``pNNN/XXX`` that directly hold frame images (not TUM-GAID's ``depth`` copies)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d.lower() != "depth" and not d.startswith("."))
        here = Path(dirpath)
        if here.parent.name.startswith("p") and any(Path(f).suffix.lower() in FRAME_SUFFIXES for f in filenames):
            if len(here.parent.name) == 4 and here.parent.name[1:].isdigit():
                out.append(here)
    return sorted(out)


def _opengait(root: Path) -> Discovery:
    found = Discovery("opengait-pkl", root)
    for p in sorted(_files(root, (".pkl",))):
        try:
            name = parse_opengait_pickle(p.relative_to(root) if len(p.relative_to(root).parts) >= 4 else p)
        except BadName as exc:
            found.skipped.append((str(p), str(exc)))
            continue
        found.sequences.append(SourceSequence(name, p, "pickle"))
    return found


def _generic(root: Path) -> Discovery:
    """Every video file and every folder that directly holds frame images."""
    found = Discovery("generic", root)
    for v in sorted(_files(root, VIDEO_SUFFIXES)):
        _add_generic(found, v, v.stem, "video")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if any(Path(f).suffix.lower() in FRAME_SUFFIXES for f in filenames):
            folder = Path(dirpath)
            rel = folder.relative_to(root)
            stem = "-".join(rel.parts) if rel.parts else root.name
            _add_generic(found, folder, stem, "frames")
    return found


def _add_generic(found: Discovery, path: Path, stem: str, kind: str) -> None:
    try:
        found.sequences.append(SourceSequence(parse_generic(stem), path, kind))
    except BadName as exc:
        found.skipped.append((str(path), str(exc)))


# ---------------------------------------------------------------------------- helpers
def _files(root: Path, suffixes: tuple[str, ...]):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if Path(f).suffix.lower() in suffixes and not f.startswith("."):
                yield Path(dirpath) / f


def _parses(parser, arg) -> bool:
    try:
        parser(arg)
        return True
    except BadName:
        return False


def _unique(sequences: list[SourceSequence], skipped: list[tuple[str, str]]) -> list[SourceSequence]:
    """Sorted by id; a second source with an id already taken is skipped with the reason."""
    counts = Counter(s.seq_id for s in sequences)
    out, seen = [], {}
    for s in sorted(sequences, key=lambda s: (s.seq_id, str(s.path))):
        if s.seq_id in seen:
            skipped.append((str(s.path), f"sequence id {s.seq_id!r} already taken by {seen[s.seq_id]} "
                                         f"({counts[s.seq_id]} sources share it)"))
            continue
        seen[s.seq_id] = s.path
        out.append(s)
    return out
