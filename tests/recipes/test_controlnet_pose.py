"""The controlnet-pose recipe on a tiny random base and a 12-image 32² world: stage sequencing, skipping, exact
resume across the stage boundary, the saved ControlNet in stock diffusers, validation, evaluation and config errors."""

import copy as copy_module
import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from humantune.config import load_config
from humantune.data.keypoints import COCO17
from humantune.data.prepare import prepare_sample
from humantune.errors import ConfigError
from humantune.eval.pose_estimators import PoseEstimate, PoseEstimator
from humantune.recipes import controlnet_pose as cp
from humantune.train.engine import read_metrics


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny random StableDiffusionPipeline (f2 VAE, 32² images, 16² latents) saved as a pipeline directory."""
    from humantune.data.mannequin.world import MannequinConfig, render_sample
    from humantune.models import tiny
    from humantune.models.tokenizer import build_clip_tokenizer, caption_words

    root = tmp_path_factory.mktemp("base")
    captions = [render_sample(MannequinConfig(n=8, size=32, seed=s), i).caption for s in (3, 4) for i in range(8)]
    tokenizer = build_clip_tokenizer(caption_words(captions), root / "tok", 16)
    torch.manual_seed(0)
    text = tiny.TextEncoderConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                  projection_dim=16, max_length=16)
    pipe = tiny.assemble_sd(
        tiny.build_vae(tiny.VaeConfig(block_out_channels=[8, 16], norm_num_groups=4)),
        tiny.build_text_encoder(text, tokenizer), tokenizer,
        tiny.build_unet(tiny.UNetConfig(block_out_channels=[16, 32], attention_heads=2, norm_num_groups=4), 4, 16, 32),
        tiny.ddpm_schedulers()[1])
    pipe.save_pretrained(root / "pipe")
    (root / "pipe" / "humantune.json").write_text(json.dumps(
        {"generation": {"num_inference_steps": 2, "guidance_scale": 2.0, "height": 32, "width": 32}}))
    return root / "pipe"


def _config(tmp_path, base_dir, **changes):
    stage = {"train": {"max_steps": 4, "batch_size": 4, "checkpoint_every": 2, "lr_warmup_steps": 0}}
    data = {
        "base_model": str(base_dir),
        "train_data": {"world": {"n": 12, "size": 32, "seed": 3}},
        "heldout_data": {"world": {"n": 4, "size": 32, "seed": 4}},
        "stages": [{"name": "s1", "loss": "plain", **stage},
                   {"name": "s2", "loss": "heatmap", "heatmap": {"w": 2.0}, **stage}],
        "validation": {"samples": 0},
        "eval": {"samples": 0},
    }
    data.update(changes)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(cp.ControlNetPoseConfig, path)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, base_dir):
    """One uninterrupted run; records the weights each stage's ControlNet starts from."""
    tmp = tmp_path_factory.mktemp("full")
    starts = {}
    original = cp.ControlNetTask.__init__

    def capture(self, stage, controlnet, *args):
        starts[stage.name] = {k: v.clone() for k, v in controlnet.state_dict().items()}
        original(self, stage, controlnet, *args)

    cp.ControlNetTask.__init__ = capture
    try:
        cfg = _config(tmp, base_dir)
        cp.train_controlnet_pose(cfg, tmp / "run")
    finally:
        cp.ControlNetTask.__init__ = original
    return cfg, tmp / "run", starts


def _weights(path):
    from diffusers import ControlNetModel

    return ControlNetModel.from_pretrained(path).state_dict()


