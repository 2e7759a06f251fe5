import numpy as np
import pytest
from PIL import Image

from humantune.data.keypoints import (
    COCO17,
    COCO17_NAMES,
    MEDIAPIPE33_TO_COCO17,
    OPENPOSE18_NAMES,
    coco17_to_mediapipe33,
    coco17_to_openpose18,
    flip_coco17_horizontal,
    mediapipe33_to_coco17,
    openpose18_to_coco17,
)


def _people(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kp = np.zeros((n, 17, 3), dtype=np.float32)
    kp[..., :2] = rng.uniform(0, 200, size=(n, 17, 2))
    kp[..., 2] = rng.integers(0, 3, size=(n, 17))
    kp[kp[..., 2] == 0] = 0  # COCO stores unlabelled points as [0, 0, 0]
    return kp


def test_openpose18_points_are_the_coco_points_of_the_same_name():
    kp = _people(3)
    op = coco17_to_openpose18(kp)
    assert op.shape == (3, 18, 3) and op.dtype == np.float32
    for i, name in enumerate(OPENPOSE18_NAMES):
        if name != "neck":
            np.testing.assert_array_equal(op[:, i], kp[:, COCO17[name]])
    assert OPENPOSE18_NAMES.index("right_shoulder") == 2 and OPENPOSE18_NAMES.index("left_ear") == 17


def test_neck_is_shoulder_midpoint_with_the_lower_visibility():
    kp = np.zeros((17, 3))
    kp[COCO17["left_shoulder"]] = [10, 20, 2]
    kp[COCO17["right_shoulder"]] = [30, 44, 1]
    np.testing.assert_array_equal(coco17_to_openpose18(kp)[1], [20, 32, 1])


@pytest.mark.parametrize("missing", ["left_shoulder", "right_shoulder"])
def test_neck_is_unlabelled_when_a_shoulder_is(missing):
    kp = np.zeros((17, 3))
    kp[COCO17["left_shoulder"]] = [10, 20, 2]
    kp[COCO17["right_shoulder"]] = [30, 44, 2]
    kp[COCO17[missing], 2] = 0
    op = coco17_to_openpose18(kp)
    np.testing.assert_array_equal(op[1], [0, 0, 0])
    assert (op[:, 2] > 0).sum() == 1  # the other shoulder survives, nothing else appears


def test_openpose_round_trip_keeps_any_leading_shape():
    kp = _people(6).reshape(2, 3, 17, 3)
    op = coco17_to_openpose18(kp)
    assert op.shape == (2, 3, 18, 3)
    np.testing.assert_array_equal(openpose18_to_coco17(op), kp)


def test_mediapipe_to_coco_picks_the_mapped_landmarks():
    landmarks = np.arange(33 * 4, dtype=np.float64).reshape(33, 4)  # row i holds 4i .. 4i+3
    coco = mediapipe33_to_coco17(landmarks)
    assert coco.shape == (17, 4) and coco.dtype == np.float64
    # nose = landmark 0, left shoulder = 11, right ankle = 28 (MediaPipe Pose landmark numbering)
    np.testing.assert_array_equal(coco[COCO17["nose"]], [0, 1, 2, 3])
    np.testing.assert_array_equal(coco[COCO17["left_shoulder"]], landmarks[11])
    np.testing.assert_array_equal(coco[COCO17["right_ankle"]], landmarks[28])


def test_coco_to_mediapipe_round_trip_and_unmapped_landmarks_are_unlabelled():
    kp = _people(2, seed=1)
    mp = coco17_to_mediapipe33(kp)
    assert mp.shape == (2, 33, 3)
    np.testing.assert_array_equal(mediapipe33_to_coco17(mp), kp)
    unmapped = sorted(set(range(33)) - set(MEDIAPIPE33_TO_COCO17))
    assert len(unmapped) == 16
    np.testing.assert_array_equal(mp[:, unmapped], 0)


def test_flip_mirrors_x_and_swaps_sides():
    kp = np.zeros((17, 3))
    kp[COCO17["left_wrist"]] = [2, 7, 2]
    kp[COCO17["nose"]] = [0, 3, 1]
    flipped = flip_coco17_horizontal(kp, width=10)
    np.testing.assert_array_equal(flipped[COCO17["right_wrist"]], [7, 7, 2])  # x' = width - 1 - x
    np.testing.assert_array_equal(flipped[COCO17["left_wrist"]], [0, 0, 0])
    np.testing.assert_array_equal(flipped[COCO17["nose"]], [9, 3, 1])
    np.testing.assert_array_equal(flipped[COCO17["left_ankle"]], [0, 0, 0])  # unlabelled stays [0, 0, 0]


def test_flip_matches_mirroring_the_image():
    width, height = 13, 9
    kp = np.zeros((17, 3))
    kp[COCO17["left_knee"]] = [3, 5, 2]
    pixels = np.zeros((height, width), dtype=np.uint8)
    pixels[5, 3] = 255
    mirrored = np.asarray(Image.fromarray(pixels).transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    x, y, v = flip_coco17_horizontal(kp, width)[COCO17["right_knee"]]
    assert v == 2 and mirrored[int(y), int(x)] == 255


def test_flip_twice_is_identity_for_a_batch():
    kp = _people(4, seed=2).astype(np.float64)
    np.testing.assert_allclose(flip_coco17_horizontal(flip_coco17_horizontal(kp, 200), 200), kp, atol=1e-9)
    assert flip_coco17_horizontal(kp, 200).shape == (4, 17, 3)


def test_integer_input_becomes_float():
    kp = np.zeros((17, 3), dtype=np.int64)
    kp[COCO17["left_shoulder"]] = [1, 0, 2]
    kp[COCO17["right_shoulder"]] = [2, 0, 2]
    neck = coco17_to_openpose18(kp)[1]
    assert neck.dtype == np.float32 and neck[0] == 1.5


@pytest.mark.parametrize("func, shape", [
    (coco17_to_openpose18, (18, 3)), (openpose18_to_coco17, (17, 3)), (mediapipe33_to_coco17, (17, 3)),
    (coco17_to_mediapipe33, (17, 2)), (coco17_to_openpose18, (17,)),
])
def test_wrong_shapes_raise_with_the_expected_shape(func, shape):
    with pytest.raises(ValueError, match=rf"{func.__name__}: expected shape .* got \({shape[0]},"):
        func(np.zeros(shape))


def test_names_lists_are_consistent():
    assert sorted(set(OPENPOSE18_NAMES) - {"neck"}) == sorted(COCO17_NAMES)
