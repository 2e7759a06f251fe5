"""The DreamBooth-LoRA recipe on tiny random pipelines of both families: caches keyed by sample index under shuffled
batches, prior-preservation batching, the text encoders' own learning rate, exact resume, a LoRA that stock
diffusers loads to compute what the trained adapters computed, the no_text LoRA targets and the same_clothing class
prompts."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from diffusers import DiffusionPipeline
from diffusers.models.attention_processor import Attention
from PIL import Image

from humantune.config import load_config
from humantune.errors import ConfigError, HumantuneError
from humantune.data.prepare import resize_centre_crop, to_chw
from humantune.data.mannequin.prompted import parse_caption
from humantune.models.encoding import encode_latent_stats
from humantune.models.generation import read_prompts
from humantune.models.lora import resolve_target_modules
from humantune.recipes.dreambooth_lora import (
    DreamBoothLoraConfig, DreamBoothLoraRecipe, DreamBoothLoraTask, same_clothing_prompts, train_dreambooth_lora,
    training_sample_indices,
)
from humantune.train.engine import StepBatches, read_metrics
from tests.tiny_pipelines import TRANSFORMER, denoiser_output, save_pipeline

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dreambooth_lora"
ANOMALY = CONFIGS.parent / "anomaly"
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

    stock = _stock(bases[family], family)
    stock.load_lora_weights(str(lora_dir))
    torch.testing.assert_close(_denoise(stock, family), _denoise(recipe.pipe, family), rtol=1e-5, atol=1e-5)


def _stock(base: Path, family: str):
    """The base as a stock diffusers pipeline."""
    extra = {} if family == "sd" else {"text_encoder_3": None, "tokenizer_3": None}
    return DiffusionPipeline.from_pretrained(base, **extra)


def _denoise(pipe, family: str) -> torch.Tensor:
    """The denoiser's output for PROMPTS[0] on a fixed noisy latent at t = 400."""
    return denoiser_output(pipe, family, PROMPTS[0])


def _lora_layers(model: torch.nn.Module) -> set[str]:
    """Names of the layers of ``model`` that carry a LoRA (peft's ``lora_A`` child)."""
    return {name for name, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)}


def _text_reading_layers(model: torch.nn.Module) -> set[str]:
    """Projections whose input is the text embedding, read off the attention modules: a cross-attention's to_k and
    to_v, and a joint attention's context stream (add_q_proj, add_k_proj, add_v_proj, to_add_out)."""
    out = set()
    for name, m in model.named_modules():
        if isinstance(m, Attention):
            kinds = (["to_k", "to_v"] if m.is_cross_attention else []) + \
                ["add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]
            out |= {f"{name}.{k}" for k in kinds if getattr(m, k, None) is not None}
    return out


@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_no_text_targets_adapt_every_attention_projection_but_those_reading_the_text(bases, tmp_path, family):
    cfg = _config(bases[family], **{"lora.denoiser.target_modules": "no_text", "lora.denoiser.rank": 4,
                                    "train.learning_rate": 1e-2})
    recipe = DreamBoothLoraRecipe(cfg, tmp_path / "run")
    lora_dir = recipe.run()
    stock = _stock(bases[family], family)
    stock_denoiser = stock.components[recipe.family.denoiser]
    suffixes = tuple("." + k for k in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj",
                                       "to_add_out"))
    projections = {name for name, m in stock_denoiser.named_modules() if isinstance(m, torch.nn.Linear)
                   and name.endswith(suffixes)}
    text = _text_reading_layers(stock_denoiser)
    # the tiny UNet: 4 transformer blocks × 2 attentions (attn1, attn2) × 4 projections, 8 of them attn2.to_k/to_v;
    # the tiny MMDiT: 2 joint blocks × 8, but the last one is context-pre-only (no to_add_out), 7 in the text stream
    assert (len(projections), len(text)) == ((32, 8) if family == "sd" else (15, 7))
    adapted = set(recipe.adapted[recipe.family.denoiser])
    assert adapted == _lora_layers(recipe.pipe.components[recipe.family.denoiser]) == projections - text
    if family == "sd":
        assert {n[n.index("attn2."):] for n in adapted if ".attn2." in n} == {"attn2.to_q", "attn2.to_out.0"}
    assert not any(n.endswith(("attn2.to_k", "attn2.to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"))
                   for n in adapted)

    stock.load_lora_weights(str(lora_dir))
    assert _lora_layers(stock_denoiser) == adapted
    tuned = _denoise(recipe.pipe, family)
    torch.testing.assert_close(_denoise(stock, family), tuned, rtol=1e-5, atol=1e-5)
    stock.unload_lora_weights()
    assert (_denoise(stock, family) - tuned).abs().max() > 1e-3                   # the adapters were trained

    with pytest.raises(HumantuneError, match="preset 'no_text' has no layers for CLIPTextModel"):
        resolve_target_modules(recipe.pipe.text_encoder, "no_text")