@pytest.mark.slow
def test_stages_run_in_sequence_and_each_starts_from_the_previous_result(full_run):
    cfg, run, starts = full_run
    assert [r["step"] for r in read_metrics(run / "s1")] == [1, 2, 3, 4]
    assert [r["step"] for r in read_metrics(run / "s2")] == [1, 2, 3, 4]
    s1 = _weights(run / "s1" / "controlnet")
    s2 = _weights(run / "s2" / "controlnet")
    # stage 1 starts from ControlNetModel.from_unet: its zero convolutions are exactly zero
    assert float(starts["s1"]["controlnet_mid_block.weight"].abs().max()) == 0.0
    # stage 2 starts from what stage 1 saved, and trains it further
    for k, v in starts["s2"].items():
        assert torch.equal(v, s1[k]), k
    assert float(s1["controlnet_mid_block.weight"].abs().max()) > 0.0
    assert not torch.equal(s1["controlnet_mid_block.weight"], s2["controlnet_mid_block.weight"])
    summary = json.loads((run / "s2" / "summary.json").read_text())
    assert summary["init_from"] == "s1" and summary["steps"] == 4 and summary["loss"] == "heatmap"


@pytest.mark.slow
def test_a_rerun_skips_completed_stages(full_run, tmp_path, monkeypatch):
    cfg, run, _ = full_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)

    def no_training(*args, **kwargs):
        raise AssertionError("a completed stage was trained again")

    monkeypatch.setattr(cp.Trainer, "fit", no_training)
    report = cp.train_controlnet_pose(cfg, copy)
    assert report == copy / "report.html" and report.is_file()
    assert json.loads((copy / "results.json").read_text())["training"]["s2"]["init_from"] == "s1"


@pytest.mark.slow
@pytest.mark.parametrize("where", ["after stage 1's last checkpoint", "inside stage 2"])
def test_an_interrupted_run_resumes_exactly_across_the_stage_boundary(full_run, tmp_path, where):
    cfg, run, _ = full_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    full = {s: read_metrics(run / s) for s in ("s1", "s2")}
    if where == "after stage 1's last checkpoint":
        # the process died after stage 1's final checkpoint, before its controlnet was saved
        shutil.rmtree(copy / "s1" / "controlnet")
        (copy / "s1" / "summary.json").unlink()
        shutil.rmtree(copy / "s2")
    else:
        # the process died during stage 2's step 3: its step-2 checkpoint is the last one
        shutil.rmtree(copy / "s2" / "checkpoints" / "step_000004")
        shutil.rmtree(copy / "s2" / "controlnet")
        lines = (copy / "s2" / "metrics.jsonl").read_text().splitlines()[:2]
        (copy / "s2" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    cp.train_controlnet_pose(cfg, copy)
    for stage in ("s1", "s2"):
        resumed = read_metrics(copy / stage)
        assert [r["step"] for r in resumed] == [1, 2, 3, 4]
        assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in full[stage]], rel=1e-6)
    a, b = _weights(run / "s2" / "controlnet"), _weights(copy / "s2" / "controlnet")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-8)


@pytest.mark.slow
def test_the_saved_controlnet_loads_into_the_stock_pipeline_and_follows_the_condition(full_run, base_dir):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    from humantune.data.openpose import draw_openpose

    _, run, _ = full_run
    net = ControlNetModel.from_pretrained(run / "s2" / "controlnet")
    pipe = StableDiffusionControlNetPipeline.from_pretrained(base_dir, controlnet=net, safety_checker=None,
                                                             feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, [COCO17["left_shoulder"], COCO17["left_wrist"]]] = [[8, 8, 2], [24, 24, 2]]
    outputs = []
    for pose in (kp, np.zeros((0, 17, 3))):
        out = pipe("a man in a red shirt", image=draw_openpose(pose, (32, 32)), num_inference_steps=2,
                   generator=torch.Generator().manual_seed(0), output_type="np").images[0]
        outputs.append(out)
    assert outputs[0].shape == (32, 32, 3)
    assert np.abs(outputs[0] - outputs[1]).max() > 0                  # the trained ControlNet reads the condition


