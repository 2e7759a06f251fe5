"""Preference pairs in the Pick-a-Pic layout, read from and written to parquet or an image folder.

Pick-a-Pic (``yuvalkirstain/pickapic_v2``) and diffusers' ``train_diffusion_dpo.py`` use one row per pair:

    jpg_0, jpg_1   encoded image bytes (JPEG or PNG) of the two images
    label_0        1: the first image is preferred, 0: the second, 0.5: a tie
    label_1        1 − label_0
    caption        the prompt both images were made for

A parquet file (or a folder of ``*.parquet`` shards, read in name order) with these columns is read as is; what
:func:`write_pairs_parquet` writes has them with the same types (binary, float64, string), so
``datasets.load_dataset("parquet", data_files=...)`` and diffusers' script read it unchanged.

The image-folder layout (:func:`write_pairs_folder`)::

    FOLDER/pairs.jsonl   one JSON object per line: {"file_0": "images/000000_0.png", "file_1": "images/000000_1.png",
                         "label_0": 1.0, "label_1": 0.0, "caption": "..."}   (files relative to FOLDER)
    FOLDER/images/...    the image files

Reading normalises every pair winner-first (:class:`PreferencePair`): a row with ``label_0`` < ½ is swapped, so
``winner`` is the preferred image and ``label`` (the probability that ``winner`` is preferred) is 1, or ½ for a
tie, which ``ties="keep"`` keeps and ``ties="drop"`` leaves out (the Salesforce script drops them; diffusers' keeps
them silently with the first image as winner). A wrong layout is one DataError line naming the file and column.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Literal, Sequence

from PIL import Image

from humantune.data.readers import load_rgb, one_line, read_jsonl, relative_file
from humantune.errors import DataError
from humantune.io import atomic_path, new_output_dir, write_jsonl_atomic

PAIR_COLUMNS = ("jpg_0", "jpg_1", "label_0", "label_1", "caption")
"""The Pick-a-Pic columns humantune reads and writes (``label_1`` is optional when reading)."""
PAIRS_FILE = "pairs.jsonl"
TieHandling = Literal["drop", "keep"]


@dataclass
class PreferencePair:
    """One pair, winner first: ``label`` is the probability that ``winner`` is preferred (1, or ½ for a tie)."""

    winner: Image.Image
    loser: Image.Image
    caption: str
    label: float = 1.0


def normalise_pair(image_0: Image.Image, image_1: Image.Image, caption: str, label_0: float) -> PreferencePair:
    """The pair winner-first: swapped when ``label_0`` < ½ (the second image preferred); label = max(p, 1 − p)."""
    if label_0 < 0.5:
        return PreferencePair(image_1, image_0, caption, 1.0 - label_0)
    return PreferencePair(image_0, image_1, caption, label_0)


def _label(value, where: str, column: str) -> float:
    try:
        label = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {column} is {value!r}; expected a number in [0, 1] (1, 0 or 0.5)") from None
    if not math.isfinite(label) or not 0.0 <= label <= 1.0:
        raise DataError(f"{where}: {column} is {value!r}; expected a number in [0, 1] (1, 0 or 0.5)")
    return label


def _decode(data, where: str, column: str) -> Image.Image:
    if isinstance(data, dict):   # datasets' Image feature stores {"bytes": ..., "path": ...}
        data = data.get("bytes")
    if not isinstance(data, (bytes, bytearray)):
        raise DataError(f"{where}: {column} holds {type(data).__name__}; expected encoded image bytes (JPEG/PNG)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    except Exception as e:  # PIL raises several types for a damaged image
        raise DataError(f"{where}: {column} is not a readable image ({one_line(e)})") from None


def parquet_files(path: Path) -> list[Path]:
    """The parquet file ``path``, or the ``*.parquet`` files of the folder ``path`` in name order."""
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise DataError(f"{path}: no .parquet files in this folder (expected Pick-a-Pic parquet shards)")
        return files
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected a Pick-a-Pic parquet file, a folder of them, or a "
                        f"folder with {PAIRS_FILE})")
    return [path]


def iter_pairs_parquet(path: str | os.PathLike, ties: TieHandling = "drop", limit: int | None = None
                       ) -> Iterator[PreferencePair]:
    """Winner-first pairs of a Pick-a-Pic parquet file or folder of shards (at most ``limit``, in file order),
    decoded one row at a time and one row group at a time (Pick-a-Pic's shards hold hundreds of MB of images)."""
    import pyarrow.parquet as pq

    count = 0
    for file in parquet_files(Path(path)):
        try:
            parquet = pq.ParquetFile(file)
        except Exception as e:  # pyarrow's ArrowInvalid and OSError
            raise DataError(f"{file}: not a readable parquet file ({one_line(e)})") from None
        names = parquet.schema_arrow.names
        missing = [c for c in ("jpg_0", "jpg_1", "label_0", "caption") if c not in names]
        if missing:
            raise DataError(f"{file}: missing column {', '.join(missing)}; expected the Pick-a-Pic columns jpg_0, "
                            f"jpg_1, label_0, caption (has {', '.join(names)})")
        row = 0
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=["jpg_0", "jpg_1", "label_0", "caption"])
            columns = {c: table.column(c).to_pylist() for c in table.column_names}
            for i in range(table.num_rows):
                where = f"{file} row {row}"
                row += 1
                caption = columns["caption"][i]
                if not isinstance(caption, str):
                    raise DataError(f"{where}: caption is {caption!r}; expected a string")
                label = _label(columns["label_0"][i], where, "label_0")
                if ties == "drop" and label == 0.5:
                    continue
                yield normalise_pair(_decode(columns["jpg_0"][i], where, "jpg_0"),
                                     _decode(columns["jpg_1"][i], where, "jpg_1"), caption, label)
                count += 1
                if limit is not None and count >= limit:
                    return


