"""Real-data loaders: every source becomes a lazily indexable sequence of :class:`PoseSample`.

Sources (:func:`open_pose_dataset` picks one from a path):

- a COCO keypoints JSON and its image folder (:class:`CocoKeypointsDataset`);
- a humantune pose folder, the layout documented in :mod:`humantune.data.sample` (:class:`PoseFolderDataset`);
- Captioned COCO-Pose parquet files, HF dataset ``limingcv/Captioned_COCOPose`` (:class:`CaptionedCocoPoseDataset`);
- a plain image folder with captions and no keypoints (:class:`ImageFolderDataset`).

Annotations are parsed and validated when a dataset is opened; images are decoded only when a sample is indexed.
Bad input raises :class:`humantune.errors.DataError` with one line naming the file, the index (sample, line,
row or annotation id) and what was expected.
"""

from __future__ import annotations

import bisect
import copy
from abc import abstractmethod
import glob
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from humantune.data.sample import PoseSample, metadata_file, validate_keypoints
from humantune.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTION_COLUMNS = ("caption", "prompt", "text")  # auto-detected Captioned COCO-Pose caption columns, in this order
POSE_FOLDER_ANNOTATIONS = Path("annotations") / "person_keypoints.json"
COCO_SOURCE_PREFIX = "coco:"


def _one_line(exc: BaseException) -> str:
    """The exception's message with all whitespace runs (newlines included) collapsed to one space."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _read_json(path: Path, expected: str) -> Any:
    """Parse the JSON file ``path``; DataError naming the file and ``expected`` if it is missing or malformed."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (expected {expected})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno} ({e.msg}); expected {expected}") \
            from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({_one_line(e)}); expected {expected}") from None


def read_jsonl(path: Path, expected: str) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of the JSON Lines file ``path``; DataError naming the
    file and line when it is missing, a line is not valid JSON or not an object."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (expected {expected})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({_one_line(e)}); expected {expected}") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {number}: invalid JSON ({e.msg} at column {e.colno}); expected {expected}") \
                from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {number}: expected a JSON object, got {type(row).__name__}")
        rows.append((number, row))
    return rows


