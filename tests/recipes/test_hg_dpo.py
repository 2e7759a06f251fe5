"""HG-DPO: pool ranking, each stage's winner and loser, blend and reconstruction winners, the resumable pool and its
score cache, the statistics term of a training step, and the whole recipe on tiny random pipelines of both families
(stage LoRAs that stock ``load_lora_weights`` reads, pairs in the Pick-a-Pic layout, resume across a stage
boundary)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from humantune.config import load_config
from humantune.data.preference_pairs import read_pairs
from humantune.errors import ConfigError
from humantune.losses.objectives import DDPMObjective, FlowMatchingConfig, RectifiedFlowObjective
from humantune.losses.statistics_matching import statistics_matching_loss
from humantune.recipes import hg_dpo_pool as pool_lib
from humantune.recipes.dpo_training import DpoStepOutputs
from humantune.recipes.hg_dpo import (
    HgDpoConfig, HgDpoRecipe, StatisticsConfig, StageConfig, effective_stage, statistics_term, train_hg_dpo,
)
from tests.tiny_pipelines import save_pipeline


def _solid(value) -> Image.Image:
    return Image.new("RGB", (8, 8), (value, value, value))


# ---------------------------------------------------------------------------------------------------------- ranking


def test_pool_order_is_best_first_with_nan_last_and_stable_ties():
    assert pool_lib.pool_order([0.2, np.nan, 0.9, 0.2, -1.0]).tolist() == [2, 0, 3, 4, 1]


def test_each_stage_chooses_its_winner_and_loser():
    scores = np.array([[0.1, 0.7, -0.3, 0.2],      # best 1, worst 2
                       [0.5, 0.5, 0.5, 0.5],       # no preference among generated images
                       [np.nan, -2.0, 3.0, 1.0],   # best 2, worst 1: an image not judged (NaN) takes no part
                       [np.nan] * 4])              # nothing judged: no pair
    easy = pool_lib.select_pairs(scores, "easy")
    assert [(c.prompt, c.winner, c.winner_index, c.loser_index) for c in easy] == \
        [(0, "generated", 1, 2), (2, "generated", 2, 1)]          # the tied pool gives no pair
    normal = pool_lib.select_pairs(scores, "normal", "reconstruction")
    assert [(c.winner, c.winner_index, c.loser_index) for c in normal] == \
        [("reconstruction", 1, 2), ("reconstruction", 0, 3), ("reconstruction", 2, 1)]
    hard = pool_lib.select_pairs(scores, "hard", hard_loser="worst")
    assert [(c.winner, c.winner_index, c.loser_index) for c in hard] == [("real", None, 2), ("real", None, 3),
                                                                        ("real", None, 1)]
    assert [c.loser_index for c in pool_lib.select_pairs(scores, "hard", hard_loser="best")] == [1, 0, 2]
    random = [[c.loser_index for c in pool_lib.select_pairs(scores, "hard", hard_loser="random", seed=s)]
              for s in range(20)]
    assert random[3] == [c.loser_index for c in pool_lib.select_pairs(scores, "hard", hard_loser="random", seed=3)]
    assert {r[2] for r in random} == {1, 2, 3} and {r[1] for r in random} == {0, 1, 2, 3}   # never the NaN image
    with pytest.raises(ValueError, match="kind"):
        pool_lib.select_pairs(scores, "medium")


def test_materialised_pairs_put_the_chosen_images_winner_first():
    pool = [[_solid(10), _solid(20)], [_solid(30), _solid(40)]]
    real = [_solid(200), _solid(210)]
    captions = ["a", "b"]
    choices = [pool_lib.PairChoice(0, "generated", 1, 0), pool_lib.PairChoice(1, "real", None, 1),
               pool_lib.PairChoice(0, "blend", 1, 0)]
    pairs = pool_lib.materialise_pairs(choices, pool, real, captions, winners={0: _solid(99)})
    assert [(p.winner.getpixel((0, 0))[0], p.loser.getpixel((0, 0))[0], p.caption, p.label) for p in pairs] == \
        [(20, 10, "a", 1.0), (210, 40, "b", 1.0), (99, 10, "a", 1.0)]
    with pytest.raises(ValueError, match="blend winner"):
        pool_lib.materialise_pairs(choices[2:], pool, real, captions)


def test_pixel_blend_against_a_hand_computation():
    out = pool_lib.blend_pixels(_solid(100), _solid(201), 0.25)   # 0.75·100 + 0.25·201 = 125.25
    assert np.asarray(out)[0, 0].tolist() == [125, 125, 125]
    assert np.asarray(pool_lib.blend_pixels(_solid(100), _solid(201), 1.0))[0, 0, 0] == 201


def test_latent_blend_and_reconstruction_winners():
    from tests.tiny_pipelines import build_pipeline

    pipe = build_pipeline("sd")
    rng = np.random.default_rng(0)
    gen, real = (Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(2))
    a = pool_lib.blend_latents(pipe.vae, [gen], [real], 0.3)[0]
    b = pool_lib.blend_latents(pipe.vae, [real], [gen], 0.7)[0]
    assert a.size == (32, 32) and np.array_equal(np.asarray(a), np.asarray(b))   # (1 − α)·z_g + α·z_r is symmetric
    assert not np.array_equal(np.asarray(a), np.asarray(pool_lib.blend_latents(pipe.vae, [gen], [real], 0.0)[0]))
    settings = {"num_inference_steps": 4, "guidance_scale": 2.0, "height": 32, "width": 32}
    low = pool_lib.reconstruct(pipe, [real], ["a man in a red shirt lying on the grass"], 0.25, [0], settings)[0]
    high = pool_lib.reconstruct(pipe, [real], ["a man in a red shirt lying on the grass"], 1.0, [0], settings)[0]
    again = pool_lib.reconstruct(pipe, [real], ["a man in a red shirt lying on the grass"], 0.25, [0], settings)[0]
    diff = [np.abs(np.asarray(x, float) - np.asarray(real, float)).mean() for x in (low, high)]
    assert np.array_equal(np.asarray(low), np.asarray(again)) and diff[0] < diff[1]   # seeded; s sets the distance


# ---------------------------------------------------------------------------------------------------------- the pool


def test_pool_is_seeded_per_image_resumable_and_fingerprinted(tmp_path):
    calls = []

    def generate(prompts, seeds):
        calls.append(list(seeds))
        return [_solid(s % 256) for s in seeds]

    prompts = ["p0", "p1", "p2"]
    made = pool_lib.generate_pool(None, prompts, 2, 10, tmp_path, {}, {"model": 1}, batch_size=4, progress=False,
                                  generate=generate)
    assert [[im.getpixel((0, 0))[0] for im in row] for row in made] == [[10, 11], [12, 13], [14, 15]]
    assert calls == [[10, 11, 12, 13], [14, 15]]
    (tmp_path / "images" / "00001_00.png").unlink()                   # an interrupted pool
    pool_lib.generate_pool(None, prompts, 2, 10, tmp_path, {}, {"model": 1}, progress=False, generate=generate)
    assert calls[-1] == [12]
    pool_lib.generate_pool(None, prompts, 2, 10, tmp_path, {}, {"model": 2}, progress=False, generate=generate)
    assert calls[-1] == list(range(10, 16))                            # another model: drawn again


def test_pool_scores_are_cached_under_their_fingerprint(tmp_path):
    class Counting:
        calls = 0

        def score(self, images, prompts):
            Counting.calls += 1
            return [np.nan if im.getpixel((0, 0))[0] == 0 else float(im.getpixel((0, 0))[0]) for im in images]

    pool = [[_solid(0), _solid(5)], [_solid(7), _solid(3)]]
    first = pool_lib.score_pool(pool, ["a", "b"], Counting(), tmp_path, {"x": 1}, progress=False)
    again = pool_lib.score_pool(pool, ["a", "b"], Counting(), tmp_path, {"x": 1}, progress=False)
    np.testing.assert_array_equal(first, again)
    assert np.isnan(first[0, 0]) and first[1].tolist() == [7.0, 3.0] and Counting.calls == 2
    pool_lib.score_pool(pool, ["a", "b"], Counting(), tmp_path, {"x": 2}, progress=False)
    assert Counting.calls == 4


# ---------------------------------------------------------------------------------------------------------- the loss


def _outputs(objective, z0_w, z0_l, output_l, level, noise):
    noised_w = objective.noise(z0_w, torch.Generator().manual_seed(0), noise=noise, level=level)
    noised_l = objective.noise(z0_l, torch.Generator().manual_seed(0), noise=noise, level=level)
    return DpoStepOutputs(noised_w, noised_l, z0_w, z0_l, torch.zeros_like(z0_w), output_l, None, None, objective,
                          torch.arange(len(z0_w)), None, None)


def test_statistics_term_compares_the_models_clean_estimate_of_the_loser_with_the_real_winner():
    from diffusers import DDPMScheduler

    g = torch.Generator().manual_seed(0)
    z0_w, z0_l, noise = (torch.randn(2, 4, 4, 4, generator=g) for _ in range(3))
    z0_l = z0_l * 2 + 1
    ddpm = DDPMObjective(DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012))
    # an output equal to the true ε makes x̂₀ the loser's clean latent
    term, logs = statistics_term(_outputs(ddpm, z0_w, z0_l, noise, torch.tensor([10, 700]), noise),
                                 StatisticsConfig(weight=0.5))
    expected = statistics_matching_loss(z0_l, z0_w).mean()
    assert term.item() == pytest.approx(0.5 * expected.item(), rel=1e-4)
    assert logs["statistics_loss"] == pytest.approx(expected.item(), rel=1e-4)
    flow = RectifiedFlowObjective(FlowMatchingConfig(), 1.0)
    sigmas = torch.tensor([0.2, 0.8])
    term, _ = statistics_term(_outputs(flow, z0_w, z0_l, noise - z0_l, sigmas, noise), StatisticsConfig(weight=1.0))
    assert term.item() == pytest.approx(expected.item(), rel=1e-4)


def test_curricula_rewrite_the_stage_kinds():
    hard = StageConfig(name="hard", kind="hard", statistics=StatisticsConfig(weight=1.0))
    easy = StageConfig(name="easy", kind="easy")
    assert effective_stage(hard, "hg-dpo") is hard
    naive = effective_stage(easy, "naive")
    assert (naive.kind, naive.statistics.weight, naive.name) == ("hard", 0.0, "easy")
    assert effective_stage(hard, "generated").kind == "easy"


# ---------------------------------------------------------------------------------------------------------- recipe


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return {f: save_pipeline(f, root / f) for f in ("sd", "sd3")}


def _config(base: Path, stages: list[dict], **over) -> HgDpoConfig:
    sets = [f"base_model={base}", "real_data.world.n=3", "real_data.world.size=64", "heldout_data.world.n=2",
            "heldout_data.world.size=64", "pool.images_per_prompt=2", "pool.reward.name=realism",
            "eval.samples=0", "generation.num_inference_steps=2", "lora.denoiser.rank=2", "lora.text_encoder.rank=4",
            f"stages={json.dumps(stages)}"]
    sets += [f"{k}={json.dumps(v)}" for k, v in over.items()]
    return load_config(HgDpoConfig, None, sets)


def _stage(name, kind, **extra):
    return {"name": name, "kind": kind, **extra,
            "train": {"max_steps": 1, "batch_size": 2, "learning_rate": 1e-3, "checkpoint_every": 1}}


STAGES = [_stage("easy", "easy"), _stage("normal", "normal", blend_space="latent"),
          _stage("hard", "hard", statistics={"weight": 1.0})]


def test_the_whole_recipe_on_tiny_sd_loads_in_stock_diffusers(bases, tmp_path):
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    cfg = _config(bases["sd"], STAGES, **{"eval.samples": 2, "eval.metrics": ["anomaly_rate"],
                                          "eval.report_samples": 2})
    report = train_hg_dpo(cfg, tmp_path / "run")
    out = tmp_path / "run"
    assert report == out / "report.html" and "implicit accuracy" in report.read_text()
    results = json.loads((out / "results.json").read_text())
    assert list(results["training"]) == ["easy", "normal", "hard"]
    assert [results["training"][s]["init_from"] for s in ("easy", "normal", "hard")] == ["base", "easy", "normal"]
    assert set(results["metrics"]) == {"base", "easy", "normal", "hard"}
    assert all(v >= 0 for v in results["colour_statistics_distance"].values())
    hard_rows = [json.loads(line) for line in (out / "hard" / "metrics.jsonl").read_text().splitlines()]
    assert "statistics_loss" in hard_rows[-1] and "implicit_accuracy" in hard_rows[-1]
    # the hard stage's pairs: the real image wins, in the Pick-a-Pic layout
    pairs = read_pairs(out / "hard" / "pairs.parquet")
    real = sorted((out / "data" / "real" / "images").glob("*.png"))
    assert len(pairs) == 3 and pairs[0].caption and pairs[0].label == 1.0
    assert np.array_equal(np.asarray(pairs[0].winner),
                          np.asarray(Image.open(real[0]).convert("RGB").resize((32, 32), Image.BICUBIC)))
    stock = StableDiffusionPipeline.from_pretrained(bases["sd"])
    stock.load_lora_weights(str(out / "hard" / "lora"))
    with safe_open(str(out / "hard" / "lora" / "pytorch_lora_weights.safetensors"), "pt") as f:
        prefixes = {k.split(".", 1)[0] for k in f.keys()}
    assert prefixes == {"unet", "text_encoder"}
    assert any("lora" in n for n, _ in stock.text_encoder.named_parameters())


def test_sd3_hard_stage_with_pixel_statistics_and_reconstruction(bases, tmp_path):
    from diffusers import StableDiffusion3Pipeline

    stages = [_stage("normal", "normal", normal_winner="reconstruction", reconstruction_strength=0.5),
              _stage("hard", "hard", statistics={"weight": 1.0, "space": "pixel"}, dpo={"reference": "initial"})]
    train_hg_dpo(_config(bases["sd3"], stages, **{"pool.per_stage": False}), tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "hard" / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(rows[-1]["statistics_loss"]) and rows[-1]["statistics_loss"] > 0
    # one pool, the first stage's, serves both stages (drawn from the base: a B = 0 adapter)
    assert not (tmp_path / "run" / "hard" / "pool").exists()
    hard = read_pairs(tmp_path / "run" / "hard" / "pairs.parquet")
    normal = read_pairs(tmp_path / "run" / "normal" / "pairs.parquet")
    assert [np.asarray(p.loser).tolist() for p in hard] == [np.asarray(p.loser).tolist() for p in normal]
    stock = StableDiffusion3Pipeline.from_pretrained(bases["sd3"], text_encoder_3=None, tokenizer_3=None)
    stock.load_lora_weights(str(tmp_path / "run" / "hard" / "lora"))


def test_a_run_interrupted_after_a_stage_skips_it_and_continues(bases, tmp_path, monkeypatch):
    stages = STAGES[:2]
    cfg = _config(bases["sd"], stages)
    train_hg_dpo(cfg, tmp_path / "straight")
    original = HgDpoRecipe._train_stage
    trained = []

    def interrupt_second(self, k, stage, source):
        trained.append(stage.name)
        if k == 1:
            raise KeyboardInterrupt
        return original(self, k, stage, source)

    monkeypatch.setattr(HgDpoRecipe, "_train_stage", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        train_hg_dpo(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "easy" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert not (tmp_path / "run" / "normal" / "lora").exists()
    monkeypatch.setattr(HgDpoRecipe, "_train_stage", lambda self, k, stage, source: (
        trained.append(stage.name), original(self, k, stage, source))[1])
    train_hg_dpo(cfg, tmp_path / "run")
    assert trained == ["easy", "normal", "normal"]                    # easy was not trained again
    from safetensors.torch import load_file

    resumed = load_file(str(tmp_path / "run" / "normal" / "lora" / "pytorch_lora_weights.safetensors"))
    straight = load_file(str(tmp_path / "straight" / "normal" / "lora" / "pytorch_lora_weights.safetensors"))
    assert resumed.keys() == straight.keys()
    for k in straight:                                                 # the same weights as the uninterrupted run
        torch.testing.assert_close(resumed[k], straight[k], rtol=0, atol=0)


def test_real_photos_from_an_image_folder_with_captions(bases, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    captions = ["a man in a red shirt and blue jeans standing on the grass", "a woman in a blue dress waving on the beach"]
    for i, caption in enumerate(captions):
        Image.new("RGB", (48, 40), (40 * i, 90, 200)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(caption)
    recipe = HgDpoRecipe(_config(bases["sd"], STAGES[:1], real_dir=str(folder)), tmp_path / "run")
    recipe.setup()
    assert [s.caption for s in recipe.real] == captions
    assert recipe.real[1].image.shape == (32, 32, 3) and recipe.real[1].image[0, 0].tolist() == [40, 90, 200]
    with pytest.raises(ConfigError, match="heldout_dir must differ"):
        _config(bases["sd"], STAGES[:1], real_dir=str(folder), heldout_dir=str(folder))


def test_pixel_statistics_term_passes_gradients_through_the_vae_decoder():
    from diffusers import DDPMScheduler

    from tests.tiny_pipelines import build_pipeline

    vae = build_pipeline("sd").vae.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    z0_w, z0_l, noise = (torch.randn(2, 4, 16, 16, generator=g) for _ in range(3))
    ddpm = DDPMObjective(DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012))
    output = noise.clone().requires_grad_(True)
    term, logs = statistics_term(_outputs(ddpm, z0_w, z0_l, output, torch.tensor([10, 20]), noise),
                                 StatisticsConfig(weight=1.0, space="pixel"), vae)
    with torch.no_grad():
        decode = lambda z: vae.decode(z / vae.config.scaling_factor).sample   # noqa: E731
        expected = statistics_matching_loss(decode(z0_l), decode(z0_w)).mean()
    assert term.item() == pytest.approx(expected.item(), rel=1e-3)
    term.backward()
    assert output.grad is not None and output.grad.abs().sum() > 0
