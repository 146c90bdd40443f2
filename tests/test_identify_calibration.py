"""identify's margin to the second-nearest identity, and the unknown threshold calibrated on
labelled validation videos (enrolled people must be named, others must come out unknown)."""

from __future__ import annotations

import numpy as np
import pytest

from gaittools.deploy.identify import (STATUS_OK, Gallery, GalleryError, SequenceSignature, answer_for,
                                calibrate_threshold)


def _unit(*v: float) -> np.ndarray:
    x = np.asarray(v, np.float32)
    return x / np.linalg.norm(x)


@pytest.fixture
def gallery() -> Gallery:
    g = Gallery([], np.zeros((0, 3), np.float32), [], {"threshold": None})
    g.add("ann", _unit(1, 0, 0), "a1")
    g.add("ann", _unit(0.9, 0.1, 0), "a2")  # a second walk of ann: not a second identity
    g.add("bob", _unit(0, 1, 0), "b1")
    return g


def test_margin_is_to_the_next_identity_not_the_next_entry(gallery):
    probe = _unit(0.95, 0.05, 0)
    answer = answer_for("v.avi", SequenceSignature(STATUS_OK, probe, 30, 30, 2), gallery, threshold=0.5)
    d_ann = min(np.linalg.norm(probe - gallery.signatures[:2], axis=1))
    d_bob = np.linalg.norm(probe - gallery.signatures[2])
    assert answer.identity == "ann" and answer.distance == pytest.approx(d_ann)
    assert answer.margin == pytest.approx(d_bob - d_ann) and answer.to_dict()["margin"] == answer.margin


def test_calibrated_threshold_separates_enrolled_from_strangers(gallery):
    labelled = [("ann", _unit(1, 0.15, 0)), ("ann", _unit(0.9, 0, 0.2)), ("bob", _unit(0.1, 1, 0.1)),
                ("cid", _unit(0, 0, 1)), ("dee", _unit(0.5, 0.5, 0.7))]  # cid, dee are not enrolled
    result = calibrate_threshold(gallery, labelled)
    known = [min(np.linalg.norm(s - gallery.signatures[[i for i, g in enumerate(gallery.ids) if g == who]], axis=1))
             for who, s in labelled[:3]]
    strangers = [min(np.linalg.norm(s - gallery.signatures, axis=1)) for _, s in labelled[3:]]
    assert max(known) < result.threshold < min(strangers)  # the gap between the two groups
    assert (result.enrolled_error, result.unknown_error) == (0.0, 0.0)
    assert (result.enrolled_videos, result.unknown_videos) == (3, 2)
    for who, signature in labelled:  # and with it, identify gives each video its right answer
        answer = answer_for("v", SequenceSignature(STATUS_OK, signature, 30, 30, 1), gallery, result.threshold)
        assert answer.identity == (who if who in gallery.ids else "unknown")
    with pytest.raises(GalleryError, match="people not enrolled"):
        calibrate_threshold(gallery, labelled[:3])
