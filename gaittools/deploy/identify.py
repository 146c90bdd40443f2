"""Flow-free identification: video -> gray crops -> student signature per walk -> nearest identity.

The deployed path of GaitCopy: decode (``gaittools.sources.video``), find, track and crop the people
(``gaittools.person.localise`` and ``gaittools.person.extract.track_crops``, the per-track path of
extract-frames), cut clips of T frames every ``step`` frames, run the exported student
(``gaittools.deploy.runtime``), and compare with a gallery. No optical flow is computed or imported
anywhere on this path: that is the point of the student.

Decisions (documented for users of ``gaittools enroll`` / ``identify``):

- Several people: ``identify`` answers once per walking track (``--tracks walkers`` of
  extract-frames), each with its track id and first and last frame; people who stand, wave
  or jump get no answer. A video with no walking track gets one answer, ``"no person"``.
  ``enroll`` and ``calibrate`` take one identity per video: its longest walking track.

- The bundle's unit (``bundle.json`` ``unit``) says how a walking track is fed:

  - ``walk`` (a set network): the track is ONE set, every frame that holds the person (a
    frame whose crop window is finite), in one call, as evaluation embeds a walk. The set
    network pools a maximum over its frames, which only the pooled map inside the graph can
    combine across calls (the signature of two halves is not the signature of the whole), so
    a track is never cut in pieces: one longer than the bundle's ``max_frames`` (512, about
    20 s at 25 fps) keeps that many frames evenly spread over the whole track
    (``gaittools.deploy.clips.spread_indices``), which still covers every pose of many gait
    cycles while bounding memory. ``set_frames`` in the answer says how many were used.
  - ``clip`` (the 3D family): clips of T = the bundle's clip length (25) every ``step`` (5)
    frames, inside runs of consecutive frames that hold the person, like training. The
    per-video signature is the mean of the clip signatures (each L2-normalised by the model),
    renormalised to unit length: averaging unit vectors is the usual way to pool a sequence;
    it weights every clip equally.

  Frames are cropped to the bundle's ``crop_size`` (the store's S) with the store's recipe;
  the model then fits them to its input size exactly as training did
  (``gaittools.deploy.net_input``: a centre cut of 60 from 64, for instance).
- Distance: Euclidean distance between unit signatures, in [0, 2] (= sqrt(2 - 2 cos)); the
  same metric as the k-NN evaluation on L2-normalised signatures.
- Margin: every answer reports ``margin``, the distance to the nearest entry of the
  second-nearest identity minus the distance to the nearest one. A small margin (e.g. 0.01)
  says the answer was nearly a coin toss between two people, whatever the distance.
- Unknown: the nearest gallery entry farther than the threshold answers ``"unknown"``.
  ``gaittools calibrate`` sets the threshold from labelled videos of VALIDATION identities
  (people the model was not trained on): some enrolled in the gallery, some not. For each
  candidate threshold it replays identify's rule on every video (an enrolled person must be
  named, a person not enrolled must come out "unknown") and keeps the threshold with the
  lowest balanced error (the mean of the two groups' error rates), the middle of the best
  range on ties; it is stored in the gallery with those error rates (``meta["calibration"]``).
  Without calibration the default ``DEFAULT_THRESHOLD`` = 0.8 (cosine similarity 0.68) is a
  conservative guess, not a measured value; ``--threshold`` overrides both.
- A video in which nobody is found answers status ``"no person"``; a video whose longest run
  of person frames is shorter than one clip answers ``"too short"`` (we do not loop or pad:
  less than one clip of walking is less than one gait cycle at 25 fps, and a made-up clip would
  give a confident-looking but meaningless signature). With a walk bundle, "too short" is a
  track with fewer person frames than the set size the network trained on (``walk``
  ``train_frames`` in ``bundle.json``, 30 by default): a smaller set is one it never learned
  from, and less than a gait cycle. Neither is an error or a crash.

Gallery file (``.npz``, written atomically): ``ids`` (N,) str, ``signatures`` (N, d) float32
unit rows, ``sources`` (N,) str (the enrolled videos), ``meta`` a JSON string
(``gallery_format`` "gaitcopy-gallery", ``gallery_version`` 1, ``weights_fingerprint``,
``model`` name, ``dim``, ``unit``, ``clip`` {length, step, crop_size, input_size, crop_mode}, ``threshold``
or null, ``created``). Searching with a model whose weights fingerprint differs is refused: signatures
of two models live in different spaces.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from gaittools.deploy.clips import clip_starts, longest_run
from gaittools.deploy.runtime import SignatureModel

DEFAULT_THRESHOLD = 0.8
GALLERY_FORMAT = "gaitcopy-gallery"
GALLERY_VERSION = 1

STATUS_OK = "ok"
STATUS_IDENTIFIED = "identified"
STATUS_UNKNOWN = "unknown"
STATUS_NO_PERSON = "no person"
STATUS_TOO_SHORT = "too short"
STATUS_ERROR = "error"


class GalleryError(ValueError):
    """A gallery that cannot be used (unreadable, or made with another model)."""


# ---------------------------------------------------------------------------- clips


@dataclass
class SequenceSignature:
    """A video's pooled signature and the facts behind it."""

    status: str  # STATUS_OK, STATUS_NO_PERSON, STATUS_TOO_SHORT
    signature: np.ndarray | None
    frames: int
    person_frames: int
    clips: int  # clips pooled (a clip bundle); 0 for a walk bundle
    message: str = ""
    set_frames: int | None = None  # frames of the one set (a walk bundle); None for a clip bundle
    track: int | None = None  # the walking track's id; None for a video without one
    first_frame: int | None = None  # the track's first and last frame in the video
    last_frame: int | None = None


