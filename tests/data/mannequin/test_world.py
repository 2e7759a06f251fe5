import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from humantune.config import config_to_dict, load_config
from humantune.data.loaders import PoseFolderDataset
from humantune.data.mannequin.world import DEFAULT_ACTION_MIX, MannequinConfig, render_sample, write_world
from humantune.errors import ConfigError, HumantuneError

REPO = Path(__file__).resolve().parents[3]


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    cfg = MannequinConfig(n=24, seed=3, second_person_prob=0.4, truncate_prob=0.2)
    return write_world(cfg, tmp_path_factory.mktemp("w") / "world", workers=2, progress=False)


def test_same_seed_is_byte_identical_whatever_the_worker_count(world, tmp_path):
    cfg = MannequinConfig(n=24, seed=3, second_person_prob=0.4, truncate_prob=0.2)
    again = write_world(cfg, tmp_path / "again", workers=1, progress=False)
    assert tree_digest(world) == tree_digest(again)
    assert len(tree_digest(world)) == 3 * 24 + 3


def test_different_seed_gives_different_images(tmp_path):
    a = write_world(MannequinConfig(n=4, seed=0), tmp_path / "a", workers=1, progress=False)
    b = write_world(MannequinConfig(n=4, seed=1), tmp_path / "b", workers=1, progress=False)
    for i in range(4):
        assert (a / f"images/{i:06d}.png").read_bytes() != (b / f"images/{i:06d}.png").read_bytes()


def test_sample_depends_only_on_seed_and_index():
    small = MannequinConfig(n=3, seed=5)
    large = MannequinConfig(n=500, seed=5)
    np.testing.assert_array_equal(render_sample(small, 2).image, render_sample(large, 2).image)


def test_coco_json_loads_with_pycocotools_and_matches_masks(world):
    coco = COCO(str(world / "annotations/person_keypoints.json"))
    assert len(coco.getImgIds()) == 24
    assert coco.loadCats(1)[0]["keypoints"][0] == "nose" and len(coco.loadCats(1)[0]["keypoints"]) == 17
    n_people = 0
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        mask = np.asarray(Image.open(world / info["file_name"].replace("images/", "masks/")))
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert 1 <= len(anns) <= 2
        for k, ann in enumerate(anns, start=1):
            n_people += 1
            person = mask == k
            decoded = mask_utils.decode(ann["segmentation"]).astype(bool)
            np.testing.assert_array_equal(decoded, person)
            assert ann["area"] == person.sum() == coco.annToMask(ann).sum()   # segment-area convention
            ys, xs = np.nonzero(person)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            kp = np.array(ann["keypoints"]).reshape(17, 3)
            assert set(np.unique(kp[:, 2])) <= {0, 1, 2}
            assert ann["num_keypoints"] == int((kp[:, 2] > 0).sum())
            inside = (kp[:, 0] >= -0.5) & (kp[:, 0] < 127.5) & (kp[:, 1] >= -0.5) & (kp[:, 1] < 127.5)
            assert not np.any((kp[:, 2] > 0) & ~inside), "a labelled joint lies outside the image"
            np.testing.assert_array_equal(kp[kp[:, 2] == 0], 0)  # COCO: unlabelled joints are [0, 0, 0]
    assert n_people > 24


def test_truncated_people_have_out_of_frame_joints_unlabelled(tmp_path):
    world = write_world(MannequinConfig(n=24, seed=0, truncate_prob=1.0, second_person_prob=0.0), tmp_path / "t",
                        workers=1, progress=False)
    anns = json.loads((world / "annotations/person_keypoints.json").read_text())["annotations"]
    unlabelled = sum(int(np.sum(np.array(a["keypoints"])[2::3] == 0)) for a in anns)
    assert unlabelled >= 24   # every truncated person loses at least one joint on average


def test_metadata_rows_match_the_coco_json(world):
    rows = [json.loads(line) for line in (world / "metadata.jsonl").read_text().splitlines()]
    coco = json.loads((world / "annotations/person_keypoints.json").read_text())
    assert [r["file_name"] for r in rows] == [im["file_name"] for im in coco["images"]]
    for row in rows:
        assert (world / row["file_name"]).is_file()
        assert (world / row["conditioning_image_file_name"]).is_file() and (world / row["mask_file_name"]).is_file()
        assert row["text"].startswith("a ") or row["text"].startswith("an ")
        assert row["action"] in DEFAULT_ACTION_MIX
        people = row["attributes"]["people"]
        assert len(people) == len(row["keypoints"]) and people[0]["action"] == row["action"]
        assert people[0]["person"] in row["text"]


def test_condition_image_draws_the_skeleton_where_the_keypoints_are(world):
    row = json.loads((world / "metadata.jsonl").read_text().splitlines()[0])
    cond = np.asarray(Image.open(world / row["conditioning_image_file_name"]))
    assert cond.shape == (128, 128, 3)
    kp = np.array(row["keypoints"][0])
    for x, y, v in kp[5:]:   # body joints: each has OpenPose colour within 1 px
        if v > 0:
            y0, x0 = int(round(y)), int(round(x))
            assert cond[max(0, y0 - 1):y0 + 2, max(0, x0 - 1):x0 + 2].any()


