"""Recipe: multi-stage ControlNet pose fine-tuning with the heatmap-guided loss (``shared/papers.md`` §1).

``humantune train controlnet-pose --config configs/controlnet_pose/quick.yaml --output-dir DIR`` trains a
``ControlNetModel`` on OpenPose conditions next to a frozen StableDiffusionPipeline-family base (VAE, UNet and text
encoder frozen; only the ControlNet learns), in stages declared by the config and run in sequence:

- each stage names its loss, ``plain`` (ε-MSE) or ``heatmap`` (:func:`~humantune.losses.heatmap.heatmap_weighted_mse`,
  W = w·H + 1 with H from the target pose: Gaussian keypoint/limb heatmaps, the person mask or a blurred skeleton
  mask), its length (``epochs`` or ``train.max_steps``) and its optimisation (a nested
  :class:`~humantune.train.engine.TrainConfig`); stage k+1 starts from stage k's ControlNet (or from the stage
  named by ``init_from``, which lets two stages branch from one, as the benchmark's ablation does); the first
  stage starts from ``ControlNetModel.from_unet(base UNet)`` or from ``controlnet_init``;
- every stage runs on the shared engine in ``OUT/<stage>/`` (metrics.jsonl, TensorBoard, checkpoints, validation
  grids) and ends by saving ``OUT/<stage>/controlnet`` (``ControlNetModel.save_pretrained``, atomic);
- validation every epoch: fixed held-out prompts and poses, generated with ``StableDiffusionControlNetPipeline``,
  saved as a grid with the target skeleton drawn over each image, and scored by mean OKS / AP of MediaPipe
  detections against the target poses (logged by the engine);
- after the last stage every stage's ControlNet (and the base without one) generates the held-out set into
  ``OUT/eval/<stage>/images`` and :func:`humantune.studies.heldout.evaluate_models` scores it (default metrics: oks,
  attribute_accuracy, world_fd, ssim against the held-out images); ``OUT/results.json`` holds the numbers and
  ``OUT/report.html`` the metric table with 95 % intervals, side-by-side grids and the loss curves.

Running the same command again resumes: a stage whose ``controlnet`` directory exists is skipped, an interrupted
stage continues from its last checkpoint exactly (data order and noise are drawn from the seed and each sample's
position in the run), and an evaluation whose inputs did not change is reused. A changed config is refused unless
``--allow-config-change`` (evaluation settings excepted; :mod:`humantune.train.run_folder`); ``--no-resume``
starts every stage over.

Data: the mannequin world (rendered into ``OUT/data/train`` and ``OUT/data/heldout``, two seeds that must differ),
a humantune pose folder, a COCO keypoints JSON with its images and captions, or Captioned COCO-Pose parquet
files. Images are resized (short side) and centre-cropped to ``resolution``, keypoints and masks with them; the
condition is the dataset's OpenPose image when it has one, else :func:`~humantune.data.openpose.draw_openpose` of
the keypoints.

Assumes: a StableDiffusionPipeline-family base (UNet2DConditionModel, AutoencoderKL, CLIP text encoder; SD1.5 and
the shipped tiny-sd); square training images. With ``cache: true`` (the default) VAE latents (posterior mean and
std), text embeddings, conditions and latent heatmaps are computed once, in memory, on every process, so a step
costs only the UNet and the ControlNet; for large datasets (Captioned COCO-Pose) set ``cache: false`` and they are
computed per batch instead. Under ``accelerate launch`` validation runs on the main process, and the final
evaluation is split: every process generates a shard of the held-out set and the main process scores it. world_fd needs more than 128 evaluation images (the
width of its features). SDXL / SD3 ControlNets are not covered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from PIL import Image

from humantune.config import config_to_dict, option
from humantune.data.mannequin.world import MannequinConfig
from humantune.data.prepare import PreparedSample, prepare_sample
from humantune.data.sample import PoseSample
from humantune.data.sources import DataSource, open_source
from humantune.errors import ConfigError, DataError, HumantuneError
from humantune.io import atomic_path, write_json_atomic
from humantune.losses.denoising import per_sample_mse
from humantune.losses.heatmap import HeatmapConfig, heatmap_weighted_mse
from humantune.losses.objectives import DDPMObjective, Objective, sample_latents
from humantune.models.tiny import encode_prompt_sd
from humantune.recipes.pose_data import CachedData, StreamedData
from humantune.report.curves import StageCurves, stage_curves_figure
from humantune.report.grid import image_grid
from humantune.studies.heldout import EvalConfig, HeldoutSet, evaluate_models, metric_table_row, scores_only, write_reference
from humantune.train import stages as staging
from humantune.train.engine import Trainer, TrainConfig, read_metrics, read_validation
from humantune.train.run_folder import RecipeRun, sigterm_as_interrupt

CONDITIONING_CHANNELS = (16, 32, 96, 256)
"""diffusers' ControlNet condition encoder widths for an f8 VAE (three stride-2 convolutions); a VAE with factor
2^k uses the first k + 1 of them, so the condition always lands at latent resolution."""


# ---------------------------------------------------------------------------------------------------------- config


@dataclass
class StageConfig(staging.StageConfig):
    """One training stage: a plain or heatmap-guided loss."""

    loss: Literal["plain", "heatmap"] = option("plain", "plain: ε-MSE (stage 1 of the paper); heatmap: the "
                                                        "heatmap-guided loss (stage 2)")
    heatmap: HeatmapConfig = option(HeatmapConfig(), "heatmap settings (loss: heatmap)")
    zero_conv_lr_scale: float = option(
        1.0, "learning-rate multiplier for the zero-initialised convolutions (the condition encoder's conv_out, "
             "controlnet_down_blocks, controlnet_mid_block); > 1 lets a new ControlNet start steering in fewer steps")
    train: TrainConfig = option(
        TrainConfig(max_steps=100, batch_size=8, learning_rate=1e-4, lr_scheduler="constant", weight_decay=1e-2,
                    checkpoint_every=100, validate_every=0),
        "optimisation (validate_every 0: every epoch)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.zero_conv_lr_scale > 0:
            raise ValueError(f"zero_conv_lr_scale must be positive, got {self.zero_conv_lr_scale}")


@dataclass
class GenerationConfig:
    """How validation and evaluation images are generated (StableDiffusionControlNetPipeline)."""

    num_inference_steps: int | None = option(None, "sampling steps (null: the base's humantune.json, else 30)")
    guidance_scale: float | None = option(None, "classifier-free guidance (null: the base's humantune.json, else 7.5)")
    conditioning_scale: float = option(1.0, "controlnet_conditioning_scale")
    seed: int = option(0, "held-out sample i is generated with seed + i (the same for every stage)")

    def __post_init__(self) -> None:
        if self.num_inference_steps is not None and self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {self.num_inference_steps}")


@dataclass
class ValidationConfig:
    """Validation during training."""

    samples: int = option(4, "held-out samples (prompt + pose) generated at every validation (0: no validation)")


@dataclass
class ControlNetPoseConfig:
    """``humantune train controlnet-pose``: multi-stage ControlNet pose fine-tuning (papers.md §1)."""

    base_model: str = option("tiny-sd", "StableDiffusionPipeline-family base: shipped name, directory or hub id")
    controlnet_init: str | None = option(None, "start the first stage from this ControlNetModel (directory or hub "
                                               "id, e.g. an OpenPose ControlNet); null: ControlNetModel.from_unet")
    conditioning_channels: list[int] | None = option(
        None, "widths of a new ControlNet's condition encoder (null: diffusers' 16, 32, 96, 256, truncated to the "
              "VAE's downsampling factor)")
    resolution: int | None = option(None, "training and generation size (null: the base UNet's sample size × the "
                                          "VAE factor: 128 for tiny-sd, 512 for SD1.5)")
    train_data: DataSource = option(DataSource(), "training samples")
    heldout_data: DataSource = option(DataSource(world=MannequinConfig(n=200, seed=1)),
                                      "held-out samples for validation and evaluation (never the training data)")
    cache: bool = option(True, "precompute latents, text embeddings, conditions and heatmaps once, in memory "
                               "(false: per batch, for large datasets)")
    snr_gamma: float | None = option(None, "Min-SNR-γ loss weighting (null: none)")
    timestep_sampling: Literal["uniform", "cubic"] = option(
        "uniform", "training timesteps: uniform, or cubic (T2I-Adapter: t = (1 − u³)·T, mostly noisy steps, where "
                   "the pose decides the layout)")
    stages: list[StageConfig] = option(
        [StageConfig(name="stage1", loss="plain", epochs=4.0),
         StageConfig(name="stage2", loss="heatmap", epochs=2.0)],
        "stages run in sequence (paper: 4 epochs plain, then 2 epochs heatmap)")
    generation: GenerationConfig = option(GenerationConfig(), "validation / evaluation sampling")
    validation: ValidationConfig = option(ValidationConfig(), "validation during training")
    eval: EvalConfig = option(EvalConfig(), "evaluation after the last stage")

    def __post_init__(self) -> None:
        staging.check_stages(self.stages)
        if self.train_data.identity() == self.heldout_data.identity():
            what = "world.seed" if self.train_data.kind == "mannequin" else "path"
            raise ValueError(f"heldout_data.{what} must differ from train_data.{what}: the held-out set must not be "
                             "the training data")
        needed = max(self.validation.samples, self.eval.samples, self.eval.report_samples if self.eval.samples else 0)
        if self.heldout_data.kind == "mannequin" and self.heldout_data.world.n < needed:
            raise ValueError(f"heldout_data.world.n ({self.heldout_data.world.n}) must be at least the "
                             f"{needed} held-out samples that validation/eval use")
        if self.resolution is not None and self.resolution < 8:
            raise ValueError(f"resolution must be at least 8, got {self.resolution}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ValueError(f"snr_gamma must be positive, got {self.snr_gamma}")
        if self.validation.samples < 0:
            raise ValueError(f"validation.samples must be at least 0, got {self.validation.samples}")


# ---------------------------------------------------------------------------------------------------------- task


def zero_convolution_parameters(controlnet) -> list[torch.nn.Parameter]:
    """The parameters of a ControlNetModel's zero-initialised convolutions: the condition encoder's last one (the
    condition's way in) and the output ones (one per UNet skip, and the mid block's), which carry the residuals into
    the frozen UNet. Both ends start at zero, so each one's gradient waits for the other to grow."""
    modules = (controlnet.controlnet_cond_embedding.conv_out, controlnet.controlnet_down_blocks,
               controlnet.controlnet_mid_block)
    return [p for m in modules for p in m.parameters()]