def test_same_clothing_class_prompts_keep_people_clothes_and_background_in_other_actions():
    prompts = [PROMPTS[0], "a man in a red shirt and blue jeans sitting and a girl in a pink dress lying on the beach"]
    assert same_clothing_prompts(prompts, ["standing", "sitting", "lying"]) == [
        "a man in a red shirt and blue jeans standing on the grass",
        "a man in a red shirt and blue jeans standing and a girl in a pink dress standing on the beach",
        "a man in a red shirt and blue jeans sitting on the grass",
        "a man in a red shirt and blue jeans sitting and a girl in a pink dress sitting on the beach",
        # lying: the first prompt itself is left out
        "a man in a red shirt and blue jeans lying and a girl in a pink dress lying on the beach",
    ]
    assert same_clothing_prompts(PROMPTS[:1], ["arms_raised"]) == \
        ["a man in a red shirt and blue jeans with arms raised on the grass"]
    with pytest.raises(ValueError, match=r"unknown action\(s\) \['flying'\]"):
        same_clothing_prompts(PROMPTS, ["standing", "flying"])
    with pytest.raises(ValueError, match="gives no prompt other than the instance prompts"):
        same_clothing_prompts(PROMPTS, ["lying"])
    with pytest.raises(ConfigError, match="same_clothing needs instance prompts in the mannequin caption grammar"):
        _config(Path("unused"), **{"prior.enabled": True, "prior.class_prompts": "same_clothing",
                                   "instance.prompts": ["a person lying on the grass"]})
    with pytest.raises(ConfigError, match="prior.class_prompts' expects list\\[str\\] \\| 'same_clothing'"):
        _config(Path("unused"), **{"prior.class_prompts": "same_clothes"})


def test_same_clothing_class_images_are_drawn_for_the_derived_prompts(bases, tmp_path):
    cfg = _config(bases["sd"], **{"prior.enabled": True, "prior.class_prompts": "same_clothing",
                                  "prior.class_actions": ["walking", "sitting"], "prior.num_class_images": 4})
    recipe = DreamBoothLoraRecipe(cfg, tmp_path / "run")
    recipe.setup()
    rows = [json.loads(line) for line in (tmp_path / "run/class_images/metadata.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == [
        "a man in a red shirt and blue jeans walking on the grass",
        "a woman in a blue dress walking on the street",
        "a boy in a yellow t-shirt and black shorts walking on the beach",
        "a man in a red shirt and blue jeans sitting on the grass",
    ]
    assert recipe.captions[recipe.num_instance:] == [r["text"] for r in rows]


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
    for name in ("tiny-sd-lying.yaml", "tiny-sd3-lying.yaml"):
        tiny = load_config(DreamBoothLoraConfig, CONFIGS / name)
        assert (tiny.lora.denoiser.rank, tiny.lora.denoiser.target_modules, tiny.prior.class_prompts) == \
            (4, "no_text", "same_clothing")
        previous = load_config(DreamBoothLoraConfig, CONFIGS / name, [
            "lora.denoiser.rank=16", "lora.denoiser.target_modules=[to_q, to_k, to_v, to_out.0]",
            'prior.class_prompts=["a girl in a pink dress waving on the street"]'])
        assert (previous.lora.denoiser.rank, previous.lora.denoiser.target_modules,
                previous.prior.prompts(previous.instance.prompts)) == \
            (16, ["to_q", "to_k", "to_v", "to_out.0"], ["a girl in a pink dress waving on the street"])


def _clothes_and_backgrounds(prompts: list[str]) -> tuple[set[str], set[str]]:
    """The clothing colours and the backgrounds the prompts name."""
    colours, backgrounds = set(), set()
    for prompt in prompts:
        request = parse_caption(prompt)
        backgrounds.add(request.background)
        for p in request.people:
            colours |= {p.top_color, p.bottom_color} - {None}
    return colours, backgrounds


def test_heldout_controls_share_no_clothing_colour_or_background_with_the_training_prompts():
    heldout = read_prompts(ANOMALY / "heldout_control_prompts.txt")
    assert len(heldout) == 4 and {parse_caption(p).people[0].action for p in heldout} == \
        {"standing", "walking", "sitting"}
    colours, backgrounds = _clothes_and_backgrounds(heldout)
    for name in ("tiny-sd-lying.yaml", "tiny-sd3-lying.yaml"):
        cfg = load_config(DreamBoothLoraConfig, CONFIGS / name)
        seen = cfg.instance.prompts + cfg.prior.prompts(cfg.instance.prompts)
        seen_colours, seen_backgrounds = _clothes_and_backgrounds(seen)
        assert colours & seen_colours == set() and backgrounds & seen_backgrounds == set()
    assert set(heldout).isdisjoint(read_prompts(ANOMALY / "control_prompts.txt"))


def test_a_failed_setup_leaves_no_folder_and_a_changed_config_is_refused(bases, tmp_path):
    with pytest.raises(ConfigError, match="resolution 34"):
        DreamBoothLoraRecipe(_config(bases["sd"], resolution=34), tmp_path / "res").setup()
    assert not (tmp_path / "res").exists()
    DreamBoothLoraRecipe(_config(bases["sd"]), tmp_path / "run").setup()
    with pytest.raises(HumantuneError, match=r"different config \(changed: train.seed\).*--allow-config-change"):
        DreamBoothLoraRecipe(_config(bases["sd"], **{"train.seed": 5}), tmp_path / "run").setup()
    DreamBoothLoraRecipe(_config(bases["sd"], **{"train.seed": 5}), tmp_path / "run", allow_config_change=True).setup()
    assert "train.seed" in (tmp_path / "run" / "config_changes.jsonl").read_text()
