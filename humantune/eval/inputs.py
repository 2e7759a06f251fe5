"""The inputs of an evaluation: generated images with their prompts and target poses, and their pairing with a
reference.

- ``generated``: a folder of images (:data:`~humantune.data.loaders.IMAGE_EXTENSIONS`), taken in order of their
  relative path. An optional ``metadata.jsonl`` (HF imagefolder layout) lists them instead: ``file_name``, ``text``
  (the prompt) and, optionally, the target pose the image was generated for: ``keypoints`` (people × 17 ``[x, y, v]``
  in the generated image's pixels), ``bboxes`` and ``areas``. Rows are sorted by ``file_name`` too
  (:func:`read_generated_folder`).
- ``reference``: anything :func:`~humantune.data.loaders.open_pose_dataset` reads (a humantune pose folder, a COCO
  JSON with its images, Captioned COCO-Pose parquet, a plain image folder).
- ``prompts``: a ``.txt`` file (one prompt per line), a ``.jsonl`` file (``text``/``prompt``/``caption`` per row) or a
  list of strings, one per generated image (:func:`read_prompts`).

Pairing (generated image i ↔ reference sample j, :func:`pair_by`) is by file-name stem when both sides have the same
set of unique stems, else by order (i ↔ i); ``pairing="stem"`` or ``"order"`` forces one. The counts must be equal.
Reference keypoints are mapped to the generated image's pixels when the sizes differ (pixel-centre convention,
x_g = (x_r + ½)·W_g/W_r − ½; areas scale by the product of the two factors; :func:`rescale_ground_truth`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from humantune.data.loaders import IMAGE_EXTENSIONS
from humantune.data.readers import read_jsonl
from humantune.data.sample import validate_keypoints
from humantune.errors import DataError, HumantuneError
from humantune.eval import pose_metrics
from humantune.eval.pose_estimators import PoseEstimate

PAIRINGS = ("auto", "stem", "order")


@dataclass
class GeneratedImage:
    """One generated image: ``file_name`` relative to its folder, its ``prompt`` and its target pose if given."""

    file_name: str
    path: Path
    prompt: str | None = None
    target: pose_metrics.PoseGroundTruth | None = None

    @property
    def stem(self) -> str:
        return Path(self.file_name).stem


def keypoint_extent_boxes(kp: np.ndarray) -> np.ndarray:
    """[x, y, w, h] of each person's labelled keypoints (zeros for a person with none)."""
    boxes = np.zeros((len(kp), 4))
    for n, person in enumerate(kp):
        xy = person[person[:, 2] > 0, :2]
        if len(xy):
            boxes[n, :2] = xy.min(axis=0)
            boxes[n, 2:] = np.ptp(xy, axis=0)
    return boxes


def _metadata_target(row: dict[str, Any], where: str) -> pose_metrics.PoseGroundTruth:
    kp = validate_keypoints(row["keypoints"], where).astype(np.float64)
    bboxes = np.asarray(row["bboxes"], np.float64).reshape(-1, 4) if row.get("bboxes") is not None \
        else keypoint_extent_boxes(kp)
    areas = np.asarray(row["areas"], np.float64).reshape(-1) if row.get("areas") is not None else None
    if bboxes.shape[0] != kp.shape[0] or (areas is not None and areas.shape[0] != kp.shape[0]):
        raise DataError(f"{where}: {kp.shape[0]} people in 'keypoints' but {bboxes.shape[0]} bboxes"
                        f"{'' if areas is None else f' and {areas.shape[0]} areas'}")
    return pose_metrics.PoseGroundTruth(kp, bboxes, areas)