@pytest.mark.slow
def test_cached_and_per_batch_data_give_the_same_heatmap_loss(tmp_path, base_dir):
    from diffusers import ControlNetModel

    losses = {}
    for cache in (True, False):
        cfg = _config(tmp_path, base_dir, cache=cache)
        recipe = cp.ControlNetPoseRecipe(cfg, tmp_path / "run")
        recipe.trainer = cp.Trainer(tmp_path / "run")
        recipe._load_base()
        recipe.train_set = recipe._open(cfg.train_data, "train")
        recipe._cached = None
        stage = cfg.stages[1]
        data, collate = recipe._stage_data(stage)
        batch = collate([0, 5, 7]) if cache else collate([data[i] for i in (0, 5, 7)])
        torch.manual_seed(0)
        net = ControlNetModel.from_unet(recipe.parts["unet"], conditioning_embedding_out_channels=(8, 16))
        base = {k: recipe.parts[k] for k in ("unet", "vae", "text_encoder")}
        task = cp.ControlNetTask(stage, net, base, recipe.objective, data, collate, recipe._validate_wrapped)
        task.attach({"controlnet": net})
        losses[cache] = task.loss(batch, torch.Generator().manual_seed(3))
    assert losses[True][0].item() == pytest.approx(losses[False][0].item(), rel=1e-5)
    assert losses[True][1]["mse"] == pytest.approx(losses[False][1]["mse"], rel=1e-5)
    assert losses[True][0].item() > losses[True][1]["mse"]              # W ≥ 1 weighs the body up


class EchoEstimator(PoseEstimator):
    """Detects exactly the keypoints it is told to (confidence 1), whatever the image."""

    def __init__(self, poses):
        self.poses = list(poses)

    def estimate(self, image):
        kp = self.poses.pop(0).copy()
        kp[:, :, 2] = (kp[:, :, 2] > 0).astype(np.float32)
        return PoseEstimate(kp, np.ones(len(kp), np.float32))


@pytest.mark.slow
def test_validation_saves_a_grid_and_scores_oks_against_the_targets(tmp_path, base_dir):
    from diffusers import ControlNetModel

    cfg = _config(tmp_path, base_dir, validation={"samples": 3})
    recipe = cp.ControlNetPoseRecipe(cfg, tmp_path / "run")
    recipe.trainer = cp.Trainer(tmp_path / "run")
    recipe._load_base()
    held = recipe._open(cfg.heldout_data, "heldout")
    recipe.heldout = [prepare_sample(held[i], 32) for i in range(3)]
    recipe.area_convention = "segment"
    recipe._estimator = EchoEstimator([s.keypoints for s in recipe.heldout])
    net = ControlNetModel.from_unet(recipe.parts["unet"], conditioning_embedding_out_channels=(8, 16))
    scalars = recipe.validate(net, 7, tmp_path / "val")
    assert scalars == {"oks": pytest.approx(1.0), "ap": pytest.approx(1.0)}   # perfect detections: OKS = AP = 1
    assert Image.open(tmp_path / "val" / "step_000007.png").size == (3 * 32, 3 * 32)


@pytest.mark.slow
def test_evaluation_writes_results_and_a_report_for_every_stage_and_the_base(full_run, tmp_path):
    cfg, run, _ = full_run
    cfg = copy_module.deepcopy(cfg)
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg.eval.samples, cfg.eval.metrics, cfg.eval.report_samples = 4, ["oks", "ssim"], 2
    cp.train_controlnet_pose(cfg, copy)
    results = json.loads((copy / "results.json").read_text())
    assert set(results["metrics"]) == {"base", "s1", "s2"}
    for label in ("base", "s1", "s2"):
        assert {"oks", "ssim"} <= set(results["metrics"][label])
        rows = [json.loads(r) for r in (copy / "eval" / label / "images" / "metadata.jsonl").read_text().splitlines()]
        assert len(rows) == 4 and len(rows[0]["keypoints"][0]) == 17 and "areas" in rows[0]
    html = (copy / "report.html").read_text()
    assert "Held-out evaluation" in html and html.count("data:image/png") >= 2 * (2 + 3) + 1
    # an unchanged evaluation is reused, not regenerated
    before = (copy / "eval" / "s2" / "images" / "00000.png").stat().st_mtime_ns
    cp.train_controlnet_pose(cfg, copy)
    assert (copy / "eval" / "s2" / "images" / "00000.png").stat().st_mtime_ns == before
    # ... also when only the set of evaluated models or the report's sample count changes
    cfg.eval.include_base, cfg.eval.report_samples = False, 1
    cp.train_controlnet_pose(cfg, copy)
    assert (copy / "eval" / "s2" / "images" / "00000.png").stat().st_mtime_ns == before
    assert set(json.loads((copy / "results.json").read_text())["metrics"]) == {"s1", "s2"}
    # ... but a change to what is scored regenerates
    cfg.eval.metrics = ["ssim"]
    cp.train_controlnet_pose(cfg, copy)
    assert (copy / "eval" / "s2" / "images" / "00000.png").stat().st_mtime_ns != before


