"""``humantune train ent-prog`` end to end on a tiny random SD3 pipeline, and exact resume inside a supernet epoch."""

import json

import pytest
import torch
from safetensors.torch import load_file

from humantune.config import load_config
from humantune.errors import ConfigError
from humantune.recipes import ent_prog
from humantune.recipes.ent_prog import EntProgConfig, train_ent_prog
from humantune.train.engine import read_metrics
from tests.tiny_pipelines import save_pipeline


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_pipeline("sd3", tmp_path_factory.mktemp("ent_prog") / "base")


def _config(base, **over) -> EntProgConfig:
    stage = {"name": "stage1", "candidates": [1, 2], "supernet_steps": 2,
             "train": {"max_steps": 4, "batch_size": 2, "learning_rate": 1e-3, "lr_scheduler": "constant",
                       "checkpoint_every": 2}}
    data = {"base_model": str(base), "resolution": 32, "train_data": {"world": {"n": 8, "seed": 3, "size": 32}},
            "heldout_data": {"world": {"n": 4, "seed": 4, "size": 32}}, "heldout_batch_size": 2,
            "cei": {"samples": 4, "batch_size": 4}, "stages": [stage], "eval_every": 2,
            "samples": {"prompts": 1, "num_inference_steps": 1}}
    data.update(over)
    return load_config(EntProgConfig, base=data)


def test_recipe_end_to_end_with_a_full_fine_tuning_arm(base, tmp_path):
    cfg = _config(base, compare_with=["full"])
    out = train_ent_prog(cfg, tmp_path / "run")
    results = json.loads((out / "results.json").read_text())
    cei = json.loads((out / "cei" / "cei.json").read_text())
    assert cei["blocks"] == ["transformer_blocks.0", "transformer_blocks.1"]
    assert results["ranking"] == cei["ranking"] and (out / "cei" / "cei.png").is_file()
    choice = json.loads((out / "stage1" / "choice.json").read_text())
    assert choice["m"] in (1, 2) and set(choice["ce"]) <= {"1", "2"}
    search = read_metrics(out / "stage1" / "search")
    assert len(search) == 2 and all(r["m"] in (1, 2) and "search_loss" in r for r in search)
    train = read_metrics(out / "stage1" / "train")
    # the continuation trains exactly the parameters of the chosen top-m blocks
    from humantune.models.blocks import blocks_by_name
    from diffusers import SD3Transformer2DModel

    model = SD3Transformer2DModel.from_pretrained(out / "stage1" / "denoiser")
    top = blocks_by_name(model, cei["ranking"][:choice["m"]])
    assert train[0]["trained_params"] == sum(p.numel() for b in top for p in b.module.parameters())
    full = json.loads((out / "arms" / "full" / "results.json").read_text())
    full_rows = read_metrics(out / "arms" / "full" / "stage1" / "train")
    assert full_rows[0]["trained_params"] == sum(p.numel() for p in model.parameters())
    assert full["curve"][-1][1] == pytest.approx(full["heldout_loss"]["mean"], rel=1e-5)
    assert results["heldout_loss"]["n"] == 2 and results["peak_state_bytes"]["total"] > 0
    # the continuation's AdamW starts from the supernet's state of the blocks it trained (the top block: every step)
    assert results["stages"]["stage1"]["phases"]["train"]["optimizer_state_carried"] > 0
    html = (out / "report.html").read_text()
    assert "CEI priorities" in html and "CE(m)" in html and "wall-clock" in html and "data:image/png" in html


