"""Recipe: HG-DPO — Diffusion-DPO with an easy → normal → hard curriculum ending in real images (``shared/papers.md``
§2; no public code exists, so every ambiguity of the paper is a named option here).

``humantune train hg-dpo --config configs/hg_dpo/quick.yaml --output-dir DIR`` fine-tunes LoRA adapters on the
denoiser (rank 8, attention) and on the text encoder(s) (rank 64), with separate learning rates, in declared stages
run in sequence by :class:`~humantune.train.stages.StageRunner`. Every stage:

1. starts from the previous stage's LoRA (or ``init_from``; the first from fresh adapters, B = 0: the base);
2. draws the **image pool** from the current model — N images per prompt, the prompts being the captions of the real
   images — and scores it with the reward (:mod:`humantune.recipes.hg_dpo_pool`; ``OUT/<stage>/pool``);
3. builds its pairs by its ``kind``: easy (best vs worst of the pool), normal (a blend of the best generated and the
   real image, or the real image reconstructed by the current model, vs the worst), hard (the real image vs a
   generated one) — written in the Pick-a-Pic layout to ``OUT/<stage>/pairs.parquet`` (diffusers' DPO script and
   ``humantune train diffusion-dpo`` read it);
4. trains one Diffusion-DPO stage (:func:`humantune.recipes.dpo_training.train_dpo_stage`: shared noise and timestep
   per pair, reference = the base with adapters disabled or the stage's starting weights, ``dpo.reference``), hard
   stages adding the statistics-matching loss (:func:`humantune.losses.statistics_matching.statistics_matching_loss`
   on the model's x̂₀ of the noised loser vs the real winner's latent, or in pixel space through the VAE decoder);
5. saves ``OUT/<stage>/lora/pytorch_lora_weights.safetensors``, which stock ``pipe.load_lora_weights`` loads.

``curriculum`` switches the benchmark's arms without editing stages: ``hg-dpo`` (the stages as declared), ``naive``
(every stage hard, without the statistics loss: real winners from step 0, the paper's collapse case),
``generated`` (every stage easy: Diffusion-DPO on generated pairs only). Same stages, same steps: same compute.

Then the base and every stage generate the held-out prompts (``OUT/eval/<label>``) and are scored by
:func:`humantune.studies.heldout.evaluate_models` (detection rate and OKS by MediaPipe, attribute accuracy,
world-feature FD, anomaly rate...), plus the colour-statistics distance to the held-out real images;
``OUT/results.json`` and a self-contained ``OUT/report.html`` (pool and pair grids, the stages side by side, the
implicit-accuracy curves). Real data: the mannequin world's renders by default ("real photos"), or a pose folder /
COCO / parquet source with captions. Re-running the command resumes: finished stages are skipped, an interrupted
stage continues from its checkpoint, and pools, scores and evaluations whose inputs did not change are reused.

Assumes: a StableDiffusionPipeline (UNet, ε/v) or StableDiffusion3Pipeline (MMDiT, rectified flow) base; square
images; every real image's caption is a prompt of the pool (prompt p's real image is real image p).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from humantune.config import config_to_dict, option
from humantune.data.mannequin.world import MannequinConfig
from humantune.data.prepare import prepare_sample
from humantune.data.preference_pairs import write_pairs_parquet
from humantune.data.sources import DataSource, open_source
from humantune.errors import DataError
from humantune.io import write_json_atomic
from humantune.losses.objectives import FlowMatchingConfig
from humantune.losses.statistics_matching import predicted_clean, statistics_matching_loss
from humantune.models import lora
from humantune.models.encoding import digest
from humantune.recipes import hg_dpo_pool as pool_lib
from humantune.recipes.dpo_training import DpoConfig, DpoStepOutputs, load_adapter_weights, objective_for, train_dpo_stage
from humantune.studies.heldout import EvalConfig, HeldoutSet, evaluate_models, scores_only, write_reference
from humantune.train import stages as staging
from humantune.train.engine import Trainer, TrainConfig
from humantune.train.run_folder import RecipeRun, sigterm_as_interrupt

Curriculum = Literal["hg-dpo", "naive", "generated"]


@dataclass
class StatisticsConfig:
    """HG-DPO's statistics-matching loss (hard stages)."""

    weight: float = option(0.0, "λ of L_stat added to the DPO loss (0: off; the paper summary gives no value: 0.1 "
                                "keeps the term near the DPO loss's size on tiny-sd)")
    space: Literal["latent", "pixel"] = option("latent", "channels of the latent, or RGB after the VAE decoder")
    source: Literal["loser", "winner"] = option(
        "loser", "'generated' = the model's x̂₀ from the noised loser (a generated image) or from the noised winner "
                 "(the real image); 'real' = the winner's clean latent (the real image)")

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"weight must be at least 0, got {self.weight}")


