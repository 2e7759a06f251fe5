import math
from dataclasses import replace

import cv2
import numpy as np
import pytest

from humantune.data.keypoints import COCO17
from humantune.data.mannequin.body import BodyShape, Pose, Segment, forward_kinematics
from humantune.data.mannequin.render import COCO_FROM_JOINT
from humantune.data.mannequin.world import MannequinConfig, render_sample
from humantune.eval.anatomy import (
    anatomy_checks,
    anomaly_rate,
    anomaly_score,
    body_scale,
    is_anomalous,
    roc_auc,
    violations,
)

IMAGE = (400, 400)


def _skeleton(pose: Pose | None = None, shape: BodyShape | None = None) -> np.ndarray:
    """COCO-17 keypoints of a mannequin, orthographic view, 300 px per unit of height, all labelled (v = 2)."""
    joints = forward_kinematics(shape or BodyShape(), pose or Pose())
    kp = np.zeros((17, 3))
    for i, name in enumerate(COCO_FROM_JOINT):
        kp[i] = [200 + 300 * joints[name][0], 370 - 300 * joints[name][1], 2]
    return kp


def _silhouette(kp: np.ndarray) -> np.ndarray:
    """A mask drawn from the keypoints: thick limbs, filled torso, head disc."""
    mask = np.zeros(IMAGE[::-1], np.uint8)
    s = body_scale(kp)
    pt = lambda name: tuple(np.round(kp[COCO17[name], :2]).astype(int))  # noqa: E731
    for side in ("left", "right"):
        for a, b in (("shoulder", "elbow"), ("elbow", "wrist"), ("hip", "knee"), ("knee", "ankle")):
            cv2.line(mask, pt(f"{side}_{a}"), pt(f"{side}_{b}"), 1, int(0.16 * s))
    torso = [COCO17[n] for n in ("left_shoulder", "right_shoulder", "right_hip", "left_hip")]
    cv2.fillPoly(mask, [np.round(kp[torso, :2]).astype(np.int32)], 1)
    face = kp[[COCO17[n] for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")], :2].mean(0)
    cv2.circle(mask, tuple(np.round(face).astype(int)), int(0.25 * s), 1, -1)
    cv2.line(mask, tuple(np.round(face).astype(int)), pt("left_shoulder"), 1, int(0.2 * s))
    return mask.astype(bool)


def _side_pose(knee_bend: float) -> Pose:
    """A person in profile with the left thigh forward and the shin bent by ``knee_bend`` (negative = normal)."""
    pose = Pose(yaw=90.0)
    pose.upper["leg_l"] = Segment(0.0, 30.0)
    pose.lower["leg_l"] = Segment(0.0, 30.0 + knee_bend)
    return pose


def test_correct_skeletons_pass_every_check():
    for pose in (Pose(), _side_pose(-50.0)):
        kp = _skeleton(pose)
        checks = anatomy_checks(kp, image_size=IMAGE)
        assert {"missing_limb", "segment_too_long", "asymmetry", "joint_angle", "head_detached"} <= set(checks)
        assert violations(checks) == [] and not is_anomalous(kp, image_size=IMAGE)
    kp = _skeleton()
    with_mask = anatomy_checks(kp, mask=_silhouette(kp))
    assert with_mask["outside_mask"] <= 1 and with_mask["unexplained_mask"] <= 1
    assert "bent_wrong_way" in anatomy_checks(_skeleton(_side_pose(-50.0)))  # the profile check was evaluated


def _broken(name: str) -> tuple[np.ndarray, np.ndarray | None]:
    kp = _skeleton()
    s = body_scale(kp)
    mask = None
    i = COCO17
    if name == "missing_limb":
        kp[[i["left_elbow"], i["left_wrist"]]] = 0
    elif name == "segment_too_long":  # a forearm drawn detached: the wrist moved far along it
        kp[i["left_wrist"], :2] += 1.5 * (kp[i["left_wrist"], :2] - kp[i["left_elbow"], :2])
    elif name == "limb_ratio":  # upper arm nearly zero while the forearm is full length
        kp[i["left_elbow"], :2] = kp[i["left_shoulder"], :2] + [2.0, 3.0]
        kp[i["left_wrist"], :2] = kp[i["left_elbow"], :2] + [0.0, 0.5 * s]
    elif name == "asymmetry":
        kp[i["right_wrist"], :2] = kp[i["right_elbow"], :2] + 0.3 * (kp[i["right_wrist"], :2] - kp[i["right_elbow"], :2])
    elif name == "joint_angle":  # elbow folded to ~170°: the forearm points back along the upper arm
        upper = kp[i["left_elbow"], :2] - kp[i["left_shoulder"], :2]
        t = np.deg2rad(170.0)
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        kp[i["left_wrist"], :2] = kp[i["left_elbow"], :2] + rot @ upper * 0.87
    elif name == "bent_wrong_way":
        kp = _skeleton(_side_pose(+70.0))
    elif name == "fused_legs":
        kp = _skeleton(shape=replace(BodyShape(), hip_half=0.018))
    elif name == "head_detached":
        for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear"):
            kp[i[n], 1] -= 0.4 * s
    elif name == "outside_mask":  # the silhouette has no legs where the keypoints put them
        mask = _silhouette(kp)
        mask[int(kp[i["left_hip"], 1]) + 5:] = False
    elif name == "unexplained_mask":  # two extra legs drawn out from the hips
        mask = _silhouette(kp)
        for side, dx in (("left", 1.3), ("right", -1.3)):
            hip = kp[i[f"{side}_hip"], :2]
            cv2.line(mask.view(np.uint8), tuple(np.round(hip).astype(int)),
                     tuple(np.round(hip + [dx * s, 0.6 * s]).astype(int)), 1, int(0.3 * s))
    return kp, mask


@pytest.mark.parametrize("name", [
    "missing_limb", "segment_too_long", "limb_ratio", "asymmetry", "joint_angle", "bent_wrong_way", "fused_legs",
    "head_detached", "outside_mask", "unexplained_mask",
])
def test_each_check_fires_on_its_broken_skeleton(name):
    kp, mask = _broken(name)
    checks = anatomy_checks(kp, mask=mask, image_size=IMAGE)
    assert checks[name] > 1.0, checks
    assert name in violations(checks) and anomaly_score(checks) >= checks[name]


def test_not_detected_and_truncated_limb():
    assert anatomy_checks(None) == {"not_detected": math.inf}
    assert is_anomalous(None)
    # A limb missing next to the image border may just be outside the frame: not flagged.
    kp = _skeleton()
    kp[[COCO17["left_elbow"], COCO17["left_wrist"]]] = 0
    assert anatomy_checks(kp, image_size=(int(kp[COCO17["left_shoulder"], 0]) + 10, 400))["missing_limb"] == 0


def test_bad_shapes_raise_naming_the_shape():
    with pytest.raises(ValueError, match=r"\(16, 3\)"):
        anatomy_checks(np.zeros((16, 3)))
    with pytest.raises(ValueError, match=r"\(2, 17, 3\)"):
        anatomy_checks(np.zeros((2, 17, 3)))
    with pytest.raises(ValueError, match=r"\(4, 4, 3\)"):
        anatomy_checks(_skeleton(), mask=np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match=r"\(3,\) and \(2,\)"):
        roc_auc([1, 2, 3], [0, 1])


def test_false_positive_rate_on_correct_mannequins():
    cfg = MannequinConfig(n=200, seed=100, anomaly_prob=0.0, second_person_prob=0.0)
    results = [anatomy_checks(render_sample(cfg, k).keypoints[0], image_size=(cfg.size, cfg.size))
               for k in range(cfg.n)]
    rate = anomaly_rate(results)
    assert rate.n == 200 and rate.rate <= 0.05, rate


def test_roc_auc_hand_examples():
    # Positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of 4 pairs ordered correctly.
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # Ties count ½: pairs (1 vs 1) ½, (1 vs 2) 0, (3 vs 1) 1, (3 vs 2) 1 → 2.5 / 4.
    assert roc_auc([1, 1, 2, 3], [0, 1, 0, 1]) == pytest.approx(0.625)
    assert roc_auc([math.inf, 0.0], [True, False]) == 1.0
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1.0, 2.0], [1, 1])
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        return
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 5, 60).astype(float), rng.integers(0, 2, 60)
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))


def test_anomaly_rate_with_wilson_interval():
    rate = anomaly_rate([True, False, {"fused_legs": 1.5}, {"fused_legs": 0.2}])
    assert (rate.flagged, rate.n, rate.rate) == (2, 4, 0.5)
    # 0 of 10 flagged: Wilson upper bound z²/n / (1 + z²/n) = 0.38415 / 1.38415.
    none = anomaly_rate([False] * 10)
    assert none.ci95_lo == 0.0 and none.ci95_hi == pytest.approx(0.277532, abs=1e-6)
    half = anomaly_rate([True, False] * 5)
    assert (half.ci95_lo, half.ci95_hi) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    assert math.isnan(anomaly_rate([]).rate)
