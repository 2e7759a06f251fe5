"""Drawing mannequins: projected skeleton → shaded capsule limbs, torso, head with face and hair, clothes.

Everything is drawn with OpenCV in depth order (far parts first) onto a supersampled canvas, then area-downsampled,
so edges are anti-aliased. A parallel integer canvas records which part of which person is on top at each pixel:
it gives the person mask and the keypoint visibility (a joint covered by another part is occluded, v = 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from humantune.data.mannequin.appearance import Appearance
from humantune.data.mannequin.body import BodyShape, Pose, forward_kinematics

_SHIFT = 4                      # OpenCV fixed-point bits for sub-pixel drawing
_ONE = 1 << _SHIFT

# COCO-17 keypoint → skeleton joint name
COCO_FROM_JOINT = (
    "nose", "eye_l", "eye_r", "ear_l", "ear_r", "shoulder_l", "shoulder_r", "elbow_l", "elbow_r",
    "wrist_l", "wrist_r", "hip_l", "hip_r", "knee_l", "knee_r", "ankle_l", "ankle_r",
)


@dataclass
class Placement:
    """Where a person goes in the image: pixels per height unit, the pixel position of the pelvis, and roll."""

    scale: float
    center: tuple[float, float]
    roll: float = 0.0


@dataclass
class Part:
    """One drawable piece of a person; ``owners`` are the joints it attaches to (for visibility)."""

    kind: str                   # capsule | polygon | head | ellipse
    depth: float
    color: tuple[int, int, int]
    points: np.ndarray          # (k, 2) image pixels
    width: float = 0.0
    owners: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)


@dataclass
class ProjectedPerson:
    joints2d: dict[str, np.ndarray]
    depth: dict[str, float]
    parts: list[Part]
    keypoints: np.ndarray       # (17, 3) before visibility; v=2 for all
    face_facing: dict[str, float]


def project(joints: dict[str, np.ndarray], placement: Placement) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Orthographic projection: u = cx + s·x', v = cy − s·y' where (x', y') is (x, y) rolled about the pelvis."""
    t = np.deg2rad(placement.roll)
    c, s = np.cos(t), np.sin(t)
    pelvis = joints["pelvis"]
    out, depth = {}, {}
    for k, p in joints.items():
        if k in ("head_axes", "forward"):
            continue
        x, y = p[0] - pelvis[0], p[1] - pelvis[1]
        xr, yr = c * x + s * y, -s * x + c * y
        out[k] = np.array([placement.center[0] + placement.scale * xr, placement.center[1] - placement.scale * yr])
        depth[k] = float(p[2])
    return out, depth