@dataclass
class StageConfig(staging.StageConfig):
    """One curriculum stage."""

    kind: pool_lib.StageKind = option("easy", "easy: best vs worst generated; normal: intermediate winner vs worst; "
                                              "hard: real winner vs generated loser")
    normal_winner: pool_lib.NormalWinner = option("blend", "normal: blend of best generated and real, or the real "
                                                           "image reconstructed by the current model (img2img)")
    blend_alpha: float = option(0.5, "normal/blend: α of (1 − α)·generated + α·real")
    blend_space: Literal["pixel", "latent"] = option("pixel", "normal/blend: blend pixels, or VAE latents (decoded)")
    reconstruction_strength: float = option(0.5, "normal/reconstruction: noise strength s of the real image")
    hard_loser: pool_lib.LoserChoice = option("worst", "hard: which generated image loses to the real one")
    statistics: StatisticsConfig = option(StatisticsConfig(), "statistics-matching loss (used by hard stages)")
    dpo: DpoConfig = option(DpoConfig(), "β (and its convention), ties, reference: adapters = the base, initial = "
                                         "the weights the stage starts from (the previous stage)")
    train: TrainConfig = option(TrainConfig(max_steps=50, batch_size=8, learning_rate=1e-4, lr_scheduler="constant",
                                            weight_decay=0.0, checkpoint_every=25), "optimisation")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.blend_alpha <= 1.0:
            raise ValueError(f"blend_alpha must be within [0, 1], got {self.blend_alpha}")
        if not 0.0 < self.reconstruction_strength <= 1.0:
            raise ValueError(f"reconstruction_strength must be within (0, 1], got {self.reconstruction_strength}")


@dataclass
class GenerationConfig:
    """Sampling of pools, reconstructions and evaluation images."""

    num_inference_steps: int | None = option(None, "sampling steps (null: the base's humantune.json, else 30)")
    guidance_scale: float | None = option(None, "classifier-free guidance (null: the base's humantune.json)")
    seed: int = option(0, "held-out sample i is generated with seed + i (the same for every model)")


def default_stages() -> list[StageConfig]:
    return [StageConfig(name="easy", kind="easy"), StageConfig(name="normal", kind="normal"),
            StageConfig(name="hard", kind="hard", statistics=StatisticsConfig(weight=0.1))]


