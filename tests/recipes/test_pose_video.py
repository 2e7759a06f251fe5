"""The pose-video recipe on a 3-clip 32² video world and the shipped tiny-sd VAE: which parameters each phase trains
(the video phase only the temporal blocks, bit for bit), the three phases end to end with exact resume across a
phase boundary and inside a phase, the saved pipelines, the video metrics of the output, and config errors."""

import json
import shutil

import numpy as np
import pytest
import torch

from humantune.config import load_config
from humantune.models.pose_video import PoseVideoPipeline
from humantune.recipes import pose_video as pvr
from humantune.recipes import pose_video_eval as pve
from humantune.train.engine import Trainer, TrainConfig

TINY = {
    "vae": "tiny-sd",
    "denoiser": {"num_layers": 1, "num_attention_heads": 2, "attention_head_dim": 8, "frames": 2},
    "train_data": {"world": {"n": 3, "frames": 4, "size": 32, "seed": 0}},
    "heldout_data": {"world": {"n": 2, "frames": 4, "size": 32, "seed": 1}},
    "stages": [
        {"name": "subject", "phase": "subject", "train": {"max_steps": 2, "batch_size": 4, "checkpoint_every": 1}},
        {"name": "pose", "phase": "pose", "train": {"max_steps": 2, "batch_size": 4, "checkpoint_every": 1}},
        {"name": "video", "phase": "video", "train": {"max_steps": 3, "batch_size": 2, "checkpoint_every": 2}},
    ],
    "generation": {"num_inference_steps": 2, "guidance_scale": 2.0},
    "validation": {"clips": 1},
    "eval": {"clips": 2, "frames": 3, "report_clips": 1, "pose_metrics": False},
}


def _config(tmp_path, **changes):
    import yaml

    data = {**TINY, **changes}
    path = tmp_path / "pv.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(pvr.PoseVideoConfig, path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The three phases end to end once; returns the output folder."""
    root = tmp_path_factory.mktemp("pv")
    out = root / "out"
    pvr.train_pose_video(_config(root), out)
    return out


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))


def test_three_phases_saved_as_pipelines(run):
    for stage in ("subject", "pose", "video"):
        pipe = PoseVideoPipeline.from_pretrained(run / stage / "pipeline")
        assert pipe.settings.temporal == (stage == "video")
    summaries = {s: json.loads((run / s / "summary.json").read_text()) for s in ("subject", "pose", "video")}
    assert summaries["video"]["frames"] == 2 and summaries["pose"]["frames"] == 1
    assert summaries["video"]["trained_parameters"] < summaries["pose"]["trained_parameters"]
    pose, video = _weights(run / "pose" / "pipeline"), _weights(run / "video" / "pipeline")
    for name, tensor in pose.items():   # phase 3 changed the temporal blocks only, bit for bit
        if name.startswith("temporal_transformer_blocks."):
            continue
        assert torch.equal(tensor, video[name]), name
    assert any(not torch.equal(pose[n], video[n]) for n in pose if n.startswith("temporal_transformer_blocks."))
    subject = _weights(run / "subject" / "pipeline")
    assert any(not torch.equal(subject[n], pose[n]) for n in pose if n.startswith("transformer_blocks."))


def test_results_and_report(run):
    results = json.loads((run / "results.json").read_text())
    m = results["metrics"]
    assert set(m) == {"ground truth", "reference", "subject", "pose", "video", "video · other poses"}
    assert m["reference"]["frame_change"] == 0.0 and m["ground truth"]["frame_change"] > 0
    assert m["ground truth"]["psnr"] == 100.0 and m["ground truth"]["l1"] == 0.0
    assert 0 < m["reference"]["l1"] < m["subject"]["l1"]       # 2 training steps: noise is far from the truth
    assert all(np.isfinite(m[k]["video_kd"]) for k in m)
    assert m["video"]["num_frames"] == 2 * 3
    assert results["validation"]["video"][-1]["step"] == 3
    html = (run / "report.html").read_text()
    assert html.count("data:image/gif;base64,") == 7           # pose + 6 models for one clip


def test_resume_across_phase_boundary_and_inside_a_phase(run, tmp_path):
    """Delete the video phase's result and its last checkpoint: the rerun skips subject and pose, resumes video from
    its step-2 checkpoint and ends with the same weights; deleting the whole video folder retrains it from the pose
    pipeline to the same weights too."""
    expected = _weights(run / "video" / "pipeline")
    out = tmp_path / "copy"
    shutil.copytree(run, out)
    shutil.rmtree(out / "video" / "pipeline")
    shutil.rmtree(out / "video" / "checkpoints" / "step_000003")
    pose_mtime = (out / "pose" / "pipeline" / "model_index.json").stat().st_mtime
    pvr.train_pose_video(_config(run.parent), out)
    assert (out / "pose" / "pipeline" / "model_index.json").stat().st_mtime == pose_mtime
    for name, tensor in _weights(out / "video" / "pipeline").items():
        assert torch.equal(tensor, expected[name]), name
    shutil.rmtree(out / "video")
    pvr.train_pose_video(_config(run.parent), out)
    for name, tensor in _weights(out / "video" / "pipeline").items():
        assert torch.equal(tensor, expected[name]), name


