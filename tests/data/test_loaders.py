import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from humantune.data.coco import CocoKeypointsDataset
from humantune.data.loaders import (
    ImageFolderDataset,
    PoseFolderDataset,
    load_image_folder,
    load_pose_folder,
    open_pose_dataset,
)
from humantune.errors import DataError
from tests.data.coco_fixture import KP_A, KP_B, coco_dict, png_bytes, single_line_error, write_coco


# --------------------------------------------------------------------------------------------- pose folder


def _write_pose_folder(root: Path) -> Path:
    """A hand-made humantune pose folder with the two images of the COCO fixture."""
    coco = coco_dict()
    for image in coco["images"]:
        image["file_name"] = f"images/{image['file_name']}"
    write_coco(root, coco)
    (root / "annotations").mkdir()
    (root / "person_keypoints.json").rename(root / "annotations" / "person_keypoints.json")
    (root / "conditions").mkdir()
    (root / "masks").mkdir()
    (root / "conditions" / "a.png").write_bytes(png_bytes(64, 48, (0, 0, 255)))
    mask = np.zeros((48, 64), dtype=np.uint8)
    mask[2:22, 1:11] = 1
    Image.fromarray(mask).save(root / "masks" / "a.png")
    rows = [
        {"file_name": "images/b.png", "text": "nobody here", "image_id": 20},
        {"file_name": "images/a.png", "text": "two people waving", "conditioning_image": "conditions/a.png",
         "mask": "masks/a.png", "image_id": 10, "action": "waving", "attributes": {"people": [{"shirt": "red"}]}},
    ]
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_pose_folder_follows_metadata_order_and_joins_annotations(tmp_path):
    ds = load_pose_folder(_write_pose_folder(tmp_path))
    assert isinstance(ds, PoseFolderDataset) and len(ds) == 2
    empty, people = ds[0], ds[1]
    assert empty.sample_id == "images/b.png" and empty.num_people == 0 and empty.caption == "nobody here"
    assert empty.condition is None and empty.mask is None
    np.testing.assert_array_equal(people.keypoints, np.stack([KP_A, KP_B]))
    np.testing.assert_array_equal(people.areas, [150.0, 400.0])
    assert people.caption == "two people waving" and people.action == "waving"
    assert people.attributes == {"people": [{"shirt": "red"}]}
    assert people.condition.getpixel((0, 0)) == (0, 0, 255)
    assert people.mask.shape == (48, 64) and int(people.mask.sum()) == 200


def test_pose_folder_from_the_mannequin_world(tmp_path):
    from humantune.data.mannequin.world import MannequinConfig, write_world

    out = write_world(MannequinConfig(n=2, size=48, second_person_prob=1.0), tmp_path / "world", workers=1,
                      progress=False)
    ds = open_pose_dataset(str(out))
    assert isinstance(ds, PoseFolderDataset) and len(ds) == 2
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    for sample, row in zip(ds, rows):
        np.testing.assert_allclose(sample.keypoints, row["keypoints"], atol=1e-3)
        assert sample.caption == row["text"] and sample.num_people == 2
        # segment area = visible person-mask pixel count
        np.testing.assert_array_equal(sample.areas, [(sample.mask == k + 1).sum() for k in range(2)])
        assert sample.condition.size == sample.image.size == (48, 48)


def test_pose_folder_errors_name_file_and_line(tmp_path):
    root = _write_pose_folder(tmp_path)
    metadata = root / "metadata.jsonl"
    lines = metadata.read_text().splitlines()
    metadata.write_text(lines[0] + "\n" + lines[1][:-1] + "\n")
    with pytest.raises(DataError) as excinfo:
        load_pose_folder(root)
    assert single_line_error(excinfo).startswith(f"{metadata}: line 2: invalid JSON")

    metadata.write_text(lines[0] + "\n" + json.dumps({"file_name": "images/zzz.png"}) + "\n")
    with pytest.raises(DataError) as excinfo:
        load_pose_folder(root)
    annotation_json = root / "annotations" / "person_keypoints.json"
    assert single_line_error(excinfo) == (
        f"{metadata}: line 2: file_name 'images/zzz.png' is not an image of {annotation_json}"
    )

    metadata.write_text("\n".join(lines) + "\n")
    (root / "masks" / "a.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"masks/a\.png: cannot read mask \(sample 1, metadata\.jsonl line 2\)"):
        load_pose_folder(root)[1]

    (root / "annotations" / "person_keypoints.json").unlink()
    with pytest.raises(DataError, match=r"person_keypoints\.json: file not found"):
        load_pose_folder(root)


# --------------------------------------------------------------------------------------------- image folder


def test_image_folder_with_metadata(tmp_path):
    (tmp_path / "x.png").write_bytes(png_bytes(8, 6, (5, 5, 5)))
    (tmp_path / "c.png").write_bytes(png_bytes(8, 6, (7, 7, 7)))
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({"file_name": "x.png", "text": "a photo", "conditioning_image": "c.png"}) + "\n"
    )
    ds = load_image_folder(tmp_path)
    assert isinstance(ds, ImageFolderDataset) and len(ds) == 1  # only rows of metadata.jsonl
    sample = ds[0]
    assert sample.caption == "a photo" and sample.num_people == 0 and sample.keypoints.shape == (0, 17, 3)
    assert sample.image.getpixel((0, 0)) == (5, 5, 5) and sample.condition.getpixel((0, 0)) == (7, 7, 7)


