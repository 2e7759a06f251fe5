"""The COCO keypoints fixture shared by the loader tests: two images, two people, a crowd and a dog."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

KP_A = np.arange(51, dtype=np.float32).reshape(17, 3) % 40
KP_A[:, 2] = 2
KP_B = KP_A + [20, 5, 0]
KP_B[3] = 0  # an unlabelled point


def png_bytes(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def coco_dict() -> dict:
    """Image 10 (64×48): two people, a crowd and a dog annotation; image 20 (32×32): nobody."""
    return {
        "images": [
            {"id": 10, "file_name": "a.png", "width": 64, "height": 48, "caption": "two people"},
            {"id": 20, "file_name": "b.png", "width": 32, "height": 32},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 1, "iscrowd": 0, "keypoints": KP_A.ravel().tolist(),
             "bbox": [1, 2, 10, 20], "area": 150.0, "segmentation": [[1, 2, 11, 2, 11, 22, 1, 22]]},
            {"id": 2, "image_id": 10, "category_id": 1, "iscrowd": 1, "keypoints": [0] * 51,
             "bbox": [0, 0, 64, 48], "area": 3072.0},
            {"id": 3, "image_id": 10, "category_id": 2, "iscrowd": 0, "bbox": [0, 0, 5, 5], "area": 25.0},
            {"id": 4, "image_id": 10, "category_id": 1, "iscrowd": 0, "keypoints": KP_B.ravel().tolist(),
             "bbox": [30, 5, 20, 30], "area": 400.0, "segmentation": [[30, 5, 50, 5, 50, 35, 30, 35]]},
        ],
    }


def write_coco(root: Path, coco: dict | None = None) -> tuple[Path, Path]:
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    (image_dir / "a.png").write_bytes(png_bytes(64, 48, (200, 10, 10)))
    (image_dir / "b.png").write_bytes(png_bytes(32, 32, (10, 200, 10)))
    annotation_json = root / "person_keypoints.json"
    annotation_json.write_text(json.dumps(coco or coco_dict()))
    return annotation_json, image_dir


def single_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "Traceback" not in message
    return message
