"""Drawing COCO-17 skeletons over images, for reports and contact sheets."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from humantune.data.keypoints import COCO17_NAMES, COCO17_SKELETON

# Distinct person colours (RGB, matplotlib tab10 order).
PERSON_COLORS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]
# Colours by body side when not colouring by person: left, right, centre (nose and limbs joining the sides).
SIDE_COLORS = {"left": (0, 150, 255), "right": (255, 90, 0), "centre": (0, 200, 80)}

_SUBPIXEL_BITS = 4  # cv2 fixed-point shift: coordinates drawn to 1/16 pixel
_SIDE = ["left" if n.startswith("left_") else "right" if n.startswith("right_") else "centre" for n in COCO17_NAMES]


def default_line_sizes(width: int, height: int) -> tuple[int, int]:
    """(joint radius, line thickness) in pixels for an image of this size: ≈1% and ≈0.5% of the long side."""
    long_side = max(width, height)
    return max(2, round(long_side / 100)), max(1, round(long_side / 200))


def draw_keypoints(
    image: Image.Image,
    keypoints: np.ndarray,
    color_by_person: bool = True,
    radius: int | None = None,
    thickness: int | None = None,
    show_invisible: bool = False,
) -> Image.Image:
    """A copy of ``image`` (RGB) with the COCO-17 skeleton and joints of every person drawn on it (antialiased).

    keypoints: (P, 17, 3) ``[x, y, v]`` in pixels (centre of the top-left pixel = (0, 0)), COCO flags:
    v ≥ 2 visible → filled joint; 0 < v < 2 labelled but occluded → hollow joint; v ≤ 0 not labelled →
    skipped, or a small cross when ``show_invisible``. A limb is drawn when both its joints have v > 0; joints
    with non-finite coordinates are never drawn. Predictions whose third column is a confidence should be
    thresholded into flags first. Colours: one per person (:data:`PERSON_COLORS`), or by body side
    (:data:`SIDE_COLORS`) when ``color_by_person`` is False. ``radius`` and ``thickness`` default to
    :func:`default_line_sizes`.
    """
    kps = np.asarray(keypoints, dtype=np.float64).reshape(-1, 17, 3)
    canvas = np.array(image.convert("RGB"))
    default_radius, default_thickness = default_line_sizes(canvas.shape[1], canvas.shape[0])
    radius = default_radius if radius is None else radius
    thickness = default_thickness if thickness is None else thickness
    scale = 1 << _SUBPIXEL_BITS

    def point(xy: np.ndarray) -> tuple[int, int]:
        return int(round(xy[0] * scale)), int(round(xy[1] * scale))

    for p, person in enumerate(kps):
        finite = np.isfinite(person[:, :2]).all(axis=1)
        labelled = finite & (person[:, 2] > 0)

        def color(*joints: int) -> tuple[int, int, int]:
            if color_by_person:
                return PERSON_COLORS[p % len(PERSON_COLORS)]
            sides = {_SIDE[j] for j in joints}
            return SIDE_COLORS[sides.pop() if len(sides) == 1 else "centre"]

        for a, b in COCO17_SKELETON:
            if labelled[a] and labelled[b]:
                cv2.line(canvas, point(person[a]), point(person[b]), color(a, b), thickness, cv2.LINE_AA,
                         _SUBPIXEL_BITS)
        for j in range(17):
            if labelled[j]:
                fill = cv2.FILLED if person[j, 2] >= 2 else thickness
                cv2.circle(canvas, point(person[j]), radius * scale, color(j), fill, cv2.LINE_AA, _SUBPIXEL_BITS)
            elif show_invisible and finite[j]:
                for dx, dy in ((1, 1), (1, -1)):
                    d = np.array([dx, dy]) * radius
                    cv2.line(canvas, point(person[j, :2] - d), point(person[j, :2] + d), color(j), thickness,
                             cv2.LINE_AA, _SUBPIXEL_BITS)
    return Image.fromarray(canvas)
