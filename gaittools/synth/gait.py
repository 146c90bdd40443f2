"""Per-subject gait parameters and the periodic joint-angle model that turns them into poses.

A subject *is* its parameters: body proportions and a way of moving. Appearance (clothes, bags,
coats) lives in ``appearance.py`` and never touches these, so every condition of a subject walks
with exactly the same motion.

Coordinates of the walker frame: x forward, y to the walker's left, z up, metres; the origin is
on the floor under the pelvis. Gait phase ``p`` is in cycles; ``p = 0`` is the right heel strike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

JOINTS: tuple[str, ...] = (
    "pelvis", "hip_r", "knee_r", "ankle_r", "heel_r", "toe_r",
    "hip_l", "knee_l", "ankle_l", "heel_l", "toe_l",
    "waist_r", "waist_l", "chest", "shoulder_r", "shoulder_l",
    "elbow_r", "wrist_r", "hand_r", "elbow_l", "wrist_l", "hand_l",
    "neck", "head",
)
J: dict[str, int] = {name: i for i, name in enumerate(JOINTS)}


@dataclass(frozen=True)
class GaitParams:
    """One subject: body proportions (metres, ratios of height) and gait (angles in degrees)."""

    subject: int
    height: float            # standing height, m
    leg_ratio: float         # hip-joint height / height
    thigh_ratio: float       # thigh / (hip-to-ankle length)
    torso_ratio: float       # hip-joint level to shoulder level / height
    shoulder_width: float    # m, outer width of the shoulders
    hip_width: float         # m, outer width of the hips
    torso_depth: float       # m, chest depth (front-back)
    arm_ratio: float         # shoulder-to-fingertip / height
    head_ratio: float        # head radius / height
    girth: float             # scale of limb radii
    cadence: float           # steps per minute
    stride_ratio: float      # stride length (two steps) / height
    arm_swing_deg: float     # shoulder swing amplitude
    elbow_flex_deg: float    # mean elbow flexion
    knee_swing_deg: float    # peak knee flexion in swing
    knee_stance_deg: float   # knee flexion at loading response
    toe_off_deg: float       # foot pitch at push-off
    torso_lean_deg: float    # constant forward lean
    torso_sway_deg: float    # lateral roll amplitude of the trunk
    pelvis_yaw_deg: float    # pelvis rotation amplitude (shoulders counter-rotate)
    bob_extra: float         # m, extra vertical bounce at step frequency
    head_nod_deg: float      # head pitch amplitude at step frequency
    arm_phase: float         # cycles, arm swing offset from the opposite leg
    lr_phase: float          # cycles, left step late (+) or early (-) vs half a cycle
    lr_amp: float            # relative right-minus-left hip amplitude
    arm_abduction_deg: float # arms held away from the body
    toe_out_deg: float       # feet turned out
    step_width: float        # m, lateral distance of the feet

    @property
    def stride_length(self) -> float:
        return self.stride_ratio * self.height

    @property
    def gait_frequency(self) -> float:
        """Gait cycles (strides) per second."""
        return self.cadence / 120.0

    @property
    def speed(self) -> float:
        """Walking speed, m/s: one stride per cycle."""
        return self.stride_length * self.gait_frequency

    def as_row(self) -> dict[str, float]:
        row = asdict(self)
        row.update(stride_length=self.stride_length, gait_frequency=self.gait_frequency,
                   speed=self.speed)
        return row


def draw_gait(subject: int, rng: np.random.Generator) -> GaitParams:
    """Draw one subject. Ranges are wide (uniform) so that subjects differ visibly in motion."""
    u = rng.uniform
    height = float(np.clip(rng.normal(1.72, 0.09), 1.50, 1.95))
    leg_ratio = u(0.49, 0.55)
    return GaitParams(
        subject=subject,
        height=height,
        leg_ratio=leg_ratio,
        thigh_ratio=u(0.47, 0.54),
        torso_ratio=0.815 - leg_ratio + u(-0.015, 0.02),
        shoulder_width=height * u(0.22, 0.27),
        hip_width=height * u(0.17, 0.21),
        torso_depth=height * u(0.12, 0.16),
        arm_ratio=u(0.41, 0.46),
        head_ratio=u(0.058, 0.068),
        girth=u(0.85, 1.2),
        cadence=u(92.0, 128.0),
        stride_ratio=u(0.68, 0.92),
        arm_swing_deg=u(8.0, 32.0),
        elbow_flex_deg=u(5.0, 30.0),
        knee_swing_deg=u(48.0, 70.0),
        knee_stance_deg=u(5.0, 24.0),
        toe_off_deg=u(15.0, 40.0),
        torso_lean_deg=u(0.0, 10.0),
        torso_sway_deg=u(0.5, 5.0),
        pelvis_yaw_deg=u(2.0, 10.0),
        bob_extra=u(0.0, 0.025),
        head_nod_deg=u(0.0, 6.0),
        arm_phase=u(-0.08, 0.08),
        lr_phase=u(-0.04, 0.04),
        lr_amp=u(-0.15, 0.15),
        arm_abduction_deg=u(3.0, 14.0),
        toe_out_deg=u(0.0, 16.0),
        step_width=u(0.04, 0.16),
    )


def _bump(p: np.ndarray, centre: float, width: float) -> np.ndarray:
    """A periodic Gaussian bump over the gait cycle: joint-angle curves are sums of these."""
    d = (p - centre + 0.5) % 1.0 - 0.5
    return np.exp(-0.5 * (d / width) ** 2)


def _rot_z(points: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate (T, 3) vectors about z by (T,) angles."""
    c, s = np.cos(angle), np.sin(angle)
    x, y = points[:, 0], points[:, 1]
    return np.stack([c * x - s * y, s * x + c * y, points[:, 2]], axis=1)


