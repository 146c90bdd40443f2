"""Multi-person tracking of per-frame boxes, and which tracks are walkers.

The tracker follows SORT's recipe (Bewley et al. 2016), with ByteTrack's and norfair's lessons
on what breaks it in crowds:

- every person is a Kalman filter on its box centre, width and height, with a constant
  velocity for the centre (noise proportional to the box height, as DeepSORT does, so near
  and far people are treated alike);
- each frame, predicted boxes are matched to blobs with the Hungarian algorithm
  (``scipy.optimize.linear_sum_assignment``) on 1 - IoU plus the centre distance in box
  heights, gated so that nobody jumps across the frame;
- birth: an unmatched blob starts a tentative track, confirmed after ``min_hits`` consecutive
  matches (noise rarely persists that long); a tentative track that misses a frame is gone;
- death: a confirmed track coasts on its prediction for up to ``max_age`` frames unseen, so a
  person hidden behind a pillar or another person is picked up again where the prediction
  says (re-association); after that it ends;
- merges (the blob repair of ``gaittools.person.blobs``): one blob that holds the predicted boxes of
  two or more confirmed tracks, and is clearly larger than each, is two people whose pixels
  touch. It is matched to none of them: each keeps its predicted box for that frame (flagged
  as repaired), so identities survive crossings on their velocities;
- splits: several blobs that lie inside one track's prediction and nobody else's are one body
  that fell apart (partly hidden by a pillar, say); they are joined before matching, unless
  ``gaittools.person.blobs`` divided them out of one wide blob on purpose (flag in column 5);
- a track matched to such a divided blob's person counts it in ``divided``: a merge
  repaired by the blob's shape, with no prediction needed;
- a blob that may hold several people and could not be divided (flag ``UNDIVIDED``,
  ``gaittools.person.groups``) is repaired from the predictions like any merge when it holds
  two established tracks; otherwise the track it is matched to records the frame in
  ``undivided``, so that localisation can tell the track that its box there is not its own.

Walking (``walking``): a track whose box moves consistently - net displacement over a clip
of at least ``MIN_TRAVEL`` body heights, and a straight enough path - is a walker. Someone
who stands, waves or jumps moves their box back and forth, not along.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from gaittools.person.blobs import DIVIDED, UNDIVIDED, inside_fraction, iou_matrix

#: Net travel over one clip, in body heights, for a track to be a walker (a slow walk does
#: about 0.7 a second).
MIN_TRAVEL = 0.3
#: A blob at least this fraction of a track's predicted height is person-sized (``_one_body``).
OTHER_HEIGHT = 0.4
#: Net travel over the path travelled (both measured in steps of ``STEP`` frames).
MIN_STRAIGHTNESS = 0.6
STEP = 5
_INF = 1e6


@dataclass(frozen=True)
class TrackerParams:
    """Birth, death and gating of the tracker; defaults for 25-30 fps walking clips."""

    min_hits: int = 3  # consecutive matches that confirm a track
    max_age: int = 25  # frames a confirmed track may stay unseen and still be picked up
    gate: float = 0.6  # centre distance allowed, in predicted box heights
    gate_growth: float = 0.08  # the gate widens this much per frame unseen
    cover: float = 0.5  # fraction of a predicted box inside a blob for the blob to hold it
    merge_growth: float = 1.2  # a blob holding 2+ tracks is a merge when this much larger
    established: int = 3  # observed frames after which a track's size is known: it can take
    # part in a merge, and a blob of a very different height does not match it


class BoxKalman:
    """Constant-velocity Kalman filter on (cx, cy, w, h); velocities of cx and cy."""

    F = np.eye(6)
    F[0, 4] = F[1, 5] = 1.0
    H = np.eye(4, 6)

    def __init__(self, box: np.ndarray) -> None:
        x0, y0, x1, y1 = (float(v) for v in box[:4])
        h = max(y1 - y0, 1.0)
        self.x = np.array([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0.0, 0.0])
        self.P = np.diag(np.square([0.1 * h, 0.1 * h, 0.1 * h, 0.1 * h, 0.1 * h, 0.1 * h]))

    def predict(self) -> np.ndarray:
        h = max(self.x[3], 1.0)
        q = np.square([0.05 * h, 0.05 * h, 0.05 * h, 0.05 * h, 0.01 * h, 0.01 * h])
        self.x = self.F @ self.x
        self.P = self.F @ self.P @ self.F.T + np.diag(q)
        return self.box()

    def update(self, box: np.ndarray) -> None:
        x0, y0, x1, y1 = (float(v) for v in box[:4])
        z = np.array([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0])
        R = np.diag(np.square([0.05 * max(z[3], 1.0)] * 4))
        S = self.H @ self.P @ self.H.T + R
        K = self.P @ self.H.T @ np.linalg.inv(S)
        self.x = self.x + K @ (z - self.H @ self.x)
        self.P = (np.eye(6) - K @ self.H) @ self.P

    def box(self) -> np.ndarray:
        cx, cy, w, h = self.x[:4]
        w, h = max(w, 1.0), max(h, 1.0)
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


@dataclass
class Track:
    """One person's boxes; ``observed[i]`` False where the box is a repaired prediction."""

    id: int
    kalman: BoxKalman
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    observed: list[bool] = field(default_factory=list)
    hits: int = 0
    misses: int = 0
    confirmed: bool = False
    merges: int = 0
    splits: int = 0
    divided: int = 0  # frames matched to one person of a divided blob
    undivided: list[int] = field(default_factory=list)  # frames matched to an UNDIVIDED blob

    def add(self, t: int, box: np.ndarray, observed: bool) -> None:
        self.frames.append(t)
        self.boxes.append(np.asarray(box[:4], np.float64))
        self.observed.append(observed)

    def trimmed(self) -> Track:
        """Without the repaired boxes after its last observed one (it coasted out of sight)."""
        last = max(i for i, o in enumerate(self.observed) if o)
        self.frames, self.boxes, self.observed = (self.frames[:last + 1], self.boxes[:last + 1],
                                                  self.observed[:last + 1])
        return self


