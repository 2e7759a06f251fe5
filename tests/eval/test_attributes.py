import numpy as np
import pytest

from humantune.data.mannequin.appearance import CLOTH_COLORS, JEANS_BLUE
from humantune.data.mannequin.world import MannequinConfig, render_sample
from humantune.errors import HumantuneError
from humantune.eval.attributes import (
    BackgroundClassifier,
    attribute_accuracy,
    dominant_colour,
    read_attributes,
)


@pytest.fixture(scope="module")
def scenes():
    # standing / walking / waving, one person, never truncated: the easy case the accuracy target is stated for
    cfg = MannequinConfig(n=60, seed=5, action_mix={"standing": 1.0, "walking": 1.0, "waving": 1.0},
                          second_person_prob=0.0, truncate_prob=0.0)
    return [render_sample(cfg, i) for i in range(60)]


def test_dominant_colour_ignores_skin_and_votes_by_majority():
    pixels = np.array([CLOTH_COLORS["blue"]] * 6 + [CLOTH_COLORS["purple"]] * 3 + [(241, 194, 160)] * 20, np.uint8)
    name, share, votes = dominant_colour(pixels)
    assert (name, votes) == ("blue", {"blue": 6, "purple": 3})
    assert share == pytest.approx(6 / 9)
    # shaded denim reads as the colour its caption names
    assert dominant_colour(np.array([[int(c * 0.8) for c in JEANS_BLUE]] * 4, np.uint8))[0] == "blue"
    assert dominant_colour(np.zeros((0, 3), np.uint8))[0] is None


def test_read_attributes_on_ground_truth_keypoints(scenes):
    result = attribute_accuracy([s.image for s in scenes], [s.caption for s in scenes],
                                [s.keypoints for s in scenes])
    # benchmarks/attribute_accuracy.py measures 1.00 / 0.99 / 1.00 / 1.00 on 400 such renders
    assert result.accuracy["top_color"] >= 0.95
    assert result.accuracy["bottom_color"] >= 0.9
    assert result.accuracy["background"] >= 0.95
    assert result.accuracy["posture"] >= 0.95
    assert result.counted["top_color"] == 60
    assert result.counted["bottom_color"] == sum(s.people[0].look.bottom is not None for s in scenes)
    assert len(result.rows) == 60 and all(r["detected"] for r in result.rows)


def test_missed_detection_counts_as_wrong(scenes):
    images, captions = [s.image for s in scenes[:4]], [s.caption for s in scenes[:4]]
    detections = [scenes[0].keypoints, None, np.zeros((0, 17, 3)), scenes[3].keypoints[0]]
    result = attribute_accuracy(images, captions, detections)
    assert result.counted["background"] == 4
    assert result.correct["background"] == 2
    assert [r["detected"] for r in result.rows] == [True, False, False, True]
    assert result.rows[1]["top_color_read"] == "missed"


def test_unlabelled_torso_reads_none(scenes):
    kp = scenes[0].keypoints[0].copy()
    kp[[5, 6, 11, 12], 2] = 0
    read = read_attributes(scenes[0].image, kp)
    assert read.top_color is None and read.bottom_color is None and read.posture is None


def test_bad_inputs_name_the_problem(scenes):
    image, kp = scenes[0].image, scenes[0].keypoints[0]
    with pytest.raises(ValueError, match="uint8 H×W×3"):
        read_attributes(image.astype(np.float32), kp)
    with pytest.raises(ValueError, match=r"shape \(17, 3\), got \(1, 17, 3\)"):
        read_attributes(image, kp[None])
    bad = kp.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        read_attributes(image, bad)
    with pytest.raises(ValueError, match="one caption and one detection per image"):
        attribute_accuracy([image], [], [kp])


def test_missing_background_classifier_is_a_one_line_error(tmp_path):
    with pytest.raises(HumantuneError, match="does not exist") as err:
        BackgroundClassifier.load(tmp_path / "nope.json")
    assert "\n" not in str(err.value)
