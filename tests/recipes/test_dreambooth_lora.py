"""The DreamBooth-LoRA recipe on tiny random pipelines of both families: caches keyed by sample index under shuffled
batches, prior-preservation batching, the text encoders' own learning rate, exact resume, and a LoRA that stock
diffusers loads to compute what the trained adapters computed."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from diffusers import DiffusionPipeline
from PIL import Image

from humantune.config import load_config
from humantune.errors import ConfigError, HumantuneError
from humantune.data.prepare import resize_centre_crop, to_chw
from humantune.models.encoding import encode_latent_stats
from humantune.recipes.dreambooth_lora import (
    DreamBoothLoraConfig, DreamBoothLoraRecipe, DreamBoothLoraTask, train_dreambooth_lora, training_sample_indices,
)
from humantune.train.engine import StepBatches, read_metrics
from tests.tiny_pipelines import TRANSFORMER, save_pipeline

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dreambooth_lora"
PROMPTS = [
    "a man in a red shirt and blue jeans lying on the grass",
    "a woman in a blue dress lying on the street",
    "a boy in a yellow t-shirt and black shorts lying on the beach",
]
CLASS_PROMPTS = ["a man in a white shirt and gray trousers standing on the grass",
                 "a girl in a pink dress walking on the street"]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return {f: save_pipeline(f, root / f) for f in ("sd", "sd3")}


def _config(base: Path, **over) -> DreamBoothLoraConfig:
    sets = [f"base_model={base}", f"instance.prompts={json.dumps(PROMPTS)}", "instance.images_per_prompt=1",
            "train.max_steps=4", "train.batch_size=2", "train.gradient_accumulation_steps=1",
            "train.checkpoint_every=2", "train.lr_warmup_steps=0", f"prior.class_prompts={json.dumps(CLASS_PROMPTS)}",
            "prior.num_class_images=2", f"validation_prompts={json.dumps(PROMPTS[:2])}"]
    sets += [f"{k}={json.dumps(v)}" for k, v in over.items()]
    return load_config(DreamBoothLoraConfig, None, sets)


def test_training_sample_indices_batch_instance_then_class_halves():
    items = torch.tensor([4, 0, 3, 1, 2])
    assert training_sample_indices(items, 3).tolist() == [1, 0, 0, 1, 2]
    # with 3 instance and 2 class samples: instance k mod 3, then class 3 + (k mod 2)
    assert training_sample_indices(items, 3, 2).tolist() == [1, 0, 0, 1, 2, 3, 3, 4, 4, 3]


@pytest.mark.parametrize("family,text_encoder", [("sd3", False), ("sd3", True), ("sd", True)])
def test_caches_are_keyed_by_sample_index_under_shuffled_batches(bases, tmp_path, family, text_encoder):
    cfg = _config(bases[family], **{"prior.enabled": True, "lora.text_encoder": {"rank": 4} if text_encoder else None})
    recipe = DreamBoothLoraRecipe(cfg, tmp_path / "run")
    recipe.setup()
    pipe = recipe.pipe
    # Independent ground truth: the instance folder's own rows, then the class folder's, in file order.
    rows = [json.loads(line) for line in (tmp_path / "run/instance_images/metadata.jsonl").read_text().splitlines()]
    rows = [(tmp_path / "run/instance_images" / r["file_name"], r["text"]) for r in rows]
    rows += [(tmp_path / "run/class_images" / json.loads(line)["file_name"], json.loads(line)["text"])
             for line in (tmp_path / "run/class_images/metadata.jsonl").read_text().splitlines()]
    assert len({text for _, text in rows}) == len(rows) == 5                     # every caption distinct
    task = DreamBoothLoraTask(recipe.family, {}, {}, recipe.lora_groups, 1e-4, recipe.objective, recipe.latents,
                              recipe.latent_shift, recipe.latent_scale, recipe.text, recipe.num_instance,
                              recipe.num_class, 1.0, lambda step, out: {})
    task.attach({k: pipe.components[k] for k in ("text_encoder", "text_encoder_2") if k in pipe.components})
    batches = StepBatches(len(task.dataset()), 2, 1, 1, 0, seed=7, start_step=0, max_steps=6)
    seen_orders = set()
    for items in batches:
        samples = training_sample_indices(torch.tensor(items), recipe.num_instance, recipe.num_class)
        seen_orders.add(tuple(samples.tolist()))
        with torch.no_grad():
            z0, (cond, pooled) = task.batch_inputs(samples, torch.Generator().manual_seed(0))
            stats = encode_latent_stats(pipe.vae, torch.stack([to_chw(resize_centre_crop(Image.open(rows[s][0]), 32))
                                                               for s in samples.tolist()]))
            eps = torch.randn(stats[:, 0].shape, generator=torch.Generator().manual_seed(0))
            torch.testing.assert_close(z0, (stats[:, 0] + stats[:, 1] * eps - recipe.latent_shift)
                                       * recipe.latent_scale)
            captions = [rows[s][1] for s in samples.tolist()]
            if family == "sd":
                want, _ = pipe.encode_prompt(captions, "cpu", 1, False)
            else:
                want, _, want_pooled, _ = pipe.encode_prompt(captions, None, None, do_classifier_free_guidance=False,
                                                             max_sequence_length=TRANSFORMER.max_sequence_length)
                torch.testing.assert_close(pooled, want_pooled, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(cond, want, rtol=1e-5, atol=1e-5)
    assert len(seen_orders) > 1                                                   # the batches were shuffled


@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_trained_lora_loads_in_stock_diffusers_and_computes_what_training_left(bases, tmp_path, family):
    recipe = DreamBoothLoraRecipe(_config(bases[family], **{"lora.text_encoder": {"rank": 4}}), tmp_path / "run")
    lora_dir = recipe.run()
    assert lora_dir == tmp_path / "run" / "lora" and (lora_dir / "pytorch_lora_weights.safetensors").is_file()
    info = json.loads((lora_dir / "humantune_lora.json").read_text())
    assert info["family"] == family and info["num_instance_images"] == len(PROMPTS)
    assert "load_lora_weights" in (lora_dir / "README.md").read_text()
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "dreambooth")] == [1, 2, 3, 4]
    grid = Image.open(tmp_path / "run" / "dreambooth" / "validation" / "samples_step_000004.png")
    assert grid.size == (2 * 32, 2 * 32)                                          # base row over tuned row

    extra = {} if family == "sd" else {"text_encoder_3": None, "tokenizer_3": None}
    stock = DiffusionPipeline.from_pretrained(bases[family], **extra)
    stock.load_lora_weights(str(lora_dir))
    trained = recipe.pipe
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        outs = []
        for pipe in (trained, stock):
            if family == "sd":
                cond, _ = pipe.encode_prompt(PROMPTS[0], "cpu", 1, False)
                outs.append(pipe.unet(x, torch.tensor([400]), cond).sample)
            else:
                cond, _, pooled, _ = pipe.encode_prompt(PROMPTS[0], None, None, do_classifier_free_guidance=False,
                                                        max_sequence_length=TRANSFORMER.max_sequence_length)
                outs.append(pipe.transformer(hidden_states=x, encoder_hidden_states=cond, pooled_projections=pooled,
                                             timestep=torch.tensor([400.0])).sample)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)


def test_text_encoder_lora_steps_with_its_own_learning_rate(bases, tmp_path):
    # Adam's first update is lr·sign(g) per element, and B starts at 0: after one step |B| equals each group's lr.
    cfg = _config(bases["sd"], **{"lora.text_encoder": {"rank": 4, "learning_rate": 3e-6}, "train.max_steps": 1,
                                  "train.learning_rate": 2e-4, "train.weight_decay": 0.0})
    recipe = DreamBoothLoraRecipe(cfg, tmp_path / "run")
    recipe.run()
    unet_b = torch.cat([p.abs().flatten() for n, p in recipe.pipe.unet.named_parameters() if "lora_B" in n])
    text_b = torch.cat([p.abs().flatten() for n, p in recipe.pipe.text_encoder.named_parameters() if "lora_B" in n])
    assert unet_b.max().item() == pytest.approx(2e-4, rel=1e-3)
    assert text_b.max().item() == pytest.approx(3e-6, rel=1e-3)


def test_interrupted_run_resumes_exactly(bases, tmp_path):
    cfg = _config(bases["sd3"], **{"prior.enabled": True, "lora.text_encoder": {"rank": 4}})
    train_dreambooth_lora(cfg, tmp_path / "run")
    full = read_metrics(tmp_path / "run" / "dreambooth")
    stage = tmp_path / "run" / "dreambooth"
    shutil.rmtree(stage / "checkpoints" / "step_000004")
    shutil.rmtree(tmp_path / "run" / "lora")
    (stage / "metrics.jsonl").write_text("".join(line + "\n" for line in
                                                 (stage / "metrics.jsonl").read_text().splitlines()[:2]))
    class_png = tmp_path / "run" / "class_images" / "images" / "000000.png"
    mtime = class_png.stat().st_mtime_ns
    train_dreambooth_lora(cfg, tmp_path / "run")
    resumed = read_metrics(stage)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in full], rel=1e-6)
    assert [r["prior_loss"] for r in resumed] == pytest.approx([r["prior_loss"] for r in full], rel=1e-6)
    assert class_png.stat().st_mtime_ns == mtime                                 # class images came from the cache


def test_instance_folder_captions_and_bad_inputs(bases, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((40, 48, 3), 60 * i, np.uint8)).save(folder / f"{i}.png")
    (folder / "0.txt").write_text(PROMPTS[1])
    one = _config(bases["sd"], **{"instance.dir": str(folder), "instance.prompts": [PROMPTS[0]]})
    recipe = DreamBoothLoraRecipe(one, tmp_path / "ok")
    recipe.setup()
    assert recipe.captions == [PROMPTS[1], PROMPTS[0]]                            # sidecar caption, else the prompt
    assert recipe.latents.shape == (2, 2, 4, 16, 16)                              # resized and centre-cropped to 32²

    with pytest.raises(HumantuneError, match="has no caption: give exactly one instance.prompts"):
        DreamBoothLoraRecipe(_config(bases["sd"], **{"instance.dir": str(folder)}), tmp_path / "two").setup()
    with pytest.raises(HumantuneError, match="cannot render prompt 'a person lying on the grass'"):
        DreamBoothLoraRecipe(_config(bases["sd"], **{"instance.prompts": ["a person lying on the grass"]}),
                             tmp_path / "bad").setup()
    with pytest.raises(ConfigError, match="resolution 34 must be a multiple of 4"):
        DreamBoothLoraRecipe(_config(bases["sd"], resolution=34), tmp_path / "res").setup()
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({"lora": {"denoiser": {"rnak": 4}}}))
    with pytest.raises(ConfigError, match="lora.denoiser.rnak"):
        load_config(DreamBoothLoraConfig, path)


def test_shipped_configs_load(bases):
    names = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    assert names == ["sd15.yaml", "sd3_medium.yaml", "sdxl.yaml", "tiny-sd-lying.yaml", "tiny-sd3-lying.yaml"]
    for name in names:
        cfg = load_config(DreamBoothLoraConfig, CONFIGS / name)
        assert cfg.instance.prompts and cfg.lora.denoiser.rank >= 1
    real = load_config(DreamBoothLoraConfig, CONFIGS / "sd3_medium.yaml")
    assert (real.resolution, real.lora.denoiser.rank, real.train.max_steps, real.train.gradient_accumulation_steps) == \
        (1024, 4, 500, 4)


def test_a_failed_setup_leaves_no_folder_and_a_changed_config_is_refused(bases, tmp_path):
    with pytest.raises(ConfigError, match="resolution 34"):
        DreamBoothLoraRecipe(_config(bases["sd"], resolution=34), tmp_path / "res").setup()
    assert not (tmp_path / "res").exists()
    DreamBoothLoraRecipe(_config(bases["sd"]), tmp_path / "run").setup()
    with pytest.raises(HumantuneError, match=r"different config \(changed: train.seed\).*--allow-config-change"):
        DreamBoothLoraRecipe(_config(bases["sd"], **{"train.seed": 5}), tmp_path / "run").setup()
    DreamBoothLoraRecipe(_config(bases["sd"], **{"train.seed": 5}), tmp_path / "run", allow_config_change=True).setup()
    assert "train.seed" in (tmp_path / "run" / "config_changes.jsonl").read_text()