def track_boxes(per_frame: list[np.ndarray], params: TrackerParams | None = None,
                frame_size: tuple[int, int] | None = None) -> list[Track]:
    """Tracks through per-frame boxes (N, >=4); the confirmed ones, in order of birth.

    ``frame_size`` (h, w) of the boxes' frames: a box cut by the frame's edge is a partial
    body; its position is then taken from its inner side and the track's known width.
    """
    p = params or TrackerParams()
    h, w = frame_size or (np.inf, np.inf)
    active: list[Track] = []
    done: list[Track] = []
    next_id = 0
    for t, dets in enumerate(per_frame):
        dets = np.asarray(dets, np.float64).reshape(-1, max(4, np.shape(dets)[-1] if len(dets) else 4))
        preds = np.array([tr.kalman.predict() for tr in active]).reshape(-1, 4)
        free_tracks = list(range(len(active)))
        free_dets = list(range(len(dets)))
        if len(active) and len(dets):
            cover = _inside(preds, dets)  # (tracks, dets): share of each prediction in each blob
            dets = _repair_merges(t, active, preds, dets, cover, p, free_tracks, free_dets)
            dets = _join_splits(active, preds, dets, p, free_tracks, free_dets)
        cut = (dets[:, 0] <= 0.5) | (dets[:, 1] <= 0.5) | (dets[:, 2] >= w - 0.5) | (dets[:, 3] >= h - 0.5)
        matches = _assign(active, preds, dets, cut, free_tracks, free_dets, p)
        for i, j in matches:
            tr = active[i]
            tr.kalman.update(_uncut(dets[j], tr, w) if cut[j] and _established(tr, p) else dets[j])
            tr.add(t, dets[j], True)
            tr.divided += int(_divided(dets[j]))
            if len(dets[j]) > 5 and dets[j][5] == UNDIVIDED:
                tr.undivided.append(t)
            tr.hits, tr.misses = tr.hits + 1, 0
            tr.confirmed |= tr.hits >= p.min_hits
        matched = {i for i, _ in matches}
        still: list[Track] = []
        for i, tr in enumerate(active):
            if i not in matched and i in free_tracks:
                tr.hits, tr.misses = 0, tr.misses + 1
            if tr.misses == 0 or (tr.confirmed and tr.misses <= p.max_age):
                still.append(tr)
            elif tr.confirmed:
                done.append(tr)
        used = {j for _, j in matches}
        for j in free_dets:
            if j not in used:
                tr = Track(next_id, BoxKalman(dets[j]))
                tr.add(t, dets[j], True)
                tr.hits = 1
                tr.confirmed = p.min_hits <= 1
                still.append(tr)
                next_id += 1
        active = still
    tracks = [tr.trimmed() for tr in done + active if tr.confirmed]
    return stitch(sorted(tracks, key=lambda tr: tr.frames[0]), p)


