import numpy as np
import pytest

from humantune.data.keypoints import COCO17
from humantune.data.mannequin.anomalies import ANOMALY_TYPES, sample_anomaly
from humantune.data.mannequin.body import ACTIONS
from humantune.data.mannequin.scene import render_scene, sample_background, sample_person

LIMBS = [("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"), ("left_elbow", "left_wrist"),
         ("right_elbow", "right_wrist"), ("left_hip", "left_knee"), ("right_hip", "right_knee"),
         ("left_knee", "left_ankle"), ("right_knee", "right_ankle")]
BODY_JOINTS = [COCO17[n] for n in ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
                                   "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
                                   "left_ankle", "right_ankle")]


def scene_for(action, seed, size=128, **kw):
    rng = np.random.default_rng(seed)
    people = [sample_person(action, rng)]
    return render_scene(people, sample_background(action, rng), rng, (size, size), truncate_prob=0.0, **kw)


@pytest.mark.parametrize("action", ACTIONS)
def test_drawn_limbs_pass_through_their_keypoints(action):
    """Every visible body joint and every limb's midpoint lies on the person's own mask pixels."""
    checked = 0
    for seed in range(12):
        sc = scene_for(action, seed)
        kp = sc.keypoints[0]
        assert sc.image.shape == (128, 128, 3) and sc.image.dtype == np.uint8
        for i in BODY_JOINTS:
            x, y, v = kp[i]
            if v == 2:
                assert sc.mask[int(round(y)), int(round(x))] == 1, (action, seed, i)
                checked += 1
        for a, b in LIMBS:
            pa, pb = kp[COCO17[a]], kp[COCO17[b]]
            if pa[2] == 2 and pb[2] == 2:
                mid = (pa[:2] + pb[:2]) / 2
                # the limb is drawn around its centre line: some mask pixel within 1 px of the midpoint
                y0, x0 = int(round(mid[1])), int(round(mid[0]))
                assert sc.mask[max(0, y0 - 1):y0 + 2, max(0, x0 - 1):x0 + 2].any(), (action, seed, a, b)
    assert checked > 12 * 6


def test_face_keypoints_lie_inside_the_head_when_facing_the_camera():
    sc = scene_for("waving", 3)
    kp = sc.keypoints[0]
    for name in ("nose", "left_eye", "right_eye"):
        x, y, v = kp[COCO17[name]]
        assert v == 2
        assert sc.mask[int(round(y)), int(round(x))] == 1


def test_bbox_and_area_come_from_the_mask():
    sc = scene_for("standing", 0)
    ys, xs = np.nonzero(sc.mask == 1)
    assert sc.areas[0] == len(xs)
    np.testing.assert_array_equal(sc.bboxes[0], [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1])
    # keypoints lie within the bbox (joints are inside the drawn body)
    vis = sc.keypoints[0][:, 2] > 0
    x, y, w, h = sc.bboxes[0]
    assert (sc.keypoints[0][vis, 0] >= x - 1).all() and (sc.keypoints[0][vis, 0] <= x + w).all()
    assert (sc.keypoints[0][vis, 1] >= y - 1).all() and (sc.keypoints[0][vis, 1] <= y + h).all()


def test_profile_view_hides_the_far_side_face_points():
    for seed in range(40):
        rng = np.random.default_rng(seed)
        person = sample_person("standing", rng)
        person.pose.yaw, person.pose.head_yaw = 90.0, 0.0
        sc = render_scene([person], "sky", rng, (128, 128), truncate_prob=0.0)
        kp = sc.keypoints[0]
        # facing image right, the camera sees the person's right side; the left eye and ear face away
        assert kp[COCO17["left_eye"], 2] == 1 and kp[COCO17["left_ear"], 2] == 1
        assert kp[COCO17["right_ear"], 2] == 2 and kp[COCO17["right_eye"], 2] == 2


def test_lying_people_are_horizontal_and_on_the_ground():
    for seed in range(10):
        for action in ("lying_back", "lying_side"):
            sc = scene_for(action, seed)
            x, y, w, h = sc.bboxes[0]
            assert w > h, (action, seed)


def test_out_of_frame_keypoints_are_zeroed_coco_style():
    hits = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        sc = render_scene([sample_person("standing", rng)], "grass", rng, (64, 64), truncate_prob=1.0)
        kp = sc.keypoints[0]
        zero = kp[:, 2] == 0
        assert (kp[zero] == 0).all()
        inside = (kp[~zero, 0] >= 0) & (kp[~zero, 0] < 64) & (kp[~zero, 1] >= 0) & (kp[~zero, 1] < 64)
        assert inside.all()
        hits += zero.any()
    assert hits > 5


def test_two_people_have_separate_masks_and_keypoints():
    rng = np.random.default_rng(5)
    people = [sample_person("standing", rng), sample_person("walking", rng)]
    sc = render_scene(people, "street", rng, (128, 128), truncate_prob=0.0)
    assert sc.keypoints.shape == (2, 17, 3)
    assert set(np.unique(sc.mask)) <= {0, 1, 2} and (sc.mask == 1).any() and (sc.mask == 2).any()
    assert " and a " in sc.caption or sc.caption.count(" in a ") == 2


@pytest.mark.parametrize("kind", ANOMALY_TYPES)
def test_anomalies_change_the_drawing_and_are_labelled(kind):
    changed = 0
    for seed in range(6):
        normal = scene_for("standing", seed)
        rng = np.random.default_rng(seed)
        person = sample_person("standing", rng)
        person.anomaly = sample_anomaly(kind, np.random.default_rng(100 + seed))
        broken = render_scene([person], sample_background("standing", rng), rng, (128, 128), truncate_prob=0.0)
        assert broken.attributes()["people"][0]["anomaly"]["type"] == kind
        changed += int((normal.mask != broken.mask).sum() > 15)
        if kind == "missing_limb":
            limb = person.anomaly.part
            side = "left" if limb.endswith("_l") else "right"
            joints = ("elbow", "wrist") if limb.startswith("arm") else ("knee", "ankle")
            for j in joints:
                assert (broken.keypoints[0][COCO17[f"{side}_{j}"]] == 0).all()
    assert changed >= 5


@pytest.mark.parametrize("action", ["standing", "sitting", "lying_side"])
def test_rescale_equals_building_at_the_scaled_placement(action):
    from humantune.data.mannequin.render import Placement, build_parts, rescale

    spec = sample_person(action, np.random.default_rng(7))
    unit = build_parts(spec.shape, spec.pose, spec.look, Placement(1.0, (0.0, 0.0), 17.0))
    direct = build_parts(spec.shape, spec.pose, spec.look, Placement(53.0, (40.0, -6.0), 17.0))
    moved = rescale(unit, 53.0, (40.0, -6.0))
    np.testing.assert_allclose(moved.keypoints, direct.keypoints, atol=1e-3)
    assert len(moved.parts) == len(direct.parts)
    for a, b in zip(moved.parts, direct.parts):
        assert (a.kind, a.owners, a.color, a.depth) == (b.kind, b.owners, b.color, b.depth)
        np.testing.assert_allclose(a.points, b.points, atol=1e-3)
        assert a.width == pytest.approx(b.width, rel=1e-6)
        for name, point in a.extra.get("j2", {}).items():
            np.testing.assert_allclose(point, b.extra["j2"][name], atol=1e-3)
