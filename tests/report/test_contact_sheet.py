import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from humantune.errors import DataError
from humantune.report.contact_sheet import write_contact_sheet
from humantune.report.overlay import PERSON_COLORS, draw_keypoints


def _person(cx, cy):
    """17 [x, y, v] keypoints of a small upright figure around (cx, cy)."""
    offsets = [(0, -10), (-1, -11), (1, -11), (-2, -10), (2, -10), (-4, -6), (4, -6), (-6, -2), (6, -2),
               (-7, 2), (7, 2), (-3, 2), (3, 2), (-3, 8), (3, 8), (-3, 14), (3, 14)]
    return [[cx + dx, cy + dy, 2] for dx, dy in offsets]


@pytest.fixture()
def pose_folder(tmp_path):
    root = tmp_path / "poses"
    for sub in ("images", "conditions", "masks"):
        (root / sub).mkdir(parents=True)
    rows = []
    for i, (action, people) in enumerate([("wave", [_person(16, 16)]), ("run", [_person(10, 14), _person(22, 16)]),
                                          ("wave", [])]):
        name = f"{i:06d}.png"
        Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(root / "images" / name)
        Image.new("RGB", (32, 32), (0, 0, 0)).save(root / "conditions" / name)
        Image.new("L", (32, 32), 0).save(root / "masks" / name)
        rows.append({"file_name": f"images/{name}", "text": f"person <{action}> number {i}",
                     "conditioning_image": f"conditions/{name}", "mask": f"masks/{name}", "image_id": i,
                     "action": action, "attributes": {"people": []}, "keypoints": people})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_contact_sheet_summarises_and_tiles(pose_folder, tmp_path):
    out = write_contact_sheet(pose_folder, tmp_path / "out" / "sheet.html", max_samples=2, upscale_to=64)
    text = out.read_text(encoding="utf-8")
    assert out == tmp_path / "out" / "sheet.html"
    assert '<tr><td>samples</td><td class="num">3</td></tr>' in text
    assert '<tr><td>shown</td><td class="num">2</td></tr>' in text
    assert "<td>32×32 (3)</td>" in text and "<td>1 (1), 2 (1), 0 (1)</td>" in text
    assert '<tr><td>wave</td><td class="num">2</td><td class="num">66.7%</td></tr>' in text
    assert "000001.png · run · person &lt;run&gt; number 1" in text
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(uris) == 2
    tile = Image.open(io.BytesIO(base64.b64decode(uris[0]))).convert("RGB")
    assert tile.size == (64 + 4 + 64, 64)  # image panel, gap, condition panel
    arr = np.asarray(tile)
    # the nose at (16, 6) lands at ((16 + ½)·2 − ½, (6 + ½)·2 − ½) = (32.5, 12.5) in the 2× panel
    assert (arr[12:14, 32:34] == PERSON_COLORS[0]).all()
    assert (arr[2, 2] == (0, 90, 200)).all()  # background untouched, enlarged by nearest neighbour
    assert (arr[:, 68:] == 0).all()  # condition panel
    assert 'src="http' not in text


def test_contact_sheet_errors_name_the_file(pose_folder, tmp_path):
    with pytest.raises(DataError, match=r"metadata\.jsonl: not found"):
        write_contact_sheet(tmp_path / "nowhere", tmp_path / "x.html")

    meta = pose_folder / "metadata.jsonl"
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join([lines[0], "{broken", lines[2]]) + "\n")
    with pytest.raises(DataError, match=r"metadata\.jsonl:2: not valid JSON"):
        write_contact_sheet(pose_folder, tmp_path / "x.html")

    meta.write_text("\n".join([lines[0], lines[1]]) + "\n")
    (pose_folder / "images" / "000001.png").unlink()
    with pytest.raises(DataError, match=r"images/000001\.png: image not found \(named at .*metadata\.jsonl:2\)"):
        write_contact_sheet(pose_folder, tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()


def test_overlay_draws_labelled_joints_only():
    kp = np.zeros((1, 17, 3))
    kp[0, :, :2] = [[50, 50]] * 17
    kp[0, 0] = [20, 20, 2]    # visible: filled
    kp[0, 9] = [80, 20, 1]    # occluded: hollow ring
    kp[0, 10] = [80, 80, 0]   # not labelled: skipped
    image = Image.new("RGB", (100, 100))
    out = np.asarray(draw_keypoints(image, kp, radius=4, thickness=1))
    assert out[20, 20].sum() > 0
    assert out[20, 80].sum() == 0 and out[20, 84].sum() > 0  # hollow centre, drawn ring
    assert out[75:86, 75:86].sum() == 0
    assert np.asarray(image).sum() == 0  # the input is not modified
    shown = np.asarray(draw_keypoints(image, kp, radius=4, thickness=1, show_invisible=True))
    assert shown[80, 80].sum() > 0  # a cross at the unlabelled joint


def test_contact_sheet_never_replaces_a_folder_and_reads_only_its_own_files(pose_folder, tmp_path):
    from humantune.errors import HumantuneError

    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "thesis.tex").write_text("years of work")
    with pytest.raises(HumantuneError, match=r"keep' is a directory; refusing to replace it with a file"):
        write_contact_sheet(pose_folder, keep)
    assert (keep / "thesis.tex").read_text() == "years of work"
    with pytest.raises(HumantuneError, match="is a directory"):   # the dataset folder itself
        write_contact_sheet(pose_folder, pose_folder)
    assert (pose_folder / "metadata.jsonl").is_file()

    metadata = pose_folder / "metadata.jsonl"
    rows = [json.loads(line) for line in metadata.read_text().splitlines()]
    Image.new("RGB", (32, 32)).save(tmp_path / "outside.png")
    for key, value, expected in [
        ("file_name", "../outside.png", r"metadata\.jsonl:2: file_name '\.\./outside\.png' leaves the folder"),
        ("file_name", str(tmp_path / "outside.png"), r"metadata\.jsonl:2: file_name '.*' is an absolute path"),
        ("conditioning_image", "conditions/../../outside.png", r"conditioning_image .* leaves the folder"),
    ]:
        metadata.write_text("".join(json.dumps({**r, key: value} if i == 1 else r) + "\n" for i, r in enumerate(rows)))
        with pytest.raises(DataError, match=expected):
            write_contact_sheet(pose_folder, tmp_path / "sheet.html")
    assert not (tmp_path / "sheet.html").exists()

    metadata.write_bytes(b'{"file_name": "images/000000.png"}\n\xff\xfe\n')
    with pytest.raises(DataError, match=r"metadata\.jsonl: cannot read .*expected UTF-8 JSON Lines"):
        write_contact_sheet(pose_folder, tmp_path / "sheet.html")
