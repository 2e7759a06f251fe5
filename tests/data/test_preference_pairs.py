"""Preference pairs in the Pick-a-Pic layout: parquet and folder round trips, winner-first swap, ties, what
datasets.load_dataset reads, and one-line errors for a wrong layout."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from humantune.data.preference_pairs import (
    PreferencePair, read_pairs, read_pairs_folder, read_pairs_parquet, write_pairs_folder, write_pairs_parquet,
)
from humantune.errors import DataError


def _image(value: int) -> Image.Image:
    return Image.fromarray(np.full((8, 8, 3), value, np.uint8))


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    _image(value).save(buf, format="PNG")
    return buf.getvalue()


def _pairs():
    return [PreferencePair(_image(200), _image(10), "a man standing", 1.0),
            PreferencePair(_image(150), _image(50), "a woman walking", 0.5)]


def _pixels(image):
    return int(np.asarray(image)[0, 0, 0])


def _pickapic(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({
        "jpg_0": pa.array([_png(a) for a, _, _ in rows], pa.binary()),
        "jpg_1": pa.array([_png(b) for _, b, _ in rows], pa.binary()),
        "label_0": pa.array([lab for _, _, lab in rows], pa.float64()),
        "label_1": pa.array([1 - lab for _, _, lab in rows], pa.float64()),
        "caption": pa.array([f"caption {i}" for i in range(len(rows))], pa.string()),
        "best_image_uid": pa.array(["x"] * len(rows), pa.string()),   # Pick-a-Pic's other columns are ignored
    }), path)
    return path


@pytest.mark.parametrize("writer, reader", [(write_pairs_parquet, read_pairs_parquet),
                                            (write_pairs_folder, read_pairs_folder)])
def test_round_trip(tmp_path, writer, reader):
    path = tmp_path / ("pairs.parquet" if writer is write_pairs_parquet else "pairs")
    writer(_pairs(), path)
    back = reader(path, ties="keep")
    assert [(_pixels(p.winner), _pixels(p.loser), p.caption, p.label) for p in back] == \
        [(200, 10, "a man standing", 1.0), (150, 50, "a woman walking", 0.5)]
    assert [p.caption for p in read_pairs(path, ties="drop")] == ["a man standing"]


def test_parquet_is_what_datasets_and_diffusers_read(tmp_path):
    from datasets import load_dataset

    path = write_pairs_parquet(_pairs(), tmp_path / "train.parquet")
    ds = load_dataset("parquet", data_files={"train": str(path)}, split="train", cache_dir=str(tmp_path / "cache"))
    assert {"jpg_0", "jpg_1", "label_0", "label_1", "caption"} <= set(ds.column_names)
    row = ds[0]
    # diffusers' train_diffusion_dpo.py: Image.open(io.BytesIO(example["jpg_0"])), label_0 == 0 swaps
    assert _pixels(Image.open(io.BytesIO(row["jpg_0"])).convert("RGB")) == 200
    assert row["label_0"] == 1.0 and row["label_1"] == 0.0 and row["caption"] == "a man standing"


def test_label_zero_swaps_winner_first_and_ties_are_an_option(tmp_path):
    path = _pickapic(tmp_path / "p.parquet", [(10, 200, 0.0), (30, 40, 0.5), (60, 70, 1.0)])
    kept = read_pairs(path, ties="keep")
    assert [(_pixels(p.winner), _pixels(p.loser), p.label) for p in kept] == [(200, 10, 1.0), (30, 40, 0.5),
                                                                              (60, 70, 1.0)]
    dropped = read_pairs(path, ties="drop")
    assert [p.caption for p in dropped] == ["caption 0", "caption 2"]
    assert len(read_pairs(path, ties="keep", limit=2)) == 2


def test_folder_of_parquet_shards_in_name_order(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    _pickapic(shards / "b.parquet", [(2, 3, 1.0)])
    _pickapic(shards / "a.parquet", [(1, 3, 1.0)])
    assert [_pixels(p.winner) for p in read_pairs(shards)] == [1, 2]


def test_missing_column_names_file_and_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"jpg_0": [_png(1)], "jpg_1": [_png(2)], "caption": ["c"]}), path)
    with pytest.raises(DataError, match=r"bad\.parquet: missing column label_0") as e:
        read_pairs(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("change, match", [
    ({"label_0": 2.0}, "label_0 is 2.0"),
    ({"label_0": "yes"}, "label_0 is 'yes'"),
    ({"file_1": "../x.png"}, "leaves the folder"),
    ({"file_1": "images/none.png"}, "image not found"),
    ({"caption": None}, "caption is None"),
])
def test_bad_folder_rows_are_one_line_errors(tmp_path, change, match):
    folder = write_pairs_folder(_pairs()[:1], tmp_path / "pairs")
    row = json.loads((folder / "pairs.jsonl").read_text())
    row.update(change)
    (folder / "pairs.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=match) as e:
        read_pairs(folder)
    assert "pairs.jsonl line 1" in str(e.value) and "\n" not in str(e.value)


def test_unreadable_image_bytes_and_missing_paths(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"jpg_0": [b"not an image"], "jpg_1": [_png(2)], "label_0": [1.0],
                             "caption": ["c"]}), path)
    with pytest.raises(DataError, match=r"p\.parquet row 0: jpg_0 is not a readable image"):
        read_pairs(path)
    with pytest.raises(DataError, match="file not found"):
        read_pairs(tmp_path / "missing.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .parquet files"):
        read_pairs(tmp_path / "empty")
    (tmp_path / "x.parquet").write_text("junk")
    with pytest.raises(DataError, match="not a readable parquet file"):
        read_pairs(tmp_path / "x.parquet")


def test_writer_refuses_a_loser_first_label(tmp_path):
    with pytest.raises(ValueError, match="winner's probability"):
        write_pairs_parquet([PreferencePair(_image(1), _image(2), "c", 0.0)], tmp_path / "p.parquet")