def load_rgb(path: Path, where: str) -> Image.Image:
    """The image file ``path`` decoded to RGB; DataError naming the file and ``where`` if missing or unreadable."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: image not found ({where})") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read image ({where}): {_one_line(e)}") from None


def _load_mask(path: Path, where: str) -> np.ndarray:
    """A person-mask PNG as a 2-D uint8 array (0 = background, k = person k)."""
    try:
        with Image.open(path) as image:
            mask = np.array(image)
    except FileNotFoundError:
        raise DataError(f"{path}: mask not found ({where})") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read mask ({where}): {_one_line(e)}") from None
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise DataError(f"{path}: expected a single-channel 8-bit mask ({where}), got {mask.dtype} {mask.shape}")
    return mask


def _check_size(image: Image.Image, expected: tuple[int | None, int | None], path: Path, where: str) -> None:
    """DataError when ``image`` is not ``expected`` = (width, height) (a None side is not checked)."""
    width, height = expected
    if (width is not None and image.width != width) or (height is not None and image.height != height):
        raise DataError(f"{path}: image is {image.width}×{image.height} but the annotation says {width}×{height} "
                        f"({where})")


class PoseDataset(Sequence[PoseSample]):
    """A lazily indexable sequence of :class:`PoseSample`: ``len(ds)``, ``ds[i]`` (negative i allowed), iteration.

    Subclasses implement ``__len__`` and ``_sample(i)`` for 0 ≤ i < len.
    """

    @abstractmethod
    def _sample(self, index: int) -> PoseSample:
        """Sample ``index``, 0 ≤ index < len(self), with its images decoded."""

    @overload
    def __getitem__(self, index: int) -> PoseSample: ...

    @overload
    def __getitem__(self, index: slice) -> list[PoseSample]: ...

    def __getitem__(self, index: int | slice) -> PoseSample | list[PoseSample]:
        if isinstance(index, slice):
            return [self._sample(i) for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"sample index {index} out of range for {n} samples")
        return self._sample(index % n)


# ---------------------------------------------------------------------------------------------------------------
# COCO keypoints JSON


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
    coco = _read_json(path, "a COCO keypoints JSON")
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
    data = _read_json(path, expected)
    if isinstance(data, dict) and isinstance(data.get("images"), list) and isinstance(data.get("annotations"), list):
        try:
            names = {image["id"]: image["file_name"] for image in data["images"]}
            captions = {}
            for ann in data["annotations"]:
                captions.setdefault(names[ann["image_id"]], str(ann["caption"]))
        except (KeyError, TypeError) as e:
            raise DataError(f"{path}: COCO captions JSON is missing {_one_line(e)} in an image or annotation "
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
                            f"{_one_line(e)}") from None
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
        self.records = [r for r in records if r.keypoints.shape[0] > 0] if people_only else records

    def __len__(self) -> int:
        return len(self.records)

    def _sample(self, index: int) -> PoseSample:
        record = self.records[index]
        where = f"sample {index}, image id {record.image_id} in {self.annotation_json}"
        path = self.image_dir / record.file_name
        image = load_rgb(path, where)
        _check_size(image, (record.width, record.height), path, where)
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
        _check_size(image, (record.width, record.height), image_path, where)
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
# Captioned COCO-Pose parquet


def _is_glob_pattern(text: str) -> bool:
    """Whether ``text`` has a glob wildcard (``*``, ``?`` or ``[``)."""
    return any(c in text for c in "*?[")


def _parquet_files(path: str | os.PathLike) -> list[Path]:
    """``path`` as a sorted list of parquet files: the file itself, the ``*.parquet`` directly in a directory, or
    the matches of a glob pattern."""
    text = os.fspath(path)
    if _is_glob_pattern(text):
        files = sorted(Path(p) for p in glob.glob(text) if p.endswith(".parquet"))
        if not files:
            raise DataError(f"{text}: no parquet file matches this pattern")
        return files
    p = Path(text)
    if p.is_dir():
        files = sorted(p.glob("*.parquet"))
        if not files:
            raise DataError(f"{p}: no *.parquet file in this folder")
        return files
    if not p.is_file():
        raise DataError(f"{p}: file not found (expected a parquet file, a folder of them or a glob pattern)")
    return [p]


def _decode_image_cell(value: Any, base_dir: Path, where: str) -> Image.Image:
    """An HF ``Image`` cell (``{"bytes": ..., "path": ...}``, or raw bytes) decoded to RGB; a cell with only a path
    is read from that path (as is, else relative to the parquet file's folder)."""
    if isinstance(value, (bytes, bytearray)):
        value = {"bytes": value, "path": None}
    if not isinstance(value, dict) or not (value.get("bytes") or value.get("path")):
        raise DataError(f"{where}: expected an image struct with 'bytes' or 'path', got {type(value).__name__}")
    if value.get("bytes"):
        try:
            with Image.open(io.BytesIO(value["bytes"])) as image:
                return image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"{where}: cannot decode image bytes: {_one_line(e)}") from None
    stored = Path(value["path"])
    return load_rgb(stored if stored.is_file() else base_dir / stored, where)


def pose_cell_keypoints(value: Any, where: str) -> np.ndarray:
    """Keypoints (P, 17, 3) from a Captioned COCO-Pose ``pose`` cell.

    Accepted: None or [] (no people); one person as a flat COCO list of 51 numbers or 17 × [x, y, v]; several
    people as P × 17 × [x, y, v] or P flat lists of 51; any of these JSON-encoded in a string.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: 'pose' string is not valid JSON ({e.msg})") from None
    if value is None:
        return np.zeros((0, 17, 3), dtype=np.float32)
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):  # ragged nesting: validate_keypoints words the error
        array = value
    if isinstance(array, np.ndarray) and array.ndim == 2 and array.shape[1] == 51:
        array = array.reshape(-1, 17, 3)
    return validate_keypoints(array, where=where)


class CaptionedCocoPoseDataset(PoseDataset):
    """Rows of Captioned COCO-Pose parquet files (HF ``limingcv/Captioned_COCOPose``), read lazily with pyarrow.

    Columns: ``image`` (HF image struct), ``control_pose`` (HF image struct, optional → ``condition``), the caption
    column (``caption_column``, or the first of :data:`CAPTION_COLUMNS` present) and ``pose`` (optional,
    :func:`pose_cell_keypoints`; absent → no people). The parquet files carry no boxes or areas, so ``bboxes``
    and ``areas`` are None. ``sample_id`` is ``"<file name>#<row>"``.

    Indexing reads the row group holding the row (HF writes image datasets in row groups of 100 rows) and keeps
    the last one, so sequential access reads each group once.
    """

    def __init__(self, path: str | os.PathLike, caption_column: str | None = None) -> None:
        import pyarrow as pa  # imported on use: the other loaders work without pyarrow
        import pyarrow.parquet as pq

        self.files = _parquet_files(path)
        self._groups: list[tuple[Path, int, int]] = []  # (file, row group, first row of the file in the group)
        self._starts: list[int] = []  # global index of each group's first row
        columns: list[str] | None = None
        total = 0
        for file in self.files:
            try:
                metadata = pq.read_metadata(file)
                schema = pq.read_schema(file)
            except (OSError, pa.ArrowException) as e:
                raise DataError(f"{file}: cannot read as parquet ({_one_line(e)})") from None
            names = set(schema.names)
            if columns is None:
                caption = caption_column or next((c for c in CAPTION_COLUMNS if c in names), None)
                if caption is None:
                    raise DataError(f"{file}: no caption column (expected one of {', '.join(CAPTION_COLUMNS)}); "
                                    f"columns are {', '.join(schema.names)}")
                self.caption_column = caption
                columns = ["image", caption] + [c for c in ("control_pose", "pose") if c in names]
            missing = [c for c in columns if c not in names]
            if missing:
                raise DataError(f"{file}: missing column(s) {', '.join(missing)}; expected {', '.join(columns)}")
            first_row = 0
            for group in range(metadata.num_row_groups):
                rows = metadata.row_group(group).num_rows
                if rows:
                    self._groups.append((file, group, first_row))
                    self._starts.append(total)
                first_row += rows
                total += rows
        self.columns = columns or []
        self._length = total
        self._cached: tuple[int, pa.Table] | None = None

    def __len__(self) -> int:
        return self._length

    def _row_group(self, group_index: int) -> pa.Table:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._cached is None or self._cached[0] != group_index:
            file, group, _ = self._groups[group_index]
            try:
                table = pq.ParquetFile(file).read_row_group(group, columns=self.columns)
            except (OSError, pa.ArrowException) as e:
                raise DataError(f"{file}: cannot read row group {group} ({_one_line(e)})") from None
            self._cached = (group_index, table)
        return self._cached[1]

    def _sample(self, index: int) -> PoseSample:
        group_index = bisect.bisect_right(self._starts, index) - 1
        file, _, first_row = self._groups[group_index]
        offset = index - self._starts[group_index]
        row = first_row + offset
        table = self._row_group(group_index)
        cell = {name: table.column(name)[offset].as_py() for name in self.columns}
        where = f"{file}: row {row} (sample {index})"
        image = _decode_image_cell(cell["image"], file.parent, f"{where}, column 'image'")
        condition = None
        if cell.get("control_pose") is not None:
            condition = _decode_image_cell(cell["control_pose"], file.parent, f"{where}, column 'control_pose'")
        caption = cell[self.caption_column]
        if isinstance(caption, list):  # several captions per image: the first one
            caption = caption[0] if caption else ""
        return PoseSample(
            image=image, keypoints=pose_cell_keypoints(cell.get("pose"), f"{where}, column 'pose'"),
            caption="" if caption is None else str(caption), condition=condition, sample_id=f"{file.name}#{row}",
        )


def load_captioned_coco_pose(path: str | os.PathLike, caption_column: str | None = None) -> CaptionedCocoPoseDataset:
    """Open Captioned COCO-Pose parquet data: one file, a folder of ``*.parquet`` or a glob pattern."""
    return CaptionedCocoPoseDataset(path, caption_column)


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
                        f"{_one_line(e)}") from None


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
    - a folder with ``metadata.jsonl`` and ``annotations/person_keypoints.json`` → :class:`PoseFolderDataset`;
    - a ``.parquet`` file, a glob pattern, or a folder with ``*.parquet`` files → :class:`CaptionedCocoPoseDataset`;
    - any other folder → :class:`ImageFolderDataset`.
    """
    text = os.fspath(source)
    if text.startswith(COCO_SOURCE_PREFIX):
        annotation_json, sep, image_dir = text[len(COCO_SOURCE_PREFIX):].rpartition(":")
        if not sep or not annotation_json or not image_dir:
            raise DataError(f"{text}: expected coco:ANNOTATIONS_JSON:IMAGE_DIR")
        return CocoKeypointsDataset(annotation_json, image_dir)
    if _is_glob_pattern(text) or text.endswith(".parquet"):
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
    if any(path.glob("*.parquet")):
        return CaptionedCocoPoseDataset(path)
    return ImageFolderDataset(path)
