"""Person localisation and tracking: where each person is in every frame, without weights.

The pipeline, one module per job:

1. ``gaittools.person.foreground``: background subtraction on frames shrunk to ``analysis_height``
   (empty-scene image, sequence median, or OpenCV's MOG2/KNN), bit-packed, opened and closed;
   ``moving_camera`` says when that cannot work.
2. ``gaittools.person.blobs``: person candidates per frame, 2D connected components with the parts
   of one body merged back (not runs of occupied columns, which merged people at different
   depths); ``gaittools.person.groups``: blobs of people side by side seen from the front,
   divided between their heads on a closer look at the frames' resolution, else flagged.
3. ``gaittools.person.tracking``: a Kalman + Hungarian multi-person tracker (birth, death,
   re-association after occlusions, merged blobs repaired from the predictions) and which
   tracks are walkers.
4. ``gaittools.person.series``: each track's short gaps filled, outlier heights (merges,
   reflections, partial bodies) repaired, a centred moving average. Frames whose box holds a
   group that could not be divided (``groups.group_frames``) are taken out of a walker's
   track first; a track that holds a group in most of its frames is the group's, not a walker.
5. ``gaittools.person.hog``: when the background model fails (moving camera, most of the frame
   "foreground"), OpenCV's HOG people detector gives the boxes instead, then the same tracking.

``localise`` returns every confirmed track (``Localisation.tracks``) and, as ``boxes`` and
``centres``, the longest walking track: the one walker of CASIA-B or TUM-GAID clips. Outputs
are in frame pixels; a box is ``x0, y0, x1, y1`` with ``x1``, ``y1`` exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gaittools.person.blobs import frame_blobs, inside_fraction, mass_centres
from gaittools.person.foreground import (METHODS, clean_packed, foreground, median_fraction,
                                  moving_camera, shrink)
from gaittools.person.groups import GROUP_TRACK, CloserLook, divide_groups, group_frames
from gaittools.person.hog import hog_detections
from gaittools.person.packed_masks import unpack_masks
from gaittools.person.series import fill_gaps, repair_outliers, smooth_boxes
from gaittools.person.tracking import Track, TrackerParams, track_boxes, walking

#: Frames of one training clip: a walker must travel consistently over this many frames.
CLIP_FRAMES = 25
#: A track inside a track twice its height (``PART_INSIDE`` of its box) in ``PART_FRAMES``
#: of its frames is a piece of that person's body, not a person.
PART_INSIDE = 0.6
PART_FRAMES = 0.8


@dataclass(frozen=True)
class LocaliseParams:
    """Tuning of localisation; the defaults suit 25-30 fps walking clips of 240-480 px."""

    method: str = "median"
    analysis_height: int = 120
    threshold: int = 14
    min_area: float = 0.002  # of the analysis frame's area
    min_height: float = 0.1  # of the frame's height
    min_track: int = 5  # frames with a blob for a track to count as a person
    max_gap: int = 3  # gaps up to this many frames inside a track are interpolated
    smooth: int = 5  # frames of the centred moving average of boxes
    median_samples: int = 31  # frames sampled for the median background
    moving_camera_px: float = 1.0  # median global shift (analysis px per 2 frames) -> HOG
    fail_fraction: float = 0.3  # median foreground fraction above which -> HOG
    hog: bool = True  # allow the HOG fallback
    closer_look: bool = True  # divide people side by side between their heads at the frames'
    # resolution (gaittools.person.groups); off: such blobs are only marked
    clip_length: int = CLIP_FRAMES  # frames over which a walker's travel is judged
    tracker: TrackerParams = field(default_factory=TrackerParams)


@dataclass
class PersonTrack:
    """One tracked person in frame pixels; ``id`` numbers confirmed tracks in order of birth."""

    id: int
    boxes: np.ndarray  # float32 (T, 4), NaN outside the track
    centres: np.ndarray  # float32 (T,) horizontal centre of mass, NaN outside the track
    walking: bool
    speed: float  # box-centre displacement, frame px per frame (median)
    merges: int  # frames where the person shared a blob with others, repaired: by its
    # predicted box (tracking) or by dividing the blob (blobs.divide)
    splits: int  # frames where the person's blob had fallen apart and was joined
    outliers: int  # boxes whose height was repaired (merge, reflection, partial body)
    group_frames: int = 0  # frames whose box held a group that could not be divided: taken
    # out of a walker's boxes; a group track keeps them (``group``)
    group: bool = False  # the boxes hold two or more people walking together in most frames

    @property
    def frames(self) -> np.ndarray:
        return np.flatnonzero(np.isfinite(self.boxes[:, 0]))

    @property
    def first(self) -> int:
        return int(self.frames[0])

    @property
    def last(self) -> int:
        return int(self.frames[-1])

    @property
    def box_fraction(self) -> float:
        """Frames with a box over the frames of its span (occlusions leave holes)."""
        return len(self.frames) / (self.last - self.first + 1)

    @property
    def median_height(self) -> float:
        ok = self.frames
        return float(np.median(self.boxes[ok, 3] - self.boxes[ok, 1]))


@dataclass
class Localisation:
    """Every tracked person, and the walker kept for a one-walker sequence (``boxes``,
    ``centres``: the longest walking track, NaN where none). ``masks`` (analysis resolution)
    only with ``keep_masks``."""

    boxes: np.ndarray  # float32 (T, 4) frame pixels, NaN where nobody
    centres: np.ndarray  # float32 (T,) horizontal centre of mass, frame pixels, NaN where nobody
    n_tracks: int
    method: str
    foreground_fraction: float
    mask_scale: float  # frame pixels per mask pixel
    masks: np.ndarray | None = None  # bool (T, h, w) cleaned foreground of every frame
    notes: list[str] = field(default_factory=list)
    tracks: list[PersonTrack] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """Fraction of frames with the walker found."""
        return float(np.isfinite(self.boxes[:, 0]).mean()) if len(self.boxes) else 0.0

    @property
    def walkers(self) -> list[PersonTrack]:
        """Walking tracks of one person each (a group walking together is none)."""
        return [tr for tr in self.tracks if tr.walking and not tr.group]


# ---------------------------------------------------------------------------- entry point
def localise(frames: np.ndarray, background: np.ndarray | None = None,
             params: LocaliseParams | None = None, keep_masks: bool = False) -> Localisation:
    """Find and track the people in gray frames (T, H, W); ``background`` is an empty-scene
    image (H, W)."""
    p = params or LocaliseParams()
    if p.method not in METHODS:
        raise ValueError(f"unknown localisation method {p.method!r}; one of {METHODS}")
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W), got {frames.dtype} {frames.shape}")
    T, H, W = frames.shape
    if T == 0:
        return _nobody(0, "empty", 0.0, 1.0)
    small = shrink(frames, p.analysis_height)
    scale = H / small.shape[1]
    notes: list[str] = []
    if p.hog and moving_camera(small, p.moving_camera_px):
        notes.append("camera moves: HOG people detector")
        return _localise_hog(frames, p, notes)
    masks, method = foreground(small, background, p.method, p.threshold, p.median_samples)
    fraction = median_fraction(masks, small.shape[1] * small.shape[2])
    if background is not None and fraction > p.fail_fraction and p.method == "median":
        notes.append(f"empty-scene image does not match ({fraction:.0%} foreground): sequence median")
        masks, method = foreground(small, None, p.method, p.threshold, p.median_samples)
        fraction = median_fraction(masks, small.shape[1] * small.shape[2])
    if p.hog and fraction > p.fail_fraction:
        notes.append(f"background model failed ({fraction:.0%} of the frame foreground): HOG")
        return _localise_hog(frames, p, notes, fraction)
    w = small.shape[2]
    masks = clean_packed(masks, w)
    look = CloserLook(frames, scale, background if method == "background image" else None,
                      p.threshold, p.median_samples).region if p.closer_look else None
    per_frame = divide_groups(frame_blobs(masks, w, p.min_area, p.min_height), masks, w, look, scale)
    found = _long_enough(track_boxes(per_frame, p.tracker, small.shape[1:]), p)
    tracks = [_person(k, tr, T, p, scale, lambda b: mass_centres(masks, w, b, scale), group)
              for k, (tr, group) in enumerate(zip(found, group_frames(found, masks, w)))]
    loc = _result(tracks, T, scale, method, fraction, notes)
    if keep_masks:
        loc.masks = unpack_masks(masks, w)
    return loc


def _long_enough(tracks: list[Track], p: LocaliseParams) -> list[Track]:
    return [tr for tr in tracks if sum(tr.observed) >= p.min_track]


def _person(k: int, tr: Track, T: int, p: LocaliseParams, scale: float, centres_of,
            group: list[int] | None = None) -> PersonTrack:
    """A tracker's track as a person: short gaps filled, outlier heights repaired, smoothed,
    in frame pixels, with its centres of mass and whether it walks. ``group``: its frames
    whose box holds a group (``groups.group_frames``): taken out of its boxes, unless they are
    most of its frames (``GROUP_TRACK``): then the track is the group's."""
    group = group or []
    boxes = np.full((T, 4), np.nan)
    boxes[tr.frames] = np.stack(tr.boxes)
    is_group = len(group) > GROUP_TRACK * sum(tr.observed)
    if group and not is_group:
        boxes[group] = np.nan
    boxes, flagged = repair_outliers(fill_gaps(boxes, p.max_gap))
    boxes = (smooth_boxes(boxes, p.smooth) * scale).astype(np.float32)
    walks, speed = walking(boxes, p.clip_length)
    return PersonTrack(k, boxes, np.asarray(centres_of(boxes), np.float32), walks, speed,
                       tr.merges + tr.divided, tr.splits, int(flagged.sum()), len(group), is_group)


