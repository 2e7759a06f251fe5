"""The mannequin's kinematic skeleton: body proportions, joint angles per action, forward kinematics.

Coordinates are 3-D in units of the person's standing height: x to the person's left (image right when the
person faces the camera), y up, z towards the camera. Each limb segment's direction is given by two absolute
angles in the pelvis frame, ``abduction`` (outwards in the frontal plane, degrees) and ``flexion`` (forwards, towards
+z, degrees); both zero is "hanging straight down". The torso leans forward by ``torso_flexion`` and sideways by
``torso_side``. The whole body is then turned by ``yaw`` about the vertical axis and later rolled in the image plane.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

ACTIONS = (
    "standing", "walking", "running", "waving", "arms_raised", "sitting",
    "lying_back", "lying_side", "jumping", "dancing", "bending",
)
"""Every action the world can render. ``lying_back`` and ``lying_side`` are the two lying variants."""

LIMBS = ("arm_l", "arm_r", "leg_l", "leg_r")

# Anatomical limits of the world (degrees): the angle between consecutive segments. A render that exceeds them
# is an anomaly (see humantune.data.mannequin.anomalies); the anomaly metric reads the same numbers.
MAX_ELBOW_FLEXION = 155.0
MAX_KNEE_FLEXION = 160.0


@dataclass
class BodyShape:
    """Segment lengths and widths as fractions of standing height (adult defaults follow anthropometric tables)."""

    head_radius: float = 0.062
    neck: float = 0.035
    torso: float = 0.285           # hip-joint centre line to shoulder line
    shoulder_half: float = 0.105   # half the distance between the shoulder joints
    hip_half: float = 0.062        # half the distance between the hip joints
    upper_arm: float = 0.172
    forearm: float = 0.150
    hand: float = 0.085
    thigh: float = 0.245
    shin: float = 0.245
    ankle_height: float = 0.039
    foot: float = 0.13
    limb_width: float = 0.052      # upper-arm diameter; other limbs scale from it
    torso_depth_ratio: float = 0.62  # chest depth / chest width, for the projected torso width when turned


def sample_body_shape(rng: np.random.Generator, child: bool, build: str) -> BodyShape:
    """Sample proportions: children have bigger heads and shorter legs; build scales widths."""
    shape = BodyShape()
    if child:
        k = rng.uniform(0.0, 1.0)  # 0 = toddler-ish, 1 = almost teen
        shape = replace(
            shape,
            head_radius=0.085 - 0.018 * k,
            torso=0.27 + 0.01 * k,
            shoulder_half=0.095,
            hip_half=0.058,
            upper_arm=0.155 + 0.012 * k,
            forearm=0.13 + 0.015 * k,
            hand=0.075,
            thigh=0.215 + 0.025 * k,
            shin=0.205 + 0.03 * k,
            neck=0.025,
        )
    jitter = lambda v, s=0.04: v * (1.0 + rng.uniform(-s, s))  # noqa: E731 - tiny local helper
    width = {"slim": 0.88, "average": 1.0, "broad": 1.14}[build]
    return replace(
        shape,
        shoulder_half=jitter(shape.shoulder_half) * (0.94 + 0.06 * width),
        hip_half=jitter(shape.hip_half) * width,
        upper_arm=jitter(shape.upper_arm),
        forearm=jitter(shape.forearm),
        thigh=jitter(shape.thigh),
        shin=jitter(shape.shin),
        limb_width=jitter(shape.limb_width, 0.08) * width,
    )


@dataclass
class Segment:
    """Absolute direction of one limb segment in the pelvis frame (degrees)."""

    abduction: float = 0.0
    flexion: float = 0.0


@dataclass
class Pose:
    """Joint angles of one person. Limb segments: ``upper`` (upper arm / thigh) and ``lower`` (forearm / shin)."""

    upper: dict[str, Segment] = field(default_factory=lambda: {k: Segment() for k in LIMBS})
    lower: dict[str, Segment] = field(default_factory=lambda: {k: Segment() for k in LIMBS})
    torso_flexion: float = 0.0
    torso_side: float = 0.0
    head_yaw: float = 0.0
    head_pitch: float = 0.0
    head_roll: float = 0.0
    yaw: float = 0.0               # whole body about the vertical axis; 0 = facing the camera
    roll: float = 0.0              # in-plane image rotation applied after projection (lying uses ±90)
    lift: float = 0.0              # feet above the ground (jumping)
    support: str = "feet"          # what touches the ground: feet | seat | ground_seat | lying


def segment_direction(seg: Segment, side: float) -> np.ndarray:
    """Unit vector of a segment: start hanging down (0,-1,0), rotate outwards by abduction, then forwards by flexion.

    ``side`` is +1 for the person's left (x>0) and −1 for the right. Result: (s·sin a, −cos a·cos f, cos a·sin f)
    with a the abduction and f the flexion, so flexion 180° with abduction 0° points straight up.
    """
    a, f = np.deg2rad(seg.abduction), np.deg2rad(seg.flexion)
    return np.array([side * np.sin(a), -np.cos(a) * np.cos(f), np.cos(a) * np.sin(f)])


def _rot_x(deg: float) -> np.ndarray:
    """Rotation about x; positive tips +y towards +z (forward lean of an upright vector)."""
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(deg: float) -> np.ndarray:
    """Rotation about the vertical axis; positive turns the person's front (+z) towards image right (+x)."""
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(deg: float) -> np.ndarray:
    """Rotation about the viewing axis; positive tips +y towards +x."""
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])


