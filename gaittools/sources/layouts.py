"""Dataset layouts: how each dataset names its sequences, parsed into one record.

Every stage keys data by ``seq_id``, the dataset's own name for a sequence, so that a store
built from the real files and one built from ``gaittools synth`` look the same downstream.

- CASIA-B: ``SSS-CC-NN-VVV.avi`` (``001-nm-01-090.avi``), conditions nm/bg/cl, views 000..180
  step 18; ``SSS-bkgrd-VVV.avi`` is the empty scene for that subject and view.
- TUM-GAID: one folder of frames per sequence, ``pNNN/CNN/`` (``p001/n01/``), conditions
  n/b/s; ``seq_id`` is ``pNNN-CNN``. There is one camera, so ``view`` is ``""``.
- OpenGait pickles: ``SSS/CC-NN/VVV/VVV.pkl`` (CASIA-B naming split into folders).
- generic: any video or frame folder; the stem is the id, the subject is the stem.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

CASIA_B_VIEWS: tuple[str, ...] = tuple(f"{a:03d}" for a in range(0, 181, 18))
CASIA_B_CONDITIONS: tuple[str, ...] = ("nm", "bg", "cl")
TUM_GAID_CONDITIONS: tuple[str, ...] = ("n", "b", "s")
VIDEO_SUFFIXES: tuple[str, ...] = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg")
FRAME_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_CASIA_B = re.compile(r"^(?P<subject>\d{3})-(?P<condition>nm|bg|cl)-(?P<num>\d{2})-(?P<view>\d{3})$")
_CASIA_B_BKGRD = re.compile(r"^(?P<subject>\d{3})-bkgrd-(?P<view>\d{3})$")
_TUM_GAID = re.compile(r"^p(?P<subject>\d{3})-(?P<condition>[nbs])(?P<num>\d{2})$")


class BadName(ValueError):
    """A file name that does not follow its dataset's naming rule."""


@dataclass(frozen=True)
class SequenceName:
    """One sequence's identity, as parsed from its dataset's naming."""

    dataset: str
    seq_id: str
    subject: str
    condition: str
    seq_num: int
    view: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def casia_b_id(subject: int | str, condition: str, num: int, view: int | str) -> str:
    """The CASIA-B sequence id ``SSS-CC-NN-VVV``."""
    return f"{int(subject):03d}-{condition}-{int(num):02d}-{int(view):03d}"


def casia_b_background_id(subject: int | str, view: int | str) -> str:
    """The id of CASIA-B's empty-scene clip for a subject and view."""
    return f"{int(subject):03d}-bkgrd-{int(view):03d}"


def tum_gaid_id(subject: int | str, condition: str, num: int) -> str:
    """The TUM-GAID sequence id ``pNNN-CNN`` (folder ``pNNN/CNN``)."""
    return f"p{int(subject):03d}-{condition}{int(num):02d}"


def parse_casia_b(stem: str) -> SequenceName:
    """Parse a CASIA-B stem (no suffix); raises BadName with the rule it broke."""
    m = _CASIA_B.match(stem)
    if m is None:
        raise BadName(f"{stem!r} is not a CASIA-B name SSS-CC-NN-VVV (CC in nm/bg/cl)")
    view = m["view"]
    if view not in CASIA_B_VIEWS:
        raise BadName(f"{stem!r}: view {view} is not one of CASIA-B's 000..180 step 18")
    return SequenceName("casia-b", stem, m["subject"], m["condition"], int(m["num"]), view)


def parse_casia_b_background(stem: str) -> tuple[str, str] | None:
    """(subject, view) for an empty-scene clip ``SSS-bkgrd-VVV``, else None."""
    m = _CASIA_B_BKGRD.match(stem)
    return (m["subject"], m["view"]) if m else None


def parse_tum_gaid(seq_id: str) -> SequenceName:
    """Parse a TUM-GAID id ``pNNN-CNN``."""
    m = _TUM_GAID.match(seq_id)
    if m is None:
        raise BadName(f"{seq_id!r} is not a TUM-GAID sequence pNNN/CNN (C in n/b/s)")
    return SequenceName("tum-gaid", seq_id, m["subject"], m["condition"], int(m["num"]), "")


def tum_gaid_id_from_folder(folder: Path) -> str:
    """``.../p001/n01`` -> ``p001-n01``."""
    return f"{folder.parent.name}-{folder.name}"


def parse_opengait_pickle(path: Path) -> SequenceName:
    """Parse ``SSS/CC-NN/VVV/VVV.pkl`` into a CASIA-B-named sequence."""
    parts = path.parts[-4:]
    if len(parts) != 4 or not parts[3].endswith(".pkl"):
        raise BadName(f"{path}: expected SSS/CC-NN/VVV/VVV.pkl")
    subject, cond_num, view, _ = parts
    name = parse_casia_b(f"{subject}-{cond_num}-{view}")
    return SequenceName("casia-b", name.seq_id, name.subject, name.condition, name.seq_num, name.view)


def parse_generic(stem: str) -> SequenceName:
    """Any name: the id and the subject are the stem (users map identities themselves)."""
    if not stem or "/" in stem:
        raise BadName(f"{stem!r} is not usable as a sequence id")
    return SequenceName("generic", stem, stem, "", 0, "")
