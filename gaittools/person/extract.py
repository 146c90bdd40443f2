"""One sequence from its source to the store's arrays and attributes (no I/O to the store).

``extract_sequence`` is what each extract-frames task runs; ``track_crops`` (every selected
track's boxes, windows and crops) is the part that inference (enroll/identify) reuses on
frames it decoded itself, so that a probe video is cropped exactly as the training data was,
one track at a time.

Arrays (the contract in the team brief and gaittools.store.manifest):
    frames  uint8 (T, H, W)     gray at the working height
    boxes   float32 (T, 4)      walker's box, frame pixels, NaN where nobody
    windows float32 (T, 4)      crop window that produced gray[t], NaN where no crop
    gray    uint8 (T, S, S)     crops; all-zero where nobody
    sil     uint8 (T, S, S)     the walker's silhouette, 0/255, OpenGait's normalisation
                                (gaittools.person.silhouette); all-zero where nobody. Added without a
                                store-format bump: stores made before it lack it

Decisions recorded here:
- Sequences shorter than a training clip (``clip_length``, 25 frames with a person) are kept
  and flagged ``extract.short = True``: dropping them would hide data (CASIA-B subject 005's
  silhouettes have 1-62 frames), and a sampler can skip or pad them knowingly.
- A video where nobody is found is kept (``n_crops = 0``, ``coverage = 0``,
  ``no_person = True``) with a warning: it is a fact about the data, not a failure, and
  retrying it would give the same answer.
- OpenGait pickles hold silhouettes already cropped to 64x64: they are stored as ``gray``
  (resized to S when S != 64) with ``extract.content = "silhouette"``; there are no
  ``frames``, ``boxes`` or ``windows`` arrays at all (rather than arrays of NaN), so a reader
  asks ``store.arrays_of(seq_id)`` and cannot mistake them for located crops.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gaittools.person.crop import CROP_MODES, DEFAULT_SIZE, crop_frames, resize_crops, windows_for
from gaittools.person.foreground import median_background
from gaittools.person.localise import Localisation, LocaliseParams, PersonTrack, localise
from gaittools.sources.pickles import load_silhouettes, square_silhouettes
from gaittools.person.silhouette import sequence_silhouettes
from gaittools.sources.discover import SourceSequence
from gaittools.sources.video import DEFAULT_WORKING_HEIGHT, VideoError, decode

#: Frames of one training clip (gaitcopy-method.md); fewer crops than this -> ``short``.
CLIP_LENGTH = 25
#: CASIA-B's frame rate, assumed for OpenGait pickles (they carry none).
OPENGAIT_FPS = 25.0
#: Frames of the empty-scene clip that make its median background.
BACKGROUND_FRAMES = 50
#: How ``frames`` are stored: zstd (level 1, about half the bytes on CASIA-B) or raw (none).
#: Compressing costs about as much CPU as decoding the video did: ``none`` is for stores
#: where extraction time matters more than disk (see benchmarks/extract_speed.py).
FRAMES_CODECS = ("zstd", "none")
#: Which tracked people become sequences: ``walkers`` every walking track, as
#: ``<seq_id>.t<k>``; ``longest`` the longest walking track under the plain id (datasets with
#: one walker per video, so protocol parsing and counts do not change); ``all`` every track,
#: walking or not, as ``<seq_id>.t<k>``; ``auto``: longest for CASIA-B and TUM-GAID, else walkers.
TRACK_MODES = ("auto", "walkers", "longest", "all")
ONE_WALKER_DATASETS = ("casia-b", "tum-gaid")
#: Per-sequence quality below which extract-frames prints a warning line.
MIN_BOX_FRACTION = 0.8
MAX_SCALE_CV = 0.1


@dataclass(frozen=True)
class ExtractOptions:
    """How sequences are extracted; recorded in every sequence's attributes."""

    working_height: int = DEFAULT_WORKING_HEIGHT
    crop_mode: str = "person"
    crop_size: int = DEFAULT_SIZE
    method: str = "median"  # background model: median | mog2 | knn
    fps: float | None = None  # override the source's frame rate (frame folders have none)
    clip_length: int = CLIP_LENGTH
    hog: bool = True  # HOG people detector where the background model fails
    frames_codec: str = "zstd"
    tracks: str = "auto"  # walkers | longest | all | auto (see TRACK_MODES)

    def __post_init__(self) -> None:
        if self.frames_codec not in FRAMES_CODECS:
            raise ValueError(f"unknown frames codec {self.frames_codec!r}; one of {FRAMES_CODECS}")
        if self.tracks not in TRACK_MODES:
            raise ValueError(f"unknown track selection {self.tracks!r}; one of {TRACK_MODES}")
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"unknown crop mode {self.crop_mode!r}; one of {CROP_MODES}")
        if self.crop_size < 8 or self.working_height < 16:
            raise ValueError("crop size must be >= 8 and working height >= 16")


