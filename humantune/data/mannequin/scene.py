"""One mannequin-world sample: sample people, place them, draw the scene, and read off exact ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from humantune.data.mannequin import anomalies as anomaly_mod
from humantune.data.mannequin.appearance import (
    BACKGROUNDS, Appearance, compose_caption, sample_appearance,
)
from humantune.data.mannequin.body import BodyShape, Pose, sample_body_shape, sample_pose
from humantune.data.mannequin.background import render_background
from humantune.data.mannequin.render import (
    PART_BITS, Canvas, Part, Placement, ProjectedPerson, build_parts, draw_people, keypoint_visibility, rescale,
)


@dataclass
class PersonSpec:
    """Everything that defines one person in a scene before drawing."""

    action: str
    shape: BodyShape
    pose: Pose
    look: Appearance
    anomaly: anomaly_mod.Anomaly | None = None


@dataclass
class Scene:
    """A rendered sample with exact ground truth."""

    image: np.ndarray                   # (H, W, 3) uint8 RGB
    mask: np.ndarray                    # (H, W) uint8, 0 background, k = person k (1-based), topmost person wins
    keypoints: np.ndarray               # (P, 17, 3) COCO [x, y, v]
    bboxes: np.ndarray                  # (P, 4) xywh of each person's visible mask
    areas: np.ndarray                   # (P,) visible mask pixels (COCO segment-area convention)
    caption: str
    actions: list[str]
    background: str
    people: list[PersonSpec] = field(default_factory=list)

    def attributes(self) -> dict:
        return {
            "background": self.background,
            "people": [
                {"action": p.action, **p.look.to_json(), "anomaly": p.anomaly.to_json() if p.anomaly else None}
                for p in self.people
            ],
        }


def _bounds(person: ProjectedPerson) -> tuple[float, float, float, float]:
    pts = [p for part in person.parts for p in part.points]
    pts = np.array(pts)
    pad = max(part.width for part in person.parts)
    return pts[:, 0].min() - pad, pts[:, 1].min() - pad, pts[:, 0].max() + pad, pts[:, 1].max() + pad


def place(spec: PersonSpec, rng: np.random.Generator, size: tuple[int, int], extent: float,
          truncate_prob: float, x_range: tuple[float, float] = (0.0, 1.0)) -> ProjectedPerson:
    """Scale the person so the larger bbox side is ``extent`` of the image, then put it at a random position."""
    w, h = size
    unit = build_parts(spec.shape, spec.pose, spec.look, Placement(1.0, (0.0, 0.0), spec.pose.roll))
    x0, y0, x1, y1 = _bounds(unit)
    bw, bh = x1 - x0, y1 - y0
    scale = extent * min(w, h) / max(bw, bh)
    bw, bh = bw * scale, bh * scale
    lo_x, hi_x = w * x_range[0], w * x_range[1]
    if rng.uniform() < truncate_prob:  # partly out of frame
        left = rng.uniform(lo_x - bw * 0.3, max(lo_x - bw * 0.3, hi_x - bw * 0.7))
        top = rng.uniform(-bh * 0.15, max(-bh * 0.15, h - bh * 0.75))
    else:
        left = rng.uniform(lo_x + 1, max(lo_x + 1, hi_x - bw - 1))
        top = rng.uniform(1, max(1.0, h - bh - 1))
    return rescale(unit, scale, (left - x0 * scale, top - y0 * scale))


def _seat(person: ProjectedPerson, spec: PersonSpec, rng: np.random.Generator) -> Part | None:
    """A box under a person sitting on a seat."""
    if spec.pose.support != "seat":
        return None
    j = person.joints2d
    hip = (j["hip_l"] + j["hip_r"]) / 2
    knee = (j["knee_l"] + j["knee_r"]) / 2
    ground = max(j["heel_l"][1], j["heel_r"][1])
    half = max(abs(knee[0] - hip[0]) * 0.9, spec.shape.limb_width * 2.0 * np.linalg.norm(j["neck"] - j["pelvis"]) / spec.shape.torso)
    x0, x1 = hip[0] - half * 0.9, hip[0] + half * 0.9
    top = hip[1] + spec.shape.limb_width * 0.6 * np.linalg.norm(j["neck"] - j["pelvis"]) / spec.shape.torso
    color = tuple(int(c) for c in rng.choice([(120, 80, 50), (90, 90, 100), (150, 110, 70)]))
    z = min(person.depth["hip_l"], person.depth["hip_r"]) - 0.05
    poly = np.array([[x0, top], [x1, top], [x1, ground], [x0, ground]])
    return Part("polygon", z, color, poly, owners=())


def horizon_for(people: list[PersonSpec], projected: list[ProjectedPerson], rng: np.random.Generator,
                height: int) -> float:
    """Horizon (fraction of the image height) above the people's support, so they stand or lie on the ground."""
    lows = [max(p.joints2d[k][1] for k in ("heel_l", "heel_r", "toe_l", "toe_r", "pelvis")) for p in projected]
    tops = [min(pt[1] for part in p.parts for pt in part.points) for p in projected]
    if any(s.pose.support == "lying" for s in people):
        horizon = min(tops) / height - rng.uniform(0.05, 0.3)
    else:
        horizon = (min(lows) - rng.uniform(0.2, 0.6) * (min(lows) - min(tops))) / height
    return float(np.clip(horizon, 0.0, 0.9))