@dataclass
class HgDpoConfig:
    """``humantune train hg-dpo``: Diffusion-DPO with real images through an easy → normal → hard curriculum."""

    base_model: str = option("tiny-sd", "StableDiffusionPipeline or StableDiffusion3Pipeline: shipped name, "
                                        "directory or hub id")
    real_data: DataSource = option(DataSource(world=MannequinConfig(n=64, seed=0)),
                                   "the real images with captions (winners of the hard stage); their captions are "
                                   "the pool's prompts")
    real_dir: str | None = option(None, "instead of real_data: real photos with captions — an image folder "
                                        "(metadata.jsonl 'text' or sidecar .txt), a parquet file/folder, a pose "
                                        "folder or coco:ANNOTATIONS_JSON:IMAGE_DIR (humantune.data.loaders."
                                        "open_pose_dataset)")
    heldout_data: DataSource = option(DataSource(world=MannequinConfig(n=200, seed=1)),
                                      "held-out prompts (and real images) for the evaluation")
    heldout_dir: str | None = option(None, "instead of heldout_data: held-out real photos with captions (as real_dir)")
    resolution: int | None = option(None, "image size (null: the base's humantune.json, else its sample size)")
    max_sequence_length: int | None = option(None, "SD3 T5 slots (null: the base's humantune.json, else 77)")
    pool: pool_lib.PoolConfig = option(pool_lib.PoolConfig(), "the image pool and its reward")
    lora: lora.PipelineLoraConfig = option(
        lora.PipelineLoraConfig(denoiser=lora.LoraConfig(rank=8), text_encoder=lora.LoraConfig(rank=64)),
        "LoRA: the paper's rank 8 on the denoiser's attention and rank 64 on the text encoder, each with its own "
        "learning_rate (text_encoder: null freezes the text encoder)")
    flow: FlowMatchingConfig = option(FlowMatchingConfig(), "rectified-flow loss (StableDiffusion3Pipeline)")
    curriculum: Curriculum = option("hg-dpo", "hg-dpo: the stages as declared; naive: every stage hard without "
                                              "the statistics loss; generated: every stage easy")
    stages: list[StageConfig] = option(default_stages(), "the curriculum, run in sequence")
    generation: GenerationConfig = option(GenerationConfig(), "sampling settings")
    eval: EvalConfig = option(EvalConfig(metrics=["oks", "attribute_accuracy", "anomaly_rate", "world_fd"]),
                              "held-out evaluation of the base and the stages")
    eval_stages: Literal["all", "last"] = option("all", "evaluate every stage, or only the last (the benchmark's "
                                                        "arms)")

    def __post_init__(self) -> None:
        staging.check_stages(self.stages)
        if self.real_dir is None and self.heldout_dir is None and \
                self.real_data.identity() == self.heldout_data.identity():
            raise ValueError("heldout_data must differ from real_data (another world seed or path)")
        if self.real_dir is not None and self.real_dir == self.heldout_dir:
            raise ValueError("heldout_dir must differ from real_dir: the held-out prompts must not be the training ones")
        if self.resolution is not None and self.resolution < 8:
            raise ValueError(f"resolution must be at least 8, got {self.resolution}")
        if self.heldout_dir is None and self.heldout_data.kind == "mannequin" and \
                self.heldout_data.world.n < self.eval.samples:
            raise ValueError(f"heldout_data.world.n ({self.heldout_data.world.n}) must be at least eval.samples "
                             f"({self.eval.samples})")


def effective_stage(stage: StageConfig, curriculum: Curriculum) -> StageConfig:
    """The stage as the curriculum runs it: unchanged (hg-dpo), hard without the statistics loss (naive), or easy
    (generated)."""
    if curriculum == "naive":
        return dataclasses.replace(stage, kind="hard", statistics=StatisticsConfig(weight=0.0))
    if curriculum == "generated":
        return dataclasses.replace(stage, kind="easy")
    return stage


def statistics_term(outputs: DpoStepOutputs, cfg: StatisticsConfig, vae=None) -> tuple[torch.Tensor, dict]:
    """λ · mean over the batch of L_stat(x̂₀, z₀ʷ) (see :mod:`humantune.losses.statistics_matching`): x̂₀ from the
    trained model's output on the noised loser (``source: loser``) or winner, in latent space or decoded to RGB by
    ``vae`` (``space: pixel``: latents unscaled by the VAE's scaling/shift factors first)."""
    objective = outputs.objective
    if hasattr(objective, "alphas_cumprod"):
        kind, table = objective.prediction_type, objective.alphas_cumprod
    else:
        kind, table = ("sample" if objective.cfg.precondition_outputs else "flow"), None
    output, noised = (outputs.output_l, outputs.noised_l) if cfg.source == "loser" else \
        (outputs.output_w, outputs.noised_w)
    generated = predicted_clean(output.float(), noised.noisy.float(), noised.level, kind, table)
    real = outputs.z0_w.float()
    if cfg.space == "pixel":
        scale, shift = vae.config.scaling_factor, getattr(vae.config, "shift_factor", None) or 0.0
        generated = vae.decode((generated / scale + shift).to(vae.dtype)).sample.float()
        with torch.no_grad():
            real = vae.decode((real / scale + shift).to(vae.dtype)).sample.float()
    stat = statistics_matching_loss(generated, real).mean()
    return cfg.weight * stat, {"statistics_loss": stat.item()}