def test_resume_inside_a_supernet_epoch_is_bit_identical(base, tmp_path, monkeypatch):
    cfg = _config(base, samples={"prompts": 0},
                  stages=[{"name": "stage1", "candidates": [1, 2], "supernet_steps": 4,
                           "train": {"max_steps": 4, "batch_size": 2, "learning_rate": 1e-3,
                                     "lr_scheduler": "constant", "checkpoint_every": 2}}])
    whole = train_ent_prog(cfg, tmp_path / "whole")
    original = ent_prog.EntProgTask.on_step_end

    def interrupt_after_step_3(self, step, row):
        if step == 3:
            raise KeyboardInterrupt
        return original(self, step, row)

    monkeypatch.setattr(ent_prog.EntProgTask, "on_step_end", interrupt_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_ent_prog(cfg, tmp_path / "cut")
    monkeypatch.setattr(ent_prog.EntProgTask, "on_step_end", original)
    assert not (tmp_path / "cut" / "stage1" / "denoiser").exists()
    resumed = train_ent_prog(cfg, tmp_path / "cut")   # continues from the step-2 checkpoint
    a, b = read_metrics(whole / "stage1" / "search"), read_metrics(resumed / "stage1" / "search")
    assert [(r["m"], r["loss"], r["search_loss"]) for r in a] == [(r["m"], r["loss"], r["search_loss"]) for r in b]
    wa = load_file(str(whole / "stage1" / "denoiser" / "diffusion_pytorch_model.safetensors"))
    wb = load_file(str(resumed / "stage1" / "denoiser" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # CE(m) divides by measured step times, so only its inputs' losses are reproducible, not its value
    assert json.loads((resumed / "stage1" / "choice.json").read_text())["steps"] == 4


def test_config_mistakes_name_the_key(base):
    with pytest.raises(ConfigError, match="candidates"):
        _config(base, stages=[{"name": "s", "candidates": [0, 2]}])
    with pytest.raises(ConfigError, match="always_train"):
        _config(base, always_train=["transformer_blocks.0"])


def test_cei_command_writes_scores_in_block_order_and_reuses_its_cache(base, tmp_path, capsys):
    from humantune.cli import main

    args = ["entprog", "cei", "--model", str(base), "--samples", "4", "--batch-size", "4", "--resolution", "32",
            "--out", str(tmp_path / "cei")]
    assert main(args) == 0
    result = json.loads((tmp_path / "cei" / "cei.json").read_text())
    assert result["blocks"] == ["transformer_blocks.0", "transformer_blocks.1"]
    assert list(result["priorities"]["sample/log_ratio"]) == result["blocks"]
    assert sorted(result["ranking"]) == result["blocks"] and (tmp_path / "cei" / "cei.png").is_file()
    assert "ranking (sample/log_ratio)" in capsys.readouterr().out
    stamp = (tmp_path / "cei" / "cei.json").stat().st_mtime_ns
    assert main(args) == 0 and (tmp_path / "cei" / "cei.json").stat().st_mtime_ns == stamp   # cached
    assert main(args[:-2] + ["--sigma", "pooled", "--out", str(tmp_path / "cei")]) == 0       # new settings
    assert json.loads((tmp_path / "cei" / "cei.json").read_text())["reading"] == "pooled/log_ratio"


def _pose_video_yaml(tmp_path, clips: int) -> str:
    """A tiny pose-video config (2-layer Latte, 32² frames) for the pose tasks; ``clips`` evaluation clips."""
    import yaml

    pv = {"vae": "tiny-sd", "denoiser": {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 8,
                                         "frames": 2},
          "train_data": {"world": {"n": 2, "frames": 3, "size": 32, "seed": 0}},
          "heldout_data": {"world": {"n": 2, "frames": 3, "size": 32, "seed": 1}},
          "eval": {"clips": clips, "frames": 2, "report_clips": clips}, "validation": {"clips": 0}}
    (tmp_path / "pv.yaml").write_text(yaml.safe_dump(pv))
    return str(tmp_path / "pv.yaml")


def test_pose_image_full_arm_trains_the_phase_modules_and_a_prefix_input_layer_is_refused(tmp_path):
    """task pose_image: full fine-tuning trains what the pose phase trains (not the temporal blocks, which an image
    never runs); always_train of the input layer with a frozen prefix would leave it untrained: a one-line error."""
    from humantune.errors import HumantuneError

    raw = {"task": "pose_image", "base_model": "new", "pose_video": _pose_video_yaml(tmp_path, clips=0),
           "heldout_batch_size": 2, "cei": {"samples": 2, "batch_size": 2}, "eval_every": 2, "schedule": "full",
           "samples": {"prompts": 0}, "stages": [{"name": "stage1", "candidates": [1, 2], "fixed_m": 1,
                                                  "train": {"max_steps": 1, "batch_size": 2, "learning_rate": 1e-3,
                                                            "lr_scheduler": "constant", "checkpoint_every": 1}}]}
    out = train_ent_prog(load_config(EntProgConfig, base=raw), tmp_path / "full")
    from diffusers import LatteTransformer3DModel

    model = LatteTransformer3DModel.from_pretrained(out / "stage1" / "denoiser")
    image = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("temporal_transformer_blocks."))
    assert read_metrics(out / "stage1" / "train")[0]["trained_params"] == image
    raw.update(schedule="fixed", always_train=["pos_embed"])
    with pytest.raises(HumantuneError, match="pos_embed runs before the first trained block"):
        train_ent_prog(load_config(EntProgConfig, base=raw), tmp_path / "prefix")


def test_pose_video_task_trains_only_temporal_blocks_and_shows_clips(tmp_path):
    """Ent-Prog on the pose-guided Latte model's video phase: the temporal blocks are the eligible units, the
    spatial ones never train, and the report shows the held-out clips as GIFs."""
    cfg = load_config(EntProgConfig, base={
        "task": "pose_video", "base_model": "new", "pose_video": _pose_video_yaml(tmp_path, clips=1),
        "heldout_batch_size": 2,
        "cei": {"samples": 2, "batch_size": 2}, "eval_every": 2, "samples": {"prompts": 1, "num_inference_steps": 1},
        "stages": [{"name": "stage1", "candidates": [1, 2], "supernet_steps": 2,
                    "train": {"max_steps": 3, "batch_size": 2, "learning_rate": 1e-3, "lr_scheduler": "constant",
                              "checkpoint_every": 3}}]})
    out = train_ent_prog(cfg, tmp_path / "run")
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["ranking"]) == ["temporal_transformer_blocks.0", "temporal_transformer_blocks.1"]
    from diffusers import LatteTransformer3DModel

    model = LatteTransformer3DModel.from_pretrained(out / "stage1" / "denoiser")
    temporal = sum(p.numel() for b in model.temporal_transformer_blocks for p in b.parameters())
    rows = read_metrics(out / "stage1" / "search") + read_metrics(out / "stage1" / "train")
    assert all(0 < r["trained_params"] <= temporal for r in rows)
    assert "data:image/gif" in (out / "report.html").read_text()