@dataclass
class Extracted:
    """A sequence ready for ``Store.write_sequence``; ``warnings`` go into the run summary."""

    seq_id: str
    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    zstd_levels: dict[str, int | None] = field(default_factory=dict)  # overrides for the store

    @property
    def n_frames(self) -> int:
        return int(self.attrs["extract"]["n_frames"])


@dataclass
class TrackCrops:
    """One selected track of a video, cropped: what becomes one sequence (``seq_id``).

    ``track`` is None for the one sequence of a video without a selected track (nobody
    found, or nobody walking); its boxes and windows are then all NaN. Arrays cover every
    frame of the video (NaN boxes and windows, zero crops outside the track)."""

    seq_id: str
    track: PersonTrack | None
    boxes: np.ndarray  # float32 (T, 4)
    windows: np.ndarray  # float32 (T, 4)
    gray: np.ndarray  # uint8 (T, S, S)


def selected_tracks(loc: Localisation, mode: str, seq_id: str) -> list[tuple[str, PersonTrack | None]]:
    """The sequences a localisation makes under a track selection (``TRACK_MODES`` less
    ``auto``): ``longest`` the longest walker under ``seq_id``; ``walkers`` (``all``) every
    walking (every) track as ``<seq_id>.t<k>``; a video without one gives ``(seq_id, None)``."""
    if mode == "longest":
        best = [tr for tr in loc.walkers if tr.boxes is loc.boxes]
        return [(seq_id, best[0] if best else None)]
    picked = loc.walkers if mode == "walkers" else loc.tracks
    return [(f"{seq_id}.t{tr.id}", tr) for tr in picked] or [(seq_id, None)]


def track_crops(frames: np.ndarray, loc: Localisation, mode: str = "walkers", seq_id: str = "",
                crop_mode: str = "person", size: int = DEFAULT_SIZE) -> list[TrackCrops]:
    """Every selected track of ``loc`` (see ``selected_tracks``) cropped from ``frames``
    (T, H, W): the one path from tracks to crops, for extract-frames and identify alike."""
    out = []
    for name, tr in selected_tracks(loc, mode, seq_id):
        boxes = tr.boxes if tr is not None else np.full((len(frames), 4), np.nan, np.float32)
        centres = tr.centres if tr is not None else np.full(len(frames), np.nan, np.float32)
        windows = windows_for(boxes, centres, frames.shape[1:], crop_mode)
        out.append(TrackCrops(name, tr, boxes, windows, crop_frames(frames, windows, size)))
    return out


