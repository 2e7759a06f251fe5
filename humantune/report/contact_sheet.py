"""A contact sheet of a humantune pose folder: a one-page HTML overview to eyeball a dataset before training.

Reads the folder layout of :mod:`humantune.data.sample` (``metadata.jsonl`` plus the images it names) directly.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from humantune.data.readers import METADATA_FILE_KEYS, one_line, relative_file
from humantune.data.sample import metadata_file, validate_keypoints
from humantune.errors import DataError
from humantune.io import refuse_directory
from humantune.report.html import HtmlReport
from humantune.report.overlay import draw_keypoints

_TILE_GAP = 4  # pixels between the image and its condition in a tile
_SHEET_WIDTH = 1200  # CSS pixels the tile grid is laid out for


def read_metadata(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) for every non-blank line of a ``metadata.jsonl``; DataError naming the file (and line)
    when it is missing, a line is not a JSON object, or a row has no ``file_name``."""
    if not path.is_file():
        raise DataError(f"{path}: not found (a pose folder has a metadata.jsonl, one JSON object per sample)")
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({one_line(e)}); expected UTF-8 JSON Lines") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        if not isinstance(row.get("file_name"), str):
            raise DataError(f"{path}:{lineno}: missing 'file_name' (the image path, e.g. images/000000.png)")
        for key in METADATA_FILE_KEYS:  # the sheet shows the folder's own files, nothing outside it
            if isinstance(row.get(key), str) and row[key]:
                relative_file(path.parent, row[key], f"{path}:{lineno}", key)
        rows.append((lineno, row))
    if not rows:
        raise DataError(f"{path}: no samples")
    return rows


def _open_image(path: Path, where: str) -> Image.Image:
    if not path.is_file():
        raise DataError(f"{path}: image not found (named at {where})")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: cannot read image named at {where} ({one_line(e)})") from None
    return image


def _image_size(path: Path, where: str) -> tuple[int, int]:
    """Size from the image header, without decoding the pixels."""
    if not path.is_file():
        raise DataError(f"{path}: image not found (named at {where})")
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: cannot read image named at {where} ({one_line(e)})") from None


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Nearest-neighbour when enlarging (keeps pixels crisp), Lanczos when shrinking."""
    if size == image.size:
        return image
    enlarge = size[0] > image.size[0]
    return image.resize(size, Image.Resampling.NEAREST if enlarge else Image.Resampling.LANCZOS)


def _tile(dataset_dir: Path, row: dict[str, Any], where: str, display_size: int) -> Image.Image:
    """The sample's image with its keypoints drawn, beside its condition image, long side ``display_size``."""
    image = _open_image(dataset_dir / row["file_name"], where).convert("RGB")
    keypoints = validate_keypoints(row.get("keypoints", []), where=where).astype(np.float64)
    scale = display_size / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    sx, sy = size[0] / image.width, size[1] / image.height
    # Pixel-centre coordinates scale about the top-left image corner, which is at (−½, −½).
    keypoints[:, :, 0] = (keypoints[:, :, 0] + 0.5) * sx - 0.5
    keypoints[:, :, 1] = (keypoints[:, :, 1] + 0.5) * sy - 0.5
    panels = [draw_keypoints(_resize(image, size), keypoints)]
    condition_file = metadata_file(row, "conditioning_image")
    if condition_file:
        condition = _open_image(dataset_dir / condition_file, where).convert("RGB")
        panels.append(_resize(condition, size))
    tile = Image.new("RGB", (len(panels) * size[0] + (len(panels) - 1) * _TILE_GAP, size[1]), (255, 255, 255))
    for i, panel in enumerate(panels):
        tile.paste(panel, (i * (size[0] + _TILE_GAP), 0))
    return tile


def _histogram_text(counts: Counter) -> str:
    return ", ".join(f"{key} ({n})" for key, n in counts.most_common())


def write_contact_sheet(
    dataset_dir: str | os.PathLike, out_html: str | os.PathLike, max_samples: int = 64, upscale_to: int = 256
) -> Path:
    """Write a self-contained HTML contact sheet of a pose folder and return its path.

    At the top, a summary over all samples (count, image sizes, people per image) and the action histogram; then
    one tile for each of the first ``max_samples`` samples: the image with its COCO-17 keypoints drawn, its
    condition image beside it, and file name, action and caption underneath. Tiles have long side ``upscale_to``
    pixels per panel (small images enlarged with nearest neighbour, large ones shrunk). Raises DataError naming
    the file (and metadata line) for a missing or malformed metadata.jsonl, image or keypoint list.
    """
    if max_samples < 1 or upscale_to < 1:
        raise ValueError(f"max_samples and upscale_to must be positive, got {max_samples} and {upscale_to}")
    refuse_directory(out_html)  # before the work: a file never replaces a folder
    dataset_dir = Path(dataset_dir)
    metadata = dataset_dir / "metadata.jsonl"
    rows = read_metadata(metadata)

    sizes: Counter = Counter()
    people: Counter = Counter()
    actions: Counter = Counter()
    for lineno, row in rows:
        where = f"{metadata}:{lineno}"
        width, height = _image_size(dataset_dir / row["file_name"], where)
        sizes[f"{width}×{height}"] += 1
        people[len(validate_keypoints(row.get("keypoints", []), where=where))] += 1
        actions[row.get("action") or "(none)"] += 1

    shown = rows[:max_samples]
    report = HtmlReport(f"Contact sheet: {dataset_dir.name}")
    report.paragraph(str(dataset_dir.resolve()))
    report.heading("Summary")
    report.table(
        [
            ["samples", len(rows)],
            ["shown", len(shown)],
            ["image size", _histogram_text(sizes)],
            ["people per image", _histogram_text(people)],
        ]
    )
    report.heading("Actions", level=3)
    report.table(
        [{"action": action, "samples": n, "share": n / len(rows)} for action, n in actions.most_common()],
        float_format="{:.1%}",
    )
    report.heading(f"Samples (first {len(shown)})")
    tiles = []
    for lineno, row in shown:
        tile = _tile(dataset_dir, row, f"{metadata}:{lineno}", upscale_to)
        caption = f"{Path(row['file_name']).name} · {row.get('action') or '(no action)'} · {row.get('text', '')}"
        tiles.append((tile, caption))
    tile_width = max(tile.width for tile, _ in tiles)
    report.image_grid(tiles, columns=max(1, _SHEET_WIDTH // (tile_width + 10)))
    return report.save(out_html)