def test_phase_task_trains_only_the_named_blocks(tmp_path):
    """Ent-Prog's use: the video phase with one chosen temporal block trainable; nothing else moves."""
    from humantune.losses.objectives import DDPMObjective
    from humantune.models.tiny import ddpm_schedulers

    cfg = _config(tmp_path, denoiser={"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 8,
                                      "frames": 2})
    vae = pvr.load_vae("tiny-sd")
    data, _ = pvr.load_clips(cfg, tmp_path / "data", vae, 8)
    model = pvr.initial_denoiser(cfg, 4, 8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    blocks = pvr.denoiser_blocks(model)
    task = pvr.phase_task("video", model, data, DDPMObjective(ddpm_schedulers()[0]), trainable=blocks["temporal"][1:])
    Trainer(tmp_path / "run", log_with=None).fit(task, TrainConfig(max_steps=2, batch_size=2, checkpoint_every=0,
                                                                   learning_rate=1e-2), tmp_path / "run")
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and all(n.startswith("temporal_transformer_blocks.1.") for n in changed)
    assert pvr.phase_trainable(model, "video") == blocks["temporal"]
    assert "temporal_transformer_blocks" not in pvr.phase_trainable(model, "pose")
    assert pvr._trained_by("blocks.1.x", ["blocks.1"]) and not pvr._trained_by("blocks.10.x", ["blocks.1"])


def test_frame_change_by_hand():
    clip = np.zeros((3, 1, 2, 3), np.uint8)
    clip[1] = 6
    assert pve.frame_change([clip]) == 6.0                   # |6 − 0| then |0 − 6|
    assert np.isnan(pve.frame_change([clip[:1]]))


def test_clip_world_features_by_hand():
    f = np.array([[0.0, 2.0], [1.0, 2.0], [3.0, 5.0]])
    assert pve.clip_world_features(f).tolist() == [4 / 3, 3.0, 1.5, 1.5]   # means ⊕ mean |Δf|
    assert pve.clip_world_features(f[:1]).tolist() == [0.0, 2.0, 0.0, 0.0]


def test_config_errors(tmp_path):
    with pytest.raises(Exception, match="heldout_data.world.seed"):
        _config(tmp_path, heldout_data={"world": {"n": 2, "frames": 4, "size": 32, "seed": 0}})
    with pytest.raises(Exception, match="eval.frames"):
        _config(tmp_path, eval={"clips": 2, "frames": 5})
    with pytest.raises(Exception, match="phase"):
        _config(tmp_path, stages=[{"name": "a", "phase": "audio"}])


def test_initial_denoiser_from_a_pretrained_latte(tmp_path):
    """pretrained_transformer: a saved learned-sigma Latte (as Latte-1's transformer folder) is adapted, not drawn."""
    from diffusers import LatteTransformer3DModel

    torch.manual_seed(0)
    LatteTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=1,
                            cross_attention_dim=16, sample_size=8, patch_size=2, norm_type="ada_norm_single",
                            caption_channels=32, video_length=16).save_pretrained(tmp_path / "latte" / "transformer")
    cfg = _config(tmp_path, pretrained_transformer=str(tmp_path / "latte"))
    model = pvr.initial_denoiser(cfg, 4, 8)
    assert (model.config.in_channels, model.config.out_channels, model.config.video_length) == (11, 4, 2)
    assert model.config.caption_channels == 16 and model.config.num_layers == 1
    with pytest.raises(Exception, match="pretrained_transformer"):
        pvr.initial_denoiser(_config(tmp_path, pretrained_transformer=str(tmp_path / "missing")), 4, 8)


def test_short_heldout_clips_are_refused_before_training(tmp_path):
    from humantune.data.mannequin.video import MannequinVideoConfig, write_video_world
    from humantune.errors import DataError

    world = write_video_world(MannequinVideoConfig(n=2, frames=2, size=32, seed=5), tmp_path / "short", progress=False)
    cfg = _config(tmp_path, heldout_data={"path": str(world)})
    with pytest.raises(DataError, match="eval.frames"):
        pvr.train_pose_video(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()               # nothing left behind
    assert pvr._world_size(str(world)) == 32
    with pytest.raises(DataError, match="not a video world"):
        pvr._world_size(str(tmp_path))
