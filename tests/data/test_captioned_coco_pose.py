import json
import re
from pathlib import Path

import numpy as np
import pytest

from humantune.data.captioned_coco_pose import CaptionedCocoPoseDataset, load_captioned_coco_pose, pose_cell_keypoints
from humantune.data.loaders import open_pose_dataset
from humantune.errors import DataError
from tests.data.coco_fixture import KP_A, KP_B, png_bytes, single_line_error


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
        "image": [_image_struct(png_bytes(40, 30, (255, 0, 0))), _image_struct(png_bytes(20, 20, (0, 255, 0))),
                  _image_struct(png_bytes(8, 8, (0, 0, 255)))],
        "control_pose": [_image_struct(png_bytes(40, 30, (9, 9, 9))), None, None],
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
            "image": [_image_struct(png_bytes(10 + i, 10, (i, 0, 0)))], "prompt": [f"prompt {i}"],
        })
    for source in (tmp_path, str(tmp_path / "part-*.parquet")):
        ds = open_pose_dataset(str(source))
        assert isinstance(ds, CaptionedCocoPoseDataset) and ds.caption_column == "prompt"
        assert [s.caption for s in ds] == ["prompt 0", "prompt 1"] and ds[1].image.size == (11, 10)
        assert ds[1].num_people == 0 and ds[1].sample_id == "part-1.parquet#0"


def test_captioned_coco_pose_image_stored_by_path(tmp_path, pa):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "x.png").write_bytes(png_bytes(6, 4, (1, 2, 3)))
    path = _write_parquet(pa, tmp_path / "d.parquet", {
        "image": [_image_struct(None, "pics/x.png")], "text": ["t"],
    })
    assert load_captioned_coco_pose(path)[0].image.getpixel((0, 0)) == (1, 2, 3)


def test_captioned_coco_pose_errors(tmp_path, pa):
    path = _write_parquet(pa, tmp_path / "bad.parquet", {
        "image": [_image_struct(png_bytes(4, 4, (0, 0, 0))), _image_struct(b"\x89PNG broken")],
        "caption": ["ok", "broken"], "pose": [[1.0] * 51, [1.0] * 50],
    })
    ds = load_captioned_coco_pose(path)
    with pytest.raises(DataError) as excinfo:
        ds[1]
    assert single_line_error(excinfo).startswith(f"{path}: row 1 (sample 1), column 'image': cannot decode image")
    with pytest.raises(DataError, match="missing column"):
        load_captioned_coco_pose(path, caption_column="prompt")

    _write_parquet(pa, path, {"image": [_image_struct(png_bytes(4, 4, (0, 0, 0)))], "pose": [[1.0] * 50]})
    with pytest.raises(DataError) as excinfo:
        load_captioned_coco_pose(path)
    assert single_line_error(excinfo) == (
        f"{path}: no caption column (expected one of caption, prompt, text); columns are image, pose"
    )
    _write_parquet(pa, path, {"image": [_image_struct(png_bytes(4, 4, (0, 0, 0)))], "caption": ["c"],
                              "pose": [[1.0] * 50]})
    with pytest.raises(DataError) as excinfo:
        load_captioned_coco_pose(path)[0]
    assert single_line_error(excinfo) == (
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
