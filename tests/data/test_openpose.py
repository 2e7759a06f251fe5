import numpy as np
import pytest

from humantune.data.keypoints import COCO17
from humantune.data.openpose import (
    OPENPOSE_KEYPOINT_COLORS,
    OPENPOSE_LIMB_COLORS,
    OPENPOSE_LIMBS,
    default_openpose_width,
    draw_openpose,
)

BLACK = (0, 0, 0)


def _person(**points: tuple[float, float, int]) -> np.ndarray:
    kp = np.zeros((1, 17, 3), dtype=np.float32)
    for name, xyv in points.items():
        kp[0, COCO17[name]] = xyv
    return kp


def _rgb(image, x: int, y: int) -> tuple[int, int, int]:
    return tuple(int(c) for c in np.asarray(image)[y, x])


def test_colour_tables_match_controlnet_aux():
    assert len(OPENPOSE_KEYPOINT_COLORS) == 18 and len(OPENPOSE_LIMBS) == len(OPENPOSE_LIMB_COLORS) == 17
    assert OPENPOSE_KEYPOINT_COLORS[0] == (255, 0, 0) and OPENPOSE_KEYPOINT_COLORS[17] == (255, 0, 85)
    # limb colour = int(0.6 * colour): 255 -> 153, 170 -> 102, 85 -> 51
    assert OPENPOSE_LIMB_COLORS[1] == (153, 51, 0) and OPENPOSE_LIMB_COLORS[16] == (153, 0, 102)
    assert OPENPOSE_LIMBS[0] == (1, 2) and OPENPOSE_LIMBS[12] == (1, 0) and OPENPOSE_LIMBS[16] == (15, 17)


def test_limb_midpoint_and_joints_have_their_colours():
    # right shoulder (OpenPose 2) -> right elbow (OpenPose 3) is limb 2: colour 2 at 0.6
    kp = _person(right_shoulder=(100, 100, 2), right_elbow=(100, 200, 1))
    image = draw_openpose(kp, (512, 512))
    assert image.mode == "RGB" and image.size == (512, 512)
    assert _rgb(image, 100, 150) == OPENPOSE_LIMB_COLORS[2] == (153, 102, 0)
    assert _rgb(image, 100, 100) == OPENPOSE_KEYPOINT_COLORS[2] == (255, 170, 0)
    assert _rgb(image, 100, 200) == OPENPOSE_KEYPOINT_COLORS[3] == (255, 255, 0)


def test_background_is_black_outside_the_drawn_shapes():
    kp = _person(right_shoulder=(100, 100, 2), right_elbow=(100, 200, 2))
    pixels = np.asarray(draw_openpose(kp, (512, 512), stickwidth=4, radius=4))
    ys, xs = np.nonzero(pixels.any(axis=2))
    assert xs.min() >= 96 and xs.max() <= 104 and ys.min() >= 96 and ys.max() <= 204
    assert _rgb(pixels, 300, 300) == BLACK and _rgb(pixels, 108, 150) == BLACK


def test_stickwidth_and_radius_set_the_drawn_sizes():
    kp = _person(right_shoulder=(100, 60, 2), right_elbow=(100, 240, 2))
    image = draw_openpose(kp, (256, 256), stickwidth=6, radius=10)
    assert _rgb(image, 105, 150) == OPENPOSE_LIMB_COLORS[2] and _rgb(image, 108, 150) == BLACK
    assert _rgb(image, 109, 60) == OPENPOSE_KEYPOINT_COLORS[2] and _rgb(image, 112, 60) == BLACK


def test_invisible_points_and_their_limbs_are_not_drawn():
    kp = _person(right_shoulder=(100, 100, 2), right_elbow=(100, 200, 0))
    pixels = np.asarray(draw_openpose(kp, (512, 512), stickwidth=4, radius=4))
    assert _rgb(pixels, 100, 150) == BLACK and _rgb(pixels, 100, 200) == BLACK
    ys, xs = np.nonzero(pixels.any(axis=2))
    assert np.all(np.hypot(xs - 100, ys - 100) <= 4.5)  # only the shoulder dot
    assert not np.asarray(draw_openpose(np.zeros((2, 17, 3)), (64, 32))).any()


def test_neck_comes_from_both_shoulders():
    kp = _person(left_shoulder=(300, 100, 2), right_shoulder=(100, 100, 2))
    image = draw_openpose(kp, (512, 512))
    assert _rgb(image, 200, 100) == OPENPOSE_KEYPOINT_COLORS[1]  # neck dot at the midpoint
    assert _rgb(image, 150, 100) == OPENPOSE_LIMB_COLORS[0]  # neck -> right shoulder
    assert _rgb(image, 250, 100) == OPENPOSE_LIMB_COLORS[1]  # neck -> left shoulder


def test_points_of_every_person_sit_on_top_of_limbs():
    a = _person(right_shoulder=(100, 50, 2), right_elbow=(100, 250, 2))
    b = _person(nose=(100, 150, 2))
    image = draw_openpose(np.concatenate([a, b]), (256, 256))
    assert _rgb(image, 100, 150) == OPENPOSE_KEYPOINT_COLORS[0]


def test_non_square_size_puts_x_along_the_width():
    image = draw_openpose(_person(nose=(300, 50, 2)), (320, 100))
    assert image.size == (320, 100)
    assert _rgb(image, 300, 50) == OPENPOSE_KEYPOINT_COLORS[0]


@pytest.mark.parametrize("size, expected", [((512, 512), 4), ((1024, 768), 8), ((128, 128), 1), ((64, 64), 1)])
def test_default_width_scales_with_the_long_side(size, expected):
    assert default_openpose_width(*size) == expected


def test_drawing_is_deterministic():
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(0, 256, (3, 17, 2)), rng.integers(0, 3, (3, 17, 1))], axis=2)
    first, second = draw_openpose(kp, (256, 256)), draw_openpose(kp, (256, 256))
    assert first.tobytes() == second.tobytes() and np.asarray(first).any()