def stitch(tracks: list[Track], p: TrackerParams) -> list[Track]:
    """Join a track that ended with one that began up to ``2 * max_age`` frames later where
    the first one's motion, carried on, says the second one starts (a walker who came out
    from behind a pillar as a sliver first, and was born again before the old track could
    take it). Offline: the whole sequence is known. Cheapest joins first."""
    tracks = list(tracks)
    while True:
        best = None
        for a in tracks:
            for b in tracks:
                gap = b.frames[0] - a.frames[-1]
                if b is a or not 0 < gap <= 2 * p.max_age:
                    continue
                cost = _stitch_cost(a, b, gap, p)
                if cost is not None and (best is None or cost < best[0]):
                    best = (cost, a, b)
        if best is None:
            return tracks
        _, a, b = best
        a.frames += b.frames
        a.boxes += b.boxes
        a.observed += b.observed
        a.merges += b.merges
        a.splits += b.splits
        a.divided += b.divided
        a.undivided += b.undivided
        tracks.remove(b)


def _stitch_cost(a: Track, b: Track, gap: int, p: TrackerParams) -> float | None:
    """Centre distance (in box heights) between ``b``'s first box and ``a``'s last observed
    motion carried on over the gap; None when too far or of another size."""
    seen = [k for k, o in enumerate(a.observed) if o][-10:]
    if len(seen) < 2:
        return None
    t = np.array([a.frames[k] for k in seen], np.float64)
    centres = np.array([[(a.boxes[k][0] + a.boxes[k][2]) / 2, (a.boxes[k][1] + a.boxes[k][3]) / 2]
                        for k in seen])
    velocity = np.polyfit(t - t[-1], centres, 1)[0]
    start = b.boxes[0]
    guess = centres[-1] + velocity * (b.frames[0] - t[-1])
    height = float(np.median([a.boxes[k][3] - a.boxes[k][1] for k in seen]))
    later = float(np.median([bx[3] - bx[1] for bx in b.boxes[:10]]))
    if not 0.67 <= later / height <= 1.5:
        return None
    dist = float(np.hypot(*(guess - [(start[0] + start[2]) / 2, (start[1] + start[3]) / 2]))) / height
    return dist if dist <= p.gate * (1 + p.gate_growth * gap) else None


def _uncut(box: np.ndarray, tr: Track, w: float) -> np.ndarray:
    """A box cut by the left or right frame edge, extended to the track's width from its
    inner side (the edge's side says nothing about where the body's centre is)."""
    box = box.copy()
    width = max(tr.kalman.x[2], box[2] - box[0])
    if box[0] <= 0.5 and box[2] < w - 0.5:
        box[0] = box[2] - width
    elif box[2] >= w - 0.5 and box[0] > 0.5:
        box[2] = box[0] + width
    return box


def _inside(preds: np.ndarray, dets: np.ndarray) -> np.ndarray:
    """Fraction of each box of ``preds`` (M, 4) that lies inside each of ``dets`` (N, >=4)."""
    return inside_fraction(preds[:, None, :], dets[None, :, :4])


def _divided(det: np.ndarray) -> bool:
    """Whether a detection is one person of a divided blob (``blobs.frame_blobs``' flag, its
    sixth column; detections without it, e.g. HOG's, are not)."""
    return len(det) > 5 and det[5] == DIVIDED


def _established(tr: Track, p: TrackerParams) -> bool:
    return tr.confirmed and len(tr.observed) - tr.merges >= p.established


def _area(box: np.ndarray) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


