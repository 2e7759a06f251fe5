import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from humantune.errors import HumantuneError
from humantune.eval.pose_estimators import (
    MediaPipePoseEstimator,
    PoseEstimate,
    load_pose_estimator,
    normalized_to_pixels,
    upscaled_size,
)


def _crude_person(width: int, height: int) -> np.ndarray:
    """A flat cartoon person (head with eyes and hair, shirt, arms, trousers) standing on grey, RGB uint8.

    Returns the image; the head centre is at (width/2, 55/384·height).
    """
    img = np.full((height, width, 3), 200, np.uint8)
    s = height / 384
    cx = width // 2

    def p(x, y):
        return int(cx + x * s), int(y * s)

    skin, shirt, trousers = (224, 172, 140), (40, 80, 200), (50, 50, 60)
    cv2.rectangle(img, p(-35, 95), p(35, 210), shirt, -1)
    for side in (-1, 1):
        cv2.line(img, p(35 * side, 100), p(55 * side, 160), shirt, int(18 * s))
        cv2.line(img, p(55 * side, 160), p(60 * side, 215), skin, int(14 * s))
        cv2.line(img, p(18 * side, 210), p(22 * side, 290), trousers, int(24 * s))
        cv2.line(img, p(22 * side, 290), p(24 * side, 365), trousers, int(20 * s))
        cv2.circle(img, p(9 * side, 52), max(1, int(3 * s)), (30, 30, 30), -1)
    cv2.rectangle(img, p(-8, 75), p(8, 98), skin, -1)
    cv2.ellipse(img, p(0, 55), (int(22 * s), int(28 * s)), 0, 0, 360, skin, -1)
    cv2.ellipse(img, p(0, 40), (int(23 * s), int(15 * s)), 0, 180, 360, (60, 40, 20), -1)
    cv2.line(img, p(-7, 70), p(7, 70), (150, 60, 60), max(1, int(2 * s)))
    return img


@pytest.fixture(scope="module")
def estimator():
    with MediaPipePoseEstimator() as est:
        yield est


def test_blank_image_finds_nobody(estimator):
    result = estimator.estimate(np.zeros((200, 300, 3), np.uint8))
    assert isinstance(result, PoseEstimate)
    assert result.keypoints.shape == (0, 17, 3) and result.scores.shape == (0,)


@pytest.mark.parametrize("size", [(256, 384), (128, 192)])  # the second is upscaled before inference
def test_cartoon_person_keypoints_in_input_pixels(estimator, size):
    width, height = size
    image = Image.fromarray(_crude_person(width, height))
    result = estimator.estimate(image)
    assert result.keypoints.shape == (1, 17, 3) and result.keypoints.dtype == np.float32
    assert result.scores.shape == (1,)
    kp = result.keypoints[0]
    assert ((kp[:, 2] >= 0) & (kp[:, 2] <= 1)).all()
    assert result.scores[0] == pytest.approx(kp[:, 2].mean(), abs=1e-6)
    # the nose lies in the drawn head, in pixels of the image passed in
    head_radius = 28 / 384 * height
    assert np.hypot(kp[0, 0] - width / 2, kp[0, 1] - 55 / 384 * height) < head_radius
    # ankles below knees below hips below shoulders (image y grows downward)
    assert kp[5:7, 1].max() < kp[11:13, 1].min() < kp[13:15, 1].min() < kp[15:17, 1].min()


def test_margin_keeps_keypoints_in_input_pixels(estimator):
    """The margin pads the image before inference; the keypoints still come back in the input's pixels, where
    the unpadded estimate puts them."""
    image = _crude_person(256, 384)
    assert estimator.margin == 0.25
    with MediaPipePoseEstimator(margin=0.0) as plain, MediaPipePoseEstimator(margin=0.5) as wide:
        a, b = plain.estimate(image), wide.estimate(image)
    c = estimator.estimate(image)
    assert a.num_people == b.num_people == c.num_people == 1
    for kp in (b.keypoints[0], c.keypoints[0]):
        confident = (kp[:, 2] > 0.5) & (a.keypoints[0][:, 2] > 0.5)
        assert confident.sum() >= 10
        assert np.abs(kp[confident, :2] - a.keypoints[0][confident, :2]).max() < 0.08 * 384


