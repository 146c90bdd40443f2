"""The articulated walker as 3D capsules: a skeleton pose in, coloured tapered tubes out.

Each body part is a capsule (two end points that move per frame, a radius at each end). The
trunk is three vertical capsules side by side, so it is wide seen from the front and narrow
from the side, as a real trunk is. Clothes colour the capsules; stripes are made by splitting a
capsule into bands, so the texture moves with the body (a painted-on image texture would
not). Accessories (coat skirt, bags, shoe covers) are more capsules attached to joints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gaittools.synth.appearance import Appearance, Colour, Garment
from gaittools.synth.gait import J, GaitParams


@dataclass(frozen=True)
class Capsule:
    """A tube between two moving points a, b (T, 3) with end radii in metres."""

    a: np.ndarray
    b: np.ndarray
    ra: float
    rb: float
    colour: Colour
    cap_a: bool = True       # round end at a (bands inside a part join flat, without caps)
    cap_b: bool = True


def _bands(a: np.ndarray, b: np.ndarray, ra: float, rb: float, garment: Garment, n: int
           ) -> list[Capsule]:
    """One capsule, or n bands of alternating colour along it (stripes), or a two-tone split."""
    if garment.pattern == "plain" or n <= 1:
        return [Capsule(a, b, ra, rb, garment.colour)]
    if garment.pattern == "two-tone":
        mid, rm = (a + b) / 2, (ra + rb) / 2
        return [Capsule(a, mid, ra, rm, garment.colour, cap_b=False),
                Capsule(mid, b, rm, rb, garment.second, cap_a=False)]
    out = []
    for k in range(n):
        f0, f1 = k / n, (k + 1) / n
        out.append(Capsule(a + (b - a) * f0, a + (b - a) * f1, ra + (rb - ra) * f0,
                           ra + (rb - ra) * f1, garment.colour if k % 2 == 0 else garment.second,
                           cap_a=k == 0, cap_b=k == n - 1))
    return out


def body_capsules(joints: np.ndarray, g: GaitParams, look: Appearance, phase: np.ndarray,
                  forward: np.ndarray) -> list[Capsule]:
    """All capsules of a dressed walker; joints (T, J, 3) in world coordinates."""
    s = g.height / 1.72
    rg = s * g.girth
    P = lambda name: joints[:, J[name]]  # noqa: E731  (a short accessor keeps the table readable)
    caps: list[Capsule] = []
    top = look.coat or look.shirt
    fat = 1.45 if look.coat else 1.0
    trunk_r = g.torso_depth / 2 * fat
    for side in "rl":
        caps += _bands(P(f"waist_{side}"), P(f"shoulder_{side}"), trunk_r * 0.9, trunk_r * 0.85,
                       top, 5)
        caps += _bands(P(f"hip_{side}"), P(f"knee_{side}"), 0.075 * rg, 0.055 * rg,
                       look.trousers, 2)
        caps += _bands(P(f"knee_{side}"), P(f"ankle_{side}"), 0.052 * rg, 0.037 * rg,
                       look.trousers, 2)
        foot = 0.034 * s * (1.6 if look.shoe_cover else 1.0)
        heel, toe = P(f"heel_{side}"), P(f"toe_{side}")
        if look.shoe_cover:
            heel, toe = heel + (heel - toe) * 0.12, toe + (toe - heel) * 0.15
        caps.append(Capsule(heel, toe, foot, foot * 0.9, look.shoes))
        sleeve = 1.4 if look.coat else 1.0
        caps += _bands(P(f"shoulder_{side}"), P(f"elbow_{side}"), 0.047 * rg * sleeve,
                       0.039 * rg * sleeve, top, 2)
        fore = top if look.long_sleeves else None
        if fore is None:
            caps.append(Capsule(P(f"elbow_{side}"), P(f"wrist_{side}"), 0.036 * rg, 0.029 * rg,
                                look.skin))
        else:
            caps += _bands(P(f"elbow_{side}"), P(f"wrist_{side}"), 0.037 * rg * sleeve,
                           0.031 * rg * sleeve, fore, 2)
        caps.append(Capsule(P(f"wrist_{side}"), P(f"hand_{side}"), 0.03 * s, 0.027 * s, look.skin))
    caps += _bands(P("pelvis"), P("chest"), trunk_r, trunk_r * 0.95, top, 5)
    caps.append(Capsule(P("hip_r"), P("hip_l"), 0.085 * rg, 0.085 * rg,
                        top.colour if look.coat else look.trousers.colour))
    caps.append(Capsule(P("chest"), P("neck"), 0.05 * s, 0.045 * s, look.skin))
    caps += _head(P("head"), g.head_ratio * g.height, look, forward)
    if look.coat is not None:
        caps += _coat_skirt(joints, g, look, rg)
    if look.bag is not None:
        caps += _bag(joints, g, look, phase, forward)
    return caps


def _head(centre: np.ndarray, r: float, look: Appearance, forward: np.ndarray) -> list[Capsule]:
    """Hair sits up and back, the face forward: the painter's order shows the right one."""
    up = np.array([0.0, 0.0, 1.0])
    hair = centre + r * (0.12 * up - 0.14 * forward)
    face = centre + r * (-0.08 * up + 0.16 * forward)
    return [Capsule(hair, hair, r, r, look.hair),
            Capsule(face, face, 0.86 * r, 0.86 * r, look.skin)]


