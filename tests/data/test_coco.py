import json
import re

import numpy as np
import pytest

from humantune.data.coco import CocoKeypointsDataset, load_coco_keypoints, read_captions
from humantune.errors import DataError
from tests.data.coco_fixture import KP_A, KP_B, coco_dict, png_bytes, single_line_error, write_coco


def test_coco_groups_people_per_image_and_skips_crowd_and_other_categories(tmp_path):
    ds = load_coco_keypoints(*write_coco(tmp_path))
    assert isinstance(ds, CocoKeypointsDataset) and len(ds) == 2
    first = ds[0]
    assert first.image.size == (64, 48) and first.image.getpixel((5, 5)) == (200, 10, 10)
    np.testing.assert_array_equal(first.keypoints, np.stack([KP_A, KP_B]))
    np.testing.assert_array_equal(first.bboxes, [[1, 2, 10, 20], [30, 5, 20, 30]])
    np.testing.assert_array_equal(first.areas, [150.0, 400.0])
    assert first.area_convention == "segment" and first.caption == "two people" and first.sample_id == "a.png"
    second = ds[1]
    assert second.num_people == 0 and second.caption == "" and second.areas.shape == (0,)
    assert [s.sample_id for s in ds] == ["a.png", "b.png"] and ds[-1].sample_id == "b.png"
    with pytest.raises(IndexError):
        ds[2]
    first.keypoints[:] = -1  # editing a sample leaves the dataset as it was
    np.testing.assert_array_equal(ds[0].keypoints[0], KP_A)


def test_coco_mask_is_rasterised_from_segmentations(tmp_path):
    mask = load_coco_keypoints(*write_coco(tmp_path))[0].mask
    assert mask.shape == (48, 64) and mask.dtype == np.uint8
    assert mask[10, 5] == 1 and mask[20, 40] == 2 and mask[45, 60] == 0
    assert set(np.unique(mask)) == {0, 1, 2}


def test_coco_people_only_and_bbox_areas_when_area_is_missing(tmp_path):
    coco = coco_dict()
    del coco["annotations"][3]["area"]
    ds = load_coco_keypoints(*write_coco(tmp_path, coco), people_only=True)
    assert len(ds) == 1
    assert ds[0].area_convention == "bbox"
    np.testing.assert_array_equal(ds[0].areas, [10 * 20, 20 * 30])


@pytest.mark.parametrize("name, content", [
    ("captions.jsonl", '{"file_name": "b.png", "text": "an empty room"}\n\n'),
    ("captions.json", json.dumps({"b.png": "an empty room"})),
    ("captions_val.json", json.dumps({
        "images": [{"id": 20, "file_name": "b.png"}],
        "annotations": [{"image_id": 20, "caption": "an empty room"}, {"image_id": 20, "caption": "second"}],
    })),
])
def test_captions_file_overrides_the_image_field(tmp_path, name, content):
    annotation_json, image_dir = write_coco(tmp_path)
    (tmp_path / name).write_text(content)
    ds = load_coco_keypoints(annotation_json, image_dir, captions=tmp_path / name)
    assert ds[1].caption == "an empty room" and ds[0].caption == "two people"


def test_captions_match_on_base_name(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"b.png": "x"}))
    assert read_captions(tmp_path / "c.json") == {"b.png": "x"}
    coco = coco_dict()
    coco["images"][1]["file_name"] = "sub/b.png"
    annotation_json, image_dir = write_coco(tmp_path, coco)
    (image_dir / "sub").mkdir()
    (image_dir / "sub" / "b.png").write_bytes(png_bytes(32, 32, (0, 0, 0)))
    assert load_coco_keypoints(annotation_json, image_dir, captions=tmp_path / "c.json")[1].caption == "x"


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load_coco_keypoints(tmp_path / "nope.json", tmp_path)
    assert single_line_error(excinfo) == f"{tmp_path / 'nope.json'}: file not found (expected a COCO keypoints JSON)"


def test_broken_json_names_file_and_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError) as excinfo:
        load_coco_keypoints(path, tmp_path)
    assert single_line_error(excinfo).startswith(f"{path}: invalid JSON at line 2 column 12 (Expecting property name")


def test_keypoints_not_17x3_name_the_annotation(tmp_path):
    coco = coco_dict()
    coco["annotations"][3]["keypoints"] = [1.0] * 50
    annotation_json, image_dir = write_coco(tmp_path, coco)
    with pytest.raises(DataError) as excinfo:
        load_coco_keypoints(annotation_json, image_dir)
    assert single_line_error(excinfo) == (
        f"{annotation_json}: annotation id 4 (annotations[3]): expected 17×3 keypoints per person "
        "([x, y, v] × 17), got shape (50,)"
    )


@pytest.mark.parametrize("change, expected", [
    (lambda c: c["annotations"][0].update(image_id=99),
     r"annotation id 1 \(annotations\[0\]\): image_id 99 is not in 'images'"),
    (lambda c: c["annotations"][3].update(bbox=[1, 2]), r"annotation id 4 \(annotations\[3\]\): expected 'bbox'"),
    (lambda c: c["images"][1].pop("file_name"),
     r"images\[1\]: expected an object with an integer 'id' and a 'file_name'"),
    (lambda c: c["images"][1].update(id=10), r"images\[1\]: image id 10 appears twice"),
    (lambda c: c.pop("annotations"), r"expected a COCO keypoints JSON object with 'images' and 'annotations'"),
])
def test_malformed_coco_entries(tmp_path, change, expected):
    coco = coco_dict()
    change(coco)
    annotation_json, image_dir = write_coco(tmp_path, coco)
    with pytest.raises(DataError) as excinfo:
        load_coco_keypoints(annotation_json, image_dir)
    message = single_line_error(excinfo)
    assert message.startswith(f"{annotation_json}: ") and re.search(expected, message)


def test_unreadable_image_names_file_and_sample(tmp_path):
    annotation_json, image_dir = write_coco(tmp_path)
    (image_dir / "a.png").write_bytes(b"not a png")
    (image_dir / "b.png").unlink()
    ds = load_coco_keypoints(annotation_json, image_dir)
    with pytest.raises(DataError) as excinfo:
        ds[0]
    assert single_line_error(excinfo).startswith(
        f"{image_dir / 'a.png'}: cannot read image (sample 0, image id 10 in {annotation_json}): "
    )
    with pytest.raises(DataError) as excinfo:
        ds[1]
    assert single_line_error(excinfo) == f"{image_dir / 'b.png'}: image not found (sample 1, image id 20 in " \
                                         f"{annotation_json})"


def test_image_size_must_match_the_annotation(tmp_path):
    annotation_json, image_dir = write_coco(tmp_path)
    (image_dir / "b.png").write_bytes(png_bytes(16, 32, (0, 0, 0)))
    with pytest.raises(DataError, match=r"b\.png: image is 16×32 but the annotation says 32×32 \(sample 1"):
        load_coco_keypoints(annotation_json, image_dir)[1]


@pytest.mark.parametrize("name, expected", [("../a.png", "leaves the folder"),
                                            ("/tmp/a.png", "is an absolute path")])
def test_coco_images_must_lie_inside_the_image_folder(tmp_path, name, expected):
    coco = coco_dict()
    coco["images"][1]["file_name"] = name
    annotation_json, image_dir = write_coco(tmp_path, coco)
    with pytest.raises(DataError) as excinfo:
        load_coco_keypoints(annotation_json, image_dir)
    assert single_line_error(excinfo).startswith(f"{annotation_json}: image id {coco['images'][1]['id']}: "
                                                 f"file_name '{name}' {expected}")