class ControlNetTask:
    """One stage: the ControlNet trains on ``objective``'s loss (or the heatmap-guided loss), the base UNet, VAE and
    text encoder (``base``) are frozen; ``validate(controlnet, step, out_dir)`` scores the current weights."""

    def __init__(self, stage: StageConfig, controlnet, base: dict, objective: Objective, data: Sequence,
                 collate: Callable, validate: Callable[[Any, int, Path], dict]) -> None:
        self.stage, self.controlnet, self.base, self.objective = stage, controlnet, base, objective
        self.data, self._collate, self._validate = data, collate, validate

    def trainable_modules(self):
        return {"controlnet": self.controlnet}

    def param_groups(self):
        """The zero convolutions at ``stage.zero_conv_lr_scale`` × the learning rate, everything else at 1×."""
        zero = {id(p) for p in zero_convolution_parameters(self.controlnet)}
        params = [p for p in self.controlnet.parameters() if p.requires_grad]
        return [{"params": [p for p in params if id(p) not in zero], "lr_scale": 1.0},
                {"params": [p for p in params if id(p) in zero], "lr_scale": self.stage.zero_conv_lr_scale}]

    def frozen_modules(self):
        return dict(self.base)

    def attach(self, modules):
        self.model = modules["controlnet"]

    def dataset(self):
        return self.data

    def collate(self, items):
        return self._collate(items)

    def loss(self, batch, generator):
        vae, unet = self.base["vae"], self.base["unet"]
        if "latent_stats" in batch:
            stats = batch["latent_stats"]
        else:
            with torch.no_grad():
                pixels = batch["pixels"].float() / 127.5 - 1.0
                dist = vae.encode(pixels.to(dtype=vae.dtype)).latent_dist
            stats = torch.stack([dist.mean, dist.std], 1)
        z0 = sample_latents(stats, generator, vae.config.shift_factor or 0.0, vae.config.scaling_factor)
        noised = self.objective.noise(z0, generator)
        if "prompt_embeds" in batch:
            embeds = batch["prompt_embeds"]
        else:
            with torch.no_grad():
                embeds = encode_prompt_sd(self.base["text_encoder"], batch["input_ids"])
        down, mid = self.model(noised.noisy, noised.timesteps, encoder_hidden_states=embeds,
                               controlnet_cond=batch["condition"].float() / 255.0, return_dict=False)
        pred = unet(noised.noisy, noised.timesteps, encoder_hidden_states=embeds,
                    down_block_additional_residuals=[r.to(unet.dtype) for r in down],
                    mid_block_additional_residual=mid.to(unet.dtype)).sample
        mse = per_sample_mse(pred, noised.target)
        if self.stage.loss == "heatmap":
            h = self.stage.heatmap
            loss = heatmap_weighted_mse(pred, noised.target, batch["heatmap"], h.w, h.placement) * noised.weights
        else:
            loss = self.objective.loss(pred, noised)
        return loss.mean(), {"mse": mse.mean().item()}

    def validate(self, step, out_dir):
        return self._validate(self.model, step, out_dir)