def localise_and_crop(
    frames: np.ndarray, background: np.ndarray | None = None, mode: str = "person",
    size: int = DEFAULT_SIZE, params: LocaliseParams | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Gray frames (T, H, W) uint8 -> (boxes, windows, gray, info) of the longest walker.

    ``boxes``/``windows`` float32 (T, 4) in frame pixels (NaN where nobody), ``gray`` uint8
    (T, size, size). ``info``: n_tracks, coverage, localisation method, foreground_fraction,
    notes. ``background`` is an empty-scene image of the same size as the frames, if known.
    """
    loc = localise(frames, background, params)
    [walker] = track_crops(frames, loc, "longest", crop_mode=mode, size=size)
    info = {"n_tracks": loc.n_tracks, "coverage": loc.coverage, "localisation": loc.method,
            "foreground_fraction": loc.foreground_fraction, "notes": list(loc.notes)}
    return walker.boxes, walker.windows, walker.gray, info


def load_background(path: str | Path, working_height: int = DEFAULT_WORKING_HEIGHT) -> np.ndarray:
    """The median image of an empty-scene clip at the working height."""
    frames = decode(path, working_height, max_frames=BACKGROUND_FRAMES).frames
    return median_background(frames, len(frames))


def extract_sequence(seq: SourceSequence, options: ExtractOptions | None = None,
                     background: np.ndarray | BaseException | None = None) -> Extracted:
    """The first sequence ``extract_sequences`` makes of a source (the only one with
    ``tracks="longest"``, the CASIA-B and TUM-GAID default)."""
    return extract_sequences(seq, options, background)[0]


def extract_sequences(seq: SourceSequence, options: ExtractOptions | None = None,
                      background: np.ndarray | BaseException | None = None) -> list[Extracted]:
    """Decode, localise, crop one source: one sequence per selected track (``tracks``), or
    one without a person. Raises VideoError/PickleError for bad input.

    ``background``: the empty-scene image if the caller loaded it (once per clip), else it is
    loaded from ``seq.background``; a broken empty-scene clip (or the exception the caller
    got loading it) falls back to the sequence median with a note, never a failure.
    """
    options = options or ExtractOptions()
    start = time.perf_counter()
    if seq.kind == "pickle":
        results = [_from_pickle(seq, options)]
    else:
        notes = []
        if isinstance(background, BaseException):  # the pipeline already failed to load it
            notes.append(f"empty-scene clip unusable ({background}): sequence median")
            background = None
        elif background is None and seq.background is not None:
            try:
                background = load_background(seq.background, options.working_height)
            except VideoError as exc:
                notes.append(f"empty-scene clip unusable ({exc}): sequence median")
        results = _from_frames(seq, options, background)
        for result in results:
            result.attrs["extract"]["notes"][:0] = notes
    seconds = round(time.perf_counter() - start, 4)
    for result in results:
        result.attrs["extract"]["seconds"] = seconds
    return results


def _from_frames(seq: SourceSequence, options: ExtractOptions, background: np.ndarray | None
                 ) -> list[Extracted]:
    decoded = decode(seq.path, options.working_height, options.fps)
    frames = decoded.frames
    notes: list[str] = []
    if background is not None and background.shape != frames.shape[1:]:
        notes.append(f"empty-scene clip {seq.background} is {background.shape[::-1]}, frames are "
                     f"{frames.shape[:0:-1]}: not used")
        background = None
    params = LocaliseParams(method=options.method, hog=options.hog)
    loc = localise(frames, background, params)
    mode = track_mode(options.tracks, seq.name.dataset)
    shared = {
        "n_frames": decoded.n_frames, "height": int(frames.shape[1]), "width": int(frames.shape[2]),
        "n_tracks": loc.n_tracks, "n_walkers": len(loc.walkers), "tracks_mode": mode,
        "n_groups": sum(tr.group for tr in loc.tracks),
        "crop_mode": options.crop_mode, "crop_size": options.crop_size, "content": "gray",
        "working_height": options.working_height, "source_size": list(decoded.source_size),
        "scale": round(decoded.scale, 6), "localisation": loc.method,
        "background": str(seq.background) if background is not None else None,
        "foreground_fraction": round(loc.foreground_fraction, 4),
        "clip_length": options.clip_length, "notes": notes + loc.notes, "options": asdict(options),
    }
    levels = {"frames": None} if options.frames_codec == "none" else {}
    out = []
    chosen = track_crops(frames, loc, mode, seq.seq_id, options.crop_mode, options.crop_size)
    sils, sil_notes = sequence_silhouettes(frames, [c.boxes for c in chosen], background, loc.method,
                                           options.crop_size)
    for crops, sil in zip(chosen, sils):  # every sequence's "frames" is this one array, not a copy
        seq_id, tr, boxes, windows, gray = crops.seq_id, crops.track, crops.boxes, crops.windows, crops.gray
        n_crops = int(np.isfinite(windows[:, 0]).sum())
        extract = dict(shared, n_crops=n_crops, coverage=round(n_crops / max(len(frames), 1), 4),
                       short=n_crops < options.clip_length, no_person=n_crops == 0,
                       track=track_quality(tr, windows) if tr is not None else None)
        extract["notes"] = extract["notes"] + sil_notes
        attrs = _attrs(seq, decoded.fps, extract)
        attrs["name"]["seq_id"] = seq_id
        arrays = {"frames": frames, "boxes": boxes, "windows": windows, "gray": gray, "sil": sil}
        out.append(Extracted(seq_id, arrays, attrs, _warnings(extract), levels))
    if shared["n_groups"] and mode != "all":  # said once per video, not once per walker
        out[0].warnings.append(f"{shared['n_groups']} tracks of people walking together that could "
                               "not be divided: not written as walkers")
    return out


def track_mode(tracks: str, dataset: str) -> str:
    """The track selection for a dataset: ``auto`` is longest for one-walker datasets."""
    if tracks != "auto":
        return tracks
    return "longest" if dataset in ONE_WALKER_DATASETS else "walkers"


def track_quality(tr: PersonTrack, windows: np.ndarray) -> dict[str, Any]:
    """What the manifest records of a track: its id, frame range (stop exclusive), walking
    speed (px/frame), median box height (px), fraction of its span with a box, repairs, the
    scale variation (the coefficient of variation of box height / crop height), and people
    walking together that could not be divided: the frames taken out of its boxes for that
    (``group_frames``), or, for a group's track (``group``, written only with ``--tracks
    all``), the frames its boxes hold them."""
    ok = np.isfinite(windows[:, 0]) & np.isfinite(tr.boxes[:, 0])
    ratio = (tr.boxes[ok, 3] - tr.boxes[ok, 1]) / (windows[ok, 3] - windows[ok, 1])
    return {"id": tr.id, "frame_start": tr.first, "frame_stop": tr.last + 1, "walking": tr.walking,
            "speed_px": round(tr.speed, 3), "box_height": round(tr.median_height, 2),
            "box_fraction": round(tr.box_fraction, 4), "repaired_merges": tr.merges,
            "repaired_splits": tr.splits, "repaired_outliers": tr.outliers,
            "group_frames": tr.group_frames, "group": tr.group,
            "scale_cv": round(float(ratio.std() / ratio.mean()), 4) if len(ratio) > 1 else 0.0}


def _from_pickle(seq: SourceSequence, options: ExtractOptions) -> Extracted:
    notes: list[str] = []
    silhouettes = load_silhouettes(seq.path, notes)
    gray = resize_crops(square_silhouettes(silhouettes), options.crop_size)
    n_crops = int((gray.reshape(len(gray), -1).max(axis=1) > 0).sum())
    extract = {
        "n_frames": int(len(gray)), "n_crops": n_crops, "height": None, "width": None,
        "coverage": round(n_crops / len(gray), 4), "n_tracks": None,
        "short": n_crops < options.clip_length, "no_person": n_crops == 0,
        "content": "silhouette", "crop_mode": "opengait", "crop_size": options.crop_size,
        "source_crop_size": int(silhouettes.shape[1]), "source_width": int(silhouettes.shape[2]),
        "working_height": None,
        "clip_length": options.clip_length, "notes": notes, "options": asdict(options),
    }
    return Extracted(seq.seq_id, {"gray": gray}, _attrs(seq, options.fps or OPENGAIT_FPS, extract),
                     notes + _warnings(extract))


def _attrs(seq: SourceSequence, fps: float, extract: dict[str, Any]) -> dict[str, Any]:
    return {"name": seq.name.as_dict(), "source": str(seq.path), "fps": float(fps), "extract": extract}


def _warnings(extract: dict[str, Any]) -> list[str]:
    out = []
    if extract["no_person"]:
        out.append(f"no person found in any of its {extract['n_frames']} frames")
    elif extract["short"]:
        out.append(f"short: {extract['n_crops']} crops < clip length {extract['clip_length']}")
    track = extract.get("track")
    if track is None and (extract.get("n_tracks") or 0) > 1:
        out.append(f"{extract['n_tracks']} tracks seen, {extract.get('n_walkers', 0)} walking")
    elif track is not None and extract.get("tracks_mode") == "longest" and extract["n_tracks"] > 1:
        out.append(f"{extract['n_tracks']} tracks seen, {extract['n_walkers']} walking; kept the "
                   f"longest walker (track {track['id']})")
    if track is not None and track.get("group"):
        out.append(f"track {track['id']} holds people walking together in {track['group_frames']} of its "
                   "frames: not one walker")
    elif track is not None and track.get("group_frames"):
        out.append(f"track {track['id']}: {track['group_frames']} frames whose box held people walking "
                   "together taken out")
    if track is not None and (track["box_fraction"] < MIN_BOX_FRACTION or track["scale_cv"] > MAX_SCALE_CV):
        out.append(f"track {track['id']} quality: boxes in {track['box_fraction']:.0%} of its frames "
                   f"{track['frame_start']}-{track['frame_stop'] - 1}, scale variation "
                   f"{track['scale_cv']:.1%}, {track['repaired_merges']} merges repaired")
    return out
