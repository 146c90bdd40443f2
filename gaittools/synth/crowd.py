"""Multi-person scenes with ground-truth tracks: real footage's failure modes, reproducible.

Each scene is filmed by the lateral (090) camera of the synthetic hall, unless its ``Shot``
says otherwise, and has a purpose:

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
  established apart before they merge; only dividing the blob by its shape separates them;
- ``couples``: a street camera's view instead (``Shot``: mounted 3.5 m high, aimed at the
  floor, a wide-angle lens, a frame twice as wide as tall): two couples walking shoulder to
  shoulder (0.5 m between their centres: touching), one towards the camera and one away, and
  two single walkers, one each way. People are 40-80 px tall in a 240-row frame (farther is
  smaller and higher in the frame, on the tiled floor); seen from the front and the back,
  a couple's blob has no valley between its legs, and its heads are a few pixels apart.

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
from gaittools.synth.camera import DISTANCE, FOCAL_PER_ROW, HEIGHT, view_camera
from gaittools.synth.gait import J, GaitParams, draw_gait, pose_sequence
from gaittools.synth.render import film, mask_box, paint_person
from gaittools.synth.scene import camera_effects, hall_background
from gaittools.synth.seeding import CROWD, rng_for
from gaittools.synth.writing import write_avi

SCENES = ("crossing", "waver", "pillar", "row", "pair", "couples")
VIEW = "090"


@dataclass(frozen=True)
class Person:
    """Where one person is: ``y`` across the path (m; towards the lateral camera, 6 m away
    at y = 0), ``x_mid`` along the path at mid-clip, walking ``direction`` (+1: along +x,
    right to left in the lateral view, towards the frontal one) at ``speed`` m/s; speed 0
    stands and waves. ``heading`` turns the path (degrees, towards +y) about its middle."""

    y: float
    x_mid: float
    direction: float
    speed: float
    heading: float = 0.0


#: People of each scene, and the pillar's image columns as fractions of the width (or None).
LAYOUTS: dict[str, tuple[tuple[Person, ...], tuple[float, float] | None]] = {
    "crossing": ((Person(1.5, 0.0, 1.0, 0.8), Person(-2.5, 0.0, -1.0, 0.8)), None),
    "waver": ((Person(0.0, 0.0, 1.0, 1.0), Person(-1.0, -1.2, -1.0, 0.0)), None),
    "pillar": ((Person(0.0, 0.0, 1.0, 1.0),), (0.35, 0.65)),
    "row": ((Person(-2.0, -1.0, -1.0, 0.8), Person(-2.0, 0.0, -1.0, 0.8),
             Person(-2.0, 1.0, -1.0, 0.8)), None),
    "pair": ((Person(-2.0, -0.3, -1.0, 0.8), Person(-2.0, 0.3, -1.0, 0.8)), None),
    "couples": ((Person(-1.45, 0.7, 1.0, 0.8, -20.0), Person(-0.95, 0.7, 1.0, 0.8, -20.0),
                 Person(0.95, 0.7, -1.0, 0.8, 20.0), Person(1.45, 0.7, -1.0, 0.8, 20.0),
                 Person(-4.2, 0.7, 1.0, 0.8), Person(4.2, 0.7, -1.0, 0.8)), None),
}
PILLAR_GREY = 85


@dataclass(frozen=True)
class Shot:
    """A scene's camera (``view_camera``'s placement) and frame shape: ``aspect`` is the
    frame's width over its height (None: the size asked for), keeping the height asked for."""

    view: str = VIEW
    distance: float = DISTANCE
    height: float = HEIGHT
    aim: float | None = None
    focal_per_row: float = FOCAL_PER_ROW
    aspect: float | None = None
    frames: int = 80

    def size(self, asked: tuple[int, int]) -> tuple[int, int]:
        """The frame size (W, H) for a size asked for."""
        w, h = asked
        return (w, h) if self.aspect is None else (int(round(self.aspect * h)), h)


