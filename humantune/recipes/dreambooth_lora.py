"""Recipe: DreamBooth + LoRA fine-tuning that corrects anomalous human images (``shared/papers.md`` §4).

For prompts where a text-to-image model draws broken bodies ("a man in a red shirt and blue jeans lying on the
grass"), train a LoRA on a handful of correct images of those prompts, then generate again. Three families:

- ``StableDiffusion3Pipeline`` (MMDiT): rectified-flow loss with logit-normal (or uniform) timestep sampling, an
  explicit loss weighting and an explicit choice of diffusers' output preconditioning
  (:class:`~humantune.losses.objectives.RectifiedFlowObjective`); LoRA on the transformer's attention
  projections (to_q/to_k/to_v/to_out.0 by default, optionally the text stream's add_*_proj/to_add_out);
- ``StableDiffusionPipeline`` (UNet): ε- (or v-) prediction loss, optional Min-SNR-γ; LoRA on to_q/to_k/to_v/to_out.0;
- ``StableDiffusionXLPipeline`` (UNet on both CLIP encoders): as SD1.5, with the pooled text embedding and the
  time_ids (H, W, 0, 0, H, W) of the training resolution (:func:`~humantune.models.families.denoise`); a
  text-encoder LoRA adapts both encoders and is saved for ``StableDiffusionXLPipeline.load_lora_weights``.

The family is read from the base model's pipeline class. Options: LoRA on the CLIP text encoder(s) with their own
learning rate; LoRA only on the projections that do not read the text embedding (``lora.denoiser.target_modules:
no_text``, :data:`~humantune.models.lora.TARGET_PRESETS`); prior preservation with class images the base model
generates once (cached in ``OUTPUT/class_images``), batched as [instance; class] halves
(:func:`training_sample_indices`, :func:`~humantune.losses.denoising.prior_preservation_loss`), for listed class
prompts or for ``prior.class_prompts: same_clothing`` — the instance prompts' own people, clothes and backgrounds in
other actions (:func:`same_clothing_prompts`), so the prior holds the clothing words to what the base draws for them.

Instance data: a folder of correct images (captions from its ``metadata.jsonl`` / sidecar ``.txt``, else the
instance prompt), or, by default, images the mannequin world renders for each instance prompt
(:func:`humantune.data.mannequin.prompted.collect`, written to ``OUTPUT/instance_images``).

Caches: every image is VAE-encoded once (posterior mean and std) and every caption encoded once (or tokenised, when
the text encoders train), all stored **by sample index**; a batch is a list of sample indices and reads latents and
text from the same index, so shuffling cannot pair an image with another image's caption (diffusers' SD3 script
indexes its latent cache by step while the loader shuffles — the pitfall of ``shared/papers.md`` §4).

Runs on the shared engine (resume by running the same command again, TensorBoard + metrics.jsonl, progress bar,
atomic checkpoints). Writes ``OUTPUT/lora/pytorch_lora_weights.safetensors`` (+ ``README.md``,
``humantune_lora.json``), which stock diffusers loads with ``pipe.load_lora_weights(OUTPUT/lora)``, validation
grids (top row base, bottom row tuned, same seeds) in ``OUTPUT/dreambooth/validation/`` and ``OUTPUT/config.yaml``.

Assumes: square training images of ``resolution`` (folder images are resized on their short side, bilinear, then
centre-cropped, as diffusers' ``--center_crop``); no random flips (the latent cache holds one view per image);
SD3 timesteps are continuous (t = 1000·σ, as the tiny bases were pretrained; diffusers' script rounds σ to the
scheduler's 1000-step table); a T5 encoder, when the base has one, is only used once to cache its embeddings and is
never trained; under mixed precision the frozen base weights are loaded in that precision and the adapters kept in
float32; checkpoints hold only the adapters (the engine drops frozen weights from them).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch
from PIL import Image

from humantune.config import config_to_dict, option
from humantune.data.mannequin.prompted import CAPTION_ACTIONS, compose_request, parse_caption
from humantune.data.prepare import resize_centre_crop, to_chw
from humantune.errors import ConfigError, HumantuneError
from humantune.io import json_safe, new_output_dir, write_json_atomic, write_jsonl_atomic, write_text_atomic
from humantune.losses.denoising import prior_preservation_loss
from humantune.losses.objectives import (
    DDPMObjective, FlowMatchingConfig, Objective, RectifiedFlowObjective, sample_latents,
)
from humantune.models import lora
from humantune.models.encoding import PromptConditioning, encode_latent_stats
from humantune.models.families import Family, denoise, family_of
from humantune.report.grid import image_grid
from humantune.train.engine import Trainer, TrainConfig
from humantune.train.run_folder import RecipeRun, sigterm_as_interrupt
from humantune.train.sampling import BatchRandom

DEFAULT_TARGET_PROMPTS = [
    "a man in a red shirt and blue jeans lying on the grass",
    "a woman in a blue dress lying on the grass",
    "a man in a white t-shirt and black trousers lying on the street",
    "a woman in a green shirt and gray shorts lying on the street",
]
"""Lying-pose prompts in the mannequin caption grammar: what the tiny bases draw badly (configs/anomaly)."""

DEFAULT_CONTROL_PROMPTS = [
    "a man in a red shirt and blue jeans standing on the grass",
    "a woman in a blue dress walking on the street",
    "a man in a white t-shirt and black trousers walking on the grass",
    "a woman in a green shirt and gray shorts standing on the street",
]
"""Standing / walking prompts with the same clothes: what the fine-tune must not hurt."""

DEFAULT_CLASS_PROMPTS = [
    "a woman in a yellow t-shirt and black trousers standing on the beach",
    "a boy in an orange shirt and blue jeans walking on the grass",
    "a man in a purple shirt and white shorts sitting in a room",
    "a girl in a pink dress waving on the street",
]
"""Prior-preservation class prompts: people in other clothes and poses, disjoint from the control prompts so that
those stay a held-out check."""

SAME_CLOTHING = "same_clothing"
DEFAULT_CLASS_ACTIONS = ["standing", "walking", "sitting"]
"""Actions of the ``same_clothing`` class prompts: the common upright and sitting poses."""


def same_clothing_prompts(instance_prompts: list[str], actions: list[str]) -> list[str]:
    """Class prompts that keep each instance prompt's people, clothes and background and replace every person's
    action by each of ``actions`` (caption action labels, :data:`~humantune.data.mannequin.prompted.CAPTION_ACTIONS`),
    action-major (all instance prompts standing, then walking, ...), without duplicates and without the instance
    prompts themselves. ValueError (one line) for a prompt outside the mannequin caption grammar, an unknown action,
    or when no prompt is left."""
    known = sorted(set(CAPTION_ACTIONS.values()))
    unknown = [a for a in actions if a not in known]
    if unknown:
        raise ValueError(f"prior.class_actions: unknown action(s) {unknown} (known: {', '.join(known)})")
    requests = []
    for prompt in instance_prompts:
        try:
            requests.append(parse_caption(prompt))
        except ValueError as e:
            raise ValueError(f"prior.class_prompts: {SAME_CLOTHING} needs instance prompts in the mannequin caption "
                             f"grammar: {' '.join(str(e).split())}") from None
    out = []
    for action in actions:
        for request in requests:
            people = tuple(dataclasses.replace(p, action=action) for p in request.people)
            out.append(compose_request(dataclasses.replace(request, people=people)))
    instance = set(instance_prompts)
    out = [p for p in dict.fromkeys(out) if p not in instance]
    if not out:
        raise ValueError(f"prior.class_prompts: {SAME_CLOTHING} with class_actions {actions} gives no prompt other "
                         "than the instance prompts")
    return out


@dataclass
class InstanceConfig:
    """The correct images (DreamBooth's instance data)."""

    prompts: list[str] = option(DEFAULT_TARGET_PROMPTS, "instance prompts: the failing prompts to correct. Rendered: "
                                "images are drawn for each. Folder: the caption of images that have none (then "
                                "exactly one prompt)")
    dir: Path | None = option(None, "folder of correct images (captions from metadata.jsonl or sidecar .txt "
                                    "files, e.g. the output of `humantune anomaly collect`); null: render them "
                                    "from the mannequin world into OUTPUT/instance_images")
    images_per_prompt: int = option(5, "rendered images per prompt (the paper used 5 correct images)")
    appearance: Literal["prompt", "random"] = option("prompt", "rendered people dressed as the prompt says "
                                                               "(captions = the prompt), or in random clothes with "
                                                               "only action and background from the prompt")
    seed: int = option(0, "mannequin-world seed of the rendered images (prompt p uses seed + p)")


@dataclass
class PriorConfig:
    """DreamBooth prior preservation: also fit what the base model itself draws for class prompts."""

    enabled: bool = option(False, "train with the prior-preservation loss (off in the paper's settings)")
    class_prompts: list[str] | Literal["same_clothing"] = option(
        DEFAULT_CLASS_PROMPTS, "prompts of the class images (cycled), or same_clothing: the instance prompts' people, "
                               "clothes and backgrounds doing each of class_actions instead (mannequin caption "
                               "grammar), so the prior keeps the clothing words' meaning")
    class_actions: list[str] = option(DEFAULT_CLASS_ACTIONS, "actions of the same_clothing class prompts (caption "
                                                             "action labels: standing, walking, sitting, ...)")
    num_class_images: int = option(40, "class images the base model generates (cached in OUTPUT/class_images)")
    loss_weight: float = option(1.0, "λ of the prior loss")
    seed: int = option(1000, "seed of class image i: seed + i")

    def prompts(self, instance_prompts: list[str]) -> list[str]:
        """The class prompts: the listed ones, or :func:`same_clothing_prompts` of ``instance_prompts``."""
        if self.class_prompts == SAME_CLOTHING:
            return same_clothing_prompts(instance_prompts, self.class_actions)
        return list(self.class_prompts)


@dataclass
class DreamBoothLoraConfig:
    """``humantune train dreambooth-lora``: correct a failing prompt with DreamBooth + LoRA."""

    base_model: str = option("tiny-sd3", "the model to correct: shipped name (humantune models list), pipeline "
                                         "directory or hub id; StableDiffusionPipeline, StableDiffusionXLPipeline "
                                         "or StableDiffusion3Pipeline")
    instance: InstanceConfig = option(InstanceConfig(), "the correct images")
    prior: PriorConfig = option(PriorConfig(), "prior preservation")
    lora: lora.PipelineLoraConfig = option(
        lora.PipelineLoraConfig(denoiser=lora.LoraConfig(rank=4)),
        "LoRA adapters: the denoiser's (the paper: rank 4 on to_q/to_k/to_v/to_out.0; target_modules: no_text "
        "leaves out the projections that read the text) and optionally the text encoders' (with their own "
        "learning_rate, e.g. 5e-6)")
    flow: FlowMatchingConfig = option(FlowMatchingConfig(precondition_outputs=True),
                                      "flow-matching loss (StableDiffusion3Pipeline; diffusers' settings)")
    snr_gamma: float | None = option(None, "Min-SNR-γ weighting of the ε loss (UNet pipelines: SD1.5, SDXL); null: "
                                           "plain MSE")
    resolution: int | None = option(None, "training (and validation) image size; null: the model's own (its "
                                          "humantune.json, else the denoiser's sample size × VAE factor)")
    max_sequence_length: int | None = option(None, "SD3 T5 slots; null: the model's humantune.json, else 77")
    train: TrainConfig = option(TrainConfig(max_steps=500, batch_size=1, gradient_accumulation_steps=4,
                                            learning_rate=1e-4, lr_scheduler="constant", weight_decay=1e-4,
                                            checkpoint_every=100),
                                "optimisation (defaults: the paper's 500 steps, batch 1 × accumulation 4, lr 1e-4 "
                                "constant)")
    validation_prompts: list[str] | None = option(None, "prompts of the validation grids; null: the instance "
                                                        "prompts (up to 4) and 2 standing/walking control prompts")
    inference_steps: int | None = option(None, "sampling steps for validation and class images; null: the model's")
    guidance_scale: float | None = option(None, "guidance for validation and class images; null: the model's")

    def __post_init__(self) -> None:
        if self.instance.images_per_prompt < 1:
            raise ValueError(f"instance.images_per_prompt must be at least 1, got {self.instance.images_per_prompt}")
        if not self.instance.prompts and self.instance.dir is None:
            raise ValueError("instance.prompts is empty: give the prompts to correct (or instance.dir)")
        if self.prior.enabled and (self.prior.num_class_images < 1 or not self.prior.class_prompts):
            raise ValueError("prior.enabled needs prior.num_class_images ≥ 1 and at least one prior.class_prompts")
        if self.prior.enabled:
            self.prior.prompts(self.instance.prompts)   # a same_clothing prompt outside the grammar fails here
        if self.resolution is not None and self.resolution < 8:
            raise ValueError(f"resolution must be at least 8 pixels, got {self.resolution}")


# ---------------------------------------------------------------------------------------------------------- batching


def training_sample_indices(items: torch.Tensor, num_instance: int, num_class: int = 0) -> torch.Tensor:
    """Sample indices of a batch of dataset items. Samples 0 … I−1 are the instance images, I … I+C−1 the class
    images. Without prior preservation (C = 0) item k is instance sample k mod I; with it, the batch is
    [instance halves; class halves]: item k gives instance sample k mod I and class sample I + (k mod C), instance
    first, as DreamBooth's collate does."""
    items = items.long().cpu()
    instance = items % num_instance
    if num_class == 0:
        return instance
    return torch.cat([instance, num_instance + items % num_class])


# ---------------------------------------------------------------------------------------------------------- the task


class DreamBoothLoraTask:
    """One engine stage: the LoRA-adapted denoiser (and text encoders) on cached latents and text.

    ``adapted``: component name → module with an adapter (trained); ``frozen``: the other modules the loss runs;
    ``latents``: VAE posteriors by sample index (:func:`~humantune.models.encoding.encode_latent_stats`);
    ``text``: the captions' conditioning by sample index; ``validate(step, out_dir)`` draws validation grids."""

    def __init__(self, family: Family, adapted: dict, frozen: dict, groups: dict[str, lora.LoraConfig],
                 learning_rate: float, objective: Objective, latents: torch.Tensor, latent_shift: float,
                 latent_scale: float, text: PromptConditioning, num_instance: int, num_class: int,
                 prior_loss_weight: float, validate: Callable[[int, Path], dict],
                 image_size: tuple[int, int] | None = None):
        self.family, self.adapted, self.frozen, self.groups = family, adapted, frozen, groups
        self.learning_rate, self.objective = learning_rate, objective
        self.latents, self.latent_shift, self.latent_scale, self.text = latents, latent_shift, latent_scale, text
        self.num_instance, self.num_class, self.prior_loss_weight = num_instance, num_class, prior_loss_weight
        self._validate = validate
        self.image_size = image_size   # (H, W) in pixels: SDXL's time_ids

    def trainable_modules(self):
        return dict(self.adapted)

    def frozen_modules(self):
        return dict(self.frozen)

    def attach(self, modules):
        self.modules = modules

    def param_groups(self):
        """One optimizer group per distinct learning rate (the denoiser's adapter at ``learning_rate``, the text
        encoders' at their own); the engine scales each through the same schedule."""
        return lora.lora_param_groups(self.adapted, self.groups, self.learning_rate)

    def dataset(self):
        return range(max(self.num_instance, self.num_class) if self.num_class else self.num_instance)

    def collate(self, items):
        return torch.tensor(items)

    def batch_inputs(self, samples: torch.Tensor, generator: torch.Generator | BatchRandom):
        """Latents z₀ (sampled from each sample's cached posterior) and the text conditioning of ``samples``, both
        read at the same sample indices."""
        z0 = sample_latents(self.latents[samples], generator, self.latent_shift, self.latent_scale)
        return z0, self.text(samples, self.modules)

    def loss(self, batch, generator):
        device = batch.device
        samples = training_sample_indices(batch, self.num_instance, self.num_class)
        z0, (cond, pooled) = self.batch_inputs(samples, generator)
        noised = self.objective.noise(z0.to(device), generator)
        output = denoise(self.family, self.modules[self.family.denoiser], noised.noisy, noised.timesteps,
                         cond.to(device), None if pooled is None else pooled.to(device), self.image_size)
        per_sample = self.objective.loss(output, noised)
        if self.num_class:
            total, instance, prior = prior_preservation_loss(per_sample, self.prior_loss_weight)
            return total, {"instance_loss": instance.item(), "prior_loss": prior.item()}
        return per_sample.mean(), {}

    def validate(self, step, out_dir):
        return self._validate(step, out_dir)


# ---------------------------------------------------------------------------------------------------------- recipe


class DreamBoothLoraRecipe(RecipeRun):
    """setup() loads the base, gathers instance (and class) images, fills the caches and adds the adapters;
    train() runs the engine; save() writes the LoRA."""

    cfg: DreamBoothLoraConfig

    def run(self) -> Path:
        t0 = time.perf_counter()
        with sigterm_as_interrupt():
            self.setup()
            summary = self.train()
            return self.save(summary, time.perf_counter() - t0)

    # -- setup

    def setup(self) -> None:
        """Open the run folder (:func:`~humantune.train.run_folder.prepare_run_folder`; a failure here leaves no new
        folder behind), then load the base, gather the images, fill the caches and add the adapters."""
        with self.open_folder() as folder:
            self._setup()
            folder.commit()

    def _setup(self) -> None:
        from humantune.models.generation import load_pipeline, resolve_model

        cfg = self.cfg
        self.trainer = Trainer(self.out, cfg.train.mixed_precision)   # fails fast on fp16 without a GPU
        self.source = resolve_model(cfg.base_model)
        # Under mixed precision the frozen base weights load in that precision (as diffusers' scripts cast them);
        # the adapters are kept in float32 for the optimizer.
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.train.mixed_precision, torch.float32)
        self.pipe = pipe = load_pipeline(self.source, dtype=dtype)
        self.family = family_of(pipe, f"base_model '{cfg.base_model}'")
        for m in pipe.components.values():
            if isinstance(m, torch.nn.Module):
                m.requires_grad_(False).eval()
        pipe.to(self.trainer.device)
        self.resolution = self._resolution()
        self.generation = self._generation_settings()
        with self.trainer.accelerator.main_process_first():   # the main process renders / generates, others read
            instance = self._instance_samples()
            klass = self._class_samples() if cfg.prior.enabled else []
        self.num_instance, self.num_class = len(instance), len(klass)
        self.captions = [c for _, c in instance + klass]
        vae = pipe.vae
        self.latent_scale = vae.config.scaling_factor
        self.latent_shift = (vae.config.shift_factor or 0.0) if self.family.name == "sd3" else 0.0
        pixels = torch.stack([to_chw(im) for im, _ in instance + klass])
        self.latents = encode_latent_stats(vae.float(), pixels)
        self.max_sequence_length = self._max_sequence_length()
        self.text = PromptConditioning(pipe, self.family, self.captions, cfg.lora.text_encoder is not None,
                                       self.max_sequence_length, self.trainer.device)
        if self.family.objective == "ddpm":
            from diffusers import DDPMScheduler

            self.objective = DDPMObjective(DDPMScheduler.from_config(pipe.scheduler.config), cfg.snr_gamma)
        else:
            shift = cfg.flow.shift if cfg.flow.shift is not None else float(pipe.scheduler.config.get("shift", 1.0))
            self.objective = RectifiedFlowObjective(cfg.flow, shift)
        torch.manual_seed(cfg.train.seed)   # the adapters' initial A matrices
        self.lora_groups = cfg.lora.groups(self.family)
        self.adapted = lora.add_adapters(pipe.components, self.lora_groups)
        self._base_validation = None

    def _resolution(self) -> int:
        from humantune.models.generation import model_info

        cfg, pipe = self.cfg, self.pipe
        size = cfg.resolution or model_info(Path(self.source)).get("generation", {}).get("height")
        denoiser = pipe.components[self.family.denoiser]
        if size is None:
            size = denoiser.config.sample_size * pipe.vae_scale_factor
        if self.family.name == "sd3":
            multiple = pipe.vae_scale_factor * denoiser.config.patch_size
        else:
            multiple = pipe.vae_scale_factor * 2 ** (len(denoiser.config.block_out_channels) - 1)
        if size % multiple:
            raise ConfigError(f"resolution {size} must be a multiple of {multiple} for {cfg.base_model} "
                              f"(VAE factor × the denoiser's downsampling)")
        return int(size)

    def _generation_settings(self) -> dict:
        from humantune.models.generation import generation_settings

        return generation_settings(self.source, self.cfg.inference_steps, self.cfg.guidance_scale, self.resolution)

    def _max_sequence_length(self) -> int:
        if self.family.name != "sd3":
            return 0
        if self.cfg.max_sequence_length is not None:
            return self.cfg.max_sequence_length
        return int(self.generation.get("max_sequence_length", 77))

    def _instance_samples(self) -> list[tuple[Image.Image, str]]:
        """(image at the training resolution, caption) of every instance image."""
        from humantune.data.loaders import open_pose_dataset
        from humantune.data.mannequin.prompted import collect

        ic = self.cfg.instance
        folder = ic.dir
        if folder is None:
            folder = self.out / "instance_images"
            wanted = {"source": "mannequin world", "prompts": ic.prompts, "n_per_prompt": ic.images_per_prompt,
                      "seed": ic.seed, "size": self.resolution, "appearance": ic.appearance}
            manifest = folder / "collect.json"
            have = json.loads(manifest.read_text()) if manifest.is_file() else {}
            if any(have.get(k) != v for k, v in wanted.items()):
                collect(ic.prompts, folder, ic.images_per_prompt, ic.seed, self.resolution, appearance=ic.appearance,
                        overwrite=True)
        dataset = open_pose_dataset(folder)
        samples = []
        for i in range(len(dataset)):
            s = dataset[i]
            caption = s.caption.strip()
            if not caption:
                if len(ic.prompts) != 1:
                    raise HumantuneError(f"instance image {s.sample_id or i} in {folder} has no caption: give exactly "
                                         f"one instance.prompts entry to caption it (got {len(ic.prompts)})")
                caption = ic.prompts[0]
            samples.append((resize_centre_crop(s.image, self.resolution), caption))
        return samples

    def _class_samples(self) -> list[tuple[Image.Image, str]]:
        """Class images generated by the base model (before any adapter exists), cached in OUTPUT/class_images."""
        from humantune.data.loaders import open_pose_dataset
        from humantune.models.generation import generate_images

        pc = self.cfg.prior
        folder = self.out / "class_images"
        class_prompts = pc.prompts(self.cfg.instance.prompts)
        prompts = [class_prompts[i % len(class_prompts)] for i in range(pc.num_class_images)]
        wanted = {"base_model": str(self.cfg.base_model), "prompts": prompts, "seed": pc.seed,
                  "generation": self.generation}
        manifest = folder / "class.json"
        if not manifest.is_file() or json.loads(manifest.read_text()) != json.loads(json.dumps(wanted)):
            images = generate_images(self.pipe, prompts, per_image_seeds=[pc.seed + i for i in range(len(prompts))],
                                     **self.generation)
            with new_output_dir(folder, overwrite=True) as tmp:
                (tmp / "images").mkdir()
                rows = []
                for i, (image, prompt) in enumerate(zip(images, prompts)):
                    image.save(tmp / "images" / f"{i:06d}.png")
                    rows.append({"file_name": f"images/{i:06d}.png", "text": prompt, "seed": pc.seed + i})
                write_jsonl_atomic(tmp / "metadata.jsonl", rows)
                write_json_atomic(tmp / "class.json", wanted)
        dataset = open_pose_dataset(folder)
        return [(resize_centre_crop(dataset[i].image, self.resolution), dataset[i].caption) for i in range(len(dataset))]

    # -- train

    def train(self) -> dict:
        cfg, pipe = self.cfg, self.pipe
        adapted = {k: pipe.components[k] for k in self.adapted}
        frozen = {"vae": pipe.vae}
        if cfg.lora.text_encoder is None:
            frozen.update({k: pipe.components[k] for k in self.family.text_encoders})
        self.task = DreamBoothLoraTask(
            self.family, adapted, frozen, self.lora_groups, cfg.train.learning_rate, self.objective, self.latents,
            self.latent_shift, self.latent_scale, self.text, self.num_instance, self.num_class,
            cfg.prior.loss_weight, self.validation_grid, (self.resolution, self.resolution))
        return self.trainer.fit(self.task, cfg.train, self.out / "dreambooth", resume=self.resume,
                                desc=f"dreambooth-lora ({self.family.name})")

    def validation_prompts(self) -> list[str]:
        cfg = self.cfg
        if cfg.validation_prompts is not None:
            return cfg.validation_prompts
        own = cfg.instance.prompts[:4] or list(dict.fromkeys(self.captions[:self.num_instance]))[:4]
        return list(dict.fromkeys(own + DEFAULT_CONTROL_PROMPTS[:2]))

    def validation_grid(self, step: int, out_dir: Path) -> dict:
        """Generate the validation prompts with the adapters off (base, once) and on (tuned), same seeds; save a
        two-row grid ``samples_step_XXXXXX.png``."""
        from humantune.models.generation import generate_images

        pipe = self.pipe
        modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
        training = {m: m.training for m in modules}
        for m in modules:
            m.eval()
        prompts = self.validation_prompts()
        try:
            with self.trainer.accelerator.autocast():
                if self._base_validation is None:
                    with lora.adapters_disabled(*[pipe.components[k] for k in self.adapted]):
                        self._base_validation = generate_images(pipe, prompts, seed=0, progress=False,
                                                                **self.generation)
                tuned = generate_images(pipe, prompts, seed=0, progress=False, **self.generation)
        finally:
            for m, was in training.items():
                m.train(was)
        out_dir.mkdir(parents=True, exist_ok=True)
        image_grid([self._base_validation, tuned]).save(out_dir / f"samples_step_{step:06d}.png")
        return {}

    # -- save

    def save(self, summary: dict, seconds: float) -> Path:
        """Write the LoRA directory (main process)."""
        cfg = self.cfg
        lora_dir = self.out / "lora"
        if not self.trainer.is_main:
            return lora_dir
        components = {k: self.trainer.unwrap(self.pipe.components[k]) for k in self.adapted}
        lora.save_lora(type(self.pipe), lora_dir, components)
        info = {
            "recipe": "dreambooth-lora", "base_model": str(cfg.base_model), "family": self.family.name,
            "pipeline": type(self.pipe).__name__, "resolution": self.resolution,
            "instance_prompts": cfg.instance.prompts, "num_instance_images": self.num_instance,
            "num_class_images": self.num_class, "class_prompts": list(dict.fromkeys(self.captions[self.num_instance:])),
            "adapted_layers": {k: len(v) for k, v in self.adapted.items()},
            "lora": config_to_dict(cfg.lora), "steps": cfg.train.max_steps, "summary": summary,
            "generation": self.generation, "seconds": seconds,
        }
        write_json_atomic(lora_dir / "humantune_lora.json", json_safe(info))
        write_text_atomic(lora_dir / "README.md", lora_card(info))
        return lora_dir