JOINTS = (
    "pelvis", "neck", "head", "shoulder_l", "shoulder_r", "elbow_l", "elbow_r", "wrist_l", "wrist_r",
    "hand_l", "hand_r", "hip_l", "hip_r", "knee_l", "knee_r", "ankle_l", "ankle_r", "toe_l", "toe_r",
    "heel_l", "heel_r", "nose", "eye_l", "eye_r", "ear_l", "ear_r", "crown",
)


def forward_kinematics(shape: BodyShape, pose: Pose) -> dict[str, np.ndarray]:
    """3-D joint positions (height units) with the lowest supporting point on the ground plane y = 0.

    Also returns the head frame under key ``head_axes`` (3×3: columns right, up, forward) and the body forward
    vector under ``forward``.
    """
    j: dict[str, np.ndarray] = {}
    pelvis = np.zeros(3)
    torso_rot = _rot_z(pose.torso_side) @ _rot_x(pose.torso_flexion)
    up_t = torso_rot @ np.array([0.0, 1.0, 0.0])
    right_t = torso_rot @ np.array([1.0, 0.0, 0.0])
    j["pelvis"] = pelvis
    j["neck"] = pelvis + up_t * shape.torso
    j["shoulder_l"] = j["neck"] + right_t * shape.shoulder_half - up_t * 0.012
    j["shoulder_r"] = j["neck"] - right_t * shape.shoulder_half - up_t * 0.012
    j["hip_l"] = pelvis + np.array([shape.hip_half, 0.0, 0.0])
    j["hip_r"] = pelvis - np.array([shape.hip_half, 0.0, 0.0])

    head_rot = torso_rot @ _rot_y(pose.head_yaw) @ _rot_x(-pose.head_pitch) @ _rot_z(pose.head_roll)
    r = shape.head_radius
    head = j["neck"] + up_t * (shape.neck + r * 0.95)
    j["head"] = head
    local = {
        "nose": (0.0, -0.12, 0.98), "eye_l": (0.36, 0.16, 0.84), "eye_r": (-0.36, 0.16, 0.84),
        "ear_l": (0.97, 0.02, 0.05), "ear_r": (-0.97, 0.02, 0.05), "crown": (0.0, 1.12, -0.05),
    }
    for name, (x, y, z) in local.items():
        j[name] = head + head_rot @ (np.array([x, y, z]) * r)

    for limb, side in (("arm_l", 1.0), ("arm_r", -1.0), ("leg_l", 1.0), ("leg_r", -1.0)):
        s = "l" if side > 0 else "r"
        d_up = segment_direction(pose.upper[limb], side)
        d_lo = segment_direction(pose.lower[limb], side)
        if limb.startswith("arm"):
            j[f"elbow_{s}"] = j[f"shoulder_{s}"] + d_up * shape.upper_arm
            j[f"wrist_{s}"] = j[f"elbow_{s}"] + d_lo * shape.forearm
            j[f"hand_{s}"] = j[f"wrist_{s}"] + d_lo * shape.hand
        else:
            j[f"knee_{s}"] = j[f"hip_{s}"] + d_up * shape.thigh
            j[f"ankle_{s}"] = j[f"knee_{s}"] + d_lo * shape.shin
            # The foot points forward, tilted with the shin (plantar flexion follows the shin's swing).
            tilt = _rot_x(pose.lower[limb].flexion * 0.7)
            j[f"toe_{s}"] = j[f"ankle_{s}"] + tilt @ np.array([0.0, -shape.ankle_height * 0.9, shape.foot * 0.8])
            j[f"heel_{s}"] = j[f"ankle_{s}"] + tilt @ np.array([0.0, -shape.ankle_height * 0.9, -shape.foot * 0.22])

    yaw = _rot_y(pose.yaw)
    for k in list(j):
        j[k] = yaw @ j[k]
    head_axes = yaw @ head_rot
    forward = yaw @ np.array([0.0, 0.0, 1.0])

    # Put the lowest supporting point on the ground.
    if pose.support == "feet":
        ground_pts = [j["toe_l"], j["toe_r"], j["heel_l"], j["heel_r"]]
    elif pose.support == "seat":
        ground_pts = [j["toe_l"], j["toe_r"], j["heel_l"], j["heel_r"]]
    else:  # ground_seat / lying: the lowest point of the body
        ground_pts = list(j.values())
    low = min(p[1] for p in ground_pts)
    shift = np.array([0.0, -low + pose.lift, 0.0])
    if pose.support == "ground_seat":
        shift[1] = -min(j["hip_l"][1], j["hip_r"][1], low) + shape.limb_width * 0.9
    for k in j:
        j[k] = j[k] + shift
    j["head_axes"] = head_axes
    j["forward"] = forward
    return j