#: Scenes not filmed by the default lateral camera in 80 frames. ``couples``: a street camera
#: at the end of the path (9.5 m from its centre, inside the hall), 3.5 m high, aimed at the
#: floor; 8 s, so that people walking along the camera's axis (whose image moves slowly)
#: leave every pixel's background visible in most frames, as they do in a long real video.
SHOTS: dict[str, Shot] = {
    "couples": Shot(view="000", distance=9.5, height=3.5, aim=0.0, focal_per_row=1.17, aspect=2.0, frames=200),
}


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
        along = d * person.speed * (t - t[-1] / 2)
    else:
        still = replace(g, stride_ratio=0.0, arm_swing_deg=0.0, pelvis_yaw_deg=0.0,
                        torso_sway_deg=0.0, bob_extra=0.0, head_nod_deg=0.0)
        phase = np.full(frames, 0.25)
        local = pose_sequence(still, phase)
        _wave(g, local, t)
        along = 0.05 * np.sin(2 * np.pi * 0.6 * t)  # sways from foot to foot
    turn = np.radians(person.heading)
    c, s = np.cos(turn), np.sin(turn)
    mirrored = local * np.array([d, d, 1.0])
    world = mirrored.copy()
    world[..., 0] = c * mirrored[..., 0] - s * mirrored[..., 1]
    world[..., 1] = s * mirrored[..., 0] + c * mirrored[..., 1]
    world[..., 0] += (person.x_mid + c * along)[:, None]
    world[..., 1] += (person.y + s * along)[:, None]
    return world, phase, np.array([d * c, d * s, 0.0])


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


def render_scene(name: str, frames: int | None = None, size: tuple[int, int] = (320, 240),
                 fps: float = 25.0, seed: int = 0) -> SceneClip:
    """Render one multi-person scene (see the module docstring) with its ground truth;
    ``size`` (W, H) is the frame's unless the scene's ``Shot`` sets its aspect; ``frames``
    defaults to the shot's length."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown scene {name!r}; one of {SCENES}")
    people, pillar = LAYOUTS[name]
    shot = SHOTS.get(name, Shot())
    frames = frames or shot.frames
    size = shot.size(tuple(size))
    placement = (shot.distance, shot.height, shot.aim, shot.focal_per_row)
    camera = view_camera(shot.view, size, *placement)
    scene_seed = int(rng_for(seed, CROWD, "hall").integers(2**31))  # one hall for all scenes
    effects = camera_effects(rng_for(seed, CROWD, name, "light"), rng_for(seed, CROWD, name, "noise"),
                             frames, fps)
    canvas = effects.tinted(hall_background(shot.view, size, "casia-b", scene_seed, *placement))
    w, h = size
    wall = float(np.median([_grey(c) for c in canvas[h // 4:h // 2].reshape(-1, 3)[::7]]))
    pillar_mask = np.zeros((h, w), bool)
    if pillar is not None:
        pillar_mask[:, int(pillar[0] * w):int(pillar[1] * w)] = True
    drawn = []
    for k, person in enumerate(people):
        rng = rng_for(seed, CROWD, name, k)
        g = replace(draw_gait(k + 1, rng), subject=k + 1)
        joints, phase, forward = _joints(g, person, frames, fps, rng)
        drawn.append((body_capsules(joints, g, _visible_look(rng, wall), phase, forward), joints[:, J["pelvis"]]))
    # far first: depth along the camera's axis of each path's middle (mm; laterally 6 m - y)
    middles = np.array([[p.x_mid, p.y, 0.0] for p in people])
    order = np.argsort(-np.round(camera.to_camera(middles)[:, 2], 3), kind="stable")
    masks = np.zeros((len(people), frames, h, w), bool)
    for k in order:
        capsules, pelvis = drawn[k]
        canvas, masks[k] = paint_person(canvas, camera, capsules, pelvis, tint=effects.tint)
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


def write_scenes(out: str | Path, names: list[str], frames: int | None = None,
                 size: tuple[int, int] = (320, 240), fps: float = 25.0, seed: int = 0) -> list[Path]:
    """Write scenes as ``OUT/<name>.avi`` with ``OUT/ground_truth/<name>.npz`` (boxes,
    full_boxes, walking); returns the videos' paths. ``frames``: each scene's own length
    (its ``Shot``'s) unless given."""
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
