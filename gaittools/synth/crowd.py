"""Multi-person scenes with ground-truth tracks: real footage's failure modes, reproducible.

Each scene is filmed by the lateral (090) camera of the synthetic hall and has a purpose:

- ``crossing``: two walkers cross in opposite directions at different depths (4.5 m and
  8.5 m from the camera: heights differ by more than 30%), overlapping in the image for
  about 20 frames (they walk slowly, so the overlap lasts);
- ``waver``: a walker and a person standing still and waving (and swaying), both in view
  throughout; the walker passes in front of them;
- ``pillar``: a walker passes behind a pillar (a static occluder of the scene) and is fully
  hidden for more than ten frames;
- ``row``: three walkers in a row at one depth and one speed, less than a body width apart,
  in view throughout (8 m away);
- ``pair``: two walkers at one depth and one speed, 0.6 m apart: their pixels touch from
  the first frame in most frames (a stride reaches into the other's box), so no track is
  established apart before they merge; only dividing the blob by its shape separates them.

Ground truth per person: the box of its *visible* pixels (``boxes``, NaN where hidden), the
box of the whole body as if nobody stood in front (``full_boxes``), and whether it walks.
Clothes are drawn until they differ from the wall in grey. People are painted far to near, so nearer people and the pillar hide farther ones.
Randomness (subjects' gaits and clothes, camera noise) comes from ``rng_for(seed, CROWD,
scene, ...)``: a scene is the same in any process and order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gaittools.synth.appearance import Appearance, draw_appearance, subject_look
from gaittools.synth.body import body_capsules
from gaittools.synth.camera import DISTANCE, view_camera
from gaittools.synth.gait import J, GaitParams, draw_gait, pose_sequence
from gaittools.synth.render import film, mask_box, paint_person
from gaittools.synth.scene import camera_effects, hall_background
from gaittools.synth.seeding import CROWD, rng_for
from gaittools.synth.writing import write_avi

SCENES = ("crossing", "waver", "pillar", "row", "pair")
VIEW = "090"


@dataclass(frozen=True)
class Person:
    """Where one person is: ``y`` towards the camera (m; the camera is 6 m away at y = 0),
    ``x_mid`` along the path at mid-clip, walking ``direction`` (+1: right to left in the
    image) at ``speed`` m/s; speed 0 stands and waves."""

    y: float
    x_mid: float
    direction: float
    speed: float


#: People of each scene, and the pillar's image columns as fractions of the width (or None).
LAYOUTS: dict[str, tuple[tuple[Person, ...], tuple[float, float] | None]] = {
    "crossing": ((Person(1.5, 0.0, 1.0, 0.8), Person(-2.5, 0.0, -1.0, 0.8)), None),
    "waver": ((Person(0.0, 0.0, 1.0, 1.0), Person(-1.0, -1.2, -1.0, 0.0)), None),
    "pillar": ((Person(0.0, 0.0, 1.0, 1.0),), (0.35, 0.65)),
    "row": ((Person(-2.0, -1.0, -1.0, 0.8), Person(-2.0, 0.0, -1.0, 0.8),
             Person(-2.0, 1.0, -1.0, 0.8)), None),
    "pair": ((Person(-2.0, -0.3, -1.0, 0.8), Person(-2.0, 0.3, -1.0, 0.8)), None),
}
PILLAR_GREY = 85


@dataclass(frozen=True)
class SceneClip:
    """A rendered scene: frames (T, H, W, 3) BGR; per person (P, T, 4) boxes."""

    name: str
    frames: np.ndarray
    boxes: np.ndarray  # visible pixels' box, NaN where the person is hidden
    full_boxes: np.ndarray  # the whole body's box
    walking: np.ndarray  # (P,) bool


def _joints(g: GaitParams, person: Person, frames: int, fps: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World joints (T, J, 3), gait phase (T,) and forward direction (3,) of one person."""
    t = np.arange(frames) / fps
    d = person.direction
    if person.speed > 0:
        phase = rng.uniform(0.0, 1.0) + g.gait_frequency * person.speed / g.speed * t
        local = pose_sequence(g, phase)
        x = person.x_mid + d * person.speed * (t - t[-1] / 2)
    else:
        still = replace(g, stride_ratio=0.0, arm_swing_deg=0.0, pelvis_yaw_deg=0.0,
                        torso_sway_deg=0.0, bob_extra=0.0, head_nod_deg=0.0)
        phase = np.full(frames, 0.25)
        local = pose_sequence(still, phase)
        _wave(g, local, t)
        x = person.x_mid + 0.05 * np.sin(2 * np.pi * 0.6 * t)  # sways from foot to foot
    world = local * np.array([d, d, 1.0])
    world[..., 0] += x[:, None]
    world[..., 1] += person.y
    return world, phase, np.array([d, 0.0, 0.0])


