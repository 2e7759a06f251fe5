"""Deliberately broken anatomy, with labels: negative examples for anomaly metrics.

Types (``Anomaly.kind``) and what is drawn:

- ``extra_limb``: a third arm (from a shoulder) or leg (from a hip), at a different angle from the real one.
- ``missing_limb``: one arm or leg is not drawn; its elbow/wrist or knee/ankle keypoints become v = 0.
- ``bent_wrong_way``: an elbow or knee bent against the joint (sideways or hyper-extended by 60–110°).
- ``fused_legs``: both legs drawn as one merged leg (hip joints collapsed onto each other).
- ``detached_part``: the head or a forearm drawn separated from its joint by a visible gap.

Pose-level anomalies (``bent_wrong_way``, ``fused_legs``) change the skeleton before projection, so the keypoints
follow what is drawn. Part-level anomalies change the drawn parts after projection and update the keypoints of what
they move or remove.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from humantune.data.mannequin.body import BodyShape, Pose, Segment
from humantune.data.mannequin.render import COCO_FROM_JOINT, Part, ProjectedPerson

ANOMALY_TYPES = ("extra_limb", "missing_limb", "bent_wrong_way", "fused_legs", "detached_part")


@dataclass
class Anomaly:
    kind: str
    part: str                # arm_l | arm_r | leg_l | leg_r | legs | head
    angle: float = 0.0       # degrees; meaning depends on kind
    offset: float = 0.0      # fraction of the head radius / limb width, for detached parts

    def to_json(self) -> dict:
        return {"type": self.kind, "part": self.part}


def sample_anomaly(kind: str, rng: np.random.Generator) -> Anomaly:
    limb = str(rng.choice(("arm_l", "arm_r", "leg_l", "leg_r")))
    if kind == "fused_legs":
        return Anomaly(kind, "legs")
    if kind == "detached_part":
        part = str(rng.choice(("head", "arm_l", "arm_r")))
        return Anomaly(kind, part, angle=float(rng.uniform(0, 360)), offset=float(rng.uniform(0.9, 1.5)))
    if kind == "bent_wrong_way":
        return Anomaly(kind, limb, angle=float(rng.choice([-1, 1]) * rng.uniform(60, 110)))
    if kind in ("extra_limb", "missing_limb"):
        return Anomaly(kind, limb, angle=float(rng.choice([-1, 1]) * rng.uniform(35, 90)))
    raise ValueError(f"unknown anomaly type {kind!r}; expected one of {', '.join(ANOMALY_TYPES)}")


def apply_to_skeleton(anomaly: Anomaly, shape: BodyShape, pose: Pose) -> tuple[BodyShape, Pose]:
    """Pose-level anomalies: return a changed (shape, pose); others return them unchanged."""
    if anomaly.kind == "bent_wrong_way":
        up = pose.upper[anomaly.part]
        if abs(pose.yaw) > 45:  # seen from the side: hyper-extension in the sagittal plane shows
            sign = 1.0 if anomaly.part.startswith("leg") else -1.0
            pose.lower[anomaly.part] = Segment(up.abduction, up.flexion + sign * abs(anomaly.angle))
        else:                   # seen from the front: a sideways kink shows
            pose.lower[anomaly.part] = Segment(up.abduction + anomaly.angle, up.flexion)
    elif anomaly.kind == "fused_legs":
        mean_up = Segment(0.0, (pose.upper["leg_l"].flexion + pose.upper["leg_r"].flexion) / 2)
        mean_lo = Segment(0.0, (pose.lower["leg_l"].flexion + pose.lower["leg_r"].flexion) / 2)
        for leg in ("leg_l", "leg_r"):
            pose.upper[leg], pose.lower[leg] = mean_up, mean_lo
        shape = replace(shape, hip_half=shape.limb_width * 0.35)
    return shape, pose


_LIMB_JOINTS = {"arm": ("shoulder", "elbow", "wrist", "hand"), "leg": ("hip", "knee", "ankle", "toe", "heel")}


def _limb_parts(person: ProjectedPerson, limb: str) -> list[int]:
    kind, side = limb.split("_")
    names = {f"{j}_{side}" for j in _LIMB_JOINTS[kind][1:]}
    return [i for i, p in enumerate(person.parts) if p.kind == "capsule" and names & set(p.owners)]


def apply_to_parts(anomaly: Anomaly, person: ProjectedPerson) -> None:
    """Part-level anomalies: edit ``person.parts`` and ``person.keypoints`` in place."""
    j = person.joints2d
    if anomaly.kind == "missing_limb":
        drop = set(_limb_parts(person, anomaly.part))
        person.parts[:] = [p for i, p in enumerate(person.parts) if i not in drop]
        kind, side = anomaly.part.split("_")
        for joint in _LIMB_JOINTS[kind][1:3]:
            person.keypoints[COCO_FROM_JOINT.index(f"{joint}_{side}")] = 0
    elif anomaly.kind == "extra_limb":
        # A rigid copy of the whole limb, rotated about its root joint (shoulder or hip).
        kind, side = anomaly.part.split("_")
        root = j[f"{_LIMB_JOINTS[kind][0]}_{side}"]
        t = np.deg2rad(anomaly.angle)
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        for i in _limb_parts(person, anomaly.part):
            p = person.parts[i]
            pts = root + (p.points - root) @ rot.T
            person.parts.append(Part("capsule", p.depth + 0.002, p.color, pts, p.width, ("extra",)))
    elif anomaly.kind == "detached_part":
        t = np.deg2rad(anomaly.angle)
        direction = np.array([np.cos(t), np.sin(t)])
        if anomaly.part == "head":
            head = next(p for p in person.parts if p.kind == "head")
            shift = direction * head.width * (1.0 + anomaly.offset) * 0.8
            shift[1] = -abs(shift[1]) - head.width * 0.6  # away from the neck, upwards
            head.points = head.points + shift
            head.extra["j2"] = {k: v + shift for k, v in head.extra["j2"].items()}
            for name in ("nose", "eye_l", "eye_r", "ear_l", "ear_r"):
                i = COCO_FROM_JOINT.index(name)
                if person.keypoints[i, 2] > 0:
                    person.keypoints[i, :2] += shift
        else:
            side = anomaly.part[-1]
            el, wr = f"elbow_{side}", f"wrist_{side}"
            fore = [p for p in person.parts if p.kind == "capsule" and (set(p.owners) & {wr} or p.owners == (el, wr))]
            width = max(p.width for p in fore)
            axis = j[wr] - j[el]
            axis = axis / (np.linalg.norm(axis) + 1e-9)
            shift = axis * width * (1.4 + anomaly.offset)
            for p in fore:
                p.points = p.points + shift
            i = COCO_FROM_JOINT.index(wr)
            if person.keypoints[i, 2] > 0:
                person.keypoints[i, :2] += shift