@pytest.mark.parametrize("changes, message", [
    ({"heldout_data": {"world": {"n": 4, "size": 32, "seed": 3}}}, r"heldout_data\.world\.seed must differ"),
    ({"stages": [{"name": "a"}, {"name": "b", "init_from": "c"}]}, r"stages\[1\]\.init_from 'c' must name an earlier"),
    ({"stages": [{"name": "a", "heatmap": {"w": -1}}]}, r"stages\[0\]\.heatmap.*w must be at least 0"),
    ({"stages": [{"name": "a", "lr": 1}]}, r"unknown key 'stages\[0\]\.lr'"),
    ({"stages": [{"name": "a", "zero_conv_lr_scale": 0}]}, r"stages\[0\].*zero_conv_lr_scale must be positive"),
    ({"stages": [{"name": "eval"}]}, r"stages\[0\].*name 'eval'"),
    ({"stages": [{"name": "a", "loss": "l1"}]}, r"'stages\[0\]\.loss' must be one of"),
    ({"eval": {"samples": 16, "metrics": ["oks", "world_fd"]}}, r"'eval' .*world_fd .* more than 128"),
    ({"eval": {"metrics": ["okay"]}}, r"unknown metric 'okay'"),
    ({"train_data": {"kind": "coco", "path": "x.json"}}, r"'train_data'.*needs 'image_dir'"),
])
def test_bad_config_values_name_the_key(tmp_path, base_dir, changes, message):
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, base_dir, **changes)


def test_a_resolution_the_vae_cannot_encode_is_a_config_error(tmp_path, base_dir):
    cfg = _config(tmp_path, base_dir, resolution=33)
    recipe = cp.ControlNetPoseRecipe(cfg, tmp_path / "run")
    recipe.trainer = cp.Trainer(tmp_path / "run")
    with pytest.raises(ConfigError, match="resolution 33 must be a multiple of the base VAE's downsampling factor 2"):
        recipe._load_base()


def test_zero_convolutions_get_their_own_learning_rate(tmp_path, base_dir):
    """zero_conv_lr_scale s puts the ControlNet's output convolutions in their own optimizer group at s × lr (the
    engine's param_groups); the other parameters stay at lr, and the two groups cover every parameter once."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    from humantune.train.engine import param_groups

    cfg = _config(tmp_path, base_dir)
    assert cfg.stages[0].zero_conv_lr_scale == 1.0  # the default leaves the optimisation as it was
    stage = copy_module.deepcopy(cfg.stages[0])
    stage.zero_conv_lr_scale = 10.0
    net = ControlNetModel.from_unet(UNet2DConditionModel.from_pretrained(base_dir / "unet"),
                                    conditioning_embedding_out_channels=(8, 16))
    task = cp.ControlNetTask(stage, net, {}, None, [], None, None)
    params = list(net.parameters())
    groups = param_groups(task, params)
    zero = {id(p) for p in cp.zero_convolution_parameters(net)}
    assert [g["lr_scale"] for g in groups] == [1.0, 10.0]
    assert {id(p) for p in groups[1]["params"]} == zero
    # the zero convolutions: the condition encoder's last, one per UNet skip connection, the mid block's; weight
    # and bias each, and all of them zero in a new ControlNet
    assert len(zero) == 2 * (1 + len(net.controlnet_down_blocks) + 1)
    assert all(float(p.detach().abs().max()) == 0.0 for p in cp.zero_convolution_parameters(net))
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(params)