def _wave(g: GaitParams, joints: np.ndarray, t: np.ndarray) -> None:
    """The right arm raised to the side, the forearm waving at 1.6 Hz (walker frame)."""
    arm = g.arm_ratio * g.height
    shoulder = joints[:, J["shoulder_r"]]
    upper = np.array([0.3, -0.6, 0.75]) / np.linalg.norm([0.3, -0.6, 0.75])
    elbow = shoulder + 0.45 * arm * upper
    swing = 0.7 * np.sin(2 * np.pi * 1.6 * t)
    fore = np.stack([np.sin(swing), np.full_like(swing, -0.25), np.cos(swing)], 1)
    fore /= np.linalg.norm(fore, axis=1, keepdims=True)
    joints[:, J["elbow_r"]] = elbow
    joints[:, J["wrist_r"]] = elbow + 0.35 * arm * fore
    joints[:, J["hand_r"]] = joints[:, J["wrist_r"]] + 0.12 * arm * fore


def _grey(colour: tuple[float, float, float]) -> float:
    b, g, r = colour
    return 0.114 * b + 0.587 * g + 0.299 * r


#: Least grey-level difference of the clothes' colours from the wall's (0..255).
CONTRAST = 45.0


def _visible_look(rng: np.random.Generator, wall: float) -> Appearance:
    """Clothes that stand out in grey from the hall's wall (its grey level ``wall``, as
    filmed): these scenes test tracking, not the segmentation of clothes the colour of the
    wall, which no background model can see."""
    skin, hair = subject_look(rng)
    for _ in range(50):
        look = draw_appearance(rng, "nm", skin, hair)
        if all(abs(_grey(c) - wall) >= CONTRAST
               for g in (look.shirt, look.trousers) for c in (g.colour, g.second)):
            return look
    return look


def render_scene(name: str, frames: int = 80, size: tuple[int, int] = (320, 240),
                 fps: float = 25.0, seed: int = 0) -> SceneClip:
    """Render one multi-person scene (see the module docstring) with its ground truth."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown scene {name!r}; one of {SCENES}")
    people, pillar = LAYOUTS[name]
    camera = view_camera(VIEW, size)
    scene_seed = int(rng_for(seed, CROWD, "hall").integers(2**31))  # one hall for all scenes
    effects = camera_effects(rng_for(seed, CROWD, name, "light"), rng_for(seed, CROWD, name, "noise"),
                             frames, fps)
    canvas = effects.tinted(hall_background(VIEW, tuple(size), "casia-b", scene_seed, DISTANCE))
    w, h = size
    wall = float(np.median([_grey(c) for c in canvas[h // 4:h // 2].reshape(-1, 3)[::7]]))
    pillar_mask = np.zeros((h, w), bool)
    if pillar is not None:
        pillar_mask[:, int(pillar[0] * w):int(pillar[1] * w)] = True
    order = np.argsort([p.y for p in people], kind="stable")  # far (small y) first
    masks = np.zeros((len(people), frames, h, w), bool)
    for k in order:
        rng = rng_for(seed, CROWD, name, int(k))
        g = replace(draw_gait(int(k) + 1, rng), subject=int(k) + 1)
        joints, phase, forward = _joints(g, people[k], frames, fps, rng)
        look = _visible_look(rng, wall)
        capsules = body_capsules(joints, g, look, phase, forward)
        canvas, masks[k] = paint_person(canvas, camera, capsules, joints[:, J["pelvis"]],
                                        tint=effects.tint)
    if canvas.ndim == 3:
        canvas = np.broadcast_to(canvas, (frames, *canvas.shape))
    canvas = canvas.copy()
    canvas[:, pillar_mask] = PILLAR_GREY
    visible = masks & ~pillar_mask
    for rank, k in enumerate(order):
        for nearer in order[rank + 1:]:
            visible[k] &= ~masks[nearer]
    full = np.stack([[mask_box(m) for m in person] for person in masks])
    boxes = np.stack([[mask_box(m) for m in person] for person in visible])
    return SceneClip(name, film(canvas, effects, rng_for(seed, CROWD, name, "film")), boxes, full,
                     np.array([p.speed > 0 for p in people]))


def write_scenes(out: str | Path, names: list[str], frames: int = 80,
                 size: tuple[int, int] = (320, 240), fps: float = 25.0, seed: int = 0) -> list[Path]:
    """Write scenes as ``OUT/<name>.avi`` with ``OUT/ground_truth/<name>.npz`` (boxes,
    full_boxes, walking); returns the videos' paths."""
    out = Path(out)
    (out / "ground_truth").mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        clip = render_scene(name, frames, size, fps, seed)
        path = out / f"{name}.avi"
        write_avi(path, clip.frames, fps)
        np.savez(out / "ground_truth" / f"{name}.npz", boxes=clip.boxes, full_boxes=clip.full_boxes,
                 walking=clip.walking)
        written.append(path)
    return written
