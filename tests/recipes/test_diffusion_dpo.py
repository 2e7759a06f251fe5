"""The Diffusion-DPO recipe and its stage API on tiny random pipelines of both families: logged terms, shared
noise and timestep, the adapter-disabled reference (text encoder included), gradient checkpointing with adapters
on, a LoRA stock diffusers loads, exact resume, full fine-tuning against a frozen copy."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from PIL import Image
from safetensors.torch import load_file

from humantune.config import load_config
from humantune.data.preference_pairs import PreferencePair, read_pairs, write_pairs_folder
from humantune.errors import ConfigError, HumantuneError
from humantune.models import lora
from humantune.models.encoding import PromptConditioning
from humantune.recipes.diffusion_dpo import DiffusionDpoConfig, DiffusionDpoRecipe, split_heldout, train_diffusion_dpo
from humantune.recipes.dpo_training import DpoTask, load_adapter_weights, objective_for, stack_noised
from humantune.train.engine import read_metrics, read_validation
from humantune.train.sampling import BatchRandom
from tests.tiny_pipelines import denoiser_output, save_pipeline

PROMPTS = ["a man in a red shirt and blue jeans standing on the grass",
           "a woman in a blue dress walking on the street"]
TERMS = ("loss", "dpo_loss", "implicit_accuracy", "reward_margin", "model_err_w", "model_err_l", "ref_err_w",
         "ref_err_l")


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return {f: save_pipeline(f, root / f) for f in ("sd", "sd3")}


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    pairs = [PreferencePair(Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)),
                            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)), PROMPTS[i % 2])
             for i in range(4)]
    return write_pairs_folder(pairs, tmp_path_factory.mktemp("pairs") / "pairs")


def _config(base: Path, pairs, **over) -> DiffusionDpoConfig:
    sets = [f"model={base}", f"pairs={pairs}", f"mannequin.prompts={json.dumps(PROMPTS[:1])}",
            "mannequin.pairs_per_prompt=2", "train.max_steps=3", "train.batch_size=2", "train.checkpoint_every=2",
            "train.learning_rate=1e-3", "train.lr_warmup_steps=0", "dpo.beta=50", "lora.denoiser.rank=4",
            f"validation_prompts={json.dumps(PROMPTS[:1])}"]
    sets += [f"{k}={json.dumps(v)}" for k, v in over.items()]
    return load_config(DiffusionDpoConfig, None, sets)


def _task(recipe: DiffusionDpoRecipe, dpo=None) -> DpoTask:
    """The stage's task on the recipe's set-up pipeline, outside the engine."""
    trains_text = recipe.lora_groups is not None and "text_encoder" in recipe.lora_groups
    text = PromptConditioning(recipe.pipe, recipe.family, recipe.latents.captions, trains_text,
                              recipe.max_sequence_length)
    return DpoTask(recipe.pipe, recipe.family, recipe.lora_groups, dpo or recipe.cfg.dpo,
                   objective_for(recipe.pipe, recipe.family, recipe.cfg.flow), recipe.latents, text, 1e-3)


def _perturb_adapters(pipe, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in pipe.components.values():
            if isinstance(m, torch.nn.Module):
                for p in lora.lora_parameters(m):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _noised(task: DpoTask, samples: torch.Tensor, seed=0):
    rng = BatchRandom(seed, list(range(len(samples))))
    from humantune.losses.objectives import sample_latents
    z_w = sample_latents(task.latents.winners[samples], rng, task.latent_shift, task.latent_scale)
    z_l = sample_latents(task.latents.losers[samples], rng, task.latent_shift, task.latent_scale)
    nw = task.objective.noise(z_w, rng)
    return stack_noised(nw, task.objective.noise(z_l, rng, noise=nw.noise, level=nw.level))


@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_run_logs_the_terms_and_saves_a_lora_stock_diffusers_loads(bases, pairs_dir, tmp_path, family):
    # sd: offline mannequin pairs; sd3: a pairs folder and a text-encoder LoRA
    over = {"lora.text_encoder": {"rank": 4}} if family == "sd3" else {"validation_pairs": 1}
    cfg = _config(bases[family], "mannequin" if family == "sd" else pairs_dir, **over)
    recipe = DiffusionDpoRecipe(cfg, tmp_path / "run")
    report = recipe.run()
    out = tmp_path / "run"
    assert report == out / "report.html" and "implicit_accuracy" in report.read_text()
    rows = read_metrics(out / "dpo")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(all(np.isfinite(r[k]) for k in TERMS) for r in rows)
    # step 1: the adapters start at B = 0, so the model equals its reference
    assert rows[0]["model_err_w"] == pytest.approx(rows[0]["ref_err_w"], rel=1e-5)
    assert rows[0]["dpo_loss"] == pytest.approx(np.log(2), rel=1e-5) and rows[0]["implicit_accuracy"] == 0.5
    assert rows[-1]["model_err_w"] != rows[-1]["ref_err_w"]
    if family == "sd":
        pairs = read_pairs(out / "data" / "pairs")
        assert [p.caption for p in pairs] == PROMPTS[:1] * 2 and all(p.label == 1.0 for p in pairs)
        assert len(recipe.latents) == 1 and len(recipe.heldout) == 1          # one pair held out
        validation = read_validation(out / "dpo")
        assert [r["step"] for r in validation] == [3]
        assert 0.0 <= validation[0]["heldout_implicit_accuracy"] <= 1.0
        assert json.loads((out / "results.json").read_text())["heldout"]["heldout_reward_margin"] == \
            pytest.approx(validation[0]["heldout_reward_margin"])

    lora_dir = out / "lora"
    assert "load_lora_weights" in (lora_dir / "README.md").read_text()
    extra = {} if family == "sd" else {"text_encoder_3": None, "tokenizer_3": None}
    stock = DiffusionPipeline.from_pretrained(bases[family], **extra)

    def output(pipe):
        return denoiser_output(pipe, family, PROMPTS[0])

    before = output(stock)
    stock.load_lora_weights(str(lora_dir))
    after = output(stock)
    assert (after - before).abs().max() > 1e-4                        # the LoRA changes the output
    torch.testing.assert_close(after, output(recipe.pipe), rtol=1e-5, atol=1e-6)   # as training left it


@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_winner_and_loser_share_noise_and_timestep(bases, pairs_dir, tmp_path, family):
    recipe = DiffusionDpoRecipe(_config(bases[family], pairs_dir), tmp_path / "run")
    recipe.setup()
    task = _task(recipe)
    seen = []
    draw = task.objective.noise

    def recording(z0, generator, noise=None, level=None):
        seen.append((z0, draw(z0, generator, noise=noise, level=level)))
        return seen[-1][1]

    task.objective.noise = recording
    inputs = []
    denoiser = recipe.pipe.components[recipe.family.denoiser]
    hook = denoiser.register_forward_pre_hook(lambda m, args, kwargs: inputs.append(kwargs or args),
                                              with_kwargs=True)
    try:
        task.loss(torch.tensor([0, 1]), BatchRandom(0, [0, 1]))
    finally:
        hook.remove()
    (z_w, w), (z_l, lo) = seen
    assert torch.equal(w.noise, lo.noise) and torch.equal(w.level, lo.level)
    assert not torch.equal(z_w, z_l) and not torch.equal(w.noisy, lo.noisy)
    # both passes (reference, trained) saw [winner; loser] at one timestep per pair
    for call in inputs:
        t = call["timestep"] if isinstance(call, dict) else call[1]
        assert torch.equal(t[:2], t[2:])
    assert len(inputs) == 2


@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_reference_is_the_base_with_every_adapter_disabled(bases, pairs_dir, tmp_path, family):
    recipe = DiffusionDpoRecipe(_config(bases[family], pairs_dir, **{"lora.text_encoder": {"rank": 4}}),
                                tmp_path / "run")
    recipe.setup()
    _perturb_adapters(recipe.pipe)                     # adapters that change both the denoiser and the text
    task = _task(recipe)
    samples = torch.tensor([0, 1])
    both = _noised(task, samples)
    ref = task.reference_errors(both, samples, "cpu")
    base = DiffusionPipeline.from_pretrained(bases[family], **({} if family == "sd" else
                                                              {"text_encoder_3": None, "tokenizer_3": None}))
    base_text = PromptConditioning(base, recipe.family, recipe.latents.captions, False, recipe.max_sequence_length)
    cond, pooled = base_text(samples)
    with torch.no_grad():
        expected = task.objective.loss(task._denoise(base.components[recipe.family.denoiser], both.noisy,
                                                     both.timesteps, cond.repeat(2, 1, 1),
                                                     None if pooled is None else pooled.repeat(2, 1)), both)
    torch.testing.assert_close(ref, expected, rtol=1e-5, atol=1e-6)
    # adapters on again afterwards: the trained pass differs from the base
    cond, pooled = task._conditioning(samples, "cpu")
    with torch.no_grad():
        model = task.objective.loss(task._denoise(task.denoiser, both.noisy, both.timesteps, cond.repeat(2, 1, 1),
                                                  None if pooled is None else pooled.repeat(2, 1)), both)
    assert (model - expected).abs().max() > 1e-4
    # text encoder alone disabled would not do: with only the denoiser's adapters off the reference differs
    with lora.adapters_disabled(recipe.pipe.components[recipe.family.denoiser]), torch.no_grad():
        half = task.objective.loss(task._denoise(task.denoiser, both.noisy, both.timesteps, cond.repeat(2, 1, 1),
                                                 None if pooled is None else pooled.repeat(2, 1)), both)
    assert (half - expected).abs().max() > 1e-5


def test_initial_reference_is_the_stage_start_and_survives_training(bases, pairs_dir, tmp_path):
    cfg = _config(bases["sd"], pairs_dir, **{"dpo.reference": "initial"})
    recipe = DiffusionDpoRecipe(cfg, tmp_path / "run")
    recipe.setup()
    _perturb_adapters(recipe.pipe, seed=1)             # "the previous stage"
    start = {k: v.clone() for k, v in lora.lora_state_dict(recipe.pipe.unet).items()}
    task = _task(recipe)
    samples = torch.tensor([0, 1])
    both = _noised(task, samples)
    ref_before = task.reference_errors(both, samples, "cpu")
    _perturb_adapters(recipe.pipe, seed=2)             # "training" moved the adapters
    moved = {k: v.clone() for k, v in lora.lora_state_dict(recipe.pipe.unet).items()}
    torch.testing.assert_close(task.reference_errors(both, samples, "cpu"), ref_before, rtol=0, atol=0)
    after = lora.lora_state_dict(recipe.pipe.unet)
    assert all(torch.equal(after[k], moved[k]) for k in moved)           # swapped back
    assert any(not torch.equal(start[k], moved[k]) for k in moved)


def test_gradient_checkpointing_recomputes_with_adapters_on(bases, pairs_dir, tmp_path):
    recipe = DiffusionDpoRecipe(_config(bases["sd"], pairs_dir, **{"lora.text_encoder": {"rank": 4}}),
                                tmp_path / "run")
    recipe.setup()
    _perturb_adapters(recipe.pipe)
    unet = recipe.pipe.unet
    params = [p for m in (unet, recipe.pipe.text_encoder) for p in lora.lora_parameters(m)]
    calls = []
    to_q = next(m for n, m in unet.named_modules() if n.endswith("attn1.to_q"))
    to_q.register_forward_hook(lambda m, a, o: calls.append(torch.is_grad_enabled()))

    def grads(checkpointing: bool):
        unet.train()
        if checkpointing:
            unet.enable_gradient_checkpointing()
        else:
            unet.disable_gradient_checkpointing()
        for p in params:
            p.grad = None
        calls.clear()
        loss, _ = _task(recipe).loss(torch.tensor([0, 1]), BatchRandom(3, [0, 1]))
        loss.backward()
        return [p.grad.clone() for p in params], len(calls)

    plain, plain_calls = grads(False)
    checkpointed, checkpointed_calls = grads(True)
    assert checkpointed_calls > plain_calls                 # the backward pass recomputed the forward
    assert any(g.abs().max() > 0 for g in plain)
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_interrupted_run_resumes_with_bit_identical_weights(bases, pairs_dir, tmp_path):
    cfg = _config(bases["sd3"], pairs_dir, **{"train.max_steps": 4, "lora.text_encoder": {"rank": 4}})
    out = tmp_path / "run"
    train_diffusion_dpo(cfg, out)
    full = read_metrics(out / "dpo")
    weights = load_file(str(out / "lora" / lora.LORA_WEIGHTS_NAME))
    shutil.rmtree(out / "dpo" / "checkpoints" / "step_000004")
    shutil.rmtree(out / "lora")
    shutil.rmtree(out / "dpo" / "lora")
    (out / "dpo" / "metrics.jsonl").write_text("".join(line + "\n" for line in
                                                       (out / "dpo" / "metrics.jsonl").read_text().splitlines()[:3]))
    train_diffusion_dpo(cfg, out)
    resumed = read_metrics(out / "dpo")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full]
    again = load_file(str(out / "lora" / lora.LORA_WEIGHTS_NAME))
    assert set(again) == set(weights) and all(torch.equal(again[k], weights[k]) for k in weights)


def test_full_fine_tuning_against_a_frozen_copy(bases, pairs_dir, tmp_path):
    cfg = _config(bases["sd"], pairs_dir, **{"lora": None, "dpo.reference": "initial", "train.max_steps": 2,
                                             "train.learning_rate": 1e-4})
    train_diffusion_dpo(cfg, tmp_path / "run")
    rows = read_metrics(tmp_path / "run" / "dpo")
    assert rows[0]["model_err_w"] == pytest.approx(rows[0]["ref_err_w"], rel=1e-6)
    assert rows[1]["model_err_w"] != pytest.approx(rows[1]["ref_err_w"], rel=1e-9)
    from diffusers import UNet2DConditionModel

    tuned = UNet2DConditionModel.from_pretrained(tmp_path / "run" / "dpo" / "unet")
    base = UNet2DConditionModel.from_pretrained(bases["sd"] / "unet")
    assert any(not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), base.state_dict().values()))
    assert not (tmp_path / "run" / "lora").exists()


def test_load_adapter_weights_restores_a_saved_stage(bases, pairs_dir, tmp_path):
    recipe = DiffusionDpoRecipe(_config(bases["sd"], pairs_dir, **{"lora.text_encoder": {"rank": 4}}),
                                tmp_path / "run")
    recipe.setup()
    _perturb_adapters(recipe.pipe)
    components = {k: recipe.pipe.components[k] for k in recipe.lora_groups}
    lora.save_lora(type(recipe.pipe), tmp_path / "stage1", components)
    fresh = DiffusionDpoRecipe(recipe.cfg, tmp_path / "run2")
    fresh.setup()
    targets = {k: fresh.pipe.components[k] for k in recipe.lora_groups}
    load_adapter_weights(targets, tmp_path / "stage1")
    for k in components:
        saved, loaded = lora.lora_state_dict(components[k]), lora.lora_state_dict(targets[k])
        assert all(torch.equal(saved[n], loaded[n]) for n in saved)
    other = DiffusionDpoRecipe(_config(bases["sd"], pairs_dir, **{"lora.denoiser.rank": 2}), tmp_path / "run3")
    other.setup()
    with pytest.raises(HumantuneError, match="does not fit component 'unet'"):
        load_adapter_weights({"unet": other.pipe.unet}, tmp_path / "stage1")


def test_config_mistakes_are_one_line(bases, pairs_dir, tmp_path):
    with pytest.raises(ConfigError, match="needs dpo.reference: initial"):
        _config(bases["sd"], pairs_dir, **{"lora": None})
    with pytest.raises(ConfigError, match="beta_convention"):
        _config(bases["sd"], pairs_dir, **{"dpo.beta_convention": "sum"})
    with pytest.raises(HumantuneError, match="file not found"):
        DiffusionDpoRecipe(_config(bases["sd"], tmp_path / "nothing.parquet"), tmp_path / "run").setup()
    assert not (tmp_path / "run").exists()                  # a failed setup leaves no folder


def test_a_source_with_only_ties_names_the_pairs(bases, tmp_path):
    tie = PreferencePair(Image.new("RGB", (32, 32)), Image.new("RGB", (32, 32), "white"), PROMPTS[0], 0.5)
    folder = write_pairs_folder([tie], tmp_path / "ties")
    with pytest.raises(HumantuneError, match=r"pairs '.*ties' \(dpo.ties: drop\): no preference pairs"):
        DiffusionDpoRecipe(_config(bases["sd"], folder), tmp_path / "run").setup()


def test_encoded_pairs_are_cached_with_captions_and_labels(bases, pairs_dir, tmp_path, monkeypatch):
    from humantune.recipes import dpo_training

    pipe = DiffusionPipeline.from_pretrained(bases["sd"])
    pairs = read_pairs(pairs_dir) + [PreferencePair(Image.new("RGB", (40, 32)), Image.new("RGB", (32, 32)),
                                                    "a tie", 0.5)]
    cache = tmp_path / "latents.safetensors"
    first = dpo_training.encode_pairs(pipe, iter(pairs), 32, cache, key="k1", batch_size=3)
    assert first.winners.shape == (5, 2, 4, 16, 16) and first.captions == [p.caption for p in pairs]
    assert first.labels.tolist() == [1.0, 1.0, 1.0, 1.0, 0.5]
    monkeypatch.setattr(dpo_training, "encode_latent_stats", lambda *a, **k: pytest.fail("re-encoded"))
    again = dpo_training.encode_pairs(pipe, iter(pairs), 32, cache, key="k1")
    assert torch.equal(again.winners, first.winners) and again.captions == first.captions
    with pytest.raises(pytest.fail.Exception, match="re-encoded"):   # another fingerprint: encoded again
        dpo_training.encode_pairs(pipe, iter(pairs), 32, cache, key="k2")


def test_heldout_pairs_are_scored_at_fixed_noise(bases, pairs_dir, tmp_path):
    recipe = DiffusionDpoRecipe(_config(bases["sd"], pairs_dir), tmp_path / "run")
    recipe.setup()
    train, held = split_heldout(recipe.latents, 2, "p")
    assert held.captions == [recipe.latents.captions[0], recipe.latents.captions[3]] and len(train) == 2
    assert torch.equal(held.winners[1], recipe.latents.winners[3])
    task = _task(recipe)
    start = task.pair_terms(held, seed=0)
    assert start["heldout_implicit_accuracy"] == 0.5 and start["heldout_reward_margin"] == 0.0   # B = 0
    _perturb_adapters(recipe.pipe)
    moved = task.pair_terms(held, seed=0)
    assert moved == task.pair_terms(held, seed=0)                     # the same draws every time
    assert moved["heldout_model_err_w"] != moved["heldout_ref_err_w"]
    assert moved["heldout_ref_err_w"] == pytest.approx(start["heldout_ref_err_w"], rel=1e-6)
    # validation runs on the main process only: never through the engine's (DDP-)wrapped modules, whose forward
    # would wait for the other processes
    class Wrapped(torch.nn.Module):
        def forward(self, *args, **kwargs):
            raise AssertionError("the wrapped module ran")

    task.attach({"unet": Wrapped()})
    assert task.pair_terms(held, seed=0) == moved
    with pytest.raises(ConfigError, match="validation_pairs 4: pairs 'p' has only 4 pairs"):
        split_heldout(recipe.latents, 4, "p")


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one mixed-precision setting per process: start this test's run with its own, and leave
    none behind for the tests after it."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("full", [False, True])
def test_bf16_with_gradient_checkpointing(bases, pairs_dir, tmp_path, full, fresh_accelerator_state):
    over = {"train.mixed_precision": "bf16", "train.gradient_checkpointing": True, "train.max_steps": 2}
    over.update({"lora": None, "dpo.reference": "initial"} if full else {"lora.text_encoder": {"rank": 4},
                                                                        "validation_pairs": 1})
    recipe = DiffusionDpoRecipe(_config(bases["sd3"], pairs_dir, **over), tmp_path / "run")
    recipe.run()
    rows = read_metrics(tmp_path / "run" / "dpo")
    assert len(rows) == 2 and all(np.isfinite(r[k]) for r in rows for k in TERMS)
    trained = [p for p in recipe.pipe.transformer.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)      # the optimizer's weights stay float32
    assert recipe.pipe.vae.dtype == torch.bfloat16                          # frozen weights in bf16
    if not full:
        assert np.isfinite(read_validation(tmp_path / "run" / "dpo")[-1]["heldout_dpo_loss"])


def test_objective_follows_the_family_and_the_scheduler():
    from diffusers import DDIMScheduler

    from humantune.losses.objectives import DDPMObjective, FlowMatchingConfig, RectifiedFlowObjective
    from humantune.models.families import FAMILIES
    from tests.tiny_pipelines import build_pipeline

    pipe = build_pipeline("sd")
    assert objective_for(pipe, FAMILIES["sd"]).prediction_type == "epsilon"
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction")
    v = objective_for(pipe, FAMILIES["sd"])
    assert isinstance(v, DDPMObjective) and v.prediction_type == "v_prediction"
    flow = objective_for(build_pipeline("sd3"), FAMILIES["sd3"], FlowMatchingConfig(shift=3.0))
    assert isinstance(flow, RectifiedFlowObjective) and flow.shift == 3.0 and not flow.cfg.precondition_outputs
