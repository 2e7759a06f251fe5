"""Real-data loaders: every source becomes a lazily indexable sequence of :class:`PoseSample`.

Sources (:func:`open_pose_dataset` picks one from a path):

- a COCO keypoints JSON and its image folder (:class:`~humantune.data.coco.CocoKeypointsDataset`);
- a humantune pose folder, the layout documented in :mod:`humantune.data.sample` (:class:`PoseFolderDataset`);
- Captioned COCO-Pose parquet files, HF dataset ``limingcv/Captioned_COCOPose``
  (:class:`~humantune.data.captioned_coco_pose.CaptionedCocoPoseDataset`);
- a plain image folder with captions and no keypoints (:class:`ImageFolderDataset`).

The pose and image folders live here; what every loader shares is in :mod:`humantune.data.readers`.

Annotations are parsed and validated when a dataset is opened; images are decoded only when a sample is indexed.
Bad input raises :class:`humantune.errors.DataError` with one line naming the file, the index (sample, line,
row or annotation id) and what was expected.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from humantune.data.captioned_coco_pose import CaptionedCocoPoseDataset, is_glob_pattern
from humantune.data.coco import CocoImageRecord, CocoKeypointsDataset, parse_coco_keypoints
from humantune.data.readers import PoseDataset, check_size, load_rgb, one_line, read_jsonl
from humantune.data.sample import PoseSample, metadata_file
from humantune.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
POSE_FOLDER_ANNOTATIONS = Path("annotations") / "person_keypoints.json"
COCO_SOURCE_PREFIX = "coco:"


def _load_mask(path: Path, where: str) -> np.ndarray:
    """A person-mask PNG as a 2-D uint8 array (0 = background, k = person k)."""
    try:
        with Image.open(path) as image:
            mask = np.array(image)
    except FileNotFoundError:
        raise DataError(f"{path}: mask not found ({where})") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read mask ({where}): {one_line(e)}") from None
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise DataError(f"{path}: expected a single-channel 8-bit mask ({where}), got {mask.dtype} {mask.shape}")
    return mask


# ---------------------------------------------------------------------------------------------------------------
# humantune pose folder


class PoseFolderDataset(PoseDataset):
    """A humantune pose folder (layout in :mod:`humantune.data.sample`), one sample per ``metadata.jsonl`` row.

    Keypoints, bboxes and areas come from ``annotations/person_keypoints.json`` (the image whose ``file_name``
    equals the row's); caption, condition image, mask, action and attributes from the row (``text``,
    ``conditioning_image_file_name``, ``mask_file_name`` (or bare ``conditioning_image`` / ``mask``), ``action``,
    ``attributes``; all but ``file_name`` optional).
    ``sample_id`` is the row's ``file_name``.
    """

    def __init__(self, data_dir: str | os.PathLike) -> None:
        self.data_dir = Path(data_dir)
        self.metadata_path = self.data_dir / "metadata.jsonl"
        self.annotation_json = self.data_dir / POSE_FOLDER_ANNOTATIONS
        if not self.data_dir.is_dir():
            raise DataError(f"{self.data_dir}: pose folder not found")
        by_file = {os.path.normpath(r.file_name): r for r in parse_coco_keypoints(self.annotation_json)}
        self.rows: list[tuple[int, dict[str, Any], CocoImageRecord]] = []
        for number, row in read_jsonl(self.metadata_path, "one JSON object per sample with 'file_name'"):
            file_name = row.get("file_name")
            if not isinstance(file_name, str):
                raise DataError(f"{self.metadata_path}: line {number}: expected a string 'file_name'")
            record = by_file.get(os.path.normpath(file_name))
            if record is None:
                raise DataError(f"{self.metadata_path}: line {number}: file_name '{file_name}' is not an image of "
                                f"{self.annotation_json}")
            self.rows.append((number, row, record))

    def __len__(self) -> int:
        return len(self.rows)

    def _sample(self, index: int) -> PoseSample:
        number, row, record = self.rows[index]
        where = f"sample {index}, {self.metadata_path.name} line {number}"
        image_path = self.data_dir / row["file_name"]
        image = load_rgb(image_path, where)
        check_size(image, (record.width, record.height), image_path, where)
        condition_file, mask_file = metadata_file(row, "conditioning_image"), metadata_file(row, "mask")
        condition = load_rgb(self.data_dir / condition_file, where) if condition_file else None
        mask = _load_mask(self.data_dir / mask_file, where) if mask_file else None
        return PoseSample(  # copies: a caller editing a sample in place must not change the dataset
            image=image, keypoints=record.keypoints.copy(), caption=str(row.get("text") or record.caption),
            condition=condition, mask=mask, bboxes=record.bboxes.copy(), areas=record.areas.copy(),
            area_convention=record.area_convention, action=row.get("action"),
            attributes=copy.deepcopy(row.get("attributes") or {}), sample_id=row["file_name"],
        )


def load_pose_folder(data_dir: str | os.PathLike) -> PoseFolderDataset:
    """Open a humantune pose folder (``metadata.jsonl`` + ``annotations/person_keypoints.json`` + images)."""
    return PoseFolderDataset(data_dir)


# ---------------------------------------------------------------------------------------------------------------
# plain image folder


def _sidecar_caption(image_path: Path) -> str:
    """The stripped text of the ``.txt`` file beside ``image_path`` with the same stem, or "" when there is none."""
    sidecar = image_path.with_suffix(".txt")
    if not sidecar.is_file():
        return ""
    try:
        return sidecar.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{sidecar}: cannot read caption of {image_path.name} (expected UTF-8 text): "
                        f"{one_line(e)}") from None


class ImageFolderDataset(PoseDataset):
    """A folder of images with captions and no keypoints (every sample has P = 0).

    With ``metadata.jsonl`` (HF imagefolder layout): one sample per row, ``file_name`` relative to the folder,
    caption ``text`` (or ``caption``), optional ``conditioning_image_file_name`` (or ``conditioning_image``). Without it: every image file
    (:data:`IMAGE_EXTENSIONS`) under the folder, sorted by relative path, captioned by the sidecar ``.txt``
    with the same stem when there is one. ``sample_id`` is the relative file name.
    """

    def __init__(self, data_dir: str | os.PathLike) -> None:
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise DataError(f"{self.data_dir}: image folder not found")
        self.metadata_path = self.data_dir / "metadata.jsonl"
        self.rows: list[dict[str, Any]] = []
        if self.metadata_path.is_file():
            for number, row in read_jsonl(self.metadata_path, "one JSON object per image with 'file_name'"):
                if not isinstance(row.get("file_name"), str):
                    raise DataError(f"{self.metadata_path}: line {number}: expected a string 'file_name'")
                self.rows.append({
                    "where": f"{self.metadata_path.name} line {number}", "file_name": row["file_name"],
                    "caption": str(row.get("text", row.get("caption")) or ""),
                    "conditioning_image": metadata_file(row, "conditioning_image"),
                })
        else:
            for path in sorted(p for p in self.data_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
                self.rows.append({
                    "where": "image folder", "file_name": path.relative_to(self.data_dir).as_posix(),
                    "caption": _sidecar_caption(path), "conditioning_image": None,
                })
        if not self.rows:
            raise DataError(f"{self.data_dir}: no images (expected {', '.join(IMAGE_EXTENSIONS)} files or a "
                            "metadata.jsonl)")

    def __len__(self) -> int:
        return len(self.rows)

    def _sample(self, index: int) -> PoseSample:
        row = self.rows[index]
        where = f"sample {index}, {row['where']}"
        condition = None
        if row["conditioning_image"]:
            condition = load_rgb(self.data_dir / row["conditioning_image"], where)
        return PoseSample(
            image=load_rgb(self.data_dir / row["file_name"], where), keypoints=np.zeros((0, 17, 3), np.float32),
            caption=row["caption"], condition=condition, sample_id=row["file_name"],
        )


def load_image_folder(data_dir: str | os.PathLike) -> ImageFolderDataset:
    """Open a plain image folder (captions from ``metadata.jsonl`` or sidecar ``.txt`` files; no keypoints)."""
    return ImageFolderDataset(data_dir)


# ---------------------------------------------------------------------------------------------------------------
# dispatcher


def open_pose_dataset(source: str | os.PathLike) -> PoseDataset:
    """Open the dataset at ``source``, choosing the loader from what is there:

    - ``coco:ANNOTATIONS_JSON:IMAGE_DIR`` → :class:`CocoKeypointsDataset` (split at the last ``:``; a COCO JSON
      needs its image folder, so a bare ``.json`` path is an error that says so);
    - a folder with ``metadata.jsonl`` and ``annotations/person_keypoints.json`` → :class:`PoseFolderDataset` (a
      folder with ``metadata.jsonl`` and an ``annotations/`` folder or ``world.json`` but no keypoints file is an
      error naming that file);
    - a ``.parquet`` file, a glob pattern, or a folder with ``*.parquet`` files → :class:`CaptionedCocoPoseDataset`;
    - any other folder → :class:`ImageFolderDataset`.
    """
    text = os.fspath(source)
    if text.startswith(COCO_SOURCE_PREFIX):
        annotation_json, sep, image_dir = text[len(COCO_SOURCE_PREFIX):].rpartition(":")
        if not sep or not annotation_json or not image_dir:
            raise DataError(f"{text}: expected coco:ANNOTATIONS_JSON:IMAGE_DIR")
        return CocoKeypointsDataset(annotation_json, image_dir)
    if is_glob_pattern(text) or text.endswith(".parquet"):
        return CaptionedCocoPoseDataset(text)
    path = Path(text)
    if path.suffix == ".json":
        raise DataError(f"{path}: a COCO JSON needs its image folder; pass coco:{path}:IMAGE_DIR")
    if not path.exists():
        raise DataError(f"{path}: not found (expected a pose folder, an image folder, parquet files or "
                        "coco:ANNOTATIONS_JSON:IMAGE_DIR)")
    if not path.is_dir():
        raise DataError(f"{path}: expected a folder, a .parquet file or coco:ANNOTATIONS_JSON:IMAGE_DIR")
    if (path / "metadata.jsonl").is_file() and (path / POSE_FOLDER_ANNOTATIONS).is_file():
        return PoseFolderDataset(path)
    if (path / "metadata.jsonl").is_file() and ((path / "annotations").is_dir() or (path / "world.json").is_file()):
        # a pose folder that lost its keypoints: read as a plain image folder, its poses would silently vanish
        raise DataError(f"{path / POSE_FOLDER_ANNOTATIONS}: file not found (the keypoints of the pose folder {path})")
    if any(path.glob("*.parquet")):
        return CaptionedCocoPoseDataset(path)
    return ImageFolderDataset(path)
