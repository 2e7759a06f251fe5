"""Diffusion-DPO and DreamBooth-LoRA on a tiny random StableDiffusionXLPipeline: 2-step runs that log their terms
and write a LoRA which stock ``StableDiffusionXLPipeline.load_lora_weights`` loads (UNet and both text encoders)
to compute what the trained adapters computed, and which changes the pipeline's output."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from PIL import Image
from safetensors import safe_open

from humantune.config import load_config
from humantune.errors import ConfigError
from humantune.data.preference_pairs import PreferencePair, write_pairs_folder
from humantune.models.families import FAMILIES, denoise
from humantune.recipes.diffusion_dpo import DiffusionDpoConfig, DiffusionDpoRecipe, load_vae
from humantune.recipes.dreambooth_lora import DreamBoothLoraConfig, DreamBoothLoraRecipe
from humantune.train.engine import read_metrics
from tests.tiny_pipelines import SIZE, save_sdxl_pipeline

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PROMPTS = ["a man in a red shirt and blue jeans lying on the grass", "a woman in a blue dress walking on the street"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_sdxl_pipeline(tmp_path_factory.mktemp("bases") / "sdxl")


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    pairs = [PreferencePair(Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)),
                            Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)), PROMPTS[i % 2])
             for i in range(4)]
    return write_pairs_folder(pairs, tmp_path_factory.mktemp("pairs") / "pairs")


def _lora_prefixes(lora_dir) -> set[str]:
    with safe_open(str(lora_dir / "pytorch_lora_weights.safetensors"), "pt") as f:
        return {k.split(".", 1)[0] for k in f.keys()}


def _unet_output(pipe, prompt: str) -> torch.Tensor:
    """The UNet's output for a fixed noisy latent under ``prompt``, conditioned as the pipeline conditions it."""
    x = torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        cond, _, pooled, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False)
        return denoise(FAMILIES["sdxl"], pipe.unet, x, torch.tensor([400]), cond, pooled, (SIZE, SIZE))


def _check_stock_load(base, lora_dir, trained_pipe, prompt):
    """Stock loading reproduces the trained adapters and differs from the base."""
    stock = StableDiffusionXLPipeline.from_pretrained(base)
    before = _unet_output(stock, prompt)
    stock.load_lora_weights(str(lora_dir))
    after = _unet_output(stock, prompt)
    torch.testing.assert_close(after, _unet_output(trained_pipe, prompt), rtol=1e-5, atol=1e-5)
    assert (after - before).abs().max() > 1e-4
    return stock


def test_diffusion_dpo_trains_sdxl_and_stock_diffusers_loads_the_lora(base, pairs_dir, tmp_path):
    sets = [f"model={base}", f"pairs={pairs_dir}", "train.max_steps=2", "train.batch_size=2",
            "train.checkpoint_every=2", "train.learning_rate=1e-2", "train.lr_warmup_steps=0", "dpo.beta=5000",
            "dpo.beta_convention=half", "lora.denoiser.rank=4", f"vae={base}",
            f"validation_prompts={json.dumps(PROMPTS[:1])}"]
    recipe = DiffusionDpoRecipe(load_config(DiffusionDpoConfig, None, sets), tmp_path / "run")
    recipe.run()
    assert recipe.family is FAMILIES["sdxl"]
    rows = read_metrics(tmp_path / "run" / "dpo")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert all(np.isfinite(r[k]) for k in ("dpo_loss", "implicit_accuracy", "model_err_w", "ref_err_l"))
    assert rows[0]["model_err_w"] == pytest.approx(rows[0]["ref_err_w"])   # B = 0: the model starts as the base
    lora_dir = tmp_path / "run" / "lora"
    assert _lora_prefixes(lora_dir) == {"unet"}
    info = json.loads((lora_dir / "humantune_lora.json").read_text())
    assert info["family"] == "sdxl" and info["pipeline"] == "StableDiffusionXLPipeline"
    assert "StableDiffusionXLPipeline" in (lora_dir / "README.md").read_text()
    _check_stock_load(base, lora_dir, recipe.pipe, PROMPTS[0])


def test_dreambooth_lora_trains_sdxl_with_both_text_encoders(base, tmp_path):
    sets = [f"base_model={base}", f"instance.prompts={json.dumps(PROMPTS)}", "instance.images_per_prompt=1",
            "train.max_steps=2", "train.batch_size=2", "train.gradient_accumulation_steps=1",
            "train.checkpoint_every=2", "train.lr_warmup_steps=0", "train.learning_rate=1e-2",
            'lora.text_encoder={"rank": 4}', f"validation_prompts={json.dumps(PROMPTS[:1])}"]
    recipe = DreamBoothLoraRecipe(load_config(DreamBoothLoraConfig, None, sets), tmp_path / "run")
    lora_dir = recipe.run()
    assert recipe.family is FAMILIES["sdxl"] and recipe.task.image_size == (SIZE, SIZE)
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "dreambooth")] == [1, 2]
    assert _lora_prefixes(lora_dir) == {"unet", "text_encoder", "text_encoder_2"}
    assert "StableDiffusionXLPipeline.from_pretrained" in (lora_dir / "README.md").read_text()
    stock = _check_stock_load(base, lora_dir, recipe.pipe, PROMPTS[1])
    with torch.no_grad():   # both text encoders carry the trained adapters
        theirs = stock.encode_prompt(PROMPTS[1], do_classifier_free_guidance=False)
        ours = recipe.pipe.encode_prompt(PROMPTS[1], do_classifier_free_guidance=False)
        plain = StableDiffusionXLPipeline.from_pretrained(base).encode_prompt(PROMPTS[1],
                                                                             do_classifier_free_guidance=False)
    for i in (0, 2):   # embeddings, pooled
        torch.testing.assert_close(theirs[i], ours[i], rtol=1e-5, atol=1e-5)
        assert (theirs[i] - plain[i]).abs().max() > 1e-4