def _repair_merges(t: int, active: list[Track], preds: np.ndarray, dets: np.ndarray,
                   cover: np.ndarray, p: TrackerParams, free_tracks: list[int],
                   free_dets: list[int]) -> np.ndarray:
    """Blobs holding two or more established tracks (people whose pixels touch); returns the
    blobs, some narrowed.

    Holders whose predicted height matches the blob's are in front (the blob's height is
    theirs); the others are behind (farther away, smaller, partly hidden) and keep their
    predicted boxes. A single front holder owns the blob: it is matched as usual, to the blob
    narrowed to its predicted width on the side away from the others when the blob is much
    wider. Several front holders (people side by side at one depth) each get a repaired box:
    predicted width, the blob's rows, and the blob's left (right) edge for the leftmost
    (rightmost) one, since a merged blob's outer edges belong to its outer people; the box
    updates the holder's filter, so velocities stay grounded through a long contact.
    """
    dets = dets.copy()
    for j in range(len(dets)):
        if _divided(dets[j]):
            continue  # one person of a divided blob (its box may reach into a neighbour's)
        holders = [i for i in free_tracks
                   if _established(active[i], p) and cover[i, j] >= p.cover]
        if len(holders) < 2:
            continue
        det = dets[j]
        det_h = det[3] - det[1]
        front = [i for i in holders if abs((preds[i, 3] - preds[i, 1]) / det_h - 1) <= 0.2]
        centre = lambda i: (preds[i, 0] + preds[i, 2]) / 2  # noqa: E731
        if len(front) == 1:
            owner = front[0]
            holders.remove(owner)
            width = preds[owner, 2] - preds[owner, 0]
            if det[2] - det[0] > p.merge_growth * width:
                if np.mean([centre(i) for i in holders]) < centre(owner):
                    det[0] = det[2] - width
                else:
                    det[2] = det[0] + width
        elif not front and _area(det) < p.merge_growth * max(_area(preds[i]) for i in holders):
            continue
        else:
            free_dets.remove(j)
        by_x = sorted(holders, key=centre)
        for i in holders:
            tr, box = active[i], preds[i].copy()
            if i in front:
                width = box[2] - box[0]
                if i == by_x[0]:
                    box[[0, 2]] = det[0], det[0] + width
                elif i == by_x[-1]:
                    box[[0, 2]] = det[2] - width, det[2]
                box[[1, 3]] = det[1], det[3]
                tr.kalman.update(box)
            tr.add(t, box, False)
            tr.merges += 1
            free_tracks.remove(i)
    return dets


def _join_splits(active: list[Track], preds: np.ndarray, dets: np.ndarray, p: TrackerParams,
                 free_tracks: list[int], free_dets: list[int]) -> np.ndarray:
    """Blobs mostly inside one confirmed track's prediction (and no other's) joined into one;
    never the people of a divided blob, nor a second person at another depth (``_one_body``)."""
    candidates = [j for j in free_dets if not _divided(dets[j])]
    if len(candidates) < 2:
        return dets
    inside = _inside(dets[candidates, :4], preds) >= 0.6  # (free dets, tracks): mostly inside
    alone = inside.sum(axis=1) == 1
    dets = dets.copy()
    for i in free_tracks:
        if not active[i].confirmed:
            continue
        parts = _one_body([candidates[k] for k in np.flatnonzero(inside[:, i] & alone)], dets, preds[i])
        if len(parts) < 2:
            continue
        joined = dets[parts]
        dets[parts[0], :4] = [joined[:, 0].min(), joined[:, 1].min(), joined[:, 2].max(), joined[:, 3].max()]
        if dets.shape[1] > 4:
            dets[parts[0], 4] = joined[:, 4].sum()
        for k in parts[1:]:
            free_dets.remove(k)
        active[i].splits += 1
    return dets


def _one_body(parts: list[int], dets: np.ndarray, pred: np.ndarray) -> list[int]:
    """The blobs among ``parts`` that can be pieces of the body the tallest of them belongs
    to. A body hidden in part (by a pillar) falls apart into pieces on one floor line; a blob
    of person size (``OTHER_HEIGHT`` of the prediction's height or more) that is much shorter
    than the tallest, or stands on another floor line, is a person at another depth: two
    people born as one merged blob who now walk apart."""
    if len(parts) < 2:
        return parts
    box = dets[parts, :4]
    heights = box[:, 3] - box[:, 1]
    tallest = int(np.argmax(heights))
    size = pred[3] - pred[1]
    other = ((heights >= OTHER_HEIGHT * size)
             & ((heights < 0.67 * heights[tallest]) | (np.abs(box[:, 3] - box[tallest, 3]) > 0.15 * size)))
    return [j for j, o in zip(parts, other) if not o]