def _shade(rgb: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(min(255, max(0, int(c * f))) for c in rgb)  # type: ignore[return-value]


def build_parts(shape: BodyShape, pose: Pose, look: Appearance, placement: Placement) -> ProjectedPerson:
    """Project one person and list its drawable parts with colours from its clothes."""
    joints = forward_kinematics(shape, pose)
    j2, z = project(joints, placement)
    s = placement.scale
    w = shape.limb_width * s
    skin = look.skin
    top = look.rgb("top")
    bottom = look.rgb("bottom") if look.bottom else top
    parts: list[Part] = []

    def cap(a: str, b: str, width: float, color, owners=None, frac=(0.0, 1.0), dz=0.0):
        p0 = j2[a] + (j2[b] - j2[a]) * frac[0]
        p1 = j2[a] + (j2[b] - j2[a]) * frac[1]
        parts.append(Part("capsule", (z[a] + z[b]) / 2 + dz, color, np.stack([p0, p1]), width, owners or (a, b)))

    # Torso outline: its projected half-width depends on how far it is turned (ellipse of width × depth).
    fwd = joints["forward"]
    turn = abs(fwd[0])  # 0 facing the camera, 1 in profile
    chest_half = np.hypot(shape.shoulder_half * (1 - turn), shape.shoulder_half * shape.torso_depth_ratio * turn)
    chest_half = max(chest_half, shape.shoulder_half * 0.55) * s + w * 0.45
    hip_w = np.hypot(shape.hip_half * (1 - turn), shape.hip_half * 1.1 * turn) * s + w * 0.75
    sh_c = (j2["shoulder_l"] + j2["shoulder_r"]) / 2
    hip_c = (j2["hip_l"] + j2["hip_r"]) / 2
    axis = sh_c - hip_c
    axis_len = np.linalg.norm(axis) + 1e-6
    perp = np.array([-axis[1], axis[0]]) / axis_len
    waist_c = hip_c + axis * 0.45
    top_c = sh_c + axis / axis_len * w * 0.25
    torso_poly = np.stack([
        top_c + perp * chest_half * 0.92, waist_c + perp * (chest_half * 0.78 + hip_w * 0.2),
        hip_c + perp * hip_w, hip_c - axis * 0.08 + perp * hip_w * 0.9, hip_c - axis * 0.08 - perp * hip_w * 0.9,
        hip_c - perp * hip_w, waist_c - perp * (chest_half * 0.78 + hip_w * 0.2), top_c - perp * chest_half * 0.92,
    ])
    torso_z = (z["shoulder_l"] + z["shoulder_r"] + z["hip_l"] + z["hip_r"]) / 4 - 0.004
    parts.append(Part("polygon", torso_z, top, torso_poly, owners=("shoulder_l", "shoulder_r", "hip_l", "hip_r")))
    # Waistband / trousers top: the lower torso in the bottom garment colour (not for a dress).
    if look.bottom is not None:
        band = np.stack([
            hip_c + axis * 0.2 + perp * (hip_w * 0.98), hip_c - axis * 0.08 + perp * hip_w * 0.9,
            hip_c - axis * 0.08 - perp * hip_w * 0.9, hip_c + axis * 0.2 - perp * (hip_w * 0.98),
        ])
        parts.append(Part("polygon", torso_z + 0.001, bottom, band, owners=("hip_l", "hip_r")))
    # Neck
    cap("neck", "head", w * 0.85, skin, owners=("neck",), frac=(0.0, 0.55), dz=-0.006)

    sleeve = {"shirt": 1.0, "t-shirt": 0.5, "dress": 0.3}[look.top]
    for sd in ("l", "r"):
        sh, el, wr, hd = f"shoulder_{sd}", f"elbow_{sd}", f"wrist_{sd}", f"hand_{sd}"
        cap(sh, el, w, skin)
        cap(sh, el, w * 1.08, top, frac=(0.0, min(sleeve * 2, 1.0)), owners=(sh, el), dz=0.0005)
        cap(el, wr, w * 0.86, top if sleeve >= 1.0 else skin, owners=(el, wr))
        cap(wr, hd, w * 0.8, skin, owners=(wr,))
        hp, kn, an = f"hip_{sd}", f"knee_{sd}", f"ankle_{sd}"
        covered = {"trousers": (1.0, 1.0), "jeans": (1.0, 1.0), "shorts": (0.55, 0.0), "skirt": (0.0, 0.0)}
        thigh_cov, shin_cov = covered.get(look.bottom or "skirt", (0.0, 0.0))
        cap(hp, kn, w * 1.5, skin, dz=0.001)
        if thigh_cov > 0:
            cap(hp, kn, w * 1.56, bottom, frac=(0.0, thigh_cov), owners=(hp, kn), dz=0.0015)
        cap(kn, an, w * 1.2, bottom if shin_cov > 0 else skin, owners=(kn, an), dz=0.001)
        parts.append(Part("capsule", (z[f"heel_{sd}"] + z[f"toe_{sd}"]) / 2, look.shoes,
                          np.stack([j2[f"heel_{sd}"], j2[f"toe_{sd}"]]), w * 0.95, (an,)))

    # Skirt or the lower half of a dress: a flared shape from the hips to above the knees.
    if look.bottom in (None, "skirt"):
        color = top if look.bottom is None else bottom
        length = 0.82 if look.bottom is None else 0.62
        pts = [hip_c + axis * 0.12 + perp * hip_w, hip_c + axis * 0.12 - perp * hip_w]
        for sd in ("l", "r"):
            k = j2[f"hip_{sd}"] + (j2[f"knee_{sd}"] - j2[f"hip_{sd}"]) * length
            d = k - hip_c
            pts += [k + d / (np.linalg.norm(d) + 1e-6) * w * 0.9, k]
        hull = cv2.convexHull(np.array(pts, np.float32)).reshape(-1, 2)
        parts.append(Part("polygon", torso_z + 0.002, color, hull, owners=("hip_l", "hip_r")))

    # Head: the part draws hair, face and features; its depth is the head centre's.
    face_dir = joints["head_axes"][:, 2]
    up_dir = joints["head_axes"][:, 1]
    facing = {}
    for name in ("nose", "eye_l", "eye_r", "ear_l", "ear_r"):
        normal = joints[name] - joints["head"]
        facing[name] = float(normal[2] / (np.linalg.norm(normal) + 1e-9))
    parts.append(Part("head", z["head"], skin, np.stack([j2["head"]]), shape.head_radius * s, ("head",), {
        "hair": look.rgb("hair"), "hair_long": look.hair_long, "face_dir": face_dir, "up_dir": up_dir,
        "roll": placement.roll, "j2": {k: j2[k] for k in ("nose", "eye_l", "eye_r", "ear_l", "ear_r", "crown")},
        "facing": facing, "top": top,
    }))

    kp = np.zeros((17, 3), np.float32)
    for i, name in enumerate(COCO_FROM_JOINT):
        kp[i, :2] = j2[name]
        kp[i, 2] = 2
    return ProjectedPerson(j2, z, parts, kp, facing)


def _pts(p: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(p, np.float64) * _ONE).astype(np.int32)


def rescale(person: ProjectedPerson, scale: float, offset: tuple[float, float]) -> ProjectedPerson:
    """The person ``build_parts`` would return with ``Placement(scale · s, scale · c + offset, roll)`` given the
    result for ``Placement(s, c, roll)``: projection is affine in the placement, so image points map by
    ``p ↦ scale · p + offset`` and every width by ``scale``. Depths and facing are unchanged."""
    off = np.asarray(offset, np.float64)

    def move(p: np.ndarray) -> np.ndarray:
        return np.asarray(p, np.float64) * scale + off

    parts = []
    for part in person.parts:
        extra = dict(part.extra)
        if "j2" in extra:
            extra["j2"] = {k: move(v) for k, v in extra["j2"].items()}
        parts.append(Part(part.kind, part.depth, part.color, move(part.points), part.width * scale, part.owners,
                          extra))
    keypoints = person.keypoints.copy()
    keypoints[:, :2] = move(keypoints[:, :2])
    return ProjectedPerson({k: move(v) for k, v in person.joints2d.items()}, dict(person.depth), parts, keypoints,
                           dict(person.face_facing))


def _rot2(v: np.ndarray, deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([c * v[0] + s * v[1], -s * v[0] + c * v[1]])


def _screen_dir(v3: np.ndarray, roll: float) -> np.ndarray:
    """A 3-D direction's image-plane direction (y down), rolled like the body."""
    d = _rot2(np.array([v3[0], v3[1]]), roll)
    return np.array([d[0], -d[1]])


class Canvas:
    """A supersampled RGB canvas plus an integer part-id canvas of the same size."""

    def __init__(self, background: np.ndarray, supersample: int):
        h, w = background.shape[:2]
        self.k = supersample
        self.size = (w, h)
        small = np.clip(background, 0, 255).astype(np.uint8)   # quantise before upsampling: 1/k² the work
        self.rgb = np.ascontiguousarray(
            cv2.resize(small, (w * supersample, h * supersample), interpolation=cv2.INTER_LINEAR))
        self.ids = np.zeros((h * supersample, w * supersample), np.int32)

    def big(self, p) -> np.ndarray:
        """Output-pixel coordinates (pixel centres at integers) → supersampled-canvas coordinates."""
        return np.asarray(p, np.float64) * self.k + (self.k - 1) / 2

    def capsule(self, p0, p1, width: float, color, pid: int, shade: bool = True) -> None:
        # Plain-float arithmetic: this runs ~20 times per image, where small-array numpy overhead dominates.
        k = self.k
        c = (k - 1) / 2
        ax, ay = (float(p0[0]) * k + c) * _ONE, (float(p0[1]) * k + c) * _ONE
        bx, by = (float(p1[0]) * k + c) * _ONE, (float(p1[1]) * k + c) * _ONE
        a, b = (round(ax), round(ay)), (round(bx), round(by))
        t = max(1, round(width * k))
        if shade:
            cv2.line(self.rgb, a, b, _shade(color, 0.72), t, cv2.LINE_AA, _SHIFT)
            inner = max(1, round(t * 0.72))
            o = round(-0.12 * width * k * _ONE)
            cv2.line(self.rgb, (a[0] + o, a[1] + o), (b[0] + o, b[1] + o), color, inner, cv2.LINE_AA, _SHIFT)
            hi = max(1, round(t * 0.28))
            o2 = round(-0.22 * width * k * _ONE)
            cv2.line(self.rgb, (a[0] + o2, a[1] + o2), (b[0] + o2, b[1] + o2), _shade(color, 1.18), hi, cv2.LINE_AA,
                     _SHIFT)
        else:
            cv2.line(self.rgb, a, b, color, t, cv2.LINE_AA, _SHIFT)
        cv2.line(self.ids, a, b, pid, t, cv2.LINE_8, _SHIFT)

    def polygon(self, pts: np.ndarray, color, pid: int) -> None:
        k = self.k
        p = _pts(self.big(pts))
        cv2.fillPoly(self.rgb, [p], _shade(color, 0.8), cv2.LINE_AA, _SHIFT)
        c = p.mean(axis=0)
        inner = (c + (p - c) * 0.8 + _pts(np.array([-0.03, -0.03]) * k * 8)).astype(np.int32)
        cv2.fillPoly(self.rgb, [inner], color, cv2.LINE_AA, _SHIFT)
        cv2.fillPoly(self.ids, [p], pid, cv2.LINE_8, _SHIFT)

    def ellipse(self, center, axes, angle: float, color, pid: int | None, thickness: int = -1) -> None:
        k = self.k
        c = tuple(_pts(self.big(center)))
        ax = tuple(int(max(1, round(a * k * _ONE))) for a in axes)
        cv2.ellipse(self.rgb, c, ax, angle, 0, 360, color, thickness, cv2.LINE_AA, _SHIFT)
        if pid is not None:
            cv2.ellipse(self.ids, c, ax, angle, 0, 360, pid, thickness, cv2.LINE_8, _SHIFT)

    def head(self, part: Part, pid: int) -> None:
        """Hair behind, head, hair cap, ears, and a face with eyes, brows, nose and mouth where it faces us."""
        e = part.extra
        c = part.points[0]
        r = part.width
        up = _screen_dir(e["up_dir"], e["roll"])
        up = up / (np.linalg.norm(up) + 1e-9)
        face = _screen_dir(e["face_dir"], e["roll"])
        face_toward = float(e["face_dir"][2])        # +1 facing the camera, −1 facing away
        angle = float(np.degrees(np.arctan2(up[0], -up[1])))
        hair = e["hair"]
        if e["hair_long"]:
            self.ellipse(c - up * r * 0.55 - face * r * 0.25, (r * 1.05, r * 1.5), angle, _shade(hair, 0.85), pid)
        self.ellipse(c, (r * 0.86, r * 1.0), angle, _shade(part.color, 0.84), pid)
        self.ellipse(c + face * r * 0.1, (r * 0.74, r * 0.9), angle, part.color, None)
        for ear in ("ear_l", "ear_r"):
            if -0.35 < e["facing"][ear] and face_toward > -0.6:
                self.ellipse(e["j2"][ear], (r * 0.17, r * 0.26), angle, _shade(part.color, 0.9), pid)
        # Hair cap: on top of the head and towards the back, covering the whole head when seen from behind.
        away = max(0.0, -face_toward)
        back = -face * r * 0.35
        cap_center = c + up * r * (0.6 - 0.45 * away) + back
        cap_axes = (r * 0.88, r * (0.45 + 0.6 * away))
        self.ellipse(cap_center, cap_axes, angle, hair, pid)
        if face_toward <= 0.05:
            return
        dark = (32, 24, 22)
        for eye in ("eye_l", "eye_r"):
            if e["facing"][eye] > 0.1:
                p = e["j2"][eye]
                self.ellipse(p, (r * 0.2, r * 0.14), angle, (245, 245, 245), None)
                self.ellipse(p, (r * 0.12, r * 0.12), angle, dark, None)
                self.capsule(p + up * r * 0.27 - _rot2(up, 90) * r * 0.15, p + up * r * 0.27 + _rot2(up, 90) * r * 0.15,
                             r * 0.08, _shade(hair, 0.8), 0, shade=False)
        nose = e["j2"]["nose"]
        if e["facing"]["nose"] > -0.1:
            self.ellipse(nose, (r * 0.11, r * 0.14), angle, _shade(part.color, 0.78), None)
            mouth = nose - up * r * 0.34
            side = np.array([up[1], -up[0]]) * r * 0.2
            self.capsule(mouth - side, mouth + side, r * 0.09, (150, 52, 52), 0, shade=False)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Downsample to output size: (rgb uint8 HxWx3, part ids HxW taken at pixel centres)."""
        w, h = self.size
        rgb = cv2.resize(self.rgb, (w, h), interpolation=cv2.INTER_AREA) if self.k > 1 else self.rgb
        off = self.k // 2
        ids = self.ids[off::self.k, off::self.k]
        return rgb, np.ascontiguousarray(ids)


PART_BITS = 64  # part id = person_index * PART_BITS + part_index + 1


def draw_people(canvas: Canvas, people: list[ProjectedPerson]) -> list[list[Part]]:
    """Draw all parts of all people, far to near. Returns per person the parts in id order."""
    order = []
    for pi, person in enumerate(people):
        for qi, part in enumerate(person.parts):
            order.append((part.depth, pi, qi, part))
    order.sort(key=lambda t: (t[0], t[1], t[2]))
    for _, pi, qi, part in order:
        pid = pi * PART_BITS + qi + 1
        if part.kind == "capsule":
            canvas.capsule(part.points[0], part.points[1], part.width, part.color, pid)
        elif part.kind == "polygon":
            canvas.polygon(part.points, part.color, pid)
        elif part.kind == "head":
            canvas.head(part, pid)
        elif part.kind == "ellipse":
            canvas.ellipse(part.points[0], part.extra["axes"], part.extra.get("angle", 0.0), part.color, pid)
    return [p.parts for p in people]


def keypoint_visibility(people: list[ProjectedPerson], ids: np.ndarray, size: tuple[int, int]) -> list[np.ndarray]:
    """COCO visibility per person: 0 outside the image, 1 occluded (another part on top, or a face point turned
    away), 2 visible. Out-of-image keypoints are zeroed as in COCO (x = y = v = 0)."""
    w, h = size
    out = []
    for pi, person in enumerate(people):
        kp = person.keypoints.copy()
        for i, name in enumerate(COCO_FROM_JOINT):
            x, y = kp[i, 0], kp[i, 1]
            if kp[i, 2] == 0 or not (0 <= x < w and 0 <= y < h):  # removed (anomaly) or outside the image
                kp[i] = 0
                continue
            if name in person.face_facing:
                turned = person.face_facing[name] < (0.1 if name.startswith(("eye", "nose")) else -0.35)
                top_id = ids[int(y), int(x)]
                covered = top_id and (top_id - 1) // PART_BITS != pi
                head_idx = next(q for q, p in enumerate(person.parts) if p.kind == "head") + 1 + pi * PART_BITS
                hidden_by_own = top_id not in (0, head_idx) and (top_id - 1) // PART_BITS == pi
                kp[i, 2] = 1 if (turned or covered or hidden_by_own) else 2
                continue
            top_id = int(ids[int(y), int(x)])
            if top_id == 0:
                kp[i, 2] = 2
                continue
            owner_pi, q = divmod(top_id - 1, PART_BITS)
            if owner_pi != pi:
                kp[i, 2] = 1
            else:
                kp[i, 2] = 2 if name in person.parts[q].owners or _is_near_owner(name, person.parts[q]) else 1
        out.append(kp)
    return out


def _is_near_owner(joint: str, part: Part) -> bool:
    """Joints count as visible through parts of their own limb chain (sleeves over the elbow, skirt over the hip)."""
    side = joint[-1]
    chain = {
        "shoulder": ("shoulder", "elbow", "neck"), "elbow": ("shoulder", "elbow", "wrist"),
        "wrist": ("elbow", "wrist", "hand"), "hip": ("hip", "knee"), "knee": ("hip", "knee", "ankle"),
        "ankle": ("knee", "ankle"),
    }.get(joint[:-2], ())
    return any(o.startswith(c) and (o.endswith(side) or o == "neck") for o in part.owners for c in chain)
