"""People walking together (gaittools.person.groups) on drawn masks: blobs of people side by
side seen from the front cut between their heads, and what is marked where they cannot be.
The whole path on the synthetic ``couples`` scene is in test_tracking_scenes.py."""

from __future__ import annotations

import cv2
import numpy as np

from gaittools.person.blobs import DIVIDED, UNDIVIDED, WHOLE, frame_blobs
from gaittools.person.groups import GROUP, SINGLE_WIDTH, divide_groups, group_frames, head_cuts, upper_width
from gaittools.person.packed_masks import pack_masks
from gaittools.person.tracking import Track, track_boxes


def _front_body(mask: np.ndarray, x: int, height: int, bottom: int = 95) -> None:
    """A body seen from the front, ``height`` rows tall, standing on row ``bottom`` at column
    ``x``: a head on a neck, shoulders and a trunk about a quarter of its height wide, legs."""
    r = max(2, round(0.065 * height))
    top = bottom - height
    half = round(0.13 * height)
    shoulders, hips = top + round(0.18 * height), top + round(0.5 * height)
    cv2.circle(mask, (x, top + r), r, 1, -1)
    cv2.rectangle(mask, (x - 1, top + r), (x + 1, shoulders), 1, -1)
    cv2.rectangle(mask, (x - half, shoulders), (x + half, hips), 1, -1)
    for side in (-1, 1):
        cv2.rectangle(mask, (x + side * half // 2 - 2, hips), (x + side * half // 2 + 2, bottom), 1, -1)


def test_people_side_by_side_seen_from_the_front_are_cut_between_their_heads():
    pair = np.zeros((100, 90), np.uint8)
    _front_body(pair, 30, 70)
    _front_body(pair, 30 + 2 * round(0.13 * 70) + 1, 60)  # shoulder to shoulder, 14% shorter
    rows = np.flatnonzero(pair.any(axis=1))
    cols = np.flatnonzero(pair.any(axis=0))
    region = pair[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(bool)
    [cut] = head_cuts(region)
    assert abs(cols[0] + cut - (30 + round(0.13 * 70))) <= 3  # at the shoulders' meeting
    three = np.zeros((100, 120), np.uint8)
    for x in (25, 45, 65):
        _front_body(three, x, 70)
    assert len(head_cuts(three[20:96, 14:78].astype(bool))) == 2


def test_one_person_is_not_cut_at_a_notch_or_a_speck():
    one = np.zeros((80, 40), np.uint8)
    _front_body(one, 20, 70, bottom=75)
    region = one[5:76].astype(bool)
    assert head_cuts(region) == []
    specks = region.copy()
    specks[0, 12] = True  # the raw foreground's noise above a shoulder: one pixel ...
    specks[0:2, 27] = True  # ... or a column of two
    assert head_cuts(specks) == []
    small = np.zeros((20, 12), bool)  # 20 rows tall, its head the wall's grey: its shoulders
    small[:, 2:10] = True  # are two peaks, a notch of two rows (a tenth) between them
    small[0:2, 5:7] = False
    assert head_cuts(small) == []


def test_wide_blobs_are_divided_on_a_closer_look_or_flagged_and_others_left_alone():
    masks = np.zeros((4, 100, 160), np.uint8)
    for t in (0, 1):
        _front_body(masks[t], 60, 70)
        _front_body(masks[t], 60 + 2 * round(0.13 * 70) + 1, 66)
    _front_body(masks[2], 60, 70)  # one person
    _front_body(masks[3], 8, 70)  # a pair cut by the frame's left edge
    _front_body(masks[3], 8 + 2 * round(0.13 * 70) + 1, 70)
    packed = pack_masks(masks.astype(bool))
    blobs = frame_blobs(packed, 160, 0.002, 0.1)
    assert [len(b) for b in blobs] == [1, 1, 1, 1] and all(b[0, 5] == WHOLE for b in blobs)
    looked = []

    def look(t: int, box: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        looked.append(t)
        x0, y0, x1, y1 = (int(v) for v in box[:4])
        big = cv2.resize(masks[t], None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST).astype(bool)
        return big[2 * y0:2 * y1, 2 * x0:2 * x1], (2 * x0, 2 * y0)

    found = divide_groups(blobs, packed, 160, look, 2.0)
    assert looked == [0, 1]  # the one person is not wide, the cut pair is at the edge
    left, right = found[0]
    assert (left[5], right[5]) == (DIVIDED, DIVIDED) and left[2] <= right[0] + 1
    assert abs(left[0] - blobs[0][0, 0]) <= 1 and abs(right[2] - blobs[0][0, 2]) <= 1
    assert right[1] > left[1] + 2  # each box its own head: the right one is shorter
    np.testing.assert_array_equal(found[2], blobs[2])
    np.testing.assert_array_equal(found[3], blobs[3])
    unseen = divide_groups(blobs, packed, 160, None, 2.0)  # no closer look: flagged
    assert unseen[0][:, 5].tolist() == [UNDIVIDED] and unseen[2][:, 5].tolist() == [WHOLE]


def test_an_undivided_blob_is_recorded_by_its_track_or_repaired_from_two():
    box = lambda x, flag: np.array([[x, 10, x + 30, 80, 1500, flag]], np.float32)  # noqa: E731
    alone = [box(20 + 2 * t, UNDIVIDED if t >= 5 else WHOLE) for t in range(10)]
    [track] = track_boxes(alone)
    assert track.undivided == list(range(5, 10)) and all(track.observed)
    # two people tracked apart, then one undivided blob holding both: repaired from their
    # predictions (the pair's history), not given to either
    apart = [np.concatenate([box(20, WHOLE), box(52, WHOLE)]) for _ in range(6)]
    both = [np.array([[20, 10, 82, 80, 3000, UNDIVIDED]], np.float32)] * 4
    tracks = track_boxes(apart + both)
    assert len(tracks) == 2 and all(tr.undivided == [] and tr.merges == 4 for tr in tracks)
    assert all(tr.boxes[-1][2] - tr.boxes[-1][0] < 40 for tr in tracks)


def _track(frames: range, box: list[float], undivided: list[int]) -> Track:
    tr = Track(0, None)
    for t in frames:
        tr.add(t, np.array(box, np.float64), True)
    tr.undivided = list(undivided)
    return tr


def test_group_frames_are_undivided_boxes_much_wider_than_one_person_of_the_scene():
    masks = np.zeros((20, 100, 200), np.uint8)
    for t in range(20):
        _front_body(masks[t], 40, 70)  # walks alone
        _front_body(masks[t], 120, 70)  # a couple
        _front_body(masks[t], 120 + 2 * round(0.13 * 70) + 1, 70)
    packed = pack_masks(masks.astype(bool))
    single = _track(range(20), [30, 25, 51, 96], [])
    couple = _track(range(20), [110, 25, 149, 96], list(range(0, 20, 2)))
    one = upper_width(masks[0, 25:96, 30:51].astype(bool))
    assert one <= SINGLE_WIDTH  # a drawn body is narrower than the floor
    assert upper_width(masks[0, 25:96, 110:149].astype(bool)) >= GROUP * SINGLE_WIDTH
    assert group_frames([single, couple], packed, 200) == [[], list(range(0, 20, 2))]
    # a scene whose walkers alone are as wide as the couple (coats): nothing is a group
    wide = _track(range(20), [110, 25, 149, 96], [])
    assert group_frames([wide, couple], packed, 200) == [[], []]
    # without an undivided frame nothing is looked at
    assert group_frames([single, wide], packed, 200) == [[], []]


def test_group_frames_leave_a_walker_or_make_its_track_a_groups():
    from gaittools.person.localise import LocaliseParams, _person, _result

    T = 60
    tr = _track(range(T), [20, 10, 40, 70], [])
    for t in range(T):
        tr.boxes[t] = tr.boxes[t] + [t, 0, t, 0]
    p = LocaliseParams()
    centres = lambda b: (b[:, 0] + b[:, 2]) / 2  # noqa: E731
    walker = _person(0, tr, T, p, 1.0, centres, list(range(20, 26)))
    assert np.isnan(walker.boxes[20:26, 0]).all() and walker.group_frames == 6 and not walker.group
    group = _person(1, tr, T, p, 1.0, centres, list(range(0, 40)))
    assert group.group and group.group_frames == 40 and np.isfinite(group.boxes[:, 0]).all()
    loc = _result([walker, group], T, 1.0, "median", 0.1, [])
    assert loc.walkers == [walker] and loc.boxes is walker.boxes
    assert any("holds people walking together" in n for n in loc.notes)