def test_margin_must_be_a_sane_fraction():
    with pytest.raises(HumantuneError, match=r"margin must be in \[0, 2\].*got -0.1"):
        MediaPipePoseEstimator(margin=-0.1)


def test_batch_and_array_input(estimator):
    results = estimator.estimate_batch([np.zeros((64, 64, 3), np.uint8)] * 2)
    assert [r.num_people for r in results] == [0, 0]
    with pytest.raises(ValueError, match="uint8"):
        estimator.estimate(np.zeros((64, 64, 3), np.float32))


def test_upscaled_size():
    assert upscaled_size(128, 192, 256) == (256, 384)
    assert upscaled_size(100, 30, 256) == (853, 256)
    assert upscaled_size(300, 256, 256) == (300, 256)


def test_upscaled_coordinates_map_back():
    """A blob found in a bicubically upscaled copy, expressed in MediaPipe's normalised coordinates, maps back
    onto its position in the original image."""
    width, height = 50, 80
    centre = np.array([13.3, 40.7])
    ys, xs = np.mgrid[0:height, 0:width]
    blob = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * 2.0**2)).astype(np.float32)
    up_w, up_h = upscaled_size(width, height, 256)
    up = cv2.resize(blob, (up_w, up_h), interpolation=cv2.INTER_CUBIC)
    uy, ux = np.mgrid[0:up_h, 0:up_w]
    found_up = np.array([(up * ux).sum(), (up * uy).sum()]) / up.sum()  # pixel-centre coords of the copy
    normalised = (found_up + 0.5) / np.array([up_w, up_h])  # left/top edge 0, right/bottom edge 1
    np.testing.assert_allclose(normalized_to_pixels(normalised, width, height), centre, atol=0.02)


def test_normalized_to_pixels_corners():
    np.testing.assert_allclose(normalized_to_pixels(np.array([[0, 0], [1, 1]]), 40, 20), [[-0.5, -0.5], [39.5, 19.5]])


def test_refuses_models_that_need_downloading():
    with pytest.raises(HumantuneError, match="only model_complexity=1"):
        MediaPipePoseEstimator(model_complexity=2)
    with pytest.raises(HumantuneError, match="model_complexity=0"):
        load_pose_estimator("mediapipe", model_complexity=0)


def test_unknown_backend_lists_known_ones():
    with pytest.raises(HumantuneError, match="unknown pose estimator 'openpose'; known: mediapipe"):
        load_pose_estimator("openpose")


def test_closed_estimator_refuses_work():
    est = load_pose_estimator("mediapipe", min_size=64)
    est.close()
    with pytest.raises(RuntimeError, match="closed"):
        est.estimate(np.zeros((64, 64, 3), np.uint8))


def test_native_stderr_filter_drops_only_the_named_notices(capfd, tmp_path):
    from humantune.eval.pose_estimators import native_stderr_without

    with open(tmp_path / "log", "w+b") as buffer:
        with native_stderr_without(["notice.cc"], buffer):
            os.write(2, b"W0000 notice.cc:1] nothing to act on\nreal error\n")
        with native_stderr_without(["notice.cc"], buffer):   # the buffer is reused: nothing written twice
            os.write(2, b"second\n")
    assert capfd.readouterr().err == "real error\nsecond\n"


def test_mediapipe_start_up_notices_are_not_printed(tmp_path):
    """A fresh process's first estimates (graph start-up, first detection) print none of MediaPipe's notices."""
    script = ("import numpy as np, sys; sys.path.insert(0, sys.argv[1])\n"
              "from tests.eval.test_pose_estimators import _crude_person\n"
              "from humantune.eval.pose_estimators import MediaPipePoseEstimator\n"
              "with MediaPipePoseEstimator() as e:\n"
              "    assert e.estimate(_crude_person(256, 384)).keypoints.shape[0] == 1\n"
              "    e.estimate(np.zeros((64, 64, 3), np.uint8))\n")
    done = subprocess.run([sys.executable, "-c", script, str(Path(__file__).resolve().parents[2])],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
