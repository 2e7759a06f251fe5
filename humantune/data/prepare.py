"""Training samples at a model's resolution: images resized on the short side and centre-cropped, with their
keypoints, masks, boxes and segment areas mapped the same way, and the OpenPose condition kept or drawn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from humantune.data.openpose import draw_openpose
from humantune.data.sample import PoseSample


@dataclass
class PreparedSample:
    """A sample at the training resolution R: image and condition uint8 (R, R, 3), keypoints (P, 17, 3) in its
    pixels, mask uint8 (R, R) or None, bboxes (P, 4), areas (P,) segment areas (None without a mask)."""

    image: np.ndarray
    condition: np.ndarray
    keypoints: np.ndarray
    caption: str
    mask: np.ndarray | None
    bboxes: np.ndarray
    areas: np.ndarray | None


def centre_crop_geometry(width: int, height: int, resolution: int) -> tuple[int, int, int, int]:
    """(resized width, resized height, left, top): resize so the short side is ``resolution``, then crop the
    centre ``resolution`` square."""
    scale = resolution / min(width, height)
    w, h = max(resolution, round(width * scale)), max(resolution, round(height * scale))
    return w, h, (w - resolution) // 2, (h - resolution) // 2


def transform_keypoints(kp: np.ndarray, size: tuple[int, int], resized: tuple[int, int], offset: tuple[int, int],
                        resolution: int) -> np.ndarray:
    """COCO keypoints of an image of ``size`` mapped through a resize to ``resized`` and a crop at ``offset``
    (pixel centres at integers:  x' = (x + ½)·W'/W − ½ − left). Points that leave the crop become [0, 0, 0]."""
    out = np.asarray(kp, np.float32).copy()
    sx, sy = resized[0] / size[0], resized[1] / size[1]
    out[..., 0] = (out[..., 0] + 0.5) * sx - 0.5 - offset[0]
    out[..., 1] = (out[..., 1] + 0.5) * sy - 0.5 - offset[1]
    inside = (out[..., 0] >= -0.5) & (out[..., 0] < resolution - 0.5) & (out[..., 1] >= -0.5) \
        & (out[..., 1] < resolution - 0.5)
    keep = (out[..., 2] > 0) & inside
    out[~keep] = 0.0
    return out


def resize_crop(image: Image.Image, resized: tuple[int, int], offset: tuple[int, int], resolution: int,
                 resample: int) -> Image.Image:
    if image.size != resized:
        image = image.resize(resized, resample)
    left, top = offset
    return image.crop((left, top, left + resolution, top + resolution))


def _mask_boxes(mask: np.ndarray, people: int) -> tuple[np.ndarray, np.ndarray]:
    """Segment areas and tight boxes [x, y, w, h] of persons 1..people of a mask."""
    areas, boxes = np.zeros(people, np.float32), np.zeros((people, 4), np.float32)
    for k in range(people):
        ys, xs = np.nonzero(mask == k + 1)
        areas[k] = len(xs)
        if len(xs):
            boxes[k] = (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    return areas, boxes


def keypoint_boxes(kp: np.ndarray) -> np.ndarray:
    """[x, y, w, h] of each person's labelled keypoints (zeros for a person with none)."""
    boxes = np.zeros((len(kp), 4), np.float32)
    for n, person in enumerate(kp):
        xy = person[person[:, 2] > 0, :2]
        if len(xy):
            boxes[n, :2], boxes[n, 2:] = xy.min(axis=0), np.ptp(xy, axis=0)
    return boxes


def prepare_sample(sample: PoseSample, resolution: int) -> PreparedSample:
    """``sample`` at ``resolution``²: image resized (bicubic) and centre-cropped, keypoints and mask (nearest) the
    same way; the condition is the sample's own (resized like the image) or drawn from the keypoints."""
    size = sample.image.size
    w, h, left, top = centre_crop_geometry(*size, resolution)
    same = size == (resolution, resolution)
    image = sample.image if same else resize_crop(sample.image, (w, h), (left, top), resolution, Image.BICUBIC)
    kp = sample.keypoints if same else transform_keypoints(sample.keypoints, size, (w, h), (left, top), resolution)
    if sample.condition is not None:
        condition = sample.condition.convert("RGB")
        if condition.size != size:
            condition = condition.resize(size, Image.BILINEAR)
        condition = condition if same else resize_crop(condition, (w, h), (left, top), resolution, Image.BILINEAR)
    else:
        condition = draw_openpose(kp, (resolution, resolution))
    mask = areas = None
    if sample.mask is not None:
        m = Image.fromarray(sample.mask)
        mask = np.array(m if same else resize_crop(m, (w, h), (left, top), resolution, Image.NEAREST))
        areas, boxes = _mask_boxes(mask, len(kp))
        missing = areas == 0
        boxes[missing] = keypoint_boxes(kp)[missing]
    else:
        boxes = keypoint_boxes(kp)
    return PreparedSample(image=np.array(image.convert("RGB")), condition=np.array(condition), keypoints=kp,
                          caption=sample.caption, mask=mask, bboxes=boxes, areas=areas)


def resize_centre_crop(image: Image.Image, resolution: int, resample: int = Image.BILINEAR) -> Image.Image:
    """``image`` (as RGB) resized so its short side is ``resolution``, then its centre square cropped (diffusers'
    ``--center_crop``)."""
    image = image.convert("RGB")
    w, h, left, top = centre_crop_geometry(*image.size, resolution)
    return resize_crop(image, (w, h), (left, top), resolution, resample)


class Head(Sequence):
    """The first ``n`` items of a sequence."""

    def __init__(self, data: Sequence, n: int) -> None:
        self.data, self.n = data, min(n, len(data))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.data[i]


def to_chw(array: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.asarray(array)).permute(2, 0, 1).contiguous()