# ---------------------------------------------------------------------------------------------------------- recipe


class ControlNetPoseRecipe(RecipeRun):
    """``setup()`` loads the frozen base and the data, ``train()`` runs the declared stages (each saved as a
    ControlNetModel), ``evaluate()`` scores every stage and the base on the held-out set and writes results.json
    and report.html."""

    def __init__(self, cfg: ControlNetPoseConfig, output_dir: str | Path, resume: bool = True,
                 allow_config_change: bool = False) -> None:
        super().__init__(cfg, output_dir, resume, allow_config_change)
        self._estimator = None
        self._cached: CachedData | None = None

    def run(self) -> Path:
        try:
            with sigterm_as_interrupt():
                self.setup()
                return self.evaluate(self.train())
        finally:
            if self._estimator is not None:
                self._estimator.close()

    # -- setup

    def setup(self) -> None:
        """Open the run folder (:func:`~humantune.train.run_folder.prepare_run_folder`), load the base, open the
        data; a failure here leaves no new folder behind."""
        cfg = self.cfg
        with self.open_folder() as folder:
            self.trainer = Trainer(self.out, cfg.stages[0].train.mixed_precision)
            self._load_base()
            self.train_set = self._open(cfg.train_data, "train")
            heldout_set = self._open(cfg.heldout_data, "heldout")
            needed = max(cfg.validation.samples, cfg.eval.samples)
            if len(heldout_set) < needed:
                raise DataError(f"heldout_data has {len(heldout_set)} samples; validation/eval need {needed}")
            self.heldout = [prepare_sample(heldout_set[i], self.resolution) for i in range(needed)]
            self.area_convention = "segment" if all(s.areas is not None for s in self.heldout) else "bbox"
            folder.commit()

    def _load_base(self) -> None:
        from diffusers import DDPMScheduler, StableDiffusionPipeline

        from humantune.models.generation import generation_settings, load_pipeline, resolve_model

        cfg = self.cfg
        pipe = load_pipeline(cfg.base_model)
        if not isinstance(pipe, StableDiffusionPipeline):
            raise ConfigError(f"base_model '{cfg.base_model}' is a {type(pipe).__name__}; controlnet-pose needs a "
                              "StableDiffusionPipeline-family base (UNet2DConditionModel), e.g. tiny-sd or SD1.5")
        self.pipe, self.parts = pipe, {k: pipe.components[k] for k in ("vae", "unet", "text_encoder", "tokenizer")}
        for k in ("vae", "unet", "text_encoder"):
            self.parts[k].requires_grad_(False).eval()
        self.objective = DDPMObjective(DDPMScheduler.from_config(pipe.scheduler.config), cfg.snr_gamma,
                                       cfg.timestep_sampling)
        self.vae_factor = 2 ** (len(self.parts["vae"].config.block_out_channels) - 1)
        self.resolution = cfg.resolution or self.parts["unet"].config.sample_size * self.vae_factor
        if self.resolution % self.vae_factor:
            raise ConfigError(f"resolution {self.resolution} must be a multiple of the base VAE's downsampling "
                              f"factor {self.vae_factor}")
        side = self.resolution // self.vae_factor
        self.latent_size = (side, side)
        g = cfg.generation
        self.generation_kwargs = generation_settings(resolve_model(cfg.base_model), g.num_inference_steps,
                                                     g.guidance_scale, self.resolution)

    def _open(self, src: DataSource, split: str) -> Sequence[PoseSample]:
        """The dataset of ``src``; a mannequin world is rendered into OUT/data/<split>."""
        return open_source(src, f"{split}_data", self.out / "data" / split, self.trainer.is_main,
                           self.trainer.accelerator.wait_for_everyone)

    # -- train

    def train(self) -> dict[str, dict]:
        """Run the stages (finished ones are skipped); return their summaries by name."""
        runner = staging.StageRunner(self.trainer, self.out, "controlnet/config.json", self.resume)
        return runner.run(self.cfg.stages, self._train_stage)

    def _stage_data(self, stage: StageConfig) -> tuple[Sequence, Callable]:
        heatmap = stage.heatmap if stage.loss == "heatmap" else None
        if not self.cfg.cache:
            data = StreamedData(self.train_set, self.resolution, self.parts["tokenizer"], self.latent_size, heatmap)
            return data, StreamedData.collate
        if self._cached is None:
            device = self.trainer.device
            self._cached = CachedData.encode(self.train_set, self.resolution, self.parts["vae"].to(device),
                                             self.parts["text_encoder"].to(device), self.parts["tokenizer"],
                                             self.trainer.is_main)
        key = None if heatmap is None else self._cached.heatmap(heatmap, self.latent_size, self.trainer.is_main)
        return range(len(self._cached)), self._cached.collate_fn(key)

    def _check_keypoints(self, stage: StageConfig, probe: int = 16) -> None:
        """A heatmap built from the target pose needs keypoints: without any, W = 1 and the stage would silently
        train with the plain loss."""
        n = min(probe, len(self.train_set))
        if not any((self.train_set[i].keypoints[..., 2] > 0).any() for i in range(n)):
            raise DataError(f"stage {stage.name}: heatmap kind '{stage.heatmap.kind}' is built from the target "
                            f"keypoints, and the first {n} training samples have none (Captioned COCO-Pose parquet "
                            "without a 'pose' column?); use heatmap kind mask or the plain loss")

    def _initial_controlnet(self, stage: StageConfig, source: str | None):
        from diffusers import ControlNetModel

        if source is not None:
            return ControlNetModel.from_pretrained(self.out / source / "controlnet")
        if self.cfg.controlnet_init is not None:
            try:
                return ControlNetModel.from_pretrained(self.cfg.controlnet_init)
            except (OSError, ValueError) as e:
                raise HumantuneError(f"controlnet_init '{self.cfg.controlnet_init}': cannot load a ControlNetModel "
                                     f"({str(e).splitlines()[0]})") from None
        levels = int(round(math.log2(self.vae_factor)))
        channels = self.cfg.conditioning_channels or list(CONDITIONING_CHANNELS[:levels + 1])
        if len(channels) != levels + 1:
            raise ConfigError(f"conditioning_channels {channels} must have {levels + 1} entries for a VAE with "
                              f"factor {self.vae_factor} (one stride-2 convolution between consecutive entries)")
        torch.manual_seed(stage.train.seed)  # the condition encoder's first layers are drawn at random
        return ControlNetModel.from_unet(self.parts["unet"], conditioning_embedding_out_channels=tuple(channels))

    def _train_stage(self, k: int, stage: StageConfig, source: str | None) -> dict:
        """Train one stage on the engine and save its ControlNet (``OUT/<stage>/controlnet``)."""
        if stage.loss == "heatmap" and stage.heatmap.kind != "mask":
            self._check_keypoints(stage)
        data, collate = self._stage_data(stage)
        train_cfg = staging.stage_train_config(stage, len(data), self.trainer.accelerator.num_processes)
        base = {k: self.parts[k] for k in ("unet", "vae", "text_encoder")}
        task = ControlNetTask(stage, self._initial_controlnet(stage, source), base, self.objective, data, collate,
                              self._validate_wrapped)
        summary = self.trainer.fit(task, train_cfg, self.out / stage.name, resume=self.resume,
                                   desc=f"controlnet-pose {stage.name}")
        summary.update(stage=stage.name, loss=stage.loss, epochs=stage.epochs, samples=len(data),
                       steps=train_cfg.max_steps,
                       init_from=source or self.cfg.controlnet_init or "ControlNetModel.from_unet(base UNet)")
        if self.trainer.is_main:
            with atomic_path(self.out / stage.name / "controlnet") as tmp:
                self.trainer.unwrap(task.model).save_pretrained(tmp, safe_serialization=True)
        return summary

    # -- generation and validation

    @property
    def estimator(self):
        if self._estimator is None:
            from humantune.eval.pose_estimators import load_pose_estimator

            self._estimator = load_pose_estimator("mediapipe")
        return self._estimator

    def pipeline(self, controlnet=None):
        """The base pipeline without its safety checker, or with ``controlnet`` a StableDiffusionControlNetPipeline
        of the same components."""
        from diffusers import StableDiffusionControlNetPipeline, StableDiffusionPipeline

        parts = {k: self.pipe.components[k] for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
        common = dict(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe = StableDiffusionPipeline(**common) if controlnet is None else \
            StableDiffusionControlNetPipeline(**common, controlnet=controlnet)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def generate(self, controlnet, samples: list[PreparedSample], progress: bool = False,
                 indices: Sequence[int] | None = None) -> list[Image.Image]:
        """One image per held-out sample (its caption; its condition when ``controlnet``), held-out sample i
        (``indices``: the samples' held-out indices, default 0, 1, …) with seed ``generation.seed + i``."""
        from humantune.models.generation import generate_images

        kwargs = dict(self.generation_kwargs)
        if controlnet is not None:
            kwargs["image"] = [Image.fromarray(s.condition) for s in samples]
            kwargs["controlnet_conditioning_scale"] = self.cfg.generation.conditioning_scale
        indices = range(len(samples)) if indices is None else indices
        seeds = [self.cfg.generation.seed + i for i in indices]
        with self.trainer.accelerator.autocast():
            return generate_images(self.pipeline(controlnet), [s.caption for s in samples], per_image_seeds=seeds,
                                   progress=progress, **kwargs)

    def targets(self, samples: list[PreparedSample]):
        from humantune.eval.pose_metrics import PoseGroundTruth

        return [PoseGroundTruth(s.keypoints.astype(np.float64), s.bboxes.astype(np.float64),
                                None if s.areas is None else s.areas.astype(np.float64)) for s in samples]

    def _validate_wrapped(self, model, step: int, out_dir: Path) -> dict[str, float]:
        net = self.trainer.unwrap(model)
        net.eval()
        try:
            return self.validate(net, step, out_dir)
        finally:
            net.train()

    def validate(self, controlnet, step: int, out_dir: Path) -> dict[str, float]:
        """Generate the validation samples, save the grid (target skeleton over each image) and return mean OKS
        and AP of MediaPipe detections against the targets."""
        from humantune.eval.pose_metrics import pose_agreement
        from humantune.report.overlay import draw_keypoints

        samples = self.heldout[:self.cfg.validation.samples]
        if not samples:
            return {}
        images = self.generate(controlnet, samples)
        out_dir.mkdir(parents=True, exist_ok=True)
        rows = [[Image.fromarray(s.condition) for s in samples], images,
                [draw_keypoints(im, s.keypoints) for im, s in zip(images, samples)]]
        image_grid(rows).save(out_dir / f"step_{step:06d}.png")
        agreement = pose_agreement(self.estimator.estimate_batch(images), self.targets(samples), self.area_convention)
        return {"oks": agreement.mean_oks, "ap": agreement.ap}

    # -- evaluate

    def evaluate(self, summaries: dict[str, dict]) -> Path:
        """Score the held-out set with every stage (and the base), write results.json and report.html. Under
        ``accelerate launch`` every process generates a shard of the held-out set; the main process scores and
        writes."""
        evaluation = self._evaluate_all()
        if not self.trainer.is_main:
            return self.out / "report.html"
        write_json_atomic(self.out / "results.json", {
            "recipe": "controlnet-pose", "base_model": self.cfg.base_model, "resolution": self.resolution,
            "eval_samples": self.cfg.eval.samples if evaluation else 0, "area_convention": self.area_convention,
            "training": summaries, "metrics": scores_only(evaluation),
            "validation": {s.name: read_validation(self.out / s.name) for s in self.cfg.stages},
            "config": config_to_dict(self.cfg),
        })
        return self._write_report(summaries, evaluation)

    def _evaluate_all(self) -> dict[str, dict]:
        """Generate and score the held-out set with every stage (and the base); reuse unchanged evaluations."""
        from diffusers import ControlNetModel

        cfg = self.cfg
        samples = self.heldout[:cfg.eval.samples]
        if not samples:
            return {}
        heldout = HeldoutSet(
            captions=[s.caption for s in samples], seeds=[cfg.generation.seed + i for i in range(len(samples))],
            images=[s.image for s in samples], conditions=[s.condition for s in samples],
            targets=[{"keypoints": s.keypoints, "bboxes": s.bboxes,
                      **({} if s.areas is None else {"areas": s.areas})} for s in samples])
        reference = self.out / "eval" / "reference"
        if self.trainer.is_main:
            write_reference(heldout, reference, {
                "heldout": config_to_dict(cfg.heldout_data), "resolution": self.resolution, "samples": len(samples)})
        self.trainer.accelerator.wait_for_everyone()
        for k in ("vae", "unet", "text_encoder"):
            self.parts[k].to(self.trainer.device)
        labels = (["base"] if cfg.eval.include_base else []) + [s.name for s in cfg.stages]
        models, fingerprints = {}, {}
        for label in labels:
            source = None if label == "base" else self.out / label / "controlnet"

            def generate(shard, source=source):
                net = None if source is None else ControlNetModel.from_pretrained(source).to(self.trainer.device).eval()
                return self.generate(net, [samples[i] for i in shard], progress=self.trainer.is_main, indices=shard)

            models[label] = generate
            fingerprints[label] = {
                "controlnet_mtime": None if source is None else (source / "config.json").stat().st_mtime,
                "generation": self.generation_kwargs,
                # which models are evaluated and how many samples the report shows do not change a model's scores
                "eval": {k: v for k, v in config_to_dict(cfg.eval).items() if k not in ("include_base",
                                                                                        "report_samples")},
                "heldout": config_to_dict(cfg.heldout_data), "seed": cfg.generation.seed,
                "conditioning_scale": cfg.generation.conditioning_scale,
            }
        return evaluate_models(models, heldout, self.out / "eval", fingerprints, reference,
                               estimator=self.estimator if self.trainer.is_main else None,
                               area_convention=self.area_convention,
                               **cfg.eval.evaluate_options())

    # -- report

    def _write_report(self, summaries: dict, evaluation: dict) -> Path:
        from humantune.report.html import HtmlReport
        from humantune.report.overlay import draw_keypoints

        cfg = self.cfg
        report = HtmlReport(f"controlnet-pose: {self.out.name}")
        report.paragraph(
            f"Base {cfg.base_model} (frozen: VAE, UNet, text encoder); ControlNet trained at {self.resolution}² on "
            f"{cfg.train_data.describe()}; held out: {cfg.heldout_data.describe()}. Heatmap-guided loss: "
            "L_h = mean ‖W ⊙ (ε − ε_θ)‖², W = w·H + 1 (shared/papers.md §1).")
        report.heading("Stages")
        rows = []
        for stage in cfg.stages:
            s = summaries.get(stage.name, {})
            val = read_validation(self.out / stage.name)
            rows.append({
                "stage": stage.name, "loss": stage.loss,
                "heatmap": (f"{stage.heatmap.kind}, w={stage.heatmap.w:g}, {stage.heatmap.placement}"
                            if stage.loss == "heatmap" else ""),
                "init from": s.get("init_from"), "epochs": stage.epochs, "steps": s.get("steps"),
                "batch": stage.train.batch_size, "lr": stage.train.learning_rate, "final loss": s.get("final_loss"),
                "seconds": s.get("seconds"), "last validation OKS": val[-1].get("oks") if val else None,
            })
        report.table(rows)
        if evaluation:
            report.heading(f"Held-out evaluation ({cfg.eval.samples} samples, area convention "
                           f"{self.area_convention}, 95 % intervals)")
            report.table([metric_table_row(label, summary) for label, summary in evaluation.items()])
            report.paragraph("OKS: mean OKS of MediaPipe detections vs the target pose (a missed person scores 0); "
                             "AP: COCO keypoint AP; detected: MediaPipe detections per image; attribute_accuracy "
                             "and world_fd are the mannequin world's offline substitutes for CLIP score and FID; "
                             "ssim is against the held-out image of the same pose. Per-label details: "
                             "eval/<label>/metrics/report.html.")
            k = min(cfg.eval.report_samples, cfg.eval.samples)
            if k:
                labels = list(evaluation)
                items = []
                for i in range(k):
                    s = self.heldout[i]
                    items.append((Image.fromarray(s.condition), f"{i}: condition"))
                    items.append((draw_keypoints(Image.fromarray(s.image), s.keypoints), f"{i}: held-out image"))
                    for label in labels:
                        im = Image.open(self.out / "eval" / label / "images" / f"{i:05d}.png").convert("RGB")
                        items.append((draw_keypoints(im, s.keypoints), f"{i}: {label}"))
                report.heading("Held-out samples (target skeleton drawn over each image)", 3)
                report.paragraph("Prompts: " + " | ".join(f"{i}: {self.heldout[i].caption}" for i in range(k)))
                report.image_grid(items, columns=len(labels) + 2, thumb_size=160)
        report.heading("Training curves")
        report.figure(stage_curves_figure([
            StageCurves(stage.name, f"{stage.name} ({stage.loss})", read_metrics(self.out / stage.name),
                        [("loss", "-", "loss")] + ([("mse", "--", "plain mse")] if stage.loss == "heatmap" else []),
                        read_validation(self.out / stage.name))
            for stage in cfg.stages], "oks", "validation OKS"))
        report.heading("Load the result")
        last = cfg.stages[-1].name
        report.code(
            "from diffusers import ControlNetModel, StableDiffusionControlNetPipeline\n"
            "from humantune.models.generation import load_pipeline, pose_condition\n"
            f"base = load_pipeline({cfg.base_model!r})\n"
            f"controlnet = ControlNetModel.from_pretrained({str(self.out / last / 'controlnet')!r})\n"
            "pipe = StableDiffusionControlNetPipeline(**base.components, controlnet=controlnet)\n"
            f"pose = pose_condition('pose.json', ({self.resolution}, {self.resolution}))  # 17×3 COCO keypoints\n"
            "image = pipe('a woman in a red shirt waving on the beach', image=pose).images[0]")
        return report.save(self.out / "report.html")


def train_controlnet_pose(cfg: ControlNetPoseConfig, output_dir: str | Path, resume: bool = True,
                          allow_config_change: bool = False) -> Path:
    """Run the recipe; return the path of ``report.html``."""
    return ControlNetPoseRecipe(cfg, output_dir, resume, allow_config_change).run()