class HgDpoRecipe(RecipeRun):
    """``setup()`` loads the base, adds the adapters and opens the real and held-out data; ``train()`` runs the
    curriculum; ``evaluate()`` scores the base and every stage and writes results.json and report.html."""

    def __init__(self, cfg: HgDpoConfig, output_dir: str | Path, resume: bool = True,
                 allow_config_change: bool = False) -> None:
        super().__init__(cfg, output_dir, resume, allow_config_change)
        self._reward = None

    def run(self) -> Path:
        try:
            with sigterm_as_interrupt():
                self.setup()
                return self.evaluate(self.train())
        finally:
            self.close()

    def close(self) -> None:
        """Free the pool's reward (its pose estimator)."""
        if self._reward is not None:
            self._reward.close()
            self._reward = None

    # -- setup

    def setup(self) -> None:
        with self.open_folder() as folder:
            self._setup()
            folder.commit()

    def _setup(self) -> None:
        from humantune.models.families import family_of
        from humantune.models.generation import generation_settings, load_pipeline, model_info, resolve_model

        cfg = self.cfg
        self.trainer = Trainer(self.out, cfg.stages[0].train.mixed_precision)
        source = resolve_model(cfg.base_model)
        self.pipe = pipe = load_pipeline(source)
        self.family = family_of(pipe, f"base_model '{cfg.base_model}'")
        for m in pipe.components.values():
            if isinstance(m, torch.nn.Module):
                m.requires_grad_(False).eval()
        pipe.to(self.trainer.device)
        info = model_info(Path(source)).get("generation", {}) if Path(source).is_dir() else {}
        denoiser = pipe.components[self.family.denoiser]
        self.resolution = cfg.resolution or info.get("height") or denoiser.config.sample_size * pipe.vae_scale_factor
        self.generation = generation_settings(source, cfg.generation.num_inference_steps,
                                              cfg.generation.guidance_scale, self.resolution)
        self.max_sequence_length = 0 if self.family.name != "sd3" else int(
            cfg.max_sequence_length or info.get("max_sequence_length", 77))
        if self.family.name == "sd3":
            self.generation["max_sequence_length"] = self.max_sequence_length
        self.objective = objective_for(pipe, self.family, cfg.flow)
        torch.manual_seed(cfg.stages[0].train.seed)   # the adapters' initial A matrices
        self.lora_groups = cfg.lora.groups(self.family)
        lora.add_adapters(pipe.components, self.lora_groups)
        self.adapted = {k: pipe.components[k] for k in self.lora_groups}
        self.initial_adapters = {k: [p.detach().clone() for p in lora.lora_parameters(m)]
                                 for k, m in self.adapted.items()}
        self.real = self._prepared(cfg.real_data, cfg.real_dir, "real", cfg.pool.prompts)
        self.heldout = self._prepared(cfg.heldout_data, cfg.heldout_dir, "heldout", cfg.eval.samples) \
            if cfg.eval.samples else []
        if cfg.eval.samples and len(self.heldout) < cfg.eval.samples:
            raise DataError(f"heldout_data has {len(self.heldout)} samples; eval.samples needs {cfg.eval.samples}")

    def _prepared(self, src: DataSource, folder: str | None, split: str, limit: int | None):
        """The samples (at the recipe's resolution) of ``folder`` (any layout open_pose_dataset reads), else of the
        data source ``src`` (a mannequin world is rendered into OUT/data/<split>)."""
        if folder is not None:
            from humantune.data.loaders import open_pose_dataset

            try:
                data = open_pose_dataset(folder)
            except DataError as e:
                raise DataError(f"{split}_dir: {e}") from None
        else:
            data = open_source(src, f"{split}_data", self.out / "data" / split, self.trainer.is_main,
                               self.trainer.accelerator.wait_for_everyone)
        n = len(data) if limit is None else min(limit, len(data))
        if n == 0:
            raise DataError(f"{split}_data has no samples")
        samples = [prepare_sample(data[i], self.resolution) for i in range(n)]
        if any(not s.caption.strip() for s in samples):
            raise DataError(f"{split}_data: every image needs a caption (the prompt it is the real image of)")
        return samples

    # -- the adapters

    def set_adapters(self, source: str | None) -> None:
        """Adapters to the weights of stage ``source`` (its saved LoRA), or to their fresh initial state."""
        if source is not None:
            load_adapter_weights(self.adapted, self.out / source / "lora")
            return
        with torch.no_grad():
            for k, m in self.adapted.items():
                for p, v in zip(lora.lora_parameters(m), self.initial_adapters[k]):
                    p.copy_(v)

    def adapters_digest(self) -> str:
        """sha256 of the adapter weights as they are now (what a pool drawn from the current model depends on)."""
        states = [lora.lora_state_dict(m) for m in self.adapted.values()]
        return digest([state[k] for state in states for k in sorted(state)])

    def generate(self, prompts: list[str], seeds: list[int], progress: bool = False) -> list[Image.Image]:
        from humantune.models.generation import generate_images

        modes = {m: m.training for m in self.pipe.components.values() if isinstance(m, torch.nn.Module)}
        for m in modes:
            m.eval()
        try:
            return generate_images(self.pipe, prompts, per_image_seeds=seeds, progress=progress,
                                   batch_size=self.cfg.pool.batch_size, **self.generation)
        finally:
            for m, was in modes.items():
                m.train(was)

    # -- train

    def train(self) -> dict[str, dict]:
        runner = staging.StageRunner(self.trainer, self.out, f"lora/{lora.LORA_WEIGHTS_NAME}", self.resume)
        return runner.run(self.cfg.stages, self._train_stage)

    def _pool(self, k: int, stage: StageConfig):
        """The scored pool of stage ``k``: drawn now from the current model (``pool.per_stage``, and always for the
        first stage), else the first stage's pool as it was drawn."""
        cfg, pc = self.cfg, self.cfg.pool
        prompts = [s.caption for s in self.real]
        if pc.per_stage or k == 0:
            folder = self.out / stage.name / "pool"
            fingerprint = {"base_model": cfg.base_model, "adapters": self.adapters_digest(), "prompts": prompts,
                           "n": pc.images_per_prompt, "seed": pc.seed, "generation": self.generation}
            if self.trainer.is_main:   # the main process draws the pool; the others read it
                with torch.no_grad():
                    pool_lib.generate_pool(self.pipe, prompts, pc.images_per_prompt, pc.seed, folder,
                                           self.generation, fingerprint, pc.batch_size, progress=True,
                                           generate=self.generate)
            self.trainer.accelerator.wait_for_everyone()
        else:
            folder = self.out / cfg.stages[0].name / "pool"
            fingerprint = json.loads((folder / "pool.json").read_text())
        images = pool_lib.read_pool(folder, len(prompts), pc.images_per_prompt)
        if self._reward is None:
            self._reward = pool_lib.build_reward(pc.reward, [s.image for s in self.real])
        scores = pool_lib.score_pool(images, prompts, self._reward, folder,
                                     {"pool": fingerprint, "reward": config_to_dict(pc.reward)}, self.trainer.is_main)
        return images, scores

    def _winners(self, stage: StageConfig, choices, pool) -> dict[int, Image.Image]:
        real = {c.prompt: Image.fromarray(self.real[c.prompt].image) for c in choices}
        if stage.kind != "normal":
            return {}
        if stage.normal_winner == "reconstruction":
            prompts = [c.prompt for c in choices]
            made = pool_lib.reconstruct(self.pipe, [real[p] for p in prompts], [self.real[p].caption for p in prompts],
                                        stage.reconstruction_strength, [self.cfg.pool.seed + p for p in prompts],
                                        self.generation)
            return dict(zip(prompts, made))
        if stage.blend_space == "latent":
            made = pool_lib.blend_latents(self.pipe.vae, [pool[c.prompt][c.winner_index] for c in choices],
                                          [real[c.prompt] for c in choices], stage.blend_alpha)
            return {c.prompt: im for c, im in zip(choices, made)}
        return {c.prompt: pool_lib.blend_pixels(pool[c.prompt][c.winner_index], real[c.prompt], stage.blend_alpha)
                for c in choices}

    def _train_stage(self, k: int, declared: StageConfig, source: str | None) -> dict:
        stage = effective_stage(declared, self.cfg.curriculum)
        stage_dir = self.out / stage.name
        self.set_adapters(source)
        pool, scores = self._pool(k, stage)
        choices = pool_lib.select_pairs(scores, stage.kind, stage.normal_winner, stage.hard_loser,
                                        seed=self.cfg.pool.seed + k)
        if not choices:
            raise DataError(f"stage {stage.name}: the pool gave no pairs (every prompt's best and worst images "
                            "scored the same); use more images per prompt or another reward")
        with torch.no_grad():
            winners = self._winners(stage, choices, pool)
        pairs = pool_lib.materialise_pairs(choices, pool, [Image.fromarray(s.image) for s in self.real],
                                           [s.caption for s in self.real], winners)
        if self.trainer.is_main:
            write_pairs_parquet(pairs, stage_dir / "pairs.parquet")
            write_json_atomic(stage_dir / "pairs.json", [dataclasses.asdict(c) for c in choices])
        train_cfg = staging.stage_train_config(stage, len(pairs), self.trainer.accelerator.num_processes)
        extra = None
        if stage.kind == "hard" and stage.statistics.weight > 0:
            extra = functools.partial(statistics_term, cfg=stage.statistics, vae=self.pipe.vae)
        result = train_dpo_stage(self.trainer, self.pipe, pairs, stage.dpo, train_cfg, stage_dir,
                                 lora_groups=self.lora_groups, objective=self.objective, resolution=self.resolution,
                                 max_sequence_length=self.max_sequence_length, extra_loss=extra,
                                 resume=self.resume, desc=f"hg-dpo {stage.name} ({stage.kind})")
        best = [row[c.winner_index] if c.winner_index is not None else np.nan for row, c in
                zip(scores[[c.prompt for c in choices]], choices)]
        return {**result.summary, "stage": stage.name, "kind": stage.kind, "init_from": source or "base",
                "reference": stage.dpo.reference, "pairs": len(pairs), "steps": train_cfg.max_steps,
                "pool_mean_reward": float(np.nanmean(scores)), "pool_best_reward": float(np.nanmean(best))
                if not np.isnan(best).all() else None,
                "statistics_weight": stage.statistics.weight if stage.kind == "hard" else 0.0}

    # -- evaluate

    def evaluate(self, summaries: dict[str, dict]) -> Path:
        evaluation, colour = self._evaluate_all()
        if self.trainer.is_main:
            write_json_atomic(self.out / "results.json", {
                "recipe": "hg-dpo", "base_model": self.cfg.base_model, "family": self.family.name,
                "curriculum": self.cfg.curriculum, "resolution": self.resolution, "training": summaries,
                "metrics": scores_only(evaluation), "colour_statistics_distance": colour,
                "config": config_to_dict(self.cfg)})
            self.write_report(summaries, evaluation, colour)
        self.trainer.accelerator.wait_for_everyone()
        return self.out / "report.html"

    def labels(self) -> list[str]:
        stages = [s.name for s in self.cfg.stages]
        return (["base"] if self.cfg.eval.include_base else []) + (stages[-1:] if self.cfg.eval_stages == "last"
                                                                   else stages)

    def _evaluate_all(self) -> tuple[dict, dict]:
        cfg, samples = self.cfg, self.heldout
        if not samples:
            return {}, {}
        heldout = HeldoutSet(
            captions=[s.caption for s in samples], seeds=[cfg.generation.seed + i for i in range(len(samples))],
            images=[s.image for s in samples],
            targets=[{"keypoints": s.keypoints, "bboxes": s.bboxes} for s in samples])
        reference = self.out / "eval" / "reference"
        if self.trainer.is_main:
            write_reference(heldout, reference, {"heldout": cfg.heldout_dir or config_to_dict(cfg.heldout_data),
                                                 "resolution": self.resolution, "samples": len(samples)})
        self.trainer.accelerator.wait_for_everyone()
        models, fingerprints = {}, {}
        for label in self.labels():
            source = None if label == "base" else self.out / label / "lora" / lora.LORA_WEIGHTS_NAME

            def generate(shard, label=label):
                seeds = [heldout.seeds[i] for i in shard]
                prompts = [heldout.captions[i] for i in shard]
                if label == "base":
                    with lora.adapters_disabled(*self.adapted.values()):
                        return self.generate(prompts, seeds, self.trainer.is_main)
                self.set_adapters(label)
                return self.generate(prompts, seeds, self.trainer.is_main)

            models[label] = generate
            fingerprints[label] = {"lora_mtime": None if source is None else source.stat().st_mtime,
                                   "base_model": cfg.base_model, "generation": self.generation,
                                   "eval": {k: v for k, v in config_to_dict(cfg.eval).items()
                                            if k not in ("include_base", "report_samples")},
                                   "heldout": cfg.heldout_dir or config_to_dict(cfg.heldout_data),
                                   "seed": cfg.generation.seed}
        from humantune.eval.pose_estimators import load_pose_estimator

        with load_pose_estimator("mediapipe") as estimator:
            evaluation = evaluate_models(models, heldout, self.out / "eval", fingerprints, reference,
                                         estimator=estimator if self.trainer.is_main else None,
                                         area_convention="bbox", **cfg.eval.evaluate_options())
        colour = {label: colour_statistics_distance(self.out / "eval" / label / "images", reference)
                  for label in evaluation} if self.trainer.is_main else {}
        return evaluation, colour


    # -- report

    def write_report(self, summaries: dict, evaluation: dict, colour: dict) -> Path:
        from humantune.report.curves import StageCurves, stage_curves_figure
        from humantune.report.html import HtmlReport
        from humantune.studies.heldout import metric_table_row
        from humantune.train.engine import read_metrics

        cfg, out = self.cfg, self.out
        report = HtmlReport(f"hg-dpo: {out.name}")
        report.paragraph(
            f"Base {cfg.base_model} ({self.family.pipeline}) with LoRA (denoiser rank {cfg.lora.denoiser.rank}"
            + (f", text encoder rank {cfg.lora.text_encoder.rank}" if cfg.lora.text_encoder else ", text encoder "
               "frozen") + f"); curriculum {cfg.curriculum}; real images: {cfg.real_dir or cfg.real_data.describe()}; pool: "
            f"{cfg.pool.images_per_prompt} images per prompt for {len(self.real)} prompts, reward "
            f"{cfg.pool.reward.name}. Diffusion-DPO loss and statistics-matching loss as shared/papers.md §2.")
        report.heading("Stages")
        rows = []
        for stage in cfg.stages:
            s = summaries.get(stage.name, {})
            metrics = read_metrics(out / stage.name)
            tail = [r["implicit_accuracy"] for r in metrics[-10:] if r.get("implicit_accuracy") is not None]
            rows.append({"stage": stage.name, "kind": s.get("kind"), "init from": s.get("init_from"),
                         "reference": s.get("reference"), "pairs": s.get("pairs"), "steps": s.get("steps"),
                         "β": f"{stage.dpo.beta:g} ({stage.dpo.beta_convention})",
                         "λ_stat": s.get("statistics_weight"), "pool mean reward": s.get("pool_mean_reward"),
                         "final loss": s.get("final_loss"),
                         "implicit accuracy (last 10)": float(np.mean(tail)) if tail else None,
                         "seconds": s.get("seconds")})
        report.table(rows)
        for stage in cfg.stages:
            self._pool_section(report, stage)
        if evaluation:
            report.heading(f"Held-out evaluation ({len(self.heldout)} prompts, 95 % intervals)")
            report.table([{**metric_table_row(label, summary), "colour distance": colour.get(label)}
                          for label, summary in evaluation.items()])
            report.paragraph("detected: MediaPipe detections per image; OKS against the held-out render's pose; "
                             "attribute_accuracy and world_fd are the mannequin world's offline stand-ins for CLIP "
                             "score and FID; colour distance: Σ_c |Δμ_c| + |Δσ_c| of RGB in [0, 1] between all "
                             "generated and all real pixels.")
            k = min(cfg.eval.report_samples, len(self.heldout))
            if k:
                items = []
                for i in range(k):
                    items.append((Image.fromarray(self.heldout[i].image), f"{i}: real"))
                    for label in evaluation:
                        items.append((Image.open(out / "eval" / label / "images" / f"{i:05d}.png").convert("RGB"),
                                      f"{i}: {label}"))
                report.heading("The stages side by side (same prompt and seed per row)", 3)
                report.paragraph(" | ".join(f"{i}: {self.heldout[i].caption}" for i in range(k)))
                report.image_grid(items, columns=len(evaluation) + 1, thumb_size=128)
        report.heading("Implicit accuracy")
        curves = []
        for stage in cfg.stages:
            metrics = read_metrics(out / stage.name)
            curves.append(StageCurves(stage.name, f"{stage.name} ({summaries.get(stage.name, {}).get('kind')})",
                                      metrics, [("implicit_accuracy", "-", "implicit accuracy"),
                                                ("reward_margin", "--", "reward margin")], metrics))
        report.figure(stage_curves_figure(curves, "implicit_accuracy", "implicit accuracy, every stage (raw)"))
        report.heading("Load the result")
        report.code(f"from humantune.models.generation import load_pipeline\n"
                    f"pipe = load_pipeline({cfg.base_model!r})  # or {self.family.pipeline}.from_pretrained(BASE)\n"
                    f"pipe.load_lora_weights({str(out / cfg.stages[-1].name / 'lora')!r})\n"
                    f"image = pipe({(self.heldout[0].caption if self.heldout else self.real[0].caption)!r}).images[0]")
        return report.save(out / "report.html")

    def _pool_section(self, report, stage: StageConfig, prompts: int = 3, pairs: int = 6) -> None:
        folder = self.out / stage.name
        if not (folder / "pool" / "scores.json").is_file():
            return
        scores = np.array([[np.nan if v is None else v for v in row]
                           for row in json.loads((folder / "pool" / "scores.json").read_text())["scores"]])
        n = scores.shape[1]
        report.heading(f"{stage.name}: pool (best first) and pairs", 3)
        items = []
        for p in range(min(prompts, len(scores))):
            items.append((Image.fromarray(self.real[p].image), f"{p}: real"))
            for j in pool_lib.pool_order(scores[p]):
                items.append((Image.open(folder / "pool" / "images" / f"{p:05d}_{j:02d}.png").convert("RGB"),
                              f"{p}.{j}: {scores[p, j]:.2f}"))
        report.image_grid(items, columns=n + 1, thumb_size=96)
        if (folder / "pairs.parquet").is_file():
            from humantune.data.preference_pairs import read_pairs

            shown = read_pairs(folder / "pairs.parquet", limit=pairs)
            report.image_grid([(im, f"{i}: {what}") for i, pair in enumerate(shown)
                               for im, what in ((pair.winner, "winner"), (pair.loser, "loser"))],
                              columns=4, thumb_size=96)


def colour_statistics_distance(generated_dir: Path, reference_dir: Path) -> float:
    """Set-level colour shift between generated and real images: L_stat of
    :func:`~humantune.losses.statistics_matching.statistics_matching_loss` with each set's pixels pooled into one
    sample, RGB in [0, 1] (Σ_c |μ_c^gen − μ_c^real| + |σ_c^gen − σ_c^real|)."""

    def pooled(folder: Path) -> torch.Tensor:
        files = sorted(p for p in folder.glob("[0-9]*.png") if not p.stem.endswith("_condition"))
        pixels = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), np.float32) / 255.0) for f in files]
        return torch.cat([p.reshape(-1, 3) for p in pixels]).T[None, :, :]   # (1, 3, all pixels)

    return float(statistics_matching_loss(pooled(generated_dir), pooled(reference_dir))[0])


def train_hg_dpo(cfg: HgDpoConfig, output_dir: str | Path, resume: bool = True,
                 allow_config_change: bool = False) -> Path:
    """Run the recipe; return the path of ``report.html``."""
    return HgDpoRecipe(cfg, output_dir, resume, allow_config_change).run()