def _assign(active: list[Track], preds: np.ndarray, dets: np.ndarray, cut: np.ndarray,
            free_tracks: list[int], free_dets: list[int], p: TrackerParams) -> list[tuple[int, int]]:
    """Hungarian matching of free tracks to free blobs, within the gates: the centre within
    ``gate`` box heights (wider while unseen), and for an established track a blob of about
    its height (a blob cut by the frame's edge may be a part of the body, or grow fast)."""
    if not free_tracks or not free_dets:
        return []
    P, D = preds[free_tracks], dets[free_dets, :4]
    iou = iou_matrix(P, D)
    height = np.maximum(P[:, 3] - P[:, 1], 1.0)[:, None]
    scale = np.maximum(height, D[None, :, 3] - D[None, :, 1])  # a body entering: the larger
    dist = np.hypot((P[:, None, 0] + P[:, None, 2]) / 2 - (D[None, :, 0] + D[None, :, 2]) / 2,
                    (P[:, None, 1] + P[:, None, 3]) / 2 - (D[None, :, 1] + D[None, :, 3]) / 2) / scale
    ratio = (D[None, :, 3] - D[None, :, 1]) / height
    misses = np.array([active[i].misses for i in free_tracks])[:, None]
    gate = p.gate * (1 + p.gate_growth * misses)
    young = np.array([not _established(active[i], p) for i in free_tracks])[:, None]
    edge = cut[free_dets][None, :]  # a body entering or leaving: any height
    ok = ((dist <= gate) | (iou >= 0.3)) & (young | edge | ((ratio >= 0.6) & (ratio <= 1.6)))
    tentative = np.array([not active[i].confirmed for i in free_tracks])[:, None]
    cost = np.where(ok, (1 - iou) + dist + 0.5 * tentative, _INF)
    rows, cols = linear_sum_assignment(cost)
    return [(free_tracks[r], free_dets[c]) for r, c in zip(rows, cols) if cost[r, c] < _INF]


# ---------------------------------------------------------------------------- walking
def walking(boxes: np.ndarray, clip_length: int) -> tuple[bool, float]:
    """Whether a track's boxes (T, 4; NaN outside the track) show a walker, and its speed
    (median box-centre displacement, px per frame).

    Motion is measured between frames ``STEP`` apart, in body heights: the bottom centre's
    displacement plus twice the change of log height (walking towards or away from the
    camera changes the scale more than the position). A walker travels ``MIN_TRAVEL`` or more
    over some window of ``clip_length`` frames (the whole track when shorter, pro rata), on a
    path at least ``MIN_STRAIGHTNESS`` straight.
    """
    idx = np.flatnonzero(np.isfinite(boxes[:, 0]))
    if len(idx) < 2 * STEP:
        return False, 0.0
    b = boxes[idx[0]:idx[-1] + 1].astype(np.float64)
    b = b[np.isfinite(b[:, 0])] if not np.isfinite(b[:, 0]).all() else b
    height = np.maximum(b[:, 3] - b[:, 1], 1.0)
    scale = float(np.median(height))
    points = np.stack([(b[:, 0] + b[:, 2]) / 2 / scale, b[:, 3] / scale, 2 * np.log(height)], 1)
    steps = np.linalg.norm(points[STEP:] - points[:-STEP], axis=1)  # per STEP frames
    speed = float(np.median(np.abs((b[STEP:, 0] + b[STEP:, 2]) - (b[:-STEP, 0] + b[:-STEP, 2])) / 2) / STEP)
    n = min(clip_length, len(points) - 1)
    for s in range(0, len(points) - n, max(1, STEP)):
        net = float(np.linalg.norm(points[s + n] - points[s]))
        path = float(steps[s:s + n - STEP + 1:STEP].sum()) or 1e-9
        if net * clip_length / n >= MIN_TRAVEL and net / max(path, net) >= MIN_STRAIGHTNESS:
            return True, speed
    return False, speed