def test_image_folder_with_sidecar_captions(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.jpg").write_bytes(png_bytes(4, 4, (0, 0, 0)))
    (tmp_path / "b.txt").write_text("a beach\n")
    (tmp_path / "sub" / "a.png").write_bytes(png_bytes(4, 4, (0, 0, 0)))
    (tmp_path / "notes.md").write_text("not an image")
    ds = open_pose_dataset(str(tmp_path))
    assert isinstance(ds, ImageFolderDataset)
    assert [(s.sample_id, s.caption) for s in ds] == [("b.jpg", "a beach"), ("sub/a.png", "")]


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match=r": no images \(expected \.png"):
        load_image_folder(tmp_path)
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "gone.png", "text": "t"}) + "\n")
    with pytest.raises(DataError) as excinfo:
        load_image_folder(tmp_path)[0]
    assert single_line_error(excinfo) == f"{tmp_path / 'gone.png'}: image not found (sample 0, metadata.jsonl line 1)"


# --------------------------------------------------------------------------------------------- dispatcher


def test_dispatcher_coco_source_and_bad_sources(tmp_path):
    annotation_json, image_dir = write_coco(tmp_path)
    ds = open_pose_dataset(f"coco:{annotation_json}:{image_dir}")
    assert isinstance(ds, CocoKeypointsDataset) and ds[0].num_people == 2
    needs_folder = rf"a COCO JSON needs its image folder; pass coco:{re.escape(str(annotation_json))}:IMAGE_DIR"
    with pytest.raises(DataError, match=needs_folder):
        open_pose_dataset(str(annotation_json))
    with pytest.raises(DataError, match=r"expected coco:ANNOTATIONS_JSON:IMAGE_DIR"):
        open_pose_dataset("coco:only.json")
    with pytest.raises(DataError, match=r"nowhere: not found"):
        open_pose_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"image folder not found"):
        open_pose_dataset(f"coco:{annotation_json}:{tmp_path / 'no-images'}")


def test_metadata_rows_name_files_inside_their_folder_only(tmp_path):
    from humantune.data.readers import relative_file

    assert relative_file(tmp_path, "images/a.png", "here") == tmp_path / "images/a.png"
    assert relative_file(tmp_path, "images/../a.png", "here") == tmp_path / "images/../a.png"   # stays inside
    for name, expected in [("../a.png", "leaves the folder"), ("images/../../a.png", "leaves the folder"),
                           ("..", "leaves the folder"), ("/etc/passwd", "is an absolute path"),
                           ("~/x.png", "is an absolute path")]:
        with pytest.raises(DataError, match=f"here: file_name '{re.escape(name)}' {expected}"):
            relative_file(tmp_path, name, "here")

    root = _write_pose_folder(tmp_path / "pose")
    metadata = root / "metadata.jsonl"
    lines = metadata.read_text().splitlines()
    row = json.loads(lines[1])
    for key in ("file_name", "conditioning_image", "mask"):
        metadata.write_text(lines[0] + "\n" + json.dumps({**row, key: "../../secret.png"}) + "\n")
        with pytest.raises(DataError) as excinfo:
            load_pose_folder(root)
        assert single_line_error(excinfo) == (f"{metadata}: line 2: {key} '../../secret.png' leaves the folder "
                                              f"{root}")
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(png_bytes(8, 8, (1, 2, 3)))
    (images / "metadata.jsonl").write_text(json.dumps({"file_name": str(tmp_path / "images/a.png")}) + "\n")
    with pytest.raises(DataError, match="line 1: file_name '.*a.png' is an absolute path"):
        load_image_folder(images)


def test_a_pose_folder_without_its_keypoints_file_is_named(tmp_path):
    root = _write_pose_folder(tmp_path / "pose")
    (root / "annotations" / "person_keypoints.json").unlink()
    with pytest.raises(DataError) as excinfo:
        open_pose_dataset(root)
    assert single_line_error(excinfo) == (f"{root / 'annotations' / 'person_keypoints.json'}: file not found "
                                          f"(the keypoints of the pose folder {root})")
    (root / "annotations").rmdir()   # a plain image folder with a metadata.jsonl is still one
    assert isinstance(open_pose_dataset(root), ImageFolderDataset)
