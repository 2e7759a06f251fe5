"""Recipe: DreamBooth + LoRA fine-tuning that corrects anomalous human images (``shared/papers.md`` §4).

For prompts where a text-to-image model draws broken bodies ("a man in a red shirt and blue jeans lying on the
grass"), train a LoRA on a handful of correct images of those prompts, then generate again. Both families:

- ``StableDiffusion3Pipeline`` (MMDiT): rectified-flow loss with logit-normal (or uniform) timestep sampling, an
  explicit loss weighting and an explicit choice of diffusers' output preconditioning
  (:func:`~humantune.losses.denoising.flow_matching_dreambooth_loss`); LoRA on the transformer's attention
  projections (to_q/to_k/to_v/to_out.0 by default, optionally the text stream's add_*_proj/to_add_out);
- ``StableDiffusionPipeline`` (UNet): ε- (or v-) prediction loss, optional Min-SNR-γ; LoRA on to_q/to_k/to_v/to_out.0.

The family is read from the base model's pipeline class. Options: LoRA on the CLIP text encoder(s) with their own
learning rate; prior preservation with class images the base model generates once (cached in
``OUTPUT/class_images``), batched as [instance; class] halves (:func:`training_sample_indices`,
:func:`~humantune.losses.denoising.prior_preservation_loss`).

Instance data: a folder of correct images (captions from its ``metadata.jsonl`` / sidecar ``.txt``, else the
instance prompt), or, by default, images the mannequin world renders for each instance prompt
(:func:`humantune.eval.anomaly_study.collect`, written to ``OUTPUT/instance_images``).

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

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from humantune.config import config_to_dict, option, save_config
from humantune.errors import ConfigError, HumantuneError
from humantune.io import new_output_dir, write_json_atomic, write_jsonl_atomic, write_text_atomic
from humantune.losses.denoising import (
    ddpm_noisy_latents, ddpm_target, flow_matching_dreambooth_loss, flow_matching_interpolate, logit_normal_sigmas,
    min_snr_weights, per_sample_mse, prior_preservation_loss, shift_sigmas,
)
from humantune.models import lora, tiny
from humantune.train.engine import Trainer, TrainConfig

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

FAMILIES = {"StableDiffusionPipeline": "sd", "StableDiffusion3Pipeline": "sd3"}
DENOISER = {"sd": "unet", "sd3": "transformer"}
TEXT_ENCODERS = {"sd": ("text_encoder",), "sd3": ("text_encoder", "text_encoder_2")}


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
    class_prompts: list[str] = option(DEFAULT_CLASS_PROMPTS, "prompts of the class images (cycled)")
    num_class_images: int = option(40, "class images the base model generates (cached in OUTPUT/class_images)")
    loss_weight: float = option(1.0, "λ of the prior loss")
    seed: int = option(1000, "seed of class image i: seed + i")


@dataclass
class LoraSettings:
    """LoRA adapters: ΔW = (α/r)·B·A on the target layers (humantune.models.lora)."""

    rank: int = option(4, "LoRA rank r (the paper: 4)")
    alpha: float | None = option(None, "LoRA α (update scale α/r); null: α = r")
    dropout: float = option(0.0, "dropout on the adapter input")
    init: Literal["gaussian", "default"] = option("gaussian", "A ~ N(0, 1/r) (diffusers' scripts) or peft's "
                                                              "Kaiming-uniform; B = 0 either way")
    target_modules: list[str] | None = option(None, "denoiser layer names (suffixes) to adapt; null: attention "
                                                    "projections to_q, to_k, to_v, to_out.0 (SD3: add "
                                                    "add_q_proj, add_k_proj, add_v_proj, to_add_out for the text "
                                                    "stream)")
    text_encoder: bool = option(False, "also train LoRA on the CLIP text encoder(s)")
    text_encoder_target_modules: list[str] | None = option(None, "text-encoder layers; null: q_proj, k_proj, "
                                                                 "v_proj, out_proj")
    text_encoder_lr: float = option(5e-6, "peak learning rate of the text-encoder LoRA (same schedule shape)")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"rank must be at least 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be within [0, 1), got {self.dropout}")
        if self.text_encoder_lr <= 0:
            raise ValueError(f"text_encoder_lr must be positive, got {self.text_encoder_lr}")


@dataclass
class FlowMatchingConfig:
    """Rectified-flow training of the SD3 family (diffusers' train_dreambooth_lora_sd3.py settings by default)."""

    timestep_sampling: Literal["logit_normal", "uniform"] = option("logit_normal", "σ = sigmoid(u), u ~ N(m, s²); "
                                                                                   "or σ ~ U(0, 1)")
    logit_mean: float = option(0.0, "m of the logit-normal density")
    logit_std: float = option(1.0, "s of the logit-normal density")
    shift: float | None = option(None, "timestep shift σ' = sσ/(1 + (s−1)σ); null: the base scheduler's shift")
    weighting: Literal["none", "sigma_sqrt", "cosmap"] = option("none", "loss weight w(σ): 1, σ⁻², or "
                                                                        "2/(π(1 − 2σ + 2σ²))")
    precondition_outputs: bool = option(True, "diffusers' default: train x_σ − σ·v_θ against x_0 (the velocity "
                                              "loss × σ²); false: v_θ against ε − x_0")


@dataclass
class DreamBoothLoraConfig:
    """``humantune train dreambooth-lora``: correct a failing prompt with DreamBooth + LoRA."""

    base_model: str = option("tiny-sd3", "the model to correct: shipped name (humantune models list), pipeline "
                                         "directory or hub id; StableDiffusionPipeline or StableDiffusion3Pipeline")
    instance: InstanceConfig = option(InstanceConfig(), "the correct images")
    prior: PriorConfig = option(PriorConfig(), "prior preservation")
    lora: LoraSettings = option(LoraSettings(), "LoRA adapters")
    flow: FlowMatchingConfig = option(FlowMatchingConfig(), "flow-matching loss (StableDiffusion3Pipeline)")
    snr_gamma: float | None = option(None, "Min-SNR-γ weighting of the ε loss (StableDiffusionPipeline); null: "
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
    """One engine stage: the LoRA-adapted denoiser (and text encoders) on cached latents and text."""

    def __init__(self, recipe: DreamBoothLoraRecipe):
        self.r = recipe

    def trainable_modules(self):
        r = self.r
        out = {DENOISER[r.family]: r.pipe.components[DENOISER[r.family]]}
        if r.cfg.lora.text_encoder:
            out.update({k: r.pipe.components[k] for k in TEXT_ENCODERS[r.family]})
        return out

    def frozen_modules(self):
        r = self.r
        frozen = {"vae": r.pipe.vae}
        if not r.cfg.lora.text_encoder:
            frozen.update({k: r.pipe.components[k] for k in TEXT_ENCODERS[r.family]})
        return frozen

    def attach(self, modules):
        self.modules = modules

    def param_groups(self):
        """The denoiser's adapter at ``learning_rate``; the text encoders' at ``lora.text_encoder_lr`` (the engine
        scales each group's rate through the same schedule)."""
        r, lc = self.r, self.r.cfg.lora
        groups = [{"params": lora.lora_parameters(r.pipe.components[DENOISER[r.family]])}]
        if lc.text_encoder:
            text = [p for k in TEXT_ENCODERS[r.family] for p in lora.lora_parameters(r.pipe.components[k])]
            groups.append({"params": text, "lr_scale": lc.text_encoder_lr / r.cfg.train.learning_rate})
        return groups

    def dataset(self):
        r = self.r
        return range(max(r.num_instance, r.num_class) if r.num_class else r.num_instance)

    def collate(self, items):
        return torch.tensor(items)

    def batch_inputs(self, samples: torch.Tensor, generator: torch.Generator):
        """Latents z₀ (sampled from each sample's cached posterior) and the text conditioning of ``samples``, both
        read at the same sample indices."""
        r = self.r
        stats = r.latents[samples]
        z0 = stats[:, 0] + stats[:, 1] * torch.randn(stats[:, 0].shape, generator=generator)
        z0 = (z0 - r.latent_shift) * r.latent_scale
        return z0, r.text_conditioning(samples, self.modules)

    def loss(self, batch, generator):
        r, cfg = self.r, self.r.cfg
        device = batch.device
        samples = training_sample_indices(batch, r.num_instance, r.num_class)
        z0, (cond, pooled) = self.batch_inputs(samples, generator)
        z0 = z0.to(device)
        cond = cond.to(device)
        noise = torch.randn(z0.shape, generator=generator).to(device)
        denoiser = self.modules[DENOISER[r.family]]
        if r.family == "sd":
            sched = r.noise_scheduler
            t = torch.randint(0, sched.config.num_train_timesteps, (len(z0),), generator=generator).to(device)
            pred = denoiser(ddpm_noisy_latents(z0, noise, sched.alphas_cumprod, t), t, cond).sample
            prediction = sched.config.prediction_type
            per_sample = per_sample_mse(pred, ddpm_target(z0, noise, sched.alphas_cumprod, t, prediction))
            if cfg.snr_gamma is not None:
                per_sample = per_sample * min_snr_weights(sched.alphas_cumprod, t, cfg.snr_gamma, prediction).to(device)
        else:
            f = cfg.flow
            if f.timestep_sampling == "logit_normal":
                sigmas = logit_normal_sigmas(len(z0), f.logit_mean, f.logit_std, generator)
            else:
                sigmas = torch.rand(len(z0), generator=generator)
            sigmas = shift_sigmas(sigmas, r.flow_shift).to(device)
            pred = denoiser(hidden_states=flow_matching_interpolate(z0, noise, sigmas), encoder_hidden_states=cond,
                            pooled_projections=pooled.to(device), timestep=sigmas * 1000).sample
            per_sample = flow_matching_dreambooth_loss(pred, z0, noise, sigmas, f.weighting, f.precondition_outputs)
        if r.num_class:
            total, instance, prior = prior_preservation_loss(per_sample, cfg.prior.loss_weight)
            return total, {"instance_loss": instance.item(), "prior_loss": prior.item()}
        return per_sample.mean(), {}

    def validate(self, step, out_dir):
        return self.r.validation_grid(step, out_dir)


# ---------------------------------------------------------------------------------------------------------- recipe


class DreamBoothLoraRecipe:
    """setup() loads the base, gathers instance (and class) images, fills the caches and adds the adapters;
    train() runs the engine; save() writes the LoRA."""

    def __init__(self, cfg: DreamBoothLoraConfig, output_dir: str | Path, resume: bool = True):
        self.cfg, self.out, self.resume = cfg, Path(output_dir), resume

    def run(self) -> Path:
        t0 = time.perf_counter()
        self.setup()
        summary = self.train()
        return self.save(summary, time.perf_counter() - t0)

    # -- setup

    def setup(self) -> None:
        from humantune.models.generation import load_pipeline, resolve_model

        cfg, out = self.cfg, self.out
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        self.trainer = Trainer(out, cfg.train.mixed_precision)   # fails fast on fp16 without a GPU
        self.source = resolve_model(cfg.base_model)
        # Under mixed precision the frozen base weights load in that precision (as diffusers' scripts cast them);
        # the adapters are kept in float32 for the optimizer.
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.train.mixed_precision, torch.float32)
        self.pipe = pipe = load_pipeline(self.source, dtype=dtype)
        name = type(pipe).__name__
        if name not in FAMILIES:
            raise HumantuneError(f"base_model '{cfg.base_model}' is a {name}; dreambooth-lora trains "
                                 f"{' or '.join(FAMILIES)}")
        self.family = FAMILIES[name]
        for m in pipe.components.values():
            if isinstance(m, torch.nn.Module):
                m.requires_grad_(False).eval()
        pipe.to(self.trainer.device)
        self.resolution = self._resolution()
        self.generation = self._generation_settings()
        instance = self._instance_samples()
        klass = self._class_samples() if cfg.prior.enabled else []
        self.num_instance, self.num_class = len(instance), len(klass)
        images = [im for im, _ in instance + klass]
        self.captions = [c for _, c in instance + klass]
        vae = pipe.vae
        self.latent_scale = vae.config.scaling_factor
        self.latent_shift = (vae.config.shift_factor or 0.0) if self.family == "sd3" else 0.0
        self.latents = encode_latents(vae.float(), images)
        self.max_sequence_length = self._max_sequence_length()
        self._cache_text()
        if self.family == "sd":
            from diffusers import DDPMScheduler

            self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        else:
            self.flow_shift = cfg.flow.shift if cfg.flow.shift is not None else \
                float(pipe.scheduler.config.get("shift", 1.0))
        torch.manual_seed(cfg.train.seed)   # the adapters' initial A matrices
        lc = cfg.lora
        self.adapted = {DENOISER[self.family]: lora.add_lora(pipe.components[DENOISER[self.family]], lc.rank, lc.alpha,
                                                             lc.dropout, lc.init, lc.target_modules)}
        if lc.text_encoder:
            for k in TEXT_ENCODERS[self.family]:
                self.adapted[k] = lora.add_lora(pipe.components[k], lc.rank, lc.alpha, lc.dropout, lc.init,
                                                lc.text_encoder_target_modules)
        for k in self.adapted:
            for p in lora.lora_parameters(pipe.components[k]):
                p.data = p.data.float()
        self._base_validation = None

    def _resolution(self) -> int:
        from humantune.models.generation import model_info

        cfg, pipe = self.cfg, self.pipe
        size = cfg.resolution or model_info(Path(self.source)).get("generation", {}).get("height")
        denoiser = pipe.components[DENOISER[self.family]]
        if size is None:
            size = denoiser.config.sample_size * pipe.vae_scale_factor
        if self.family == "sd3":
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
        if self.family != "sd3":
            return 0
        if self.cfg.max_sequence_length is not None:
            return self.cfg.max_sequence_length
        return int(self.generation.get("max_sequence_length", 77))

    def _instance_samples(self) -> list[tuple[Image.Image, str]]:
        """(image at the training resolution, caption) of every instance image."""
        from humantune.data.loaders import open_pose_dataset
        from humantune.eval.anomaly_study import collect

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
            samples.append((square_resize(s.image, self.resolution), caption))
        return samples

    def _class_samples(self) -> list[tuple[Image.Image, str]]:
        """Class images generated by the base model (before any adapter exists), cached in OUTPUT/class_images."""
        from humantune.data.loaders import open_pose_dataset
        from humantune.models.generation import generate_images

        pc = self.cfg.prior
        folder = self.out / "class_images"
        prompts = [pc.class_prompts[i % len(pc.class_prompts)] for i in range(pc.num_class_images)]
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
        return [(square_resize(dataset[i].image, self.resolution), dataset[i].caption) for i in range(len(dataset))]

    @torch.no_grad()
    def _cache_text(self) -> None:
        """Text conditioning per sample index: the pipeline's own prompt embeddings when the text encoders are
        frozen; token ids (and, for SD3, the T5 part of the embeddings) when their LoRA trains."""
        pipe, captions, device = self.pipe, self.captions, self.trainer.device
        unique = list(dict.fromkeys(captions))
        where = torch.tensor([unique.index(c) for c in captions])
        if self.family == "sd":
            embeds = torch.cat([pipe.encode_prompt(unique[i:i + 16], device, 1, False)[0].float().cpu()
                                for i in range(0, len(unique), 16)])
            pooled = None
        else:
            parts = [pipe.encode_prompt(unique[i:i + 16], None, None, device=device, do_classifier_free_guidance=False,
                                        max_sequence_length=self.max_sequence_length)
                     for i in range(0, len(unique), 16)]
            embeds = torch.cat([p[0].float().cpu() for p in parts])
            pooled = torch.cat([p[2].float().cpu() for p in parts])
        self.text_embeds = embeds[where]
        self.text_pooled = None if pooled is None else pooled[where]
        if self.cfg.lora.text_encoder:
            self.token_ids = [tokenize(pipe.components[k], captions) for k in tiny.TOKENIZERS[self.family]]

    def text_conditioning(self, samples: torch.Tensor, modules: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(encoder hidden states, pooled projections or None) of ``samples``, read by sample index."""
        if not self.cfg.lora.text_encoder:
            return self.text_embeds[samples], None if self.text_pooled is None else self.text_pooled[samples]
        device = next(modules["text_encoder"].parameters()).device
        ids = [t[samples].to(device) for t in self.token_ids]
        if self.family == "sd":
            return tiny.encode_prompt_sd(modules["text_encoder"], ids[0]), None
        length = self.max_sequence_length
        denoiser = self.pipe.components["transformer"]
        clip, pooled = tiny.encode_prompt_sd3(modules["text_encoder"], modules["text_encoder_2"], ids[0], ids[1],
                                              denoiser.config.joint_attention_dim, length)
        t5 = self.text_embeds[samples][:, -length:].to(device)   # zeros without T5, as the pipeline fills them
        return torch.cat([clip[:, :-length], t5], dim=1), pooled

    # -- train

    def train(self) -> dict:
        cfg = self.cfg
        self.task = DreamBoothLoraTask(self)
        return self.trainer.fit(self.task, cfg.train, self.out / "dreambooth", resume=self.resume,
                                desc=f"dreambooth-lora ({self.family})")

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
        w, h = tuned[0].size
        grid = Image.new("RGB", (w * len(prompts), 2 * h))
        for i, (b, t) in enumerate(zip(self._base_validation, tuned)):
            grid.paste(b, (i * w, 0))
            grid.paste(t, (i * w, h))
        grid.save(out_dir / f"samples_step_{step:06d}.png")
        return {}

    # -- save

    def save(self, summary: dict, seconds: float) -> Path:
        cfg = self.cfg
        lora_dir = self.out / "lora"
        components = {k: self.trainer.unwrap(self.pipe.components[k]) for k in self.adapted}
        lora.save_lora(type(self.pipe), lora_dir, components)
        info = {
            "recipe": "dreambooth-lora", "base_model": str(cfg.base_model), "family": self.family,
            "pipeline": type(self.pipe).__name__, "resolution": self.resolution,
            "instance_prompts": cfg.instance.prompts, "num_instance_images": self.num_instance,
            "num_class_images": self.num_class, "adapted_layers": {k: len(v) for k, v in self.adapted.items()},
            "lora": config_to_dict(cfg.lora), "steps": cfg.train.max_steps, "summary": summary,
            "generation": self.generation, "seconds": seconds,
        }
        write_json_atomic(lora_dir / "humantune_lora.json", json.loads(json.dumps(info, default=str)))
        write_text_atomic(lora_dir / "README.md", lora_card(info))
        return lora_dir


# ---------------------------------------------------------------------------------------------------------- helpers


def square_resize(image: Image.Image, size: int) -> Image.Image:
    """Resize the short side to ``size`` (bilinear), then crop the centre square (diffusers' ``--center_crop``)."""
    image = image.convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
    if (w, h) != (size, size):
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BILINEAR)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


@torch.no_grad()
def encode_latents(vae, images: list[Image.Image], batch_size: int = 16) -> torch.Tensor:
    """VAE posterior mean and std of every image, by sample index: (N, 2, C, h, w), float32 on the CPU."""
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.stack([np.asarray(im) for im in images[i:i + batch_size]])).permute(0, 3, 1, 2)
        x = (x.float() / 127.5 - 1.0).to(vae.device, vae.dtype)
        d = vae.encode(x).latent_dist
        out.append(torch.stack([d.mean, d.std], 1).float().cpu())
    return torch.cat(out)


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def lora_card(info: dict) -> str:
    """The LoRA directory's README: what it is, how to load it, how it was trained."""
    if info["family"] == "sd3":
        load = ("from diffusers import StableDiffusion3Pipeline\n"
                "pipe = StableDiffusion3Pipeline.from_pretrained(BASE)  # a T5-less tiny base also needs "
                "text_encoder_3=None, tokenizer_3=None\n")
    else:
        load = "from diffusers import StableDiffusionPipeline\npipe = StableDiffusionPipeline.from_pretrained(BASE)\n"
    data = f"{info['num_instance_images']} correct images"
    if info["num_class_images"]:
        data += f" and {info['num_class_images']} class images (prior preservation)"
    prompts = "\n".join(f"- {p}" for p in info["instance_prompts"])
    return (f"# DreamBooth-LoRA for {info['base_model']}\n\n"
            f"LoRA adapters trained by `humantune train dreambooth-lora` ({info['pipeline']}, {info['resolution']}² "
            f"images, {info['steps']} steps, rank {info['lora']['rank']}) on {data} for:\n\n{prompts}\n\n"
            f"Load with stock diffusers:\n\n```python\n{load}pipe.load_lora_weights(\"PATH/TO/THIS/FOLDER\")\n```\n\n"
            "Compare it with its base: `humantune anomaly compare --base BASE --tuned PATH/TO/THIS/FOLDER "
            "--prompts PROMPTS.txt`. Settings: `humantune_lora.json`.\n")


def train_dreambooth_lora(cfg: DreamBoothLoraConfig, output_dir: str | Path, resume: bool = True) -> Path:
    """Run the recipe; return the LoRA directory (``OUTPUT/lora``)."""
    return DreamBoothLoraRecipe(cfg, output_dir, resume).run()
