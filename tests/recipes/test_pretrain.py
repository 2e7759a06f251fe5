"""The pretrain recipe end to end on a few images: both families save stock pipelines; resume is exact."""

import json
import shutil

import pytest
import yaml

from humantune.config import load_config
from humantune.models.generation import load_pipeline, model_info
from humantune.recipes.pretrain import PretrainConfig, pretrain
from humantune.train.engine import read_metrics

SMALL = {
    "world": {"n": 12, "size": 32, "seed": 3},
    "vae": {"block_out_channels": [8, 16], "norm_num_groups": 4},
    "vae_crop": 16,
    "vae_train": {"max_steps": 3, "batch_size": 4, "checkpoint_every": 2, "lr_warmup_steps": 0},
    "text": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
             "projection_dim": 16, "max_length": 16},
    "unet": {"block_out_channels": [16, 32], "attention_heads": 2, "norm_num_groups": 4},
    "transformer": {"num_layers": 1, "num_attention_heads": 2, "attention_head_dim": 8, "pos_embed_max_size": 8,
                    "max_sequence_length": 4},
    "train": {"max_steps": 4, "batch_size": 4, "checkpoint_every": 2, "validate_every": 0, "lr_warmup_steps": 0,
              "ema_decay": 0.9},
    "validation_prompts": ["a man in a red shirt standing on the grass"],
    "inference_steps": 2,
}


def _config(tmp_path, family):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({**SMALL, "family": family, "name": f"t-{family}"}))
    return load_config(PretrainConfig, path)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_pretrain_writes_a_loadable_pipeline_with_a_model_card(tmp_path, family):
    model = pretrain(_config(tmp_path, family), tmp_path / "run")
    pipe = load_pipeline(model)
    assert type(pipe).__name__ == ("StableDiffusionPipeline" if family == "sd" else "StableDiffusion3Pipeline")
    info = model_info(model)
    assert info["family"] == family and info["generation"]["height"] == 32
    assert (family == "sd3") == ("max_sequence_length" in info["generation"])
    card = (model / "README.md").read_text()
    assert "t-" + family in card and "humantune pretrain" in card and (model / "loss.png").is_file()
    assert len(read_metrics(tmp_path / "run" / "denoiser")) == 4
    assert len(read_metrics(tmp_path / "run" / "vae")) == 3
    image = pipe("a man in a red shirt", num_inference_steps=2, **{k: v for k, v in info["generation"].items()
                                                                     if k != "num_inference_steps"}).images[0]
    assert image.size == (32, 32)


@pytest.mark.slow
def test_interrupted_pretrain_resumes_exactly_across_the_stage_boundary(tmp_path):
    cfg = _config(tmp_path, "sd")
    pretrain(cfg, tmp_path / "run")
    full = read_metrics(tmp_path / "run" / "denoiser")
    # Undo everything after the denoiser's step-2 checkpoint, as if the process had died during step 3.
    shutil.rmtree(tmp_path / "run" / "denoiser" / "checkpoints" / "step_000004")
    shutil.rmtree(tmp_path / "run" / "model")
    lines = (tmp_path / "run" / "denoiser" / "metrics.jsonl").read_text().splitlines()[:2]
    (tmp_path / "run" / "denoiser" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    # The resumed run reads the cached latents instead of encoding again: poison the cache's values (keeping its
    # digest) and the loss trajectory would change.
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    cache = tmp_path / "run" / "denoiser" / "latents.safetensors"
    with safe_open(str(cache), "pt") as f:
        meta = f.metadata()
    original = load_file(str(cache))["latents"]
    save_file({"latents": original * 0}, str(cache), metadata=meta)
    from diffusers import AutoencoderKL

    from humantune.recipes.pretrain import PretrainRecipe, load_world_images
    from humantune.train.engine import Trainer

    probe = PretrainRecipe(cfg, tmp_path / "run")
    probe.trainer = Trainer(tmp_path / "probe", log_with=None)
    images, _ = load_world_images(tmp_path / "run" / "world")
    vae = AutoencoderKL.from_pretrained(tmp_path / "run" / "vae" / "final")
    assert probe._encode(vae, images).abs().sum() == 0                # cached (poisoned) values are used
    assert probe._encode(vae, images[:-1]).abs().sum() > 0             # other images: encoded again
    save_file({"latents": original}, str(cache), metadata=meta)       # the true cache back for the resume
    pretrain(cfg, tmp_path / "run")                    # the VAE stage is done: it is reused, not retrained
    resumed = read_metrics(tmp_path / "run" / "denoiser")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in full], rel=1e-6)
    assert len(read_metrics(tmp_path / "run" / "vae")) == 3
    assert json.loads((tmp_path / "run" / "model" / "humantune.json").read_text())["family"] == "sd"


def test_config_checks_name_the_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"world": {"size": 36}}))
    from humantune.errors import ConfigError

    with pytest.raises(ConfigError, match="world.size .36. must be a multiple"):
        load_config(PretrainConfig, path)


@pytest.mark.slow
def test_init_from_continues_a_trained_base(tmp_path):
    from humantune.errors import HumantuneError

    first = pretrain(_config(tmp_path, "sd"), tmp_path / "run")
    cfg = _config(tmp_path, "sd")
    cfg.init_from = first
    second = pretrain(cfg, tmp_path / "more")
    assert not (tmp_path / "more" / "vae").exists()                  # the VAE came with the base
    before = read_metrics(tmp_path / "run" / "denoiser")
    after = read_metrics(tmp_path / "more" / "denoiser")
    assert after[0]["loss"] < before[0]["loss"]                       # it starts from the trained weights
    assert json.loads((second / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    wrong = _config(tmp_path, "sd3")
    wrong.init_from = first
    with pytest.raises(HumantuneError, match="family sd3 needs a StableDiffusion3Pipeline"):
        pretrain(wrong, tmp_path / "wrong")
