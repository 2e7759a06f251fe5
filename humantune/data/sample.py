"""The one sample structure every data source yields, and the on-disk layout of a pose dataset.

On-disk layout written by ``humantune data mannequin`` (and read by :mod:`humantune.data.loaders`)::

    DIR/
      metadata.jsonl                 one JSON object per sample (see below); read by
                                     ``datasets.load_dataset("imagefolder", data_dir=DIR)``
      annotations/person_keypoints.json
                                     COCO keypoints JSON (loads with pycocotools); one annotation per person,
                                     ``area`` = person segment area in pixels (COCO's convention), ``bbox`` = [x, y, w, h]
      images/000000.png              RGB image
      conditions/000000.png          OpenPose-18 style skeleton image (standard OpenPose colours)
      masks/000000.png               person mask, uint8 (0 = background, k = person k, 1-based)
      world.json                     the generator config, seed and version that produced the folder

``metadata.jsonl`` rows: ``file_name`` (``images/000000.png``), ``text`` (caption),
``conditioning_image_file_name`` (``conditions/000000.png``), ``mask_file_name`` (``masks/000000.png``),
``image_id`` (COCO image id), ``action``, ``attributes`` (dict; per-person list under ``people``), ``keypoints``
(list over people of 17 ``[x, y, v]``). The ``*_file_name`` suffix is the HF imagefolder convention for extra
image columns: ``load_dataset("imagefolder", data_dir=DIR)`` decodes them into Image columns named
``conditioning_image`` and ``mask``, which is what diffusers' ``train_controlnet.py`` reads with
``--conditioning_image_column conditioning_image``. Readers here also accept the bare ``conditioning_image`` /
``mask`` keys (:func:`metadata_file`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from humantune.errors import DataError


def metadata_file(row: dict[str, Any], column: str) -> str | None:
    """The relative path a ``metadata.jsonl`` row gives for image column ``column`` (``conditioning_image``,
    ``mask``): the imagefolder key ``{column}_file_name`` or the bare key ``column``; None when absent or empty."""
    value = row.get(f"{column}_file_name") or row.get(column)
    return str(value) if value else None


@dataclass
class PoseSample:
    """One image with people, their COCO-17 keypoints and a caption.

    keypoints: float32 array (P, 17, 3) of ``[x, y, v]`` in pixels of ``image`` (COCO convention: v = 0 not
    labelled / outside the image, 1 labelled but occluded, 2 visible). P may be 0.
    bboxes: float32 (P, 4) ``[x, y, w, h]``; areas: float32 (P,) segment area in pixels (or bbox area when no
    mask is known; ``area_convention`` says which).
    """

    image: Image.Image
    keypoints: np.ndarray
    caption: str = ""
    condition: Image.Image | None = None
    mask: np.ndarray | None = None
    bboxes: np.ndarray | None = None
    areas: np.ndarray | None = None
    area_convention: str = "segment"
    action: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    sample_id: str = ""

    def __post_init__(self) -> None:
        self.keypoints = validate_keypoints(self.keypoints, where=self.sample_id or "sample")

    @property
    def num_people(self) -> int:
        return int(self.keypoints.shape[0])


def validate_keypoints(kp: Any, where: str) -> np.ndarray:
    """Return keypoints as float32 (P, 17, 3); accept a flat COCO list of 51 numbers or (17, 3) for one person.

    Raises DataError naming ``where`` when the shape is not 17×3 per person.
    """
    try:
        arr = np.asarray(kp, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: keypoints are not numeric ({e})") from None
    if arr.ndim == 1 and arr.size == 51:
        arr = arr.reshape(1, 17, 3)
    elif arr.ndim == 2 and arr.shape == (17, 3):
        arr = arr[None]
    elif arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 17, 3)
    if arr.ndim != 3 or arr.shape[1:] != (17, 3):
        raise DataError(f"{where}: expected 17×3 keypoints per person ([x, y, v] × 17), got shape {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise DataError(f"{where}: keypoints contain NaN or infinity")
    return arr