def _leg(g: GaitParams, p: np.ndarray, side: float, hip_amp: float) -> dict[str, np.ndarray]:
    """One leg relative to its hip joint: thigh, shank, foot from hip/knee/foot-pitch curves."""
    deg = np.radians
    leg_len = g.leg_ratio * g.height - 0.045 * g.height
    thigh, shank = g.thigh_ratio * leg_len, (1 - g.thigh_ratio) * leg_len
    foot = 0.15 * g.height
    hip = hip_amp * np.cos(2 * np.pi * p) + deg(4.0)
    knee = (deg(g.knee_stance_deg) * _bump(p, 0.12, 0.06)
            + deg(g.knee_swing_deg) * _bump(p, 0.72, 0.10) + deg(3.0))
    pitch = (deg(g.toe_off_deg) * _bump(p, 0.60, 0.06)
             - deg(12.0) * _bump(p, 0.0, 0.05) - deg(8.0) * _bump(p, 0.85, 0.08))
    t = len(p)
    spread = side * (g.step_width - 0.6 * g.hip_width) / 2
    knee_v = np.stack([thigh * np.sin(hip), np.full(t, spread / 2), -thigh * np.cos(hip)], 1)
    shin_a = hip - knee
    ankle_v = knee_v + np.stack([shank * np.sin(shin_a), np.full(t, spread / 2),
                                 -shank * np.cos(shin_a)], 1)
    out = np.radians(g.toe_out_deg) * side
    fdir = np.stack([np.cos(pitch) * np.cos(out), np.cos(pitch) * np.sin(out), -np.sin(pitch)], 1)
    toe_v = ankle_v + 0.78 * foot * fdir
    heel_v = ankle_v - 0.22 * foot * fdir + np.array([0.0, 0.0, -0.03 * g.height])
    return {"knee": knee_v, "ankle": ankle_v, "toe": toe_v, "heel": heel_v}


