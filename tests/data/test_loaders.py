import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from humantune.data.loaders import (
    CaptionedCocoPoseDataset,
    CocoKeypointsDataset,
    ImageFolderDataset,
    PoseFolderDataset,
    load_captioned_coco_pose,
    load_coco_keypoints,
    load_image_folder,
    load_pose_folder,
    open_pose_dataset,
    pose_cell_keypoints,
    read_captions,
)
from humantune.errors import DataError

KP_A = np.arange(51, dtype=np.float32).reshape(17, 3) % 40
KP_A[:, 2] = 2
KP_B = KP_A + [20, 5, 0]
KP_B[3] = 0  # an unlabelled point


def _png_bytes(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _coco_dict() -> dict:
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


def _write_coco(root: Path, coco: dict | None = None) -> tuple[Path, Path]:
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    (image_dir / "a.png").write_bytes(_png_bytes(64, 48, (200, 10, 10)))
    (image_dir / "b.png").write_bytes(_png_bytes(32, 32, (10, 200, 10)))
    annotation_json = root / "person_keypoints.json"
    annotation_json.write_text(json.dumps(coco or _coco_dict()))
    return annotation_json, image_dir


def _single_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# --------------------------------------------------------------------------------------------- COCO keypoints


def test_coco_groups_people_per_image_and_skips_crowd_and_other_categories(tmp_path):
    ds = load_coco_keypoints(*_write_coco(tmp_path))
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
    mask = load_coco_keypoints(*_write_coco(tmp_path))[0].mask
    assert mask.shape == (48, 64) and mask.dtype == np.uint8
    assert mask[10, 5] == 1 and mask[20, 40] == 2 and mask[45, 60] == 0
    assert set(np.unique(mask)) == {0, 1, 2}


def test_coco_people_only_and_bbox_areas_when_area_is_missing(tmp_path):
    coco = _coco_dict()
    del coco["annotations"][3]["area"]
    ds = load_coco_keypoints(*_write_coco(tmp_path, coco), people_only=True)
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
    annotation_json, image_dir = _write_coco(tmp_path)
    (tmp_path / name).write_text(content)
    ds = load_coco_keypoints(annotation_json, image_dir, captions=tmp_path / name)
    assert ds[1].caption == "an empty room" and ds[0].caption == "two people"


def test_captions_match_on_base_name(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"b.png": "x"}))
    assert read_captions(tmp_path / "c.json") == {"b.png": "x"}
    coco = _coco_dict()
    coco["images"][1]["file_name"] = "sub/b.png"
    annotation_json, image_dir = _write_coco(tmp_path, coco)
    (image_dir / "sub").mkdir()
    (image_dir / "sub" / "b.png").write_bytes(_png_bytes(32, 32, (0, 0, 0)))
    assert load_coco_keypoints(annotation_json, image_dir, captions=tmp_path / "c.json")[1].caption == "x"


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load_coco_keypoints(tmp_path / "nope.json", tmp_path)
    assert _single_line_error(excinfo) == f"{tmp_path / 'nope.json'}: file not found (expected a COCO keypoints JSON)"


def test_broken_json_names_file_and_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError) as excinfo:
        load_coco_keypoints(path, tmp_path)
    assert _single_line_error(excinfo).startswith(f"{path}: invalid JSON at line 2 column 12 (Expecting property name")