def _result(tracks: list[PersonTrack], T: int, scale: float, method: str, fraction: float,
            notes: list[str]) -> Localisation:
    """The localisation of all tracks (body parts dropped), with the longest walking one as
    the walker."""
    loc = _nobody(T, method, fraction, scale, notes)
    notes = loc.notes  # _nobody copied the caller's list: what is noted here goes with the result
    whole = [tr for tr in tracks if not _body_part(tr, tracks)]
    if len(whole) < len(tracks):
        notes.append(f"{len(tracks) - len(whole)} tracks inside a larger person's box dropped (body parts)")
        tracks = whole
        for k, tr in enumerate(tracks):  # ids stay consecutive, in order of birth
            tr.id = k
    loc.tracks, loc.n_tracks = tracks, len(tracks)
    for tr in tracks:
        if tr.group:
            notes.append(f"track {tr.id} holds people walking together, undivided, in {tr.group_frames} "
                         f"of its frames: not a walker")
        elif tr.group_frames:
            notes.append(f"track {tr.id}: {tr.group_frames} frames whose box held people walking "
                         f"together, undivided, taken out")
    walkers = loc.walkers
    if walkers:
        best = max(walkers, key=lambda tr: (len(tr.frames), tr.median_height))
        loc.boxes, loc.centres = best.boxes, best.centres
        if len(tracks) > 1:
            notes.append(f"{len(tracks)} tracks seen, {len(walkers)} walking; the longest walker "
                         f"is track {best.id} ({len(best.frames)} frames)")
    elif tracks:
        notes.append(f"{len(tracks)} tracks seen, none walking")
    return loc


