"""One clip from its identity: which subject, walk, view, and the dataset's settings.

Everything random about a clip is drawn from streams keyed by that identity (see
``seeding.py``), so ``render_clip`` regenerates any clip of a dataset exactly, alone, in any
process: this is also how to get the renderer's person masks for a written dataset.
In CASIA-B all views of one walk are the same walk filmed by different cameras (same phase,
clothes and path); only the camera noise and the session exposure differ per view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gaittools.synth.appearance import draw_appearance, subject_look
from gaittools.synth.body import body_capsules
from gaittools.synth.camera import DISTANCE, Camera, view_camera
from gaittools.synth.gait import J, GaitParams, draw_gait, pose_sequence
from gaittools.synth.render import RenderedClip, film, mask_box, paint_person
from gaittools.synth.scene import camera_effects, hall_background
from gaittools.synth.seeding import (CAMERA_NOISE, SCENE, SESSION_LIGHT, SUBJECT_GAIT,
                                     SUBJECT_LOOK, WALK, rng_for)

BACKGROUND = "bkgrd"
#: TUM-GAID has one side camera, closer than CASIA-B's; its clips use this view angle.
TUM_GAID_VIEW = "090"
TUM_GAID_DISTANCE = 4.5


@dataclass(frozen=True)
class ClipSpec:
    """The identity of one clip plus the dataset settings that shape it."""

    layout: str              # "casia-b" | "tum-gaid"
    subject: int
    condition: str           # nm/bg/cl, n/b/s, or "bkgrd" for the empty scene
    seq_num: int
    view: str                # "000".."180" (TUM-GAID: TUM_GAID_VIEW)
    frames: int
    size: tuple[int, int]    # (W, H)
    fps: float
    seed: int


def subject_gait(seed: int, subject: int) -> GaitParams:
    """Subject ``subject``'s gait for a dataset seed (independent of the layout)."""
    return draw_gait(subject, rng_for(seed, SUBJECT_GAIT, subject))


def walking_direction(spec: ClipSpec) -> float:
    """+1 along world x, -1 against it. TUM-GAID alternates direction between walks."""
    if spec.layout == "tum-gaid":
        return 1.0 if spec.seq_num % 2 == 1 else -1.0
    return 1.0


def _distance(spec: ClipSpec) -> float:
    return TUM_GAID_DISTANCE if spec.layout == "tum-gaid" else DISTANCE


def _camera(spec: ClipSpec) -> Camera:
    return view_camera(spec.view, spec.size, distance=_distance(spec))


def _scene_seed(spec: ClipSpec) -> int:
    return int(rng_for(spec.seed, SCENE, spec.layout).integers(2**31))


def _background(spec: ClipSpec) -> np.ndarray:
    return hall_background(spec.view, tuple(spec.size), spec.layout, _scene_seed(spec),
                           _distance(spec))


def world_joints(spec: ClipSpec, g: GaitParams, walk_rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joints (T, J, 3) in the world, gait phase (T,), forward direction (3,).

    The walk starts at a random gait phase and is centred on the camera axis (plus a small
    random offset), so the person crosses the middle of every view.
    """
    phase0 = walk_rng.uniform(0.0, 1.0)
    along = walk_rng.uniform(-0.3, 0.3)
    aside = walk_rng.uniform(-0.15, 0.15)
    t = np.arange(spec.frames) / spec.fps
    phase = phase0 + g.gait_frequency * t
    local = pose_sequence(g, phase)
    direction = walking_direction(spec)
    x = along + direction * g.speed * (t - t[-1] / 2)
    world = local * np.array([direction, direction, 1.0])
    world[..., 0] += x[:, None]
    world[..., 1] += aside
    return world, phase, np.array([direction, 0.0, 0.0])


def render_clip(spec: ClipSpec) -> RenderedClip:
    """Render one clip (a walk, or the empty scene when condition is ``bkgrd``)."""
    background = _background(spec)
    session = rng_for(spec.seed, SESSION_LIGHT, spec.layout, spec.subject, spec.view)
    noise_rng = rng_for(spec.seed, CAMERA_NOISE, spec.layout, spec.subject, spec.condition,
                        spec.seq_num, spec.view)
    effects = camera_effects(session, noise_rng, spec.frames, spec.fps)
    background = effects.tinted(background)
    h, w = background.shape[:2]
    if spec.condition == BACKGROUND:
        clean = np.broadcast_to(background, (spec.frames, h, w, 3))
        masks = np.zeros((spec.frames, h, w), bool)
    else:
        g = subject_gait(spec.seed, spec.subject)
        walk_rng = rng_for(spec.seed, WALK, spec.layout, spec.subject, spec.condition, spec.seq_num)
        joints, phase, forward = world_joints(spec, g, walk_rng)
        skin, hair = subject_look(rng_for(spec.seed, SUBJECT_LOOK, spec.subject))
        look = draw_appearance(walk_rng, spec.condition, skin, hair)
        capsules = body_capsules(joints, g, look, phase, forward)
        clean, masks = paint_person(background, _camera(spec), capsules, joints[:, J["pelvis"]],
                                    tint=effects.tint)
    frames = film(clean, effects, noise_rng)
    boxes = np.stack([mask_box(m) for m in masks]) if len(masks) else np.zeros((0, 4), np.float32)
    return RenderedClip(frames, masks, boxes)