def elbow_angle(pose: Pose, limb: str) -> float:
    """Flexion at the elbow / knee: the angle (degrees) between the upper and lower segment directions."""
    side = 1.0 if limb.endswith("_l") else -1.0
    a = segment_direction(pose.upper[limb], side)
    b = segment_direction(pose.lower[limb], side)
    return float(np.degrees(np.arccos(np.clip(a @ b, -1.0, 1.0))))


# --- pose samplers per action -----------------------------------------------------------------------------------


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _relaxed_arm(rng: np.random.Generator) -> tuple[Segment, Segment]:
    up = Segment(_u(rng, 4, 18), _u(rng, -10, 12))
    return up, Segment(up.abduction + _u(rng, -4, 6), up.flexion + _u(rng, 0, 30))


def _standing_leg(rng: np.random.Generator) -> tuple[Segment, Segment]:
    up = Segment(_u(rng, 0, 7), _u(rng, -4, 6))
    return up, Segment(up.abduction + _u(rng, -3, 2), up.flexion - _u(rng, 0, 6))


def _facing_yaw(rng: np.random.Generator, frontal: float = 0.75) -> float:
    """Mostly facing the camera, sometimes three-quarter or profile."""
    if rng.uniform() < frontal:
        return _u(rng, -35, 35)
    return float(rng.choice([-1, 1]) * _u(rng, 35, 80))