def pose_sequence(g: GaitParams, phase: np.ndarray) -> np.ndarray:
    """Joint positions (T, len(JOINTS), 3) in the walker frame for gait phases (T,) in cycles.

    The pelvis height is set each frame so that the lowest point of either foot touches the
    floor: the body's up-and-down bob comes out of the leg geometry, as in real walking.
    """
    deg = np.radians
    p = np.asarray(phase, dtype=np.float64)
    t = len(p)
    two_pi_p = 2 * np.pi * p
    leg_len = g.leg_ratio * g.height - 0.045 * g.height
    base_amp = np.arcsin(np.clip(g.stride_length / (4 * leg_len), 0.05, 0.7))
    legs = {
        "r": _leg(g, p, -1.0, base_amp * (1 + g.lr_amp / 2)),
        "l": _leg(g, p + 0.5 + g.lr_phase, 1.0, base_amp * (1 - g.lr_amp / 2)),
    }
    yaw = deg(g.pelvis_yaw_deg) * np.sin(two_pi_p)
    hip_off = {s: _rot_z(np.tile([0.0, sgn * 0.3 * g.hip_width, 0.0], (t, 1)), yaw)
               for s, sgn in (("r", -1.0), ("l", 1.0))}
    lowest = np.minimum.reduce([hip_off[s][:, 2] + legs[s][k][:, 2]
                                for s in "rl" for k in ("heel", "toe")])
    pelvis = np.zeros((t, 3))
    pelvis[:, 1] = -0.012 * g.torso_sway_deg * np.sin(two_pi_p)
    pelvis[:, 2] = -lowest + g.bob_extra * np.cos(2 * two_pi_p)

    joints = np.zeros((t, len(JOINTS), 3))
    joints[:, J["pelvis"]] = pelvis
    for s in "rl":
        hip = pelvis + hip_off[s]
        joints[:, J[f"hip_{s}"]] = hip
        for k in ("knee", "ankle", "heel", "toe"):
            joints[:, J[f"{k}_{s}"]] = hip + legs[s][k]

    lean, roll = deg(g.torso_lean_deg), deg(g.torso_sway_deg) * np.sin(two_pi_p)
    spine = np.stack([np.full(t, np.sin(lean)), -np.sin(roll), np.cos(lean) * np.cos(roll)], 1)
    torso_len = g.torso_ratio * g.height
    chest = pelvis + torso_len * spine
    joints[:, J["chest"]] = chest
    for s, sgn in (("r", -1.0), ("l", 1.0)):
        joints[:, J[f"waist_{s}"]] = pelvis + 0.10 * torso_len * spine + _rot_z(
            np.tile([0.0, sgn * (g.hip_width / 2 - g.torso_depth / 2), 0.0], (t, 1)), yaw)
        shoulder = chest - 0.04 * g.height * spine + _rot_z(
            np.tile([0.0, sgn * (g.shoulder_width / 2 - 0.03 * g.height), 0.0], (t, 1)), -0.7 * yaw)
        joints[:, J[f"shoulder_{s}"]] = shoulder
        _arm(g, joints, s, sgn, two_pi_p, shoulder)

    neck_len = max(g.height - (g.leg_ratio + g.torso_ratio) * g.height
                   - 2 * g.head_ratio * g.height, 0.02 * g.height)
    neck = chest + neck_len * spine
    nod = deg(g.head_nod_deg) * np.sin(2 * two_pi_p)
    head_r = g.head_ratio * g.height
    head_dir = np.stack([np.sin(lean + nod) * 0.5, -np.sin(roll), np.ones(t)], 1)
    head_dir /= np.linalg.norm(head_dir, axis=1, keepdims=True)
    joints[:, J["neck"]] = neck
    joints[:, J["head"]] = neck + head_r * head_dir
    return joints


def _arm(g: GaitParams, joints: np.ndarray, s: str, sgn: float, two_pi_p: np.ndarray,
         shoulder: np.ndarray) -> None:
    """Arms swing against the same-side leg; the elbow bends more as the arm swings forward."""
    deg = np.radians
    arm_len = g.arm_ratio * g.height
    upper, fore, hand = 0.45 * arm_len, 0.35 * arm_len, 0.20 * arm_len
    leg_phase = two_pi_p if s == "r" else two_pi_p + np.pi * (1 + 2 * g.lr_phase)
    swing = -deg(g.arm_swing_deg) * np.cos(leg_phase + 2 * np.pi * g.arm_phase) - deg(2.0)
    elbow = deg(g.elbow_flex_deg) + 0.4 * np.maximum(swing, 0.0)
    abd = deg(g.arm_abduction_deg)

    def limb(angle: np.ndarray, length: float) -> np.ndarray:
        return length * np.stack([np.sin(angle) * np.cos(abd),
                                  np.full_like(angle, sgn * np.sin(abd)),
                                  -np.cos(angle) * np.cos(abd)], 1)

    elbow_pt = shoulder + limb(swing, upper)
    wrist = elbow_pt + limb(swing + elbow, fore)
    joints[:, J[f"elbow_{s}"]] = elbow_pt
    joints[:, J[f"wrist_{s}"]] = wrist
    joints[:, J[f"hand_{s}"]] = wrist + limb(swing + elbow, 0.6 * hand)