# ---------------------------------------------------------------------------------------------------------- helpers


def lora_card(info: dict) -> str:
    """The LoRA directory's README: what it is, how to load it, how it was trained."""
    if info["family"] == "sd3":
        load = ("from diffusers import StableDiffusion3Pipeline\n"
                "pipe = StableDiffusion3Pipeline.from_pretrained(BASE)  # a T5-less tiny base also needs "
                "text_encoder_3=None, tokenizer_3=None\n")
    else:
        cls = info["pipeline"]
        load = f"from diffusers import {cls}\npipe = {cls}.from_pretrained(BASE)\n"
    data = f"{info['num_instance_images']} correct images"
    if info["num_class_images"]:
        data += f" and {info['num_class_images']} class images (prior preservation)"
    prompts = "\n".join(f"- {p}" for p in info["instance_prompts"])
    return (f"# DreamBooth-LoRA for {info['base_model']}\n\n"
            f"LoRA adapters trained by `humantune train dreambooth-lora` ({info['pipeline']}, {info['resolution']}² "
            f"images, {info['steps']} steps, rank {info['lora']['denoiser']['rank']}) on {data} for:\n\n{prompts}\n\n"
            f"Load with stock diffusers:\n\n```python\n{load}pipe.load_lora_weights(\"PATH/TO/THIS/FOLDER\")\n```\n\n"
            "Compare it with its base: `humantune anomaly compare --base BASE --tuned PATH/TO/THIS/FOLDER "
            "--prompts PROMPTS.txt`. Settings: `humantune_lora.json`.\n")


def train_dreambooth_lora(cfg: DreamBoothLoraConfig, output_dir: str | Path, resume: bool = True,
                          allow_config_change: bool = False) -> Path:
    """Run the recipe; return the LoRA directory (``OUTPUT/lora``)."""
    return DreamBoothLoraRecipe(cfg, output_dir, resume, allow_config_change).run()
