import numpy as np
import pytest

from humantune.data.mannequin.body import (
    ACTIONS, MAX_ELBOW_FLEXION, MAX_KNEE_FLEXION, BodyShape, Pose, Segment, elbow_angle, forward_kinematics,
    sample_pose, segment_direction,
)


def test_segment_direction_hand_computed():
    np.testing.assert_allclose(segment_direction(Segment(0, 0), 1.0), [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(segment_direction(Segment(90, 0), 1.0), [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(segment_direction(Segment(90, 0), -1.0), [-1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(segment_direction(Segment(0, 90), 1.0), [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(segment_direction(Segment(0, 180), 1.0), [0, 1, 0], atol=1e-12)
    a, f = np.deg2rad(30), np.deg2rad(40)
    np.testing.assert_allclose(segment_direction(Segment(30, 40), -1.0),
                               [-np.sin(a), -np.cos(a) * np.cos(f), np.cos(a) * np.sin(f)], atol=1e-12)


def test_forward_kinematics_keeps_segment_lengths_and_stands_on_ground():
    shape = BodyShape()
    rng = np.random.default_rng(0)
    for action in ("standing", "walking", "dancing", "sitting", "lying_side"):
        pose = sample_pose(action, rng)
        j = forward_kinematics(shape, pose)
        for s in ("l", "r"):
            assert np.linalg.norm(j[f"elbow_{s}"] - j[f"shoulder_{s}"]) == pytest.approx(shape.upper_arm)
            assert np.linalg.norm(j[f"wrist_{s}"] - j[f"elbow_{s}"]) == pytest.approx(shape.forearm)
            assert np.linalg.norm(j[f"knee_{s}"] - j[f"hip_{s}"]) == pytest.approx(shape.thigh)
            assert np.linalg.norm(j[f"ankle_{s}"] - j[f"knee_{s}"]) == pytest.approx(shape.shin)
        if pose.support == "feet" and pose.lift == 0:
            feet = [j[k][1] for k in ("toe_l", "toe_r", "heel_l", "heel_r")]
            assert min(feet) == pytest.approx(0.0, abs=1e-12)


def test_standing_neutral_pose_is_upright_and_facing_camera():
    j = forward_kinematics(BodyShape(), Pose())
    assert j["head"][1] > j["neck"][1] > j["pelvis"][1] > j["knee_l"][1] > j["ankle_l"][1]
    assert j["shoulder_l"][0] > 0 > j["shoulder_r"][0]          # person's left is +x (image right)
    assert j["nose"][2] > j["head"][2]                            # the face points at the camera (+z)
    total = j["crown"][1] - min(j["heel_l"][1], j["toe_l"][1])
    assert total == pytest.approx(1.0, abs=0.04)                  # proportions add up to one standing height


def test_yaw_turns_the_body_towards_image_right():
    p = Pose(yaw=90.0)
    j = forward_kinematics(BodyShape(), p)
    np.testing.assert_allclose(j["forward"], [1, 0, 0], atol=1e-12)
    assert j["nose"][0] > j["head"][0]


@pytest.mark.parametrize("action", ACTIONS)
def test_sampled_poses_stay_within_anatomical_limits(action):
    rng = np.random.default_rng(1)
    for _ in range(200):
        pose = sample_pose(action, rng)
        for limb in ("arm_l", "arm_r"):
            assert elbow_angle(pose, limb) <= MAX_ELBOW_FLEXION
        for limb in ("leg_l", "leg_r"):
            assert elbow_angle(pose, limb) <= MAX_KNEE_FLEXION


def test_unknown_action_is_rejected():
    with pytest.raises(ValueError, match="unknown action 'flying'"):
        sample_pose("flying", np.random.default_rng(0))