def test_keypoints_not_17x3_name_the_annotation(tmp_path):
    coco = _coco_dict()
    coco["annotations"][3]["keypoints"] = [1.0] * 50
    annotation_json, image_dir = _write_coco(tmp_path, coco)
    with pytest.raises(DataError) as excinfo:
        load_coco_keypoints(annotation_json, image_dir)
    assert _single_line_error(excinfo) == (
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
    coco = _coco_dict()
    change(coco)
    annotation_json, image_dir = _write_coco(tmp_path, coco)
    with pytest.raises(DataError) as excinfo:
        load_coco_keypoints(annotation_json, image_dir)
    message = _single_line_error(excinfo)
    assert message.startswith(f"{annotation_json}: ") and re.search(expected, message)


def test_unreadable_image_names_file_and_sample(tmp_path):
    annotation_json, image_dir = _write_coco(tmp_path)
    (image_dir / "a.png").write_bytes(b"not a png")
    (image_dir / "b.png").unlink()
    ds = load_coco_keypoints(annotation_json, image_dir)
    with pytest.raises(DataError) as excinfo:
        ds[0]
    assert _single_line_error(excinfo).startswith(
        f"{image_dir / 'a.png'}: cannot read image (sample 0, image id 10 in {annotation_json}): "
    )
    with pytest.raises(DataError) as excinfo:
        ds[1]
    assert _single_line_error(excinfo) == f"{image_dir / 'b.png'}: image not found (sample 1, image id 20 in " \
                                         f"{annotation_json})"


def test_image_size_must_match_the_annotation(tmp_path):
    annotation_json, image_dir = _write_coco(tmp_path)
    (image_dir / "b.png").write_bytes(_png_bytes(16, 32, (0, 0, 0)))
    with pytest.raises(DataError, match=r"b\.png: image is 16×32 but the annotation says 32×32 \(sample 1"):
        load_coco_keypoints(annotation_json, image_dir)[1]


# --------------------------------------------------------------------------------------------- pose folder


def _write_pose_folder(root: Path) -> Path:
    """A hand-made humantune pose folder with the two images of the COCO fixture."""
    coco = _coco_dict()
    for image in coco["images"]:
        image["file_name"] = f"images/{image['file_name']}"
    _write_coco(root, coco)
    (root / "annotations").mkdir()
    (root / "person_keypoints.json").rename(root / "annotations" / "person_keypoints.json")
    (root / "conditions").mkdir()
    (root / "masks").mkdir()
    (root / "conditions" / "a.png").write_bytes(_png_bytes(64, 48, (0, 0, 255)))
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
    assert _single_line_error(excinfo).startswith(f"{metadata}: line 2: invalid JSON")

    metadata.write_text(lines[0] + "\n" + json.dumps({"file_name": "images/zzz.png"}) + "\n")
    with pytest.raises(DataError) as excinfo:
        load_pose_folder(root)
    annotation_json = root / "annotations" / "person_keypoints.json"
    assert _single_line_error(excinfo) == (
        f"{metadata}: line 2: file_name 'images/zzz.png' is not an image of {annotation_json}"
    )

    metadata.write_text("\n".join(lines) + "\n")
    (root / "masks" / "a.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"masks/a\.png: cannot read mask \(sample 1, metadata\.jsonl line 2\)"):
        load_pose_folder(root)[1]

    (root / "annotations" / "person_keypoints.json").unlink()
    with pytest.raises(DataError, match=r"person_keypoints\.json: file not found"):
        load_pose_folder(root)


# --------------------------------------------------------------------------------------------- Captioned COCO-Pose


def test_pose_cell_formats():
    assert pose_cell_keypoints(None, "w").shape == (0, 17, 3)
    assert pose_cell_keypoints([], "w").shape == (0, 17, 3)
    np.testing.assert_array_equal(pose_cell_keypoints(KP_A.ravel().tolist(), "w"), KP_A[None])
    np.testing.assert_array_equal(pose_cell_keypoints(KP_A.tolist(), "w"), KP_A[None])
    two = np.stack([KP_A, KP_B])
    np.testing.assert_array_equal(pose_cell_keypoints(two.tolist(), "w"), two)
    np.testing.assert_array_equal(pose_cell_keypoints(two.reshape(2, 51).tolist(), "w"), two)
    np.testing.assert_array_equal(pose_cell_keypoints(json.dumps(two.tolist()), "w"), two)
    with pytest.raises(DataError, match=r"^f\.parquet: row 3: expected 17×3 keypoints .* got shape \(2, 50\)$"):
        pose_cell_keypoints([[0] * 50, [0] * 50], "f.parquet: row 3")
    with pytest.raises(DataError, match=r"^w: 'pose' string is not valid JSON"):
        pose_cell_keypoints("[1, 2", "w")


@pytest.fixture
def pa():
    return pytest.importorskip("pyarrow", exc_type=ImportError)


def _image_struct(data: bytes | None, path: str | None = None) -> dict:
    return {"bytes": data, "path": path}


def _write_parquet(pa, path: Path, columns: dict, row_group_size: int | None = None) -> Path:
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def test_captioned_coco_pose_rows(tmp_path, pa):
    two = np.stack([KP_A, KP_B])
    path = _write_parquet(pa, tmp_path / "train-00000.parquet", {
        "image": [_image_struct(_png_bytes(40, 30, (255, 0, 0))), _image_struct(_png_bytes(20, 20, (0, 255, 0))),
                  _image_struct(_png_bytes(8, 8, (0, 0, 255)))],
        "control_pose": [_image_struct(_png_bytes(40, 30, (9, 9, 9))), None, None],
        "caption": ["two people", "nobody", None],
        "pose": [two.tolist(), None, [KP_A.tolist()]],
    }, row_group_size=2)
    ds = load_captioned_coco_pose(path)
    assert isinstance(ds, CaptionedCocoPoseDataset) and len(ds) == 3 and ds.caption_column == "caption"
    first = ds[0]
    assert first.image.size == (40, 30) and first.image.getpixel((0, 0)) == (255, 0, 0)
    assert first.condition.getpixel((0, 0)) == (9, 9, 9) and first.caption == "two people"
    np.testing.assert_array_equal(first.keypoints, two)
    assert first.bboxes is None and first.areas is None and first.sample_id == "train-00000.parquet#0"
    assert ds[1].num_people == 0 and ds[1].condition is None and ds[1].caption == "nobody"
    last = ds[2]  # second row group
    assert last.image.getpixel((0, 0)) == (0, 0, 255) and last.caption == "" and last.sample_id.endswith("#2")
    np.testing.assert_array_equal(last.keypoints, KP_A[None])


def test_captioned_coco_pose_prompt_column_files_glob_and_folder(tmp_path, pa):
    for i in range(2):
        _write_parquet(pa, tmp_path / f"part-{i}.parquet", {
            "image": [_image_struct(_png_bytes(10 + i, 10, (i, 0, 0)))], "prompt": [f"prompt {i}"],
        })
    for source in (tmp_path, str(tmp_path / "part-*.parquet")):
        ds = open_pose_dataset(str(source))
        assert isinstance(ds, CaptionedCocoPoseDataset) and ds.caption_column == "prompt"
        assert [s.caption for s in ds] == ["prompt 0", "prompt 1"] and ds[1].image.size == (11, 10)
        assert ds[1].num_people == 0 and ds[1].sample_id == "part-1.parquet#0"


def test_captioned_coco_pose_image_stored_by_path(tmp_path, pa):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "x.png").write_bytes(_png_bytes(6, 4, (1, 2, 3)))
    path = _write_parquet(pa, tmp_path / "d.parquet", {
        "image": [_image_struct(None, "pics/x.png")], "text": ["t"],
    })
    assert load_captioned_coco_pose(path)[0].image.getpixel((0, 0)) == (1, 2, 3)


def test_captioned_coco_pose_errors(tmp_path, pa):
    path = _write_parquet(pa, tmp_path / "bad.parquet", {
        "image": [_image_struct(_png_bytes(4, 4, (0, 0, 0))), _image_struct(b"\x89PNG broken")],
        "caption": ["ok", "broken"], "pose": [[1.0] * 51, [1.0] * 50],
    })
    ds = load_captioned_coco_pose(path)
    with pytest.raises(DataError) as excinfo:
        ds[1]
    assert _single_line_error(excinfo).startswith(f"{path}: row 1 (sample 1), column 'image': cannot decode image")
    with pytest.raises(DataError, match="missing column"):
        load_captioned_coco_pose(path, caption_column="prompt")

    _write_parquet(pa, path, {"image": [_image_struct(_png_bytes(4, 4, (0, 0, 0)))], "pose": [[1.0] * 50]})
    with pytest.raises(DataError) as excinfo:
        load_captioned_coco_pose(path)
    assert _single_line_error(excinfo) == (
        f"{path}: no caption column (expected one of caption, prompt, text); columns are image, pose"
    )
    _write_parquet(pa, path, {"image": [_image_struct(_png_bytes(4, 4, (0, 0, 0)))], "caption": ["c"],
                              "pose": [[1.0] * 50]})
    with pytest.raises(DataError) as excinfo:
        load_captioned_coco_pose(path)[0]
    assert _single_line_error(excinfo) == (
        f"{path}: row 0 (sample 0), column 'pose': expected 17×3 keypoints per person ([x, y, v] × 17), "
        "got shape (50,)"
    )


def test_parquet_sources_that_are_not_parquet(tmp_path, pa):
    fake = tmp_path / "fake.parquet"
    fake.write_text("hello")
    with pytest.raises(DataError, match=rf"^{re.escape(str(fake))}: cannot read as parquet"):
        load_captioned_coco_pose(fake)
    with pytest.raises(DataError, match=r"no parquet file matches this pattern"):
        load_captioned_coco_pose(str(tmp_path / "none-*.parquet"))
    with pytest.raises(DataError, match=r"missing\.parquet: file not found"):
        load_captioned_coco_pose(tmp_path / "missing.parquet")


# --------------------------------------------------------------------------------------------- image folder


def test_image_folder_with_metadata(tmp_path):
    (tmp_path / "x.png").write_bytes(_png_bytes(8, 6, (5, 5, 5)))
    (tmp_path / "c.png").write_bytes(_png_bytes(8, 6, (7, 7, 7)))
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
    (tmp_path / "b.jpg").write_bytes(_png_bytes(4, 4, (0, 0, 0)))
    (tmp_path / "b.txt").write_text("a beach\n")
    (tmp_path / "sub" / "a.png").write_bytes(_png_bytes(4, 4, (0, 0, 0)))
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
    assert _single_line_error(excinfo) == f"{tmp_path / 'gone.png'}: image not found (sample 0, metadata.jsonl line 1)"


# --------------------------------------------------------------------------------------------- dispatcher


def test_dispatcher_coco_source_and_bad_sources(tmp_path):
    annotation_json, image_dir = _write_coco(tmp_path)
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
