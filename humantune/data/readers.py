"""What every real-data loader shares: :class:`PoseDataset`, the lazily indexable sequence of
:class:`~humantune.data.sample.PoseSample` each source becomes, and readers of JSON, JSON Lines and image files
whose errors are one :class:`~humantune.errors.DataError` line naming the file and what was expected."""

from __future__ import annotations

import json
import os
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

from PIL import Image

from humantune.data.sample import PoseSample
from humantune.errors import DataError


def one_line(exc: BaseException) -> str:
    """The exception's message with all whitespace runs (newlines included) collapsed to one space."""
    return " ".join(str(exc).split()) or type(exc).__name__


def read_json(path: Path, expected: str) -> Any:
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
        raise DataError(f"{path}: cannot read ({one_line(e)}); expected {expected}") from None


def relative_file(folder: Path, name: Any, where: str, key: str = "file_name") -> Path:
    """``folder / name`` for a file a dataset names relative to its folder; DataError naming ``where``, ``key`` and
    the value when ``name`` is absolute or climbs out of the folder (``../x.png``): a dataset reads only its own
    files."""
    text = str(name)
    if os.path.isabs(text) or Path(text).drive or text.startswith("~"):
        raise DataError(f"{where}: {key} '{text}' is an absolute path; expected a path relative to {folder}")
    normal = os.path.normpath(text)
    if normal == os.pardir or normal.startswith(os.pardir + os.sep):
        raise DataError(f"{where}: {key} '{text}' leaves the folder {folder}")
    return folder / text


METADATA_FILE_KEYS = ("file_name", "conditioning_image_file_name", "mask_file_name", "conditioning_image", "mask")
"""Keys of a ``metadata.jsonl`` row (HF imagefolder layout) that name a file relative to the row's folder."""


def read_jsonl(path: Path, expected: str) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of the JSON Lines file ``path``; DataError naming the
    file and line when it is missing, a line is not valid JSON or not an object. In a ``metadata.jsonl`` every
    file a row names (:data:`METADATA_FILE_KEYS`) must lie inside the file's folder (:func:`relative_file`)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (expected {expected})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({one_line(e)}); expected {expected}") from None
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
        if path.name == "metadata.jsonl":
            for key in METADATA_FILE_KEYS:
                if isinstance(row.get(key), str) and row[key]:
                    relative_file(path.parent, row[key], f"{path}: line {number}", key)
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
        raise DataError(f"{path}: cannot read image ({where}): {one_line(e)}") from None


def check_size(image: Image.Image, expected: tuple[int | None, int | None], path: Path, where: str) -> None:
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
