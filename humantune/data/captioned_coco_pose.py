"""Captioned COCO-Pose parquet files (HF dataset ``limingcv/Captioned_COCOPose``), read lazily with pyarrow one
row group at a time: images, pose condition images, captions and keypoints."""

from __future__ import annotations

import bisect
import glob
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from humantune.data.readers import PoseDataset, load_rgb, one_line
from humantune.data.sample import PoseSample, validate_keypoints
from humantune.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

CAPTION_COLUMNS = ("caption", "prompt", "text")  # auto-detected Captioned COCO-Pose caption columns, in this order


def is_glob_pattern(text: str) -> bool:
    """Whether ``text`` has a glob wildcard (``*``, ``?`` or ``[``)."""
    return any(c in text for c in "*?[")


def _parquet_files(path: str | os.PathLike) -> list[Path]:
    """``path`` as a sorted list of parquet files: the file itself, the ``*.parquet`` directly in a directory, or
    the matches of a glob pattern."""
    text = os.fspath(path)
    if is_glob_pattern(text):
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
            raise DataError(f"{where}: cannot decode image bytes: {one_line(e)}") from None
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
                raise DataError(f"{file}: cannot read as parquet ({one_line(e)})") from None
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
                raise DataError(f"{file}: cannot read row group {group} ({one_line(e)})") from None
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
