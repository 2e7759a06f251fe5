import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from humantune.data.mannequin.video import VIDEO_ACTIONS, MannequinVideoConfig, render_clip, write_video_world
from humantune.errors import HumantuneError


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    cfg = MannequinVideoConfig(n=4, frames=6, seed=2)
    return write_video_world(cfg, tmp_path_factory.mktemp("v") / "clips", workers=2, progress=False)


def test_same_seed_is_byte_identical_whatever_the_worker_count(clips, tmp_path):
    again = write_video_world(MannequinVideoConfig(n=4, frames=6, seed=2), tmp_path / "again", workers=1,
                              progress=False)
    assert tree_digest(clips) == tree_digest(again)


def test_manifest_lists_every_frame_with_keypoints(clips):
    manifest = json.loads((clips / "manifest.json").read_text())
    assert manifest["frames_per_clip"] == 6 and manifest["width"] == manifest["height"] == 128
    assert len(manifest["clips"]) == 4
    for clip in manifest["clips"]:
        assert clip["action"] in VIDEO_ACTIONS and clip["action"].replace("_", " ").split()[0] in clip["caption"]
        assert len(clip["frames"]) == 6
        for frame in clip["frames"]:
            for key in ("image", "conditioning_image", "mask"):
                assert Image.open(clips / frame[key]).size == (128, 128)
            kp = np.array(frame["keypoints"])
            assert kp.shape == (1, 17, 3)


@pytest.mark.parametrize("action", VIDEO_ACTIONS)
def test_motion_is_smooth_and_appearance_is_constant(action):
    cfg = MannequinVideoConfig(n=6, frames=16, seed=0, action_mix={action: 1.0})
    per_frame = []
    for index in range(6):
        clip = render_clip(cfg, index)
        assert clip["action"] == action
        kp = np.stack([k[0] for k in clip["keypoints"]])          # (T, 17, 3)
        labelled = kp[0][kp[0][:, 2] > 0]
        height = np.ptp(labelled[:, 1])
        both = (kp[1:, :, 2] > 0) & (kp[:-1, :, 2] > 0)
        step = np.linalg.norm(kp[1:, :, :2] - kp[:-1, :, :2], axis=-1)[both] / height
        per_frame.append(step)
        assert step.max() < 0.4, f"clip {index}: a joint jumps {step.max():.2f} body heights in one frame"
        # The person keeps their look: the mean colour of their mask pixels hardly changes from first to last frame.
        mean_colour = [clip["frames"][t][clip["masks"][t] == 1].mean(axis=0) for t in (0, -1)]
        assert np.abs(mean_colour[0] - mean_colour[1]).max() < 25, (index, mean_colour)
    steps = np.concatenate(per_frame)
    assert np.median(steps) < 0.08
    if action in ("walking", "running", "dancing"):
        assert np.mean(steps) > 0.005, "the person should move"


def test_the_clip_has_one_caption_for_all_frames():
    clip = render_clip(MannequinVideoConfig(n=1, frames=4, seed=1), 0)
    assert isinstance(clip["caption"], str) and clip["caption"].startswith("a")
    assert len(clip["frames"]) == len(clip["keypoints"]) == len(clip["conditions"]) == 4


def test_refuses_non_empty_output(tmp_path):
    (tmp_path / "x.txt").write_text("data")
    with pytest.raises(HumantuneError, match="not empty"):
        write_video_world(MannequinVideoConfig(n=1, frames=2), tmp_path, workers=1, progress=False)
    assert (tmp_path / "x.txt").read_text() == "data"


def test_bad_motion_is_rejected():
    with pytest.raises(ValueError, match="lying"):
        MannequinVideoConfig(action_mix={"lying": 1.0})