def read_generated_folder(folder: str | os.PathLike) -> list[GeneratedImage]:
    """The generated images of ``folder`` sorted by relative path, with prompts and targets from its metadata.jsonl.

    Without ``metadata.jsonl``: every image file under the folder. With it: one image per row (``file_name``
    required; ``text``, ``keypoints``, ``bboxes``, ``areas`` optional; ``keypoints`` in all rows or none).
    DataError (one line naming the file and line) for a missing folder, no images or a malformed row.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: generated image folder not found")
    metadata = root / "metadata.jsonl"
    items: list[GeneratedImage] = []
    if metadata.is_file():
        rows = read_jsonl(metadata, "one JSON object per generated image with 'file_name'")
        with_keypoints = [number for number, row in rows if row.get("keypoints") is not None]
        if with_keypoints and len(with_keypoints) != len(rows):
            missing = next(number for number, row in rows if row.get("keypoints") is None)
            raise DataError(f"{metadata}: line {missing}: no 'keypoints' although other rows give target poses "
                            "(give them in every row or in none)")
        for number, row in rows:
            if not isinstance(row.get("file_name"), str):
                raise DataError(f"{metadata}: line {number}: expected a string 'file_name'")
            where = f"{metadata.name} line {number}"
            text = row.get("text", row.get("prompt"))
            items.append(GeneratedImage(
                file_name=row["file_name"], path=root / row["file_name"],
                prompt=None if text is None else str(text),
                target=_metadata_target(row, where) if with_keypoints else None,
            ))
        items.sort(key=lambda item: item.file_name)
    else:
        for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()):
            items.append(GeneratedImage(file_name=path.relative_to(root).as_posix(), path=path))
    if not items:
        raise DataError(f"{root}: no generated images (expected {', '.join(IMAGE_EXTENSIONS)} files or a "
                        "metadata.jsonl)")
    return items


def read_prompts(prompts: str | os.PathLike | Sequence[str]) -> list[str]:
    """Prompts from a ``.txt`` file (one per non-empty line), a ``.jsonl`` file (``text``, ``prompt`` or ``caption``
    per row) or a sequence of strings."""
    if isinstance(prompts, (str, os.PathLike)):
        path = Path(prompts)
        if not path.is_file():
            raise DataError(f"{path}: prompts file not found (expected .txt, one prompt per line, or .jsonl)")
        if path.suffix == ".jsonl":
            out = []
            for number, row in read_jsonl(path, "one JSON object per prompt with 'text'"):
                text = next((row[k] for k in ("text", "prompt", "caption") if isinstance(row.get(k), str)), None)
                if text is None:
                    raise DataError(f"{path}: line {number}: expected a string 'text' (or 'prompt', 'caption')")
                out.append(text)
            return out
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [str(p) for p in prompts]


def pair_by(generated: Sequence[str], reference: Sequence[str], pairing: str,
            generated_dir: str, reference_dir: str) -> tuple[list[int], str]:
    """Reference index for each generated image and the pairing used (``stem`` or ``order``).

    ``generated``/``reference``: file names (or sample ids) whose stems are matched. ``auto`` pairs by stem when both
    sides have the same set of unique stems, else by order. HumantuneError when the counts differ (naming both counts
    and folders) or, for ``stem``, when the stems do not match one to one.
    """
    if pairing not in PAIRINGS:
        raise HumantuneError(f"unknown pairing {pairing!r}; expected one of {', '.join(PAIRINGS)}")
    if len(generated) != len(reference):
        raise HumantuneError(f"{len(generated)} generated images in {generated_dir} but {len(reference)} reference "
                             f"samples in {reference_dir}: the counts must match")
    gen_stems = [Path(name).stem for name in generated]
    ref_stems = [Path(name).stem for name in reference]
    same = len(set(gen_stems)) == len(gen_stems) and set(gen_stems) == set(ref_stems) \
        and len(set(ref_stems)) == len(ref_stems)
    if pairing == "stem" or (pairing == "auto" and same):
        if not same:
            missing = next((s for s in gen_stems if s not in set(ref_stems)), None)
            reason = f"'{missing}' has no reference sample" if missing is not None else "stems are not unique"
            raise HumantuneError(f"cannot pair {generated_dir} with {reference_dir} by file-name stem: {reason}")
        index = {s: j for j, s in enumerate(ref_stems)}
        return [index[s] for s in gen_stems], "stem"
    return list(range(len(generated))), "order"


def sample_id(dataset, index: int) -> str:
    """The id of sample ``index`` without decoding its image when the loader keeps its rows."""
    records = getattr(dataset, "records", None)
    if records is not None and index < len(records) and hasattr(records[index], "file_name"):
        return str(records[index].file_name)
    rows = getattr(dataset, "rows", None)
    if rows is not None and index < len(rows):
        row = rows[index]
        if isinstance(row, tuple) and len(row) >= 2 and isinstance(row[1], dict) and "file_name" in row[1]:
            return str(row[1]["file_name"])
        if isinstance(row, dict) and "file_name" in row:
            return str(row["file_name"])
    return dataset[index].sample_id or str(index)


def rescale_ground_truth(gt: pose_metrics.PoseGroundTruth, from_size: tuple[int, int],
                         to_size: tuple[int, int]) -> pose_metrics.PoseGroundTruth:
    """Map ground truth from an image of ``from_size`` = (W, H) to one of ``to_size`` (pixel-centre convention).

    x' = (x + ½)·W'/W − ½ (y likewise); boxes scale about the image corner; areas by (W'/W)·(H'/H). Unlabelled
    keypoints (v = 0) are left as they are.
    """
    if tuple(from_size) == tuple(to_size):
        return gt
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    kp = np.asarray(gt.keypoints, np.float64).copy()
    labelled = kp[..., 2] > 0
    kp[..., 0] = np.where(labelled, (kp[..., 0] + 0.5) * sx - 0.5, kp[..., 0])
    kp[..., 1] = np.where(labelled, (kp[..., 1] + 0.5) * sy - 0.5, kp[..., 1])
    boxes = np.asarray(gt.bboxes, np.float64).reshape(-1, 4) * np.array([sx, sy, sx, sy])
    areas = None if gt.areas is None else np.asarray(gt.areas, np.float64) * sx * sy
    return pose_metrics.PoseGroundTruth(kp, boxes, areas)


def rescale_detections(det: PoseEstimate, from_size: tuple[int, int], to_size: tuple[int, int]) -> PoseEstimate:
    if tuple(from_size) == tuple(to_size):
        return det
    kp = np.asarray(det.keypoints, np.float64).copy()
    kp[..., 0] = (kp[..., 0] + 0.5) * to_size[0] / from_size[0] - 0.5
    kp[..., 1] = (kp[..., 1] + 0.5) * to_size[1] / from_size[1] - 0.5
    return PoseEstimate(kp.astype(np.float32), det.scores)