def test_hf_imagefolder_reads_the_world_unchanged(world):
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("imagefolder", data_dir=str(world), split="train")
    assert len(ds) == 24
    first = ds[0]
    assert isinstance(first["image"], Image.Image) and first["image"].size == (128, 128)
    assert isinstance(first["conditioning_image"], Image.Image)   # what train_controlnet.py reads
    assert isinstance(first["mask"], Image.Image)
    assert first["text"] == json.loads((world / "metadata.jsonl").read_text().splitlines()[0])["text"]


def test_pose_folder_loader_reads_the_world(world):
    ds = PoseFolderDataset(world)
    assert len(ds) == 24
    s = ds[0]
    assert s.keypoints.shape[1:] == (17, 3) and s.condition is not None and s.mask is not None
    assert s.area_convention.startswith("segment")


def test_action_mix_is_respected_and_lying_is_rare_by_default():
    cfg = MannequinConfig(n=400, seed=0)
    rng_actions = Counter()
    from humantune.data.mannequin.world import _choose, sample_rng
    for i in range(cfg.n):
        rng_actions[_choose(sample_rng(cfg.seed, i), cfg.action_mix)] += 1
    lying = rng_actions["lying_back"] + rng_actions["lying_side"]
    assert 0 < lying / cfg.n < 0.1
    only = MannequinConfig(n=6, seed=0, action_mix={"lying_back": 1.0}, second_person_prob=0.0)
    assert {render_sample(only, i).actions[0] for i in range(6)} == {"lying_back"}


def test_anomalies_are_labelled(tmp_path):
    cfg = MannequinConfig(n=8, seed=0, anomaly_prob=1.0, anomaly_types=["extra_limb"], second_person_prob=0.0)
    world = write_world(cfg, tmp_path / "anomalies", workers=1, progress=False)
    rows = [json.loads(line) for line in (world / "metadata.jsonl").read_text().splitlines()]
    assert all(r["attributes"]["people"][0]["anomaly"]["type"] == "extra_limb" for r in rows)
    clean = write_world(MannequinConfig(n=2, seed=0), tmp_path / "clean", workers=1, progress=False)
    rows = [json.loads(line) for line in (clean / "metadata.jsonl").read_text().splitlines()]
    assert all(p["anomaly"] is None for r in rows for p in r["attributes"]["people"])


def test_refuses_a_non_empty_output_folder_and_leaves_it_intact(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(HumantuneError, match="not empty"):
        write_world(MannequinConfig(n=2), out, workers=1, progress=False)
    assert (out / "precious.txt").read_text() == "keep me"
    write_world(MannequinConfig(n=2), out, workers=1, progress=False, overwrite=True)
    assert not (out / "precious.txt").exists() and (out / "metadata.jsonl").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]   # no temporary folder left behind


def test_a_crash_leaves_no_partial_world(tmp_path, monkeypatch):
    import humantune.data.mannequin.world as world_mod

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(world_mod, "_coco_and_metadata", boom)
    with pytest.raises(RuntimeError):
        write_world(MannequinConfig(n=2), tmp_path / "w", workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_shipped_config_equals_the_defaults():
    cfg = load_config(MannequinConfig, REPO / "configs/data/mannequin.yaml", [])
    assert config_to_dict(cfg) == config_to_dict(MannequinConfig())


def test_shipped_anomaly_config_loads():
    cfg = load_config(MannequinConfig, REPO / "configs/data/mannequin_anomalies.yaml", [])
    assert cfg.anomaly_prob > 0


def test_bad_config_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"n": 4, "colour": "red"}))
    with pytest.raises(ConfigError, match=r"colour.*") as err:
        load_config(MannequinConfig, path, [])
    assert str(path) in str(err.value)
    with pytest.raises(ConfigError, match="action_mix"):
        load_config(MannequinConfig, None, ["action_mix.flying=1.0"])
    with pytest.raises(ConfigError, match="size"):
        load_config(MannequinConfig, None, ["size=8"])


def test_a_negative_seed_is_a_config_error_not_a_numpy_traceback():
    import pytest

    from humantune.data.mannequin.video import MannequinVideoConfig
    from humantune.data.mannequin.world import MannequinConfig

    for cls in (MannequinConfig, MannequinVideoConfig):
        with pytest.raises(ValueError, match="seed must be at least 0"):
            cls(seed=-1)


def test_forked_workers_outside_torch_match_one_worker_and_a_torch_process_renders_in_process(tmp_path):
    """The fork path runs where it is safe (a process without torch / MediaPipe: `humantune data mannequin`), gives
    the in-process bytes, and a process that has loaded torch falls back to one in-process worker."""
    import subprocess
    import sys

    code = ("import sys; from humantune.data.mannequin.world import MannequinConfig, fork_is_safe, write_world; "
            "assert 'torch' not in sys.modules and fork_is_safe(); "
            f"write_world(MannequinConfig(n=6, seed=5, size=64), {str(tmp_path / 'forked')!r}, workers=2, "
            "progress=False)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    one = write_world(MannequinConfig(n=6, seed=5, size=64), tmp_path / "one", workers=1, progress=False)

    def digests(folder: Path) -> list[str]:
        return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.png"))

    assert digests(tmp_path / "forked") == digests(one) and len(digests(one)) >= 6
    import torch  # noqa: F401
    from humantune.data.mannequin.world import fork_is_safe
    assert not fork_is_safe()
