"""Anatomical-anomaly score of one person from COCO-17 keypoints (optionally with a person mask).

Generated images have no ground truth, so the score is meant for keypoints *detected* on them (e.g. by
:class:`~humantune.eval.pose_estimators.MediaPipePoseEstimator`); it also works on ground-truth keypoints. Each
check measures one quantity and divides it by a named threshold, giving a *severity*: above 1 the check fires.
The thresholds are calibrated on the mannequin world (benchmarks/anatomy_separation.py) so that correct people are
rarely flagged, because a 2-D projection of a valid 3-D pose can look odd: a limb pointing at the camera is
foreshortened (short, and its 2-D joint angle can look sharper than the 3-D one), and a person seen in profile has
narrow shoulders and hips. Lengths are relative to the body scale S (:func:`body_scale`), so the score does not
depend on image size.

Checks (keys of :func:`anatomy_checks`):

- ``not_detected``: no person found (the caller passes ``None``); severity ∞.
- ``missing_limb``: the elbow and wrist (knee and ankle) of a limb both unlabelled while its shoulder (hip) is
  labelled and farther from the image border than the upper segment can reach (so the limb is not just cut off);
  graded by the estimator's confidence in those joints.
- ``segment_too_long``: a limb segment longer than the longest the world's proportions allow relative to S
  (foreshortening only shortens, so this is safe in 2-D).
- ``limb_ratio``: forearm / upper arm or shin / thigh beyond a factor (a detached forearm looks long).
- ``asymmetry``: the same segment on the left and right differing in length beyond a factor.
- ``joint_angle``: 2-D elbow / knee flexion beyond the world's limits (``MAX_ELBOW_FLEXION``, ``MAX_KNEE_FLEXION``),
  counted only when both segments are close to full length (not foreshortened), since only then is the 2-D angle
  a faithful view of the 3-D one.
- ``bent_wrong_way``: a knee bent forwards or an elbow bent backwards when the person is seen from the side (face
  pointing sideways, narrow shoulders: the sagittal plane is the image plane), or a knee bent sideways when the
  person faces the camera (thigh and shin at full length, so the bend is not flexion towards the camera). An elbow
  kinked sideways in a frontal view is not checked: the world's waving arms look the same in 2-D.
- ``fused_legs``: hips much narrower than the shoulders in a view where the shoulders are wide.
- ``head_detached``: the face centre far from the shoulder line.
- ``outside_mask`` (mask given): keypoints, or points along the bones, outside the person's silhouette.
- ``unexplained_mask`` (mask given): silhouette pixels far from every bone, torso and head (an extra limb).

An image's anatomy (:func:`score_detection`, :func:`score_anatomy`): the checks of the highest-scoring detection,
no mask, keypoints used at :data:`~humantune.eval.pose_estimators.DETECTION_CONFIDENCE`; the image is anomalous
when a check fires, a missed person included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from humantune.data.keypoints import COCO17
from humantune.data.mannequin.body import MAX_ELBOW_FLEXION, MAX_KNEE_FLEXION, BodyShape
from humantune.eval.pose_estimators import DETECTION_CONFIDENCE, PoseEstimate
from humantune.eval.preference import wilson_interval

_DEFAULT = BodyShape()

# Shoulder-joint distance / torso length of the default adult (0.21 / 0.285): converts a shoulder width into a
# torso-length equivalent for the body scale when the torso is foreshortened.
SHOULDER_TO_TORSO = 2 * _DEFAULT.shoulder_half / _DEFAULT.torso

# Longest 2-D length of each segment relative to S, over adults and children, before the tolerance below.
# Children's forearm/torso (0.145/0.27) exceeds the adult's; shape jitter adds 4 %.
SEGMENT_MAX = {
    "upper_arm": 0.167 / 0.27 * 1.04,
    "forearm": 0.145 / 0.27 * 1.04,
    "thigh": _DEFAULT.thigh / _DEFAULT.torso * 1.04,
    "shin": _DEFAULT.shin / _DEFAULT.torso * 1.04,
}

LIMB_SEGMENTS = {
    "arm_l": ("left_shoulder", "left_elbow", "left_wrist"),
    "arm_r": ("right_shoulder", "right_elbow", "right_wrist"),
    "leg_l": ("left_hip", "left_knee", "left_ankle"),
    "leg_r": ("right_hip", "right_knee", "right_ankle"),
}

# Thresholds, calibrated on ground-truth keypoints of 400 correct and 400 broken mannequin renders (seeds 11, 12):
# each sits above the 99th percentile of correct people (most above their maximum), so that together they flag
# ≤ 5 % of them (1–2 % measured). Each names the quantity whose value / threshold is the severity.
MISSING_LIMB_SEVERITY = 2.0
"""Severity of a limb whose distal joints have confidence 0 (ground truth v = 0); it falls linearly to 0 as their
best confidence approaches min_confidence, so a detector's borderline-visible limb fires only below half of it."""
SEGMENT_TOO_LONG = 1.25
"""Segment length / (S · SEGMENT_MAX): 25 % slack absorbs keypoint noise and a torso shortened by bending."""
LIMB_RATIO = 4.0
"""max(lower/upper, upper/lower) of one limb (each relative to its maximum), when the longer segment is at least
FULL_LENGTH of its maximum. Foreshortening can shrink either segment (a running thigh pointing at the camera reached
13× on correct renders), so only extreme ratios count and this check is weak in 2-D."""
ASYMMETRY = 2.6
"""max(left/right, right/left) of the same segment, when the longer one is at least FULL_LENGTH of its maximum
(correct renders: 99th percentile 2.2, maximum 6.7, from a limb pointing at the camera)."""
FULL_LENGTH = 0.75
"""A segment counts as seen at full length (little foreshortening) above this fraction of its maximum length."""
JOINT_ANGLE_SLACK = 1.0
"""2-D flexion / (world limit · slack); 1 = the world's limit itself (correct renders reach 0.9 of it)."""
BENT_WRONG_WAY = 45.0
"""Degrees of bend against the joint's flexion direction in a side view (the world's wrong-way bends are 60–110°;
at 45° with PROFILE_SHOULDERS 0.6 no correct render of 400 fired)."""
KNEE_SIDEWAYS = 60.0
"""Degrees of 2-D knee bend in a frontal view with thigh and shin at full length (the world's dancers reach ~35°)."""
FACING_SHOULDERS = 0.6
"""Shoulder width / S above which the person faces the camera (|yaw| ≲ 35°) for the sideways-knee check."""
KINK_FULL_LENGTH = 0.85
"""Thigh and shin length fraction above which a knee's 2-D angle is not sagittal flexion seen at an angle."""
PROFILE_SHOULDERS = 0.6
"""Shoulder width / S below which the torso is seen from the side (a frontal adult: ~1)."""
SIDE_VIEW = 0.08
"""|nose − ear centre| across the torso axis, relative to S, above which the face (and body) is seen from the side."""
FUSED_LEGS = 0.30
"""Hip width / shoulder width below which the hips count as collapsed (correct renders ≥ 0.49, fused legs ~0.2)."""
FRONTAL_SHOULDERS = 0.45
"""Shoulder width / S above which the view is frontal enough for the hip-width check."""
HEAD_DETACHED = 0.58
"""Face centre to shoulder-line centre distance / S: at most 0.52 on 400 correct renders, at least 0.64 on
detached heads."""
MASK_TOLERANCE = 0.06
"""A point counts as inside the silhouette within this distance (· S) of it: keypoints sit on part outlines."""
OUTSIDE_MASK = 0.10
"""Fraction of keypoints and bone points outside the silhouette."""
UNEXPLAINED_MASK = 0.22
"""Fraction of silhouette pixels far from the skeleton's bones, torso and head: clothes, hair and feet leave up to
~0.2 unexplained on correct renders (95th percentile), an extra limb ~0.16 (median), so this is a weak check."""
BONE_RADIUS = 0.16
"""Distance (· S) around a bone within which silhouette pixels are explained by it (limb radius plus hand/foot)."""