def iter_pairs_folder(path: str | os.PathLike, ties: TieHandling = "drop", limit: int | None = None
                      ) -> Iterator[PreferencePair]:
    """Winner-first pairs of an image folder with ``pairs.jsonl`` (see the module docstring), one at a time."""
    folder = Path(path)
    manifest = folder / PAIRS_FILE
    count = 0
    for line, row in read_jsonl(manifest, "one preference pair per line"):
        where = f"{manifest} line {line}"
        missing = [k for k in ("file_0", "file_1", "label_0", "caption") if k not in row]
        if missing:
            raise DataError(f"{where}: missing key {', '.join(missing)}; expected file_0, file_1, label_0, caption")
        if not isinstance(row["caption"], str):
            raise DataError(f"{where}: caption is {row['caption']!r}; expected a string")
        label = _label(row["label_0"], where, "label_0")
        files = [relative_file(folder, row[key], where, key) for key in ("file_0", "file_1")]
        if ties == "drop" and label == 0.5:
            continue
        images = [load_rgb(file, f"{where}, {key}") for file, key in zip(files, ("file_0", "file_1"))]
        yield normalise_pair(images[0], images[1], row["caption"], label)
        count += 1
        if limit is not None and count >= limit:
            return


def check_pairs_source(path: str | os.PathLike) -> None:
    """DataError (one line) unless ``path`` is a folder with ``pairs.jsonl``, a parquet file or a folder of them:
    checked before any model loads; the rows are checked as they are read."""
    p = Path(path).expanduser()
    if not (p / PAIRS_FILE).is_file():
        parquet_files(p)


def iter_pairs(path: str | os.PathLike, ties: TieHandling = "drop", limit: int | None = None
               ) -> Iterator[PreferencePair]:
    """Winner-first pairs from a folder with ``pairs.jsonl``, a parquet file, or a folder of parquet shards, one
    at a time (the layout is checked when the first pair is asked for)."""
    if ties not in ("drop", "keep"):
        raise ValueError(f"ties must be 'drop' or 'keep', got {ties!r}")
    p = Path(path).expanduser()
    if (p / PAIRS_FILE).is_file():
        return iter_pairs_folder(p, ties, limit)
    return iter_pairs_parquet(p, ties, limit)


def read_pairs_parquet(path: str | os.PathLike, ties: TieHandling = "drop", limit: int | None = None
                       ) -> list[PreferencePair]:
    """:func:`iter_pairs_parquet` as a list."""
    return list(iter_pairs_parquet(path, ties, limit))


def read_pairs_folder(path: str | os.PathLike, ties: TieHandling = "drop", limit: int | None = None
                      ) -> list[PreferencePair]:
    """:func:`iter_pairs_folder` as a list."""
    return list(iter_pairs_folder(path, ties, limit))


def read_pairs(path: str | os.PathLike, ties: TieHandling = "drop", limit: int | None = None
               ) -> list[PreferencePair]:
    """Winner-first pairs from a folder with ``pairs.jsonl``, a parquet file, or a folder of parquet shards."""
    return list(iter_pairs(path, ties, limit))


def source_fingerprint(path: str | os.PathLike) -> list:
    """What identifies a pairs source without reading its images: every file's name, size and mtime (the
    parquet files, or the folder's pairs.jsonl and images)."""
    p = Path(path).expanduser().resolve()
    files = sorted(f for f in (p.rglob("*") if p.is_dir() else [p]) if f.is_file())
    return [str(p)] + [[str(f.relative_to(p.parent)), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def _rows(pairs: Iterable[PreferencePair]) -> Iterable[tuple[PreferencePair, float]]:
    for pair in pairs:
        if not 0.5 <= pair.label <= 1.0:
            raise ValueError(f"a PreferencePair's label is the winner's probability, in [0.5, 1]; got {pair.label}")
        yield pair, float(pair.label)


def write_pairs_parquet(pairs: Sequence[PreferencePair], path: str | os.PathLike) -> Path:
    """Write ``pairs`` (winner as ``jpg_0``, PNG-encoded) to one parquet file, atomically; return its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(_rows(pairs))
    table = pa.table({
        "jpg_0": pa.array([_png(p.winner) for p, _ in rows], pa.binary()),
        "jpg_1": pa.array([_png(p.loser) for p, _ in rows], pa.binary()),
        "label_0": pa.array([label for _, label in rows], pa.float64()),
        "label_1": pa.array([1.0 - label for _, label in rows], pa.float64()),
        "caption": pa.array([p.caption for p, _ in rows], pa.string()),
    })
    out = Path(path)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return out


def write_pairs_folder(pairs: Sequence[PreferencePair], folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``pairs`` as ``folder/pairs.jsonl`` + ``folder/images/NNNNNN_{0,1}.png`` (winner as ``file_0``); the
    folder appears whole or not at all. Returns the folder."""
    out = Path(folder)
    with new_output_dir(out, overwrite=overwrite) as tmp:
        (tmp / "images").mkdir()
        manifest = []
        for i, (pair, label) in enumerate(_rows(pairs)):
            names = [f"images/{i:06d}_0.png", f"images/{i:06d}_1.png"]
            pair.winner.convert("RGB").save(tmp / names[0])
            pair.loser.convert("RGB").save(tmp / names[1])
            manifest.append({"file_0": names[0], "file_1": names[1], "label_0": label, "label_1": 1.0 - label,
                             "caption": pair.caption})
        write_jsonl_atomic(tmp / PAIRS_FILE, manifest)
    return out
