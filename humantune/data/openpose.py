"""OpenPose-18 condition images, drawn the way ControlNet-OpenPose's training conditions were drawn.

The reference is ``draw_bodypose`` in controlnet_aux (``src/controlnet_aux/open_pose/util.py``, the annotator of
lllyasviel's ControlNet): on a black canvas, each of the first 17 limbs of its ``limbSeq`` is a filled ellipse
polygon (``cv2.ellipse2Poly``) centred at the limb midpoint, half-length = half the limb length, half-width =
``stickwidth``, rotated to the limb angle, in 0.6 × the limb colour (truncated to an integer, as controlnet_aux's
``(canvas * 0.6).astype(np.uint8)``); then every keypoint is a filled circle of ``radius`` in its full colour.
Coordinates, the ellipse half-length and the angle are truncated to integers with ``int()`` exactly as there.
Colours are RGB (controlnet_aux returns the canvas as an RGB image).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

from humantune.data.keypoints import coco17_to_openpose18
from humantune.data.sample import validate_keypoints

# OpenPose-18 keypoint colours (RGB), indexed like OPENPOSE18_NAMES; limb i uses colour i too (controlnet_aux).
OPENPOSE_KEYPOINT_COLORS: list[tuple[int, int, int]] = [
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
]

# The 17 drawn limbs as 0-based OpenPose-18 index pairs: controlnet_aux's 1-based ``limbSeq`` minus one, without
# its last two entries ([3, 17] and [6, 18], shoulder–ear), which it never draws.
OPENPOSE_LIMBS: list[tuple[int, int]] = [
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
]

# Limb colours (RGB): int(0.6 × keypoint colour i) for limb i.
OPENPOSE_LIMB_COLORS: list[tuple[int, int, int]] = [
    tuple(int(float(c) * 0.6) for c in OPENPOSE_KEYPOINT_COLORS[i]) for i in range(len(OPENPOSE_LIMBS))
]

_REFERENCE_SIZE = 512  # controlnet_aux's stickwidth and radius (4 px) are for conditions of about this size
_REFERENCE_WIDTH = 4


def default_openpose_width(width: int, height: int) -> int:
    """Stick half-width and joint radius for a ``width`` × ``height`` condition: 4 px at 512, scaled with the long
    side, at least 1 — ``max(1, round(4 · max(w, h) / 512))``."""
    return max(1, round(_REFERENCE_WIDTH * max(width, height) / _REFERENCE_SIZE))


def draw_openpose(
    keypoints: np.ndarray,
    size: tuple[int, int],
    stickwidth: int | None = None,
    radius: int | None = None,
) -> Image.Image:
    """Render an OpenPose-18 condition image (RGB, black background) of ``size`` = (width, height).

    keypoints: COCO-17 ``[x, y, v]`` in pixels, (P, 17, 3) (or one person (17, 3)); converted with
    :func:`humantune.data.keypoints.coco17_to_openpose18` (the neck is the shoulder midpoint). A limb is drawn
    when both its points have v > 0, a point when its v > 0. As in controlnet_aux, all limbs of all people are
    drawn first (limb by limb, person by person), then all points, so points sit on top of limbs.
    ``stickwidth`` (ellipse half-width) and ``radius`` default to :func:`default_openpose_width` (4 at 512 px).
    """
    width, height = size
    people = coco17_to_openpose18(validate_keypoints(keypoints, where="draw_openpose"))
    default_width = default_openpose_width(width, height)
    stickwidth = default_width if stickwidth is None else stickwidth
    radius = default_width if radius is None else radius
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for (a, b), color in zip(OPENPOSE_LIMBS, OPENPOSE_LIMB_COLORS):
        for person in people:
            if person[a, 2] <= 0 or person[b, 2] <= 0:
                continue
            xa, ya = float(person[a, 0]), float(person[a, 1])
            xb, yb = float(person[b, 0]), float(person[b, 1])
            length = math.hypot(xa - xb, ya - yb)
            angle = math.degrees(math.atan2(ya - yb, xa - xb))
            polygon = cv2.ellipse2Poly(
                (int((xa + xb) / 2), int((ya + yb) / 2)), (int(length / 2), stickwidth), int(angle), 0, 360, 1
            )
            cv2.fillConvexPoly(canvas, polygon, color)
    for k, color in enumerate(OPENPOSE_KEYPOINT_COLORS):
        for person in people:
            if person[k, 2] > 0:
                cv2.circle(canvas, (int(person[k, 0]), int(person[k, 1])), radius, color, thickness=-1)
    return Image.fromarray(canvas)