def _xy(kp: np.ndarray, name: str) -> np.ndarray:
    return kp[COCO17[name], :2]


def _labelled(kp: np.ndarray, min_confidence: float) -> np.ndarray:
    return kp[:, 2] >= min_confidence


def body_scale(keypoints: np.ndarray, min_confidence: float = 0.5) -> float:
    """Body scale S in pixels: max(torso length, shoulder width / SHOULDER_TO_TORSO).

    Torso length = |shoulder centre − hip centre|; the shoulder term keeps S when the torso points at the camera.
    A side needs both keypoints labelled (third column ≥ ``min_confidence``); NaN if neither term exists.
    """
    kp = check_keypoints(keypoints)
    ok = _labelled(kp, min_confidence)
    terms = []
    shoulders = ok[COCO17["left_shoulder"]] and ok[COCO17["right_shoulder"]]
    hips = ok[COCO17["left_hip"]] and ok[COCO17["right_hip"]]
    if shoulders and hips:
        mid_s = (_xy(kp, "left_shoulder") + _xy(kp, "right_shoulder")) / 2
        mid_h = (_xy(kp, "left_hip") + _xy(kp, "right_hip")) / 2
        terms.append(np.linalg.norm(mid_s - mid_h))
    if shoulders:
        terms.append(np.linalg.norm(_xy(kp, "left_shoulder") - _xy(kp, "right_shoulder")) / SHOULDER_TO_TORSO)
    return float(max(terms)) if terms else float("nan")