def valid_frames(windows: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """Frames that hold a person: finite crop window (and a non-empty crop)."""
    ok = np.isfinite(np.asarray(windows, dtype=np.float64)).all(axis=1)
    return ok & gray.reshape(len(gray), -1).any(axis=1)


def pooled_signature(clip_signatures: np.ndarray) -> np.ndarray:
    """Mean of unit clip signatures, renormalised (see the module docstring)."""
    mean = clip_signatures.astype(np.float64).mean(axis=0)
    norm = np.linalg.norm(mean)
    return (mean / norm if norm > 0 else mean).astype(np.float32)


def signature_of_crops(model: SignatureModel, gray: np.ndarray, windows: np.ndarray) -> SequenceSignature:
    """One sequence's signature from its crops: one set of all its person frames (a walk
    bundle), or the pooled signatures of its clips (a clip bundle); see the module docstring."""
    valid = valid_frames(windows, gray)
    n_person = int(valid.sum())
    if n_person == 0:
        return SequenceSignature(STATUS_NO_PERSON, None, len(gray), 0, 0, "nobody was found in any frame")
    if model.is_walk:
        return _walk_signature(model, gray[valid], len(gray))
    return _clip_signature(model, gray, valid)


def _walk_signature(model: SignatureModel, person: np.ndarray, n_frames: int) -> SequenceSignature:
    """Every person frame as one set (at most ``max_frames``, spread over the track)."""
    need = model.bundle.train_frames
    if len(person) < need:
        return SequenceSignature(
            STATUS_TOO_SHORT, None, n_frames, len(person), 0,
            f"the person is in {len(person)} frames; a walk needs {need} (the set size the model trained on)",
        )
    return SequenceSignature(STATUS_OK, model.walk(person), n_frames, len(person), 0,
                             set_frames=min(len(person), model.max_frames))


def _clip_signature(model: SignatureModel, gray: np.ndarray, valid: np.ndarray) -> SequenceSignature:
    """The mean of the signatures of every clip inside runs of person frames."""
    n_person = int(valid.sum())
    starts = clip_starts(valid, model.clip_len, model.clip_step)
    if not starts:
        run = longest_run(valid)
        return SequenceSignature(
            STATUS_TOO_SHORT, None, len(gray), n_person, 0,
            f"the longest run of frames with the person is {run}; one clip needs {model.clip_len}",
        )
    clips = np.stack([gray[s:s + model.clip_len] for s in starts])
    signatures = model(clips)
    return SequenceSignature(STATUS_OK, pooled_signature(signatures), len(gray), n_person, len(starts))


def evidence(clips: int, set_frames: int | None) -> str:
    """What a signature was made from, for people: "12 clips" or "one set of 84 frames"."""
    return f"one set of {set_frames} frames" if set_frames is not None else f"{clips} clips"


def signatures_of_video(path: str | os.PathLike[str], model: SignatureModel,
                        background: np.ndarray | None = None, tracks: str = "walkers") -> list[SequenceSignature]:
    """Decode a video (or frame folder), track its people, crop the selected tracks as the
    model's training data was (``tracks``: ``walkers`` every walking track, ``longest`` the
    longest one), and pool each track's signature; one entry per track, in order of birth,
    or a single one without a track when nobody walks."""
    from gaittools.person.extract import track_crops
    from gaittools.person.localise import localise
    from gaittools.sources.video import DEFAULT_WORKING_HEIGHT, decode

    bundle = model.bundle
    frames = decode(path, working_height=bundle.working_height or DEFAULT_WORKING_HEIGHT).frames
    if background is not None and background.shape != frames.shape[1:]:
        raise ValueError(f"{path}: frames are {frames.shape[2]}x{frames.shape[1]} at the working height, "
                         f"the background image is {background.shape[1]}x{background.shape[0]}")
    loc = localise(frames, background)
    out = []
    for crops in track_crops(frames, loc, tracks, crop_mode=bundle.crop_mode, size=bundle.crop_size):
        seq = signature_of_crops(model, crops.gray, crops.windows)
        if crops.track is not None:
            seq.track, seq.first_frame, seq.last_frame = crops.track.id, crops.track.first, crops.track.last
        elif loc.n_tracks:
            seq.message = f"{loc.n_tracks} people tracked, none walking"
        out.append(seq)
    return out


def signature_of_video(path: str | os.PathLike[str], model: SignatureModel,
                       background: np.ndarray | None = None) -> SequenceSignature:
    """The signature of a video's longest walking track (enroll, calibrate: one identity)."""
    return signatures_of_video(path, model, background, "longest")[0]


# ---------------------------------------------------------------------------- gallery
@dataclass
class Gallery:
    """Enrolled identities: one unit signature per enrolled video."""

    ids: list[str]
    signatures: np.ndarray  # (N, d) float32
    sources: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def empty_for(cls, model: SignatureModel, threshold: float | None = None) -> Gallery:
        bundle = model.bundle
        meta = {
            "gallery_format": GALLERY_FORMAT,
            "gallery_version": GALLERY_VERSION,
            "weights_fingerprint": model.fingerprint,
            "model": bundle.meta.get("model", {}).get("name"),
            "dim": model.dim,
            "unit": bundle.unit,
            "clip": {k: bundle.meta["clip"].get(k) for k in ("length", "step", "crop_size", "input_size", "crop_mode")},
            "threshold": threshold,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        return cls([], np.zeros((0, model.dim), np.float32), [], meta)

    def add(self, identity: str, signature: np.ndarray, source: str) -> None:
        self.ids.append(str(identity))
        self.sources.append(str(source))
        self.signatures = np.concatenate([self.signatures, signature[None].astype(np.float32)])

    def check_model(self, model: SignatureModel, path: str | os.PathLike[str] = "<gallery>") -> None:
        """Refuse a model whose signatures are not comparable with the enrolled ones."""
        theirs = self.meta.get("weights_fingerprint")
        if theirs != model.fingerprint:
            raise GalleryError(
                f"{path}: gallery was enrolled with model {self.meta.get('model')!r} "
                f"(weights {str(theirs)[:12]}), but {model.bundle.root} has weights "
                f"{model.fingerprint[:12]}; signatures of different models are not comparable: "
                "enrol again with this model"
            )

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(tmp, ids=np.array(self.ids, dtype=str), signatures=self.signatures.astype(np.float32),
                 sources=np.array(self.sources, dtype=str), meta=np.array(json.dumps(self.meta)))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Gallery:
        path = Path(path)
        if not path.is_file():
            raise GalleryError(f"{path}: no such gallery file")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                gallery = cls([str(i) for i in data["ids"]], np.asarray(data["signatures"], np.float32),
                              [str(s) for s in data["sources"]], meta)
        except (OSError, ValueError, KeyError) as exc:
            raise GalleryError(f"{path}: not a readable gallery ({exc})") from exc
        if meta.get("gallery_format") != GALLERY_FORMAT:
            raise GalleryError(f"{path}: not a GaitCopy gallery (format {meta.get('gallery_format')!r})")
        if gallery.signatures.shape != (len(gallery.ids), int(meta["dim"])):
            raise GalleryError(f"{path}: signatures {gallery.signatures.shape} do not match "
                               f"{len(gallery.ids)} ids of dim {meta['dim']}")
        return gallery


# ---------------------------------------------------------------------------- matching
@dataclass
class Answer:
    """What ``identify`` says about one video."""

    video: str
    status: str  # identified | unknown | no person | too short | error
    identity: str | None = None  # the enrolled id, "unknown", or None when no signature
    distance: float | None = None  # to the nearest gallery entry
    nearest: str | None = None
    margin: float | None = None  # second-nearest identity's distance - distance (None: one identity)
    threshold: float | None = None
    clips: int = 0
    frames: int = 0
    person_frames: int = 0
    message: str = ""
    set_frames: int | None = None  # a walk bundle: frames of the one set embedded
    track: int | None = None  # which walking track of the video (None: no walker)
    first_frame: int | None = None
    last_frame: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ranked_identities(signature: np.ndarray, gallery: Gallery) -> list[tuple[float, str]]:
    """(distance, id) of every enrolled identity's nearest entry, nearest first."""
    if not gallery.ids:
        raise GalleryError("the gallery is empty: enrol someone first")
    distances = np.linalg.norm(gallery.signatures - signature[None], axis=1)
    best: dict[str, float] = {}
    for identity, distance in zip(gallery.ids, distances.tolist()):
        best[identity] = min(distance, best.get(identity, np.inf))
    return sorted((d, i) for i, d in best.items())


def match(signature: np.ndarray, gallery: Gallery, threshold: float) -> tuple[str, float, str]:
    """(answer, distance, nearest id): nearest enrolled video by Euclidean distance on unit vectors."""
    distance, nearest = ranked_identities(signature, gallery)[0]
    return (nearest if distance <= threshold else STATUS_UNKNOWN), distance, nearest


def answer_for(video: str, seq: SequenceSignature, gallery: Gallery, threshold: float) -> Answer:
    answer = Answer(video, seq.status, threshold=threshold, clips=seq.clips, frames=seq.frames,
                    person_frames=seq.person_frames, message=seq.message, set_frames=seq.set_frames, track=seq.track,
                    first_frame=seq.first_frame, last_frame=seq.last_frame)
    if seq.status != STATUS_OK or seq.signature is None:
        return answer
    ranked = ranked_identities(seq.signature, gallery)
    (distance, nearest) = ranked[0]
    answer.distance, answer.nearest = distance, nearest
    answer.margin = ranked[1][0] - distance if len(ranked) > 1 else None
    answer.identity = nearest if distance <= threshold else STATUS_UNKNOWN
    answer.status = STATUS_UNKNOWN if answer.identity == STATUS_UNKNOWN else STATUS_IDENTIFIED
    return answer


@dataclass
class Calibration:
    """A threshold chosen on labelled validation videos, with the error rates it gives there."""

    threshold: float
    enrolled_videos: int
    unknown_videos: int
    enrolled_error: float  # share of enrolled people not named correctly
    unknown_error: float  # share of people not enrolled who were named anyway

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate_threshold(gallery: Gallery, labelled: list[tuple[str, np.ndarray]]) -> Calibration:
    """The unknown threshold with the lowest balanced error on ``labelled`` (id, signature)
    videos of validation identities; see the module docstring."""
    enrolled = set(gallery.ids)
    ranked = [(identity, ranked_identities(sig, gallery)[0]) for identity, sig in labelled]
    known = [(identity, d, nearest) for identity, (d, nearest) in ranked if identity in enrolled]
    strangers = [d for identity, (d, _) in ranked if identity not in enrolled]
    if not known or not strangers:
        raise GalleryError(f"calibration needs videos of enrolled people and of people not enrolled; "
                           f"got {len(known)} and {len(strangers)}")
    values = np.unique([d for _, d, _ in known] + strangers)
    candidates = np.concatenate([[values[0] / 2], (values[1:] + values[:-1]) / 2, [values[-1] + 0.05]])

    def errors(t: float) -> tuple[float, float]:
        missed = sum(1 for identity, d, nearest in known if d > t or nearest != identity) / len(known)
        accepted = sum(1 for d in strangers if d <= t) / len(strangers)
        return missed, accepted

    balanced = np.array([sum(errors(t)) / 2 for t in candidates])
    best = np.flatnonzero(balanced == balanced.min())
    threshold = float(candidates[best[len(best) // 2]])
    missed, accepted = errors(threshold)
    return Calibration(threshold, len(known), len(strangers), missed, accepted)


def resolve_threshold(threshold: float | None, gallery: Gallery, model: SignatureModel) -> float:
    """--threshold, else the gallery's, else the bundle's, else ``DEFAULT_THRESHOLD``."""
    for value in (threshold, gallery.meta.get("threshold"), model.bundle.meta.get("threshold")):
        if value is not None:
            return float(value)
    return DEFAULT_THRESHOLD
