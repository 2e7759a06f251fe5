"""COCO keypoints JSON: its images with their non-crowd person annotations (:func:`parse_coco_keypoints`),
captions from a side file (:func:`read_captions`), and the images as a :class:`CocoKeypointsDataset` with person
masks rasterised from the segmentations."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from humantune.data.readers import (PoseDataset, check_size, load_rgb, one_line, read_json, read_jsonl,
                                    relative_file)
from humantune.data.sample import PoseSample, validate_keypoints
from humantune.errors import DataError


@dataclass(frozen=True)
class CocoImageRecord:
    """One entry of a COCO JSON's ``images`` with its non-crowd person annotations, validated.

    keypoints (P, 17, 3), bboxes (P, 4) ``[x, y, w, h]``, areas (P,): from the annotations in file order.
    ``area_convention`` is "segment" (COCO's ``area`` is the segment area) unless some person lacks ``area``, in
    which case every area of the image is its bbox area and the convention is "bbox". ``segmentations`` holds each
    person's COCO ``segmentation`` (polygons or RLE), or is None when any person has none.
    """

    image_id: int
    file_name: str
    width: int | None
    height: int | None
    caption: str
    keypoints: np.ndarray
    bboxes: np.ndarray
    areas: np.ndarray
    area_convention: str
    segmentations: list[Any] | None


def _person_category_ids(coco: dict[str, Any], path: Path) -> set[int] | None:
    """Ids of categories named "person"; None (every annotation is a person) when the JSON has no categories."""
    categories = coco.get("categories")
    if not categories:
        return None
    if not isinstance(categories, list) or not all(isinstance(c, dict) for c in categories):
        raise DataError(f"{path}: 'categories' must be a list of objects")
    ids = {c.get("id") for c in categories if c.get("name") == "person"}
    if not ids:
        raise DataError(f"{path}: no category named 'person' in 'categories'")
    return ids


def _bbox(value: Any, where: str) -> list[float]:
    """A COCO ``bbox`` as 4 finite floats ``[x, y, w, h]``; DataError naming ``where`` otherwise."""
    try:
        box = [float(v) for v in value]
    except (TypeError, ValueError):
        box = []
    if len(box) != 4 or not np.isfinite(box).all():
        raise DataError(f"{where}: expected 'bbox' = [x, y, w, h] (4 numbers), got {value!r}")
    return box


def parse_coco_keypoints(path: str | os.PathLike, captions: dict[str, str] | None = None) -> list[CocoImageRecord]:
    """Every image of the COCO keypoints JSON ``path`` with its person annotations, in the order of ``images``.

    Persons are annotations whose ``category_id`` is a category named "person" (all annotations when the JSON
    has no ``categories``); crowd annotations (``iscrowd`` = 1) are skipped. Each needs ``image_id``,
    ``keypoints`` (51 numbers, checked with :func:`validate_keypoints`) and ``bbox``. The caption of an image is
    ``captions[file_name]`` (or its base name), else the image's own ``caption`` field, else "".
    """
    path = Path(path)
    coco = read_json(path, "a COCO keypoints JSON")
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list) \
            or not isinstance(coco.get("annotations"), list):
        raise DataError(f"{path}: expected a COCO keypoints JSON object with 'images' and 'annotations' lists")
    person_ids = _person_category_ids(coco, path)
    images: dict[int, dict[str, Any]] = {}
    for position, entry in enumerate(coco["images"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) \
                or not isinstance(entry.get("file_name"), str):
            raise DataError(f"{path}: images[{position}]: expected an object with an integer 'id' and a 'file_name'")
        if entry["id"] in images:
            raise DataError(f"{path}: images[{position}]: image id {entry['id']} appears twice in 'images'")
        images[entry["id"]] = {"entry": entry, "people": []}
    for position, ann in enumerate(coco["annotations"]):
        where = f"{path}: annotation id {ann.get('id') if isinstance(ann, dict) else None} (annotations[{position}])"
        if not isinstance(ann, dict):
            raise DataError(f"{where}: expected an object")
        if ann.get("iscrowd", 0) or (person_ids is not None and ann.get("category_id") not in person_ids):
            continue
        if ann.get("image_id") not in images:
            raise DataError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        if "keypoints" not in ann:
            raise DataError(f"{where}: expected 'keypoints' (17 × [x, y, v])")
        keypoints = validate_keypoints(ann["keypoints"], where=where)
        if keypoints.shape[0] != 1:
            raise DataError(f"{where}: expected one person's 17 × [x, y, v] keypoints, got {keypoints.shape[0]}")
        area = ann.get("area")
        if area is not None and not (isinstance(area, (int, float)) and np.isfinite(area)):
            raise DataError(f"{where}: expected 'area' to be a number, got {area!r}")
        images[ann["image_id"]]["people"].append({
            "keypoints": keypoints[0], "bbox": _bbox(ann.get("bbox"), where), "area": area,
            "segmentation": ann.get("segmentation") or None,
        })
    records = []
    for image_id, item in images.items():
        entry, people = item["entry"], item["people"]
        file_name = entry["file_name"]
        caption = None
        if captions is not None:
            caption = captions.get(file_name, captions.get(os.path.basename(file_name)))
        if caption is None:
            caption = entry.get("caption") or ""
        bboxes = np.array([p["bbox"] for p in people], dtype=np.float32).reshape(-1, 4)
        if all(p["area"] is not None for p in people):
            areas, convention = np.array([p["area"] for p in people], dtype=np.float32), "segment"
        else:
            areas, convention = bboxes[:, 2] * bboxes[:, 3], "bbox"
        segmentations = [p["segmentation"] for p in people]
        records.append(CocoImageRecord(
            image_id=image_id, file_name=file_name,
            width=entry.get("width"), height=entry.get("height"), caption=str(caption),
            keypoints=np.array([p["keypoints"] for p in people], dtype=np.float32).reshape(-1, 17, 3),
            bboxes=bboxes, areas=areas.astype(np.float32), area_convention=convention,
            segmentations=segmentations if all(s is not None for s in segmentations) else None,
        ))
    return records


def read_captions(path: str | os.PathLike) -> dict[str, str]:
    """A ``file_name → caption`` mapping from ``path``, in one of three formats:

    - ``.jsonl``: one object per line with ``file_name`` and ``text`` (or ``caption``), as ``metadata.jsonl``;
    - ``.json`` object ``{file_name: caption}``;
    - a COCO captions JSON (``captions_train2017.json``: ``images`` + ``annotations`` with ``image_id`` and
      ``caption``); an image's caption is its first caption annotation.
    """
    path = Path(path)
    expected = "captions: JSONL rows with file_name and text, a {file_name: caption} object, or COCO captions"
    if path.suffix == ".jsonl":
        captions = {}
        for number, row in read_jsonl(path, expected):
            text = row.get("text", row.get("caption"))
            if not isinstance(row.get("file_name"), str) or not isinstance(text, str):
                raise DataError(f"{path}: line {number}: expected string 'file_name' and 'text' (or 'caption')")
            captions[row["file_name"]] = text
        return captions
    data = read_json(path, expected)
    if isinstance(data, dict) and isinstance(data.get("images"), list) and isinstance(data.get("annotations"), list):
        try:
            names = {image["id"]: image["file_name"] for image in data["images"]}
            captions = {}
            for ann in data["annotations"]:
                captions.setdefault(names[ann["image_id"]], str(ann["caption"]))
        except (KeyError, TypeError) as e:
            raise DataError(f"{path}: COCO captions JSON is missing {one_line(e)} in an image or annotation "
                            "(expected images with id and file_name, annotations with image_id and caption)") from None
        return captions
    if isinstance(data, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        return data
    raise DataError(f"{path}: expected {expected}")


def _person_mask(record: CocoImageRecord, height: int, width: int, where: str) -> np.ndarray:
    """uint8 (H, W) mask from the COCO segmentations: 0 = background, k = person k (later persons overwrite)."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for k, segmentation in enumerate(record.segmentations or [], start=1):
        try:
            if isinstance(segmentation, list):  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
            elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(segmentation, height, width)
            else:  # compressed RLE
                rle = segmentation
            person = mask_utils.decode(rle)
        except Exception as e:  # pycocotools raises bare Exception / TypeError for malformed segmentations
            raise DataError(f"{where}: person {k}: cannot decode 'segmentation' (expected COCO polygons or RLE): "
                            f"{one_line(e)}") from None
        if person.shape != (height, width):
            raise DataError(f"{where}: person {k}: segmentation is {person.shape[1]}×{person.shape[0]}, "
                            f"image is {width}×{height}")
        mask[person > 0] = k
    return mask


class CocoKeypointsDataset(PoseDataset):
    """Images of a COCO keypoints JSON with their people (see :func:`parse_coco_keypoints`).

    ``sample.image`` is ``image_dir / file_name``; ``mask`` is rasterised from the persons' segmentations (None
    when a person has none); ``sample_id`` is the file name. ``people_only`` drops images with no person.
    """

    def __init__(self, annotation_json: str | os.PathLike, image_dir: str | os.PathLike,
                 captions: str | os.PathLike | None = None, people_only: bool = False) -> None:
        self.annotation_json = Path(annotation_json)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: image folder not found (images of {self.annotation_json})")
        records = parse_coco_keypoints(self.annotation_json,
                                       None if captions is None else read_captions(captions))
        for record in records:  # every image lies inside image_dir
            relative_file(self.image_dir, record.file_name, f"{self.annotation_json}: image id {record.image_id}")
        self.records = [r for r in records if r.keypoints.shape[0] > 0] if people_only else records

    def __len__(self) -> int:
        return len(self.records)

    def _sample(self, index: int) -> PoseSample:
        record = self.records[index]
        where = f"sample {index}, image id {record.image_id} in {self.annotation_json}"
        path = self.image_dir / record.file_name
        image = load_rgb(path, where)
        check_size(image, (record.width, record.height), path, where)
        mask = None
        if record.segmentations is not None:
            mask = _person_mask(record, image.height, image.width,
                                f"{self.annotation_json}: image id {record.image_id} (sample {index})")
        return PoseSample(  # copies: a caller editing a sample in place must not change the dataset
            image=image, keypoints=record.keypoints.copy(), caption=record.caption, mask=mask,
            bboxes=record.bboxes.copy(), areas=record.areas.copy(), area_convention=record.area_convention,
            sample_id=record.file_name,
        )


def load_coco_keypoints(annotation_json: str | os.PathLike, image_dir: str | os.PathLike,
                        captions: str | os.PathLike | None = None, people_only: bool = False) -> CocoKeypointsDataset:
    """Open a COCO keypoints JSON with its image folder; captions from ``captions`` (:func:`read_captions`) or the
    images' ``caption`` field."""
    return CocoKeypointsDataset(annotation_json, image_dir, captions, people_only)