def _body_part(tr: PersonTrack, tracks: list[PersonTrack]) -> bool:
    """Whether ``tr`` follows a piece of another person's body (a leg the colour of the floor,
    cut off by the background model): its box lies at least ``PART_INSIDE`` inside the box
    of a track at least twice its height, widened by its own width on either side (a trailing
    foot sticks out of a smoothed box), in ``PART_FRAMES`` of its frames. A smaller person
    farther away passes behind a nearer one for a while, not for most of its track."""
    frames = tr.frames
    box = tr.boxes[frames]
    reach = (box[:, 2] - box[:, 0]) * np.array([-1, 0, 1, 0])[:, None]  # a foot sticks out
    return any(np.mean(inside_fraction(box, other.boxes[frames] + reach.T) >= PART_INSIDE) >= PART_FRAMES
               for other in tracks if other is not tr and other.median_height >= 2 * tr.median_height)


def _nobody(T: int, method: str, fraction: float, scale: float,
            notes: list[str] | None = None) -> Localisation:
    return Localisation(np.full((T, 4), np.nan, np.float32), np.full(T, np.nan, np.float32), 0,
                        method, fraction, scale, notes=list(notes or []))


def _localise_hog(frames: np.ndarray, p: LocaliseParams, notes: list[str],
                  fraction: float = float("nan")) -> Localisation:
    T = len(frames)
    per_frame = hog_detections(frames)
    tracks = [_person(k, tr, T, p, 1.0, lambda b: (b[:, 0] + b[:, 2]) / 2)
              for k, tr in enumerate(_long_enough(track_boxes(per_frame, p.tracker, frames.shape[1:]), p))]
    for tr in tracks:  # a panning camera follows a walker: image motion does not tell walking
        tr.walking = len(tr.frames) >= min(p.clip_length, T)
    if tracks:
        notes.append("camera moves: every track a clip long counts as walking")
    return _result(tracks, T, 1.0, "hog", fraction, notes)