def _coat_skirt(joints: np.ndarray, g: GaitParams, look: Appearance, rg: float) -> list[Capsule]:
    """The coat below the waist: over each thigh, and a panel hanging between the legs."""
    assert look.coat is not None
    P = lambda name: joints[:, J[name]]  # noqa: E731
    caps = []
    for side in "rl":
        hip, knee = P(f"hip_{side}"), P(f"knee_{side}")
        end = hip + (knee - hip) * look.coat_length
        caps += _bands(hip, end, 0.13 * rg, 0.12 * rg, look.coat, 2)
    hang = (P("knee_r") + P("knee_l")) / 2
    pelvis = P("pelvis")
    hem = pelvis + (hang - pelvis) * look.coat_length
    caps += _bands(pelvis, hem, g.hip_width * 0.6, g.hip_width * 0.68, look.coat, 2)
    return caps


def _bag(joints: np.ndarray, g: GaitParams, look: Appearance, phase: np.ndarray,
         forward: np.ndarray) -> list[Capsule]:
    """A backpack on the back, a shoulder bag at the hip or a bag in one hand, swinging."""
    P = lambda name: joints[:, J[name]]  # noqa: E731
    up = np.array([0.0, 0.0, 1.0])
    left = np.cross(up, forward)
    step = np.cos(4 * np.pi * phase)[:, None]          # bounces once per step
    size = look.bag_size * g.height / 1.72
    colour = look.bag_colour
    side = "l" if look.bag_side > 0 else "r"
    if look.bag == "backpack":
        chest, pelvis = P("chest"), P("pelvis")
        back = -forward * (g.torso_depth / 2 + 0.09 * size)
        top = chest + (pelvis - chest) * 0.12 + back + 0.01 * step * up
        bottom = chest + (pelvis - chest) * 0.75 + back + 0.01 * step * up
        return [Capsule(top + w * left * 0.09 * size, bottom + w * left * 0.09 * size,
                        0.1 * size, 0.11 * size, colour) for w in (-1.0, 1.0)]
    if look.bag == "shoulder":
        hip = P(f"hip_{side}")
        swing = 0.07 * np.sin(4 * np.pi * phase + 0.8)[:, None]
        centre = hip + look.bag_side * left * (g.hip_width * 0.3 + 0.1 * size) \
            + forward * swing - 0.02 * up
        return [Capsule(centre - forward * 0.13 * size, centre + forward * 0.13 * size,
                        0.12 * size, 0.12 * size, colour)]
    hand = P(f"hand_{side}")
    hang = hand - up * 0.28 * size - forward * 0.04 * step
    return [Capsule(hand - up * 0.05 + w * forward * 0.08 * size, hang + w * forward * 0.08 * size,
                    0.08 * size, 0.1 * size, colour) for w in (-1.0, 1.0)]