def add_props(people: list[PersonSpec], projected: list[ProjectedPerson], rng: np.random.Generator) -> None:
    """Part-level anomalies and scene props (a seat under a sitting person)."""
    for person, spec in zip(projected, people):
        if spec.anomaly is not None:
            anomaly_mod.apply_to_parts(spec.anomaly, person)
        seat = _seat(person, spec, rng)
        if seat is not None:
            person.parts.append(seat)


def draw_scene(people: list[PersonSpec], projected: list[ProjectedPerson], background: str, bg: np.ndarray,
               supersample: int) -> Scene:
    """Draw placed people over a background image and read off mask, boxes, areas and visibility."""
    h, w = bg.shape[:2]
    canvas = Canvas(bg, supersample)
    draw_people(canvas, projected)
    image, ids = canvas.finish()
    keypoints = keypoint_visibility(projected, ids, (w, h))
    mask = np.zeros((h, w), np.uint8)
    bboxes, areas = [], []
    for pi, person in enumerate(projected):
        props = {pi * PART_BITS + q + 1 for q, part in enumerate(person.parts) if not part.owners}
        mine = (ids > 0) & ((ids - 1) // PART_BITS == pi)
        for pid in props:  # seats are scene props, not the person
            mine &= ids != pid
        mask[mine] = pi + 1
        ys, xs = np.nonzero(mine)
        if len(xs):
            bboxes.append([float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)])
        else:
            bboxes.append([0.0, 0.0, 0.0, 0.0])
        areas.append(float(len(xs)))
    caption = compose_caption([(s.look, s.action) for s in people], background)
    return Scene(
        image=image, mask=mask, keypoints=np.stack(keypoints).astype(np.float32),
        bboxes=np.array(bboxes, np.float32), areas=np.array(areas, np.float32), caption=caption,
        actions=[s.action for s in people], background=background, people=people,
    )


def render_scene(people: list[PersonSpec], background: str, rng: np.random.Generator, size: tuple[int, int],
                 supersample: int = 2, truncate_prob: float = 0.05) -> Scene:
    """Place and draw ``people`` on ``background``; return the image and its ground truth."""
    w, h = size
    n = len(people)
    for spec in people:
        if spec.anomaly is not None:
            spec.shape, spec.pose = anomaly_mod.apply_to_skeleton(spec.anomaly, spec.shape, spec.pose)
    projected = []
    for i, spec in enumerate(people):
        if n == 1:
            extent, x_range = rng.uniform(0.6, 0.92), (0.0, 1.0)
        else:
            extent, x_range = rng.uniform(0.42, 0.62), ((0.0, 0.62) if i == 0 else (0.38, 1.0))
        projected.append(place(spec, rng, size, extent, truncate_prob, x_range))
    add_props(people, projected, rng)
    bg = render_background(background, rng, h, w, horizon_for(people, projected, rng, h))
    return draw_scene(people, projected, background, bg, supersample)


def sample_person(action: str, rng: np.random.Generator) -> PersonSpec:
    look = sample_appearance(rng)
    shape = sample_body_shape(rng, look.child, look.build)
    return PersonSpec(action, shape, sample_pose(action, rng), look)


def sample_background(action: str, rng: np.random.Generator) -> str:
    if action.startswith("lying"):
        return str(rng.choice(("grass", "street", "beach", "indoor"), p=(0.4, 0.3, 0.2, 0.1)))
    return str(rng.choice(BACKGROUNDS, p=(0.28, 0.24, 0.2, 0.16, 0.12)))