def check_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """``keypoints`` as float64 (17, 3) ``[x, y, v or confidence]``; ValueError naming the shape otherwise."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.shape != (17, 3):
        raise ValueError(f"keypoints must have shape (17, 3) (COCO-17 [x, y, v]), got {kp.shape}")
    return kp


def _angle_between(a: np.ndarray, b: np.ndarray) -> float:
    """Signed angle (degrees) rotating a onto b, positive for cross(a, b) > 0."""
    return float(np.degrees(np.arctan2(a[0] * b[1] - a[1] * b[0], a @ b)))


def anatomy_checks(
    keypoints: np.ndarray | None,
    mask: np.ndarray | None = None,
    min_confidence: float = 0.5,
    image_size: tuple[int, int] | None = None,
) -> dict[str, float]:
    """Severity of each anatomy check for one person: measured value / threshold (> 1 = violation).

    keypoints: (17, 3) COCO-17 ``[x, y, v]`` (ground truth, labelled when v > 0) or ``[x, y, confidence]``
    (detections); a keypoint is used when its third column ≥ ``min_confidence`` (0.5 treats COCO v ∈ {1, 2} as
    labelled). ``None`` = nobody detected → ``{"not_detected": inf}``. mask: (H, W) boolean silhouette of this person
    (adds ``outside_mask`` and ``unexplained_mask``). image_size: (width, height), used by ``missing_limb`` to skip
    limbs that may be cut off by the border (defaults to the mask's size; without either, every missing limb counts).
    A check that cannot be evaluated (its keypoints unlabelled) is absent from the result. Checks and thresholds: see
    the module docstring.
    """
    if keypoints is None:
        return {"not_detected": float("inf")}
    kp = check_keypoints(keypoints)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
        if image_size is None:
            image_size = (mask.shape[1], mask.shape[0])
    ok = _labelled(kp, min_confidence)
    scale = body_scale(kp, min_confidence)
    out: dict[str, float] = {}
    if not np.isfinite(scale) or scale <= 0:
        return out

    def has(*names: str) -> bool:
        return all(ok[COCO17[n]] for n in names)

    def seg(a: str, b: str) -> np.ndarray:
        return _xy(kp, b) - _xy(kp, a)

    # Missing limbs: the distal joints gone while the root is there. Keypoints outside the image are unlabelled too,
    # so the root must be farther from the border than the upper segment's maximum length (then the elbow/knee
    # would be inside the image).
    if any(ok[COCO17[root]] for root, _, _ in LIMB_SEGMENTS.values()):
        missing = 0.0
        for limb, (root, mid, end) in LIMB_SEGMENTS.items():
            if has(root) and not ok[COCO17[mid]] and not ok[COCO17[end]]:
                reach = scale * SEGMENT_MAX["upper_arm" if limb.startswith("arm") else "thigh"]
                x, y = _xy(kp, root)
                fits = image_size is None or (
                    reach <= x <= image_size[0] - 1 - reach and reach <= y <= image_size[1] - 1 - reach
                )
                # Graded by how sure the estimator is that the joints are absent: v = 0 (ground truth) gives the
                # full severity, a confidence just under min_confidence almost none.
                confidence = max(kp[COCO17[mid], 2], kp[COCO17[end], 2], 0.0) / max(min_confidence, 1e-9)
                missing = max(missing, MISSING_LIMB_SEVERITY * (1.0 - confidence) if fits else 0.0)
        out["missing_limb"] = missing

    # Segment lengths, relative to the longest the world allows.
    rel: dict[tuple[str, str], float] = {}
    for limb, (root, mid, end) in LIMB_SEGMENTS.items():
        upper, lower = ("upper_arm", "forearm") if limb.startswith("arm") else ("thigh", "shin")
        if has(root, mid):
            rel[limb, upper] = np.linalg.norm(seg(root, mid)) / (scale * SEGMENT_MAX[upper])
        if has(mid, end):
            rel[limb, lower] = np.linalg.norm(seg(mid, end)) / (scale * SEGMENT_MAX[lower])
    if rel:
        out["segment_too_long"] = max(rel.values()) / SEGMENT_TOO_LONG

    ratios = []
    for limb in LIMB_SEGMENTS:
        upper, lower = ("upper_arm", "forearm") if limb.startswith("arm") else ("thigh", "shin")
        a, b = rel.get((limb, upper)), rel.get((limb, lower))
        if a is not None and b is not None and max(a, b) >= FULL_LENGTH:
            ratios.append(max(a, b) / max(min(a, b), 1e-6))
    if ratios:
        out["limb_ratio"] = max(ratios) / LIMB_RATIO

    asym = []
    for (la, ra), segment in ((("arm_l", "arm_r"), "upper_arm"), (("arm_l", "arm_r"), "forearm"),
                              (("leg_l", "leg_r"), "thigh"), (("leg_l", "leg_r"), "shin")):
        a, b = rel.get((la, segment)), rel.get((ra, segment))
        if a is not None and b is not None and max(a, b) >= FULL_LENGTH:
            asym.append(max(a, b) / max(min(a, b), 1e-6))
    if asym:
        out["asymmetry"] = max(asym) / ASYMMETRY

    # 2-D joint flexion, where both segments are near full length.
    angles = []
    for limb, (root, mid, end) in LIMB_SEGMENTS.items():
        upper, lower = ("upper_arm", "forearm") if limb.startswith("arm") else ("thigh", "shin")
        if not has(root, mid, end):
            continue
        if min(rel[limb, upper], rel[limb, lower]) < FULL_LENGTH:
            continue
        flexion = abs(_angle_between(seg(root, mid), seg(mid, end)))
        limit = MAX_ELBOW_FLEXION if limb.startswith("arm") else MAX_KNEE_FLEXION
        angles.append(flexion / (limit * JOINT_ANGLE_SLACK))
    if angles:
        out["joint_angle"] = max(angles)

    # Bent the wrong way. Side view (face pointing sideways, narrow shoulders): the flexion sense is the rotation
    # from "down the torso" to "facing"; knees flex backwards (negative sense), elbows forwards (positive).
    shoulder_w = np.linalg.norm(seg("left_shoulder", "right_shoulder")) if has("left_shoulder", "right_shoulder") \
        else float("nan")
    wrong = []
    facing = _side_facing(kp, ok, scale)
    if facing is not None and shoulder_w < PROFILE_SHOULDERS * scale:
        down, forward = facing
        flex_sense = np.sign(down[0] * forward[1] - down[1] * forward[0])
        for limb, (root, mid, end) in LIMB_SEGMENTS.items():
            if has(root, mid, end):
                bend = flex_sense * _angle_between(seg(root, mid), seg(mid, end))
                wrong.append(max(0.0, bend if limb.startswith("leg") else -bend) / BENT_WRONG_WAY)
    # Frontal view (wide shoulders): a knee flexes towards the camera, so a thigh and shin both at full length
    # with a visible angle between them are kinked sideways.
    if shoulder_w >= FACING_SHOULDERS * scale:
        for limb in ("leg_l", "leg_r"):
            root, mid, end = LIMB_SEGMENTS[limb]
            if has(root, mid, end) and min(rel[limb, "thigh"], rel[limb, "shin"]) >= KINK_FULL_LENGTH:
                wrong.append(abs(_angle_between(seg(root, mid), seg(mid, end))) / KNEE_SIDEWAYS)
    if wrong:
        out["bent_wrong_way"] = max(wrong)

    if has("left_shoulder", "right_shoulder", "left_hip", "right_hip"):
        if shoulder_w >= FRONTAL_SHOULDERS * scale:
            hip_w = np.linalg.norm(seg("left_hip", "right_hip"))
            out["fused_legs"] = FUSED_LEGS / max(hip_w / shoulder_w, 1e-6)

    face = [COCO17[n] for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear") if ok[COCO17[n]]]
    if face and has("left_shoulder", "right_shoulder"):
        centre = kp[face, :2].mean(axis=0)
        neck = (_xy(kp, "left_shoulder") + _xy(kp, "right_shoulder")) / 2
        out["head_detached"] = np.linalg.norm(centre - neck) / scale / HEAD_DETACHED

    if mask is not None:
        out.update(_mask_checks(kp, ok, mask.astype(bool), scale))
    return {k: float(v) for k, v in out.items()}


def _side_facing(kp: np.ndarray, ok: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(torso down vector, facing vector across the torso) when the face points clearly sideways, else None."""
    if not (ok[COCO17["nose"]] and (ok[COCO17["left_ear"]] or ok[COCO17["right_ear"]])):
        return None
    if not (ok[COCO17["left_shoulder"]] or ok[COCO17["right_shoulder"]]):
        return None
    if not (ok[COCO17["left_hip"]] or ok[COCO17["right_hip"]]):
        return None
    shoulders = kp[[i for i in (COCO17["left_shoulder"], COCO17["right_shoulder"]) if ok[i]], :2].mean(axis=0)
    hips = kp[[i for i in (COCO17["left_hip"], COCO17["right_hip"]) if ok[i]], :2].mean(axis=0)
    down = hips - shoulders
    norm = np.linalg.norm(down)
    if norm <= 0:
        return None
    down = down / norm
    ears = kp[[i for i in (COCO17["left_ear"], COCO17["right_ear"]) if ok[i]], :2].mean(axis=0)
    facing = _xy(kp, "nose") - ears
    across = facing - (facing @ down) * down
    if np.linalg.norm(across) < SIDE_VIEW * scale:
        return None
    return down, across


BONES = (
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
    ("right_hip", "right_knee"), ("right_knee", "right_ankle"), ("left_shoulder", "right_shoulder"),
    ("left_hip", "right_hip"), ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"),
)
"""Segments whose points must lie on the body: limbs and the torso outline (the neck is left out: hair and
collars make it unreliable)."""


def _mask_checks(kp: np.ndarray, ok: np.ndarray, mask: np.ndarray, scale: float) -> dict[str, float]:
    h, w = mask.shape
    out: dict[str, float] = {}
    if not mask.any():
        return {"outside_mask": float("inf")}
    # Distance (px) from every pixel to the silhouette.
    dist_to_mask = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3)
    points = [kp[i, :2] for i in np.flatnonzero(ok)]
    for a, b in BONES:
        if ok[COCO17[a]] and ok[COCO17[b]]:
            pa, pb = _xy(kp, a), _xy(kp, b)
            points.extend(pa + (pb - pa) * t for t in np.linspace(0.2, 0.8, 4))
    if points:
        pts = np.asarray(points)
        inside_img = (pts[:, 0] >= 0) & (pts[:, 0] <= w - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= h - 1)
        pts = pts[inside_img]
        if len(pts):
            d = dist_to_mask[np.round(pts[:, 1]).astype(int), np.round(pts[:, 0]).astype(int)]
            out["outside_mask"] = float(np.mean(d > MASK_TOLERANCE * scale)) / OUTSIDE_MASK

    # Silhouette explained by the skeleton: thick bones, the filled torso and a disc around the face.
    explained = np.zeros((h, w), np.uint8)
    radius = max(1, int(round(BONE_RADIUS * scale)))
    for a, b in BONES + (("left_wrist", "left_wrist"), ("right_wrist", "right_wrist")):
        if ok[COCO17[a]] and ok[COCO17[b]]:
            cv2.line(explained, tuple(np.round(_xy(kp, a)).astype(int)), tuple(np.round(_xy(kp, b)).astype(int)),
                     1, 2 * radius)
    torso = [COCO17[n] for n in ("left_shoulder", "right_shoulder", "right_hip", "left_hip") if ok[COCO17[n]]]
    if len(torso) >= 3:
        cv2.fillPoly(explained, [np.round(kp[torso, :2]).astype(np.int32)], 1)
    face = [COCO17[n] for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear") if ok[COCO17[n]]]
    if face:
        centre = tuple(np.round(kp[face, :2].mean(axis=0)).astype(int))
        cv2.circle(explained, centre, int(round(0.45 * scale)), 1, -1)
        if ok[COCO17["left_shoulder"]] and ok[COCO17["right_shoulder"]]:
            neck = tuple(np.round((_xy(kp, "left_shoulder") + _xy(kp, "right_shoulder")) / 2).astype(int))
            cv2.line(explained, centre, neck, 1, 2 * radius)
    out["unexplained_mask"] = float(np.mean(explained[mask] == 0)) / UNEXPLAINED_MASK
    return out


def anomaly_score(checks: Mapping[str, float]) -> float:
    """Continuous anomaly score: the largest severity in ``checks`` (:func:`anatomy_checks`), 0 when none was
    evaluated. > 1 means some check fired; ∞ = not detected. Use it for ROC curves."""
    values = [v for v in checks.values() if not np.isnan(v)]
    return float(max(values)) if values else 0.0


def violations(checks: Mapping[str, float]) -> list[str]:
    """Names of the checks that fired (severity > 1), most severe first."""
    return [k for k, v in sorted(checks.items(), key=lambda kv: -kv[1]) if v > 1.0]


def is_anomalous(keypoints: np.ndarray | None, mask: np.ndarray | None = None, min_confidence: float = 0.5,
                 image_size: tuple[int, int] | None = None) -> bool:
    """True when any :func:`anatomy_checks` severity exceeds 1 (including a missed person, ``None``)."""
    return anomaly_score(anatomy_checks(keypoints, mask, min_confidence, image_size)) > 1.0


@dataclass
class AnomalyRate:
    """Fraction of people flagged, with its Wilson 95 % interval."""

    rate: float
    ci95_lo: float
    ci95_hi: float
    flagged: int
    n: int


def anomaly_rate(results: Sequence[Mapping[str, float] | bool]) -> AnomalyRate:
    """Anomaly rate = flagged / n over people, each given as :func:`anatomy_checks` output (flagged when
    :func:`anomaly_score` > 1) or as a bool; the interval is the Wilson score interval at 95 %
    (:func:`humantune.eval.preference.wilson_interval`), NaN for no people."""
    flags = [bool(r) if isinstance(r, (bool, np.bool_)) else anomaly_score(r) > 1.0 for r in results]
    n, k = len(flags), int(sum(flags))
    lo, hi = wilson_interval(k, n) if n else (float("nan"), float("nan"))
    return AnomalyRate(k / n if n else float("nan"), lo, hi, k, n)


@dataclass
class AnatomyScore:
    """One image's anatomy: the best detection (17×3 ``[x, y, confidence]``, None if nobody was found), the check
    severities, the anomaly score (largest severity, ∞ when missed) and the flag."""

    keypoints: np.ndarray | None
    checks: dict[str, float]
    score: float
    anomalous: bool
    violations: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"anomalous": self.anomalous, "anomaly_score": self.score if np.isfinite(self.score) else None,
                "violations": self.violations, "detected": self.keypoints is not None,
                "keypoints": None if self.keypoints is None else np.round(self.keypoints, 2).tolist()}


