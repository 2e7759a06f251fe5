"""Samples at the training resolution: resize, centre crop, keypoints and masks moved with the image."""

import numpy as np
import pytest
from PIL import Image

from humantune.data.keypoints import COCO17
from humantune.data.prepare import prepare_sample, resize_centre_crop
from humantune.data.sample import PoseSample


def test_prepare_sample_resizes_crops_and_moves_keypoints_with_the_image():
    image = Image.new("RGB", (64, 48))
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, COCO17["nose"]] = (30, 24, 2)
    kp[0, COCO17["left_wrist"]] = (2, 10, 2)                     # in the cropped-off left margin
    mask = np.zeros((48, 64), np.uint8)
    mask[12:36, 20:44] = 1
    out = prepare_sample(PoseSample(image=image, keypoints=kp, caption="x", mask=mask), 32)
    # short side 48 → 32: scale 2/3, width 64 → 43, crop left (43 − 32) // 2 = 5; x' = (x + ½)·43/64 − ½ − 5
    assert out.keypoints[0, COCO17["nose"]].tolist() == pytest.approx(
        [30.5 * 43 / 64 - 5.5, 24.5 * 32 / 48 - 0.5, 2.0], rel=1e-6)
    assert out.keypoints[0, COCO17["left_wrist"]].tolist() == [0.0, 0.0, 0.0]
    assert out.image.shape == (32, 32, 3) and out.mask.shape == (32, 32)
    assert out.areas[0] == np.count_nonzero(out.mask == 1) > 0
    x, y = out.keypoints[0, COCO17["nose"], :2].astype(int)      # draw_openpose truncates, as controlnet_aux does
    assert out.condition[y, x].max() > 0                          # the condition was drawn from the keypoints


def test_resize_centre_crop_keeps_the_centre_square():
    image = Image.new("RGB", (60, 30), (0, 0, 0))
    image.paste((255, 0, 0), (20, 0, 40, 30))                  # the centre third is red
    out = np.asarray(resize_centre_crop(image, 16))
    assert out.shape == (16, 16, 3)
    assert out[8, 8].tolist() == [255, 0, 0] and out[8, 0, 0] < 255 and out[8, 15, 0] < 255