def sample_pose(action: str, rng: np.random.Generator) -> Pose:
    """Sample joint angles for ``action`` within the world's anatomical limits."""
    p = Pose()
    for limb in ("arm_l", "arm_r"):
        p.upper[limb], p.lower[limb] = _relaxed_arm(rng)
    for limb in ("leg_l", "leg_r"):
        p.upper[limb], p.lower[limb] = _standing_leg(rng)
    p.head_yaw = _u(rng, -20, 20)
    p.head_pitch = _u(rng, -8, 8)
    p.torso_side = _u(rng, -3, 3)
    p.torso_flexion = _u(rng, -3, 4)
    p.yaw = _facing_yaw(rng)
    p.roll = _u(rng, -6, 6)
    side = "l" if rng.uniform() < 0.5 else "r"
    other = "r" if side == "l" else "l"

    if action == "standing":
        if rng.uniform() < 0.3:  # hands on hips
            for s in ("l", "r"):
                p.upper[f"arm_{s}"] = Segment(_u(rng, 35, 50), _u(rng, -25, -10))
                p.lower[f"arm_{s}"] = Segment(_u(rng, -60, -40), _u(rng, 0, 20))
    elif action in ("walking", "running"):
        run = action == "running"
        phase = _u(rng, 0, 2 * np.pi)
        amp = _u(rng, 38, 55) if run else _u(rng, 18, 30)
        swing = np.sin(phase)
        p.yaw = float(rng.choice([-1, 1]) * _u(rng, 25, 80)) if rng.uniform() < 0.6 else _u(rng, -25, 25)
        p.torso_flexion = _u(rng, 8, 16) if run else _u(rng, 0, 5)
        for s, sign in (("l", 1.0), ("r", -1.0)):
            hip = sign * amp * swing
            knee = (_u(rng, 50, 95) if run else _u(rng, 8, 35)) * (0.4 + 0.6 * max(0.0, -sign * swing))
            p.upper[f"leg_{s}"] = Segment(_u(rng, 0, 5), hip)
            p.lower[f"leg_{s}"] = Segment(_u(rng, 0, 4), hip - knee)
            arm = -sign * amp * swing * (0.9 if run else 0.7)
            p.upper[f"arm_{s}"] = Segment(_u(rng, 6, 16), arm)
            p.lower[f"arm_{s}"] = Segment(_u(rng, 4, 14), arm + (_u(rng, 70, 95) if run else _u(rng, 10, 35)))
        p.lift = _u(rng, 0.0, 0.05) if run else 0.0
    elif action == "waving":
        p.upper[f"arm_{side}"] = Segment(_u(rng, 65, 105), _u(rng, -5, 25))
        p.lower[f"arm_{side}"] = Segment(_u(rng, 150, 185), _u(rng, -10, 25))
        if rng.uniform() < 0.25:  # both hands
            p.upper[f"arm_{other}"] = Segment(_u(rng, 65, 105), _u(rng, -5, 25))
            p.lower[f"arm_{other}"] = Segment(_u(rng, 150, 185), _u(rng, -10, 25))
        p.yaw = _u(rng, -30, 30)
    elif action == "arms_raised":
        for s in ("l", "r"):
            p.upper[f"arm_{s}"] = Segment(_u(rng, 135, 170), _u(rng, -5, 15))
            p.lower[f"arm_{s}"] = Segment(p.upper[f"arm_{s}"].abduction + _u(rng, -10, 20), _u(rng, -5, 20))
        p.yaw = _u(rng, -30, 30)
        p.head_pitch = _u(rng, 0, 15)
    elif action == "sitting":
        p.yaw = float(rng.choice([-1, 1]) * _u(rng, 20, 65))
        if rng.uniform() < 0.5:  # on a seat: thighs forward, shins down
            p.support = "seat"
            for s in ("l", "r"):
                p.upper[f"leg_{s}"] = Segment(_u(rng, 4, 14), _u(rng, 78, 95))
                p.lower[f"leg_{s}"] = Segment(_u(rng, 0, 8), _u(rng, -10, 15))
        else:  # on the ground: knees up
            p.support = "ground_seat"
            for s in ("l", "r"):
                p.upper[f"leg_{s}"] = Segment(_u(rng, 6, 20), _u(rng, 100, 135))
                p.lower[f"leg_{s}"] = Segment(_u(rng, 0, 10), _u(rng, 15, 45))
        for s in ("l", "r"):
            p.upper[f"arm_{s}"] = Segment(_u(rng, 8, 20), _u(rng, 15, 45))
            p.lower[f"arm_{s}"] = Segment(_u(rng, 0, 12), _u(rng, 55, 90))
        p.torso_flexion = _u(rng, -5, 12)
    elif action == "lying_back":
        p.support = "lying"
        p.yaw = _u(rng, -20, 20)
        p.roll = float(rng.choice([-1, 1]) * _u(rng, 80, 100))
        p.head_pitch = _u(rng, -5, 10)
        if rng.uniform() < 0.35:  # hands behind the head / arms up
            for s in ("l", "r"):
                p.upper[f"arm_{s}"] = Segment(_u(rng, 140, 170), _u(rng, -5, 5))
                p.lower[f"arm_{s}"] = Segment(p.upper[f"arm_{s}"].abduction + _u(rng, 0, 20), _u(rng, -5, 5))
        if rng.uniform() < 0.4:  # one knee up
            p.upper[f"leg_{side}"] = Segment(_u(rng, 5, 25), _u(rng, 20, 50))
            p.lower[f"leg_{side}"] = Segment(_u(rng, -5, 10), p.upper[f"leg_{side}"].flexion - _u(rng, 40, 80))
    elif action == "lying_side":
        p.support = "lying"
        p.yaw = float(rng.choice([-1, 1]) * _u(rng, 65, 95))
        p.roll = float(rng.choice([-1, 1]) * _u(rng, 80, 100))
        for s in ("l", "r"):
            hip = _u(rng, 15, 70)
            p.upper[f"leg_{s}"] = Segment(_u(rng, 0, 8), hip)
            p.lower[f"leg_{s}"] = Segment(_u(rng, 0, 6), hip - _u(rng, 20, 90))
            p.upper[f"arm_{s}"] = Segment(_u(rng, 0, 15), _u(rng, 40, 95))
            p.lower[f"arm_{s}"] = Segment(_u(rng, 0, 10), p.upper[f"arm_{s}"].flexion + _u(rng, 0, 60))
    elif action == "jumping":
        p.lift = _u(rng, 0.06, 0.16)
        p.yaw = _u(rng, -30, 30)
        if rng.uniform() < 0.5:  # star jump
            for s in ("l", "r"):
                p.upper[f"arm_{s}"] = Segment(_u(rng, 120, 160), _u(rng, -5, 10))
                p.lower[f"arm_{s}"] = Segment(p.upper[f"arm_{s}"].abduction + _u(rng, -10, 15), _u(rng, -5, 10))
                p.upper[f"leg_{s}"] = Segment(_u(rng, 18, 32), _u(rng, -5, 8))
                p.lower[f"leg_{s}"] = Segment(p.upper[f"leg_{s}"].abduction + _u(rng, -4, 4), _u(rng, -10, 0))
        else:  # tuck
            for s in ("l", "r"):
                p.upper[f"arm_{s}"] = Segment(_u(rng, 100, 150), _u(rng, 0, 30))
                p.lower[f"arm_{s}"] = Segment(p.upper[f"arm_{s}"].abduction + _u(rng, 10, 40), _u(rng, 0, 20))
                hip = _u(rng, 30, 70)
                p.upper[f"leg_{s}"] = Segment(_u(rng, 4, 14), hip)
                p.lower[f"leg_{s}"] = Segment(_u(rng, 0, 8), hip - _u(rng, 60, 110))
    elif action == "dancing":
        p.yaw = _u(rng, -45, 45)
        p.torso_side = _u(rng, -14, 14)
        for s in ("l", "r"):
            up = Segment(_u(rng, 10, 165), _u(rng, -20, 70))
            p.upper[f"arm_{s}"] = up
            p.lower[f"arm_{s}"] = Segment(up.abduction + _u(rng, -40, 60), up.flexion + _u(rng, 0, 70))
        hip = _u(rng, 15, 60)
        p.upper[f"leg_{side}"] = Segment(_u(rng, 5, 35), hip)
        p.lower[f"leg_{side}"] = Segment(_u(rng, 0, 20), hip - _u(rng, 20, 90))
    elif action == "bending":
        p.yaw = float(rng.choice([-1, 1]) * _u(rng, 55, 90))
        p.torso_flexion = _u(rng, 45, 85)
        for s in ("l", "r"):
            p.upper[f"arm_{s}"] = Segment(_u(rng, 0, 12), _u(rng, 40, 80))
            p.lower[f"arm_{s}"] = Segment(_u(rng, 0, 10), p.upper[f"arm_{s}"].flexion + _u(rng, 0, 25))
            p.upper[f"leg_{s}"] = Segment(_u(rng, 2, 8), _u(rng, -20, -8))
            p.lower[f"leg_{s}"] = Segment(_u(rng, 0, 4), p.upper[f"leg_{s}"].flexion - _u(rng, 0, 8))
        p.head_pitch = _u(rng, -30, -5)
    else:
        raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    return p