def score_detection(detection: PoseEstimate, image_size: tuple[int, int]) -> AnatomyScore:
    """:class:`AnatomyScore` of an image of ``image_size`` = (W, H) from the poses detected on it: the checks of its
    highest-scoring person, no mask, keypoints used at confidence ≥
    :data:`~humantune.eval.pose_estimators.DETECTION_CONFIDENCE`; anomalous when the score exceeds 1."""
    kp = detection.best_person()
    checks = anatomy_checks(kp, None, DETECTION_CONFIDENCE, image_size)
    score = anomaly_score(checks)
    return AnatomyScore(kp, checks, score, score > 1.0, violations(checks))


def score_anatomy(images: Sequence[np.ndarray | Image.Image], estimator, progress: bool = False,
                  desc: str = "anatomy") -> list[AnatomyScore]:
    """:func:`score_detection` of each image, with ``estimator`` a
    :class:`~humantune.eval.pose_estimators.PoseEstimator`."""
    out = []
    for image in tqdm(images, desc=desc, unit="img", disable=not progress, leave=False):
        arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
        out.append(score_detection(estimator.estimate(arr), (arr.shape[1], arr.shape[0])))
    return out


def roc_auc(scores: Sequence[float], labels: Sequence[bool | int]) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative) + ½·P(tie),
    the Mann–Whitney U / (n₊·n₋), computed from average ranks (ties share their mean rank).

    labels: 1/True = positive (anomalous). ∞ scores are allowed. ValueError unless both classes occur.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).astype(bool).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have the same length, got {s.shape} and {y.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc needs both classes, got {n_pos} positives and {n_neg} negatives")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))