def test_a_replacement_vae_loads_from_a_pipeline_or_vae_folder_and_a_bad_one_is_a_config_error(base, tmp_path):
    from_pipeline = load_vae(str(base), torch.float16)
    from_folder = load_vae(str(base / "vae"), torch.float32)
    assert from_pipeline.dtype == torch.float16 and from_folder.dtype == torch.float32
    for (name, a), b in zip(from_folder.state_dict().items(), from_pipeline.state_dict().values()):
        torch.testing.assert_close(a, b.float(), rtol=1e-3, atol=1e-3, msg=name)
    with pytest.raises(ConfigError, match=f"vae '{tmp_path / 'none'}': cannot load an AutoencoderKL") as e:
        load_vae(str(tmp_path / "none"), torch.float32)
    assert "\n" not in str(e.value)


def test_shipped_sdxl_configs_have_the_settings_of_diffusers_sdxl_scripts():
    dpo = load_config(DiffusionDpoConfig, CONFIGS / "diffusion_dpo" / "sdxl.yaml")
    assert (dpo.model, dpo.resolution, dpo.vae) == ("stabilityai/stable-diffusion-xl-base-1.0", 1024, None)
    assert (dpo.dpo.beta, dpo.dpo.beta_convention, dpo.dpo.reference) == (5000.0, "half", "adapters")
    assert (dpo.lora.denoiser.rank, dpo.lora.denoiser.target_modules, dpo.lora.text_encoder) == \
        (8, ["to_q", "to_k", "to_v", "to_out.0"], None)
    assert (dpo.train.learning_rate, dpo.train.batch_size, dpo.train.gradient_accumulation_steps,
            dpo.train.gradient_checkpointing, dpo.train.mixed_precision) == (1e-5, 8, 2, True, "fp16")
    db = load_config(DreamBoothLoraConfig, CONFIGS / "dreambooth_lora" / "sdxl.yaml")
    assert (db.base_model, db.resolution, db.lora.denoiser.rank, db.train.learning_rate, db.train.max_steps,
            db.train.gradient_accumulation_steps) == ("stabilityai/stable-diffusion-xl-base-1.0", 1024, 4, 1e-4, 500, 4)


def test_hg_dpo_runs_its_three_stages_on_sdxl_with_reconstruction_winners(base, tmp_path):
    """easy → normal (real images reconstructed by SDXL's img2img) → hard with the statistics loss; the last stage's
    LoRA loads in stock SDXL onto the UNet and both text encoders."""
    from humantune.recipes.hg_dpo import HgDpoConfig, train_hg_dpo
    from humantune.recipes.hg_dpo_pool import img2img_pipeline
    from diffusers import StableDiffusionXLImg2ImgPipeline

    assert isinstance(img2img_pipeline(StableDiffusionXLPipeline.from_pretrained(base)),
                      StableDiffusionXLImg2ImgPipeline)

    def stage(name, kind, **extra):
        return {"name": name, "kind": kind, **extra,
                "train": {"max_steps": 1, "batch_size": 2, "learning_rate": 1e-3, "checkpoint_every": 1}}

    stages = [stage("easy", "easy"), stage("normal", "normal", normal_winner="reconstruction"),
              stage("hard", "hard", statistics={"weight": 1.0})]
    sets = [f"base_model={base}", "real_data.world.n=3", "real_data.world.size=64", "heldout_data.world.n=2",
            "heldout_data.world.size=64", "pool.images_per_prompt=2", "pool.reward.name=realism",
            "eval.samples=0", "generation.num_inference_steps=2", "lora.denoiser.rank=2",
            "lora.text_encoder.rank=4", f"stages={json.dumps(stages)}"]
    train_hg_dpo(load_config(HgDpoConfig, None, sets), tmp_path / "run")
    lora_dir = tmp_path / "run" / "hard" / "lora"
    assert _lora_prefixes(lora_dir) == {"unet", "text_encoder", "text_encoder_2"}
    stock = StableDiffusionXLPipeline.from_pretrained(base)
    stock.load_lora_weights(str(lora_dir))
    assert {k for k, m in stock.components.items() if getattr(m, "peft_config", None)} == {
        "unet", "text_encoder", "text_encoder_2"}
