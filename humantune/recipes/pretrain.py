"""Recipe: pretrain a tiny text-to-image base from scratch on the mannequin world.

Builds the bases every other recipe fine-tunes when the real ones (SD1.5, SD3) cannot be downloaded:

- ``family: sd``  → a ``StableDiffusionPipeline`` directory (AutoencoderKL, UNet2DConditionModel, CLIPTextModel +
  CLIPTokenizer, DDIM scheduler), trained with the ε-prediction loss;
- ``family: sd3`` → a ``StableDiffusion3Pipeline`` directory (SD3Transformer2DModel, two CLIPTextModelWithProjection
  + tokenizers, no T5, FlowMatchEulerDiscreteScheduler, AutoencoderKL), trained with the rectified-flow loss and
  logit-normal timestep sampling.

Stages, each on the shared engine and each resumable (run the same command again):

1. ``world``: render the mannequin world (skipped when ``world_dir`` points at one, or it is already there);
2. ``vae``: train the AutoencoderKL on random crops (L1 + β·KL; skipped when ``vae_path`` is given);
3. ``denoiser``: encode every image once (latent mean and std cached by sample index), then train the denoiser and
   the text encoder(s) jointly from scratch, dropping captions with probability ``caption_dropout`` so
   classifier-free guidance works.

Writes ``OUTPUT/model`` (the pipeline, with ``README.md`` model card and ``humantune.json`` generation defaults),
``OUTPUT/config.yaml`` and the stage directories (metrics, TensorBoard logs, checkpoints, validation grids).

Under ``accelerate launch`` the main process renders the world, builds the tokenizer and writes every file; each
process encodes the latents itself (the main one caches them).

Assumes: square images of ``world.size``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from humantune.config import option
from humantune.data.mannequin.world import MannequinConfig, write_world
from humantune.data.readers import load_rgb, read_jsonl
from humantune.errors import HumantuneError
from humantune.io import atomic_path, write_json_atomic
from humantune.losses.objectives import DDPMObjective, FlowMatchingConfig, RectifiedFlowObjective, sample_latents
from humantune.models import tiny
from humantune.models.encoding import cached_tensors, digest, encode_latent_stats, to_unit_range
from humantune.models.families import FAMILIES
from humantune.models.tokenizer import build_clip_tokenizer, caption_words, tokenize
from humantune.report.grid import image_grid
from humantune.train.engine import Trainer, TrainConfig
from humantune.train.run_folder import RecipeRun, sigterm_as_interrupt

DEFAULT_VALIDATION_PROMPTS = [
    "a man in a red shirt and blue jeans standing on the grass",
    "a woman in a green dress walking on the street",
    "a boy in a yellow t-shirt and black shorts waving on the beach",
    "a woman in a blue shirt and white trousers sitting in a room",
    "a man in a white t-shirt and black trousers running on the street",
    "a girl in a pink dress dancing on the grass",
    "a man in an orange shirt and gray trousers lying on the grass",
    "a woman in a purple t-shirt and blue jeans lying on the street",
]


@dataclass
class PretrainConfig:
    """``humantune pretrain``: a tiny base from scratch on the mannequin world."""

    family: Literal["sd", "sd3"] = option("sd", "sd: StableDiffusionPipeline (UNet, ε); sd3: StableDiffusion3Pipeline "
                                                 "(MMDiT, flow matching)")
    name: str = option("tiny-sd", "model name (model card title)")
    world: MannequinConfig = option(MannequinConfig(n=6000, seed=0), "the mannequin world to render and train on")
    world_dir: Path | None = option(None, "train on this existing world folder instead of rendering one")
    vae_path: Path | None = option(None, "reuse this trained AutoencoderKL directory (skips the vae stage)")
    init_from: Path | None = option(None, "continue training this pipeline directory of the same family (its VAE, "
                                          "tokenizer(s), text encoder(s) and denoiser; a new optimizer), e.g. a "
                                          "shipped base: humantune models path tiny-sd")
    vae: tiny.VaeConfig = option(tiny.VaeConfig(), "VAE architecture")
    text: tiny.TextEncoderConfig = option(tiny.TextEncoderConfig(), "text encoder architecture")
    unet: tiny.UNetConfig = option(tiny.UNetConfig(), "UNet architecture (family sd)")
    transformer: tiny.TransformerConfig = option(tiny.TransformerConfig(), "MMDiT architecture (family sd3)")
    vae_crop: int = option(64, "VAE training crop size (fully convolutional: crops train as whole images do)")
    vae_kl_weight: float = option(1e-6, "β of the KL term of the VAE loss")
    vae_train: TrainConfig = option(TrainConfig(max_steps=2000, batch_size=16, learning_rate=1e-3,
                                                lr_scheduler="cosine", lr_warmup_steps=100, checkpoint_every=500),
                                    "VAE stage optimisation")
    train: TrainConfig = option(TrainConfig(max_steps=4000, batch_size=32, learning_rate=5e-4, lr_scheduler="cosine",
                                            lr_warmup_steps=200, ema_decay=0.999, checkpoint_every=500,
                                            validate_every=1000),
                                "denoiser stage optimisation")
    caption_dropout: float = option(0.1, "probability of training on the empty prompt (for classifier-free guidance)")
    snr_gamma: float | None = option(None, "family sd: Min-SNR-γ loss weighting (5.0 is the paper's choice; null: "
                                           "plain MSE)")
    flow: FlowMatchingConfig = option(FlowMatchingConfig(shift=1.0), "flow-matching settings (family sd3; shift is "
                                                                       "also the scheduler's at inference)")
    validation_prompts: list[str] = option(DEFAULT_VALIDATION_PROMPTS, "prompts of the validation grids")
    inference_steps: int = option(30, "sampling steps for validation and the saved generation defaults")
    guidance_scale: float = option(4.0, "classifier-free guidance for validation and the saved defaults")

    def __post_init__(self) -> None:
        if self.flow.shift is None:
            raise ValueError("flow.shift must be set: pretraining has no base scheduler to take it from")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout must be within [0, 1), got {self.caption_dropout}")
        factor = 2 ** (len(self.vae.block_out_channels) - 1)
        for name, size in (("world.size", self.world.size), ("vae_crop", self.vae_crop)):
            if size % factor:
                raise ValueError(f"{name} ({size}) must be a multiple of the VAE's downsampling factor {factor}")


# ---------------------------------------------------------------------------------------------------------- data


def load_world_images(world_dir: Path) -> tuple[torch.Tensor, list[str]]:
    """All images of a pose folder as a uint8 tensor (N, 3, H, W) and their captions, in metadata order."""
    rows = read_jsonl(world_dir / "metadata.jsonl", "one JSON object per image with 'file_name' and 'text'")
    if not rows:
        raise HumantuneError(f"{world_dir / 'metadata.jsonl'}: no samples")
    for number, row in rows:
        if not isinstance(row.get("file_name"), str):
            raise HumantuneError(f"{world_dir / 'metadata.jsonl'}: line {number}: missing 'file_name'")
    images = [np.asarray(load_rgb(world_dir / row["file_name"], f"metadata.jsonl line {number}"))
              for number, row in rows]
    sizes = {im.shape for im in images}
    if len(sizes) != 1:
        raise HumantuneError(f"{world_dir}: images must all have one size to pretrain, found {sorted(sizes)}")
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), [r.get("text", "") for _, r in rows]


# ---------------------------------------------------------------------------------------------------------- tasks


class VaeReconstruction(torch.nn.Module):
    """The VAE's training forward pass as one module call (so that DDP, which synchronises gradients of what runs
    through its wrapper's forward, sees encode and decode): x → q(z|x) → z = μ + σ·n → D(z); returns the
    reconstruction and the per-sample KL(q(z|x) ‖ N(0, I)). ``n`` comes from the batch's per-sample draws."""

    def __init__(self, vae) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * generator.randn(posterior.mean.shape).to(x.device)
        return self.vae.decode(z).sample, posterior.kl()


class VaeTask:
    """AutoencoderKL on random square crops:  L = |x − D(z)|₁ + β·KL(q(z|x) ‖ N(0, I)),  z ~ q(z|x)."""

    def __init__(self, vae, images: torch.Tensor, crop: int, kl_weight: float, validation_images: torch.Tensor):
        self.vae, self.images, self.crop, self.kl_weight = vae, images, crop, kl_weight
        self.validation_images = validation_images
        self.reconstruction = VaeReconstruction(vae)

    def trainable_modules(self):
        return {"vae": self.reconstruction}

    def frozen_modules(self):
        return {}

    def attach(self, modules):
        self.model = modules["vae"]

    def dataset(self):
        return range(len(self.images))

    def collate(self, indices):
        return torch.tensor(indices)

    def loss(self, batch, generator):
        x = to_unit_range(self.images[batch.cpu()])
        h, w = x.shape[-2:]
        ys = generator.randint(0, h - self.crop + 1, len(x))
        xs = generator.randint(0, w - self.crop + 1, len(x))
        x = torch.stack([im[:, y:y + self.crop, xx:xx + self.crop] for im, y, xx in zip(x, ys, xs)]).to(batch.device)
        recon, kl = self.model(x, generator)
        l1 = (recon - x).abs().mean()
        kl = kl.mean() / np.prod(x.shape[1:])
        return l1 + self.kl_weight * kl, {"l1": l1.item(), "kl": kl.item()}

    @torch.no_grad()
    def validate(self, step, out_dir):
        vae = self.vae
        vae.eval()
        x = to_unit_range(self.validation_images)
        recon = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        vae.train()
        out_dir.mkdir(parents=True, exist_ok=True)
        grid = torch.cat([torch.cat(list(x), -1), torch.cat(list(recon), -1)], -2)
        _save_grid(grid, out_dir / f"vae_step_{step:06d}.png")
        return {"recon_l1": (recon - x).abs().mean().item(), "recon_psnr": _psnr(recon, x)}


class DenoiserTask:
    """The text-to-image denoiser and its text encoder(s), trained jointly on cached latents; captions are dropped
    (replaced by the empty prompt) with probability ``caption_dropout``."""

    def __init__(self, family, parts: dict, objective, latents: torch.Tensor, ids: list[torch.Tensor],
                 empty_ids: list[torch.Tensor], caption_dropout: float, max_sequence_length: int, validate):
        self.family, self.parts, self.objective, self.latents = family, parts, objective, latents
        self.ids, self.empty_ids, self.caption_dropout = ids, empty_ids, caption_dropout
        self.max_sequence_length, self._validate = max_sequence_length, validate

    def trainable_modules(self):
        return {k: self.parts[k] for k in self.family.trainable}

    def frozen_modules(self):
        return {}

    def attach(self, modules):
        self.modules = modules

    def dataset(self):
        return range(len(self.latents))

    def collate(self, indices):
        return torch.tensor(indices)

    def loss(self, batch, generator):
        device, index = batch.device, batch.cpu()
        vae = self.parts["vae"].config
        z0 = sample_latents(self.latents[index], generator, vae.shift_factor or 0.0, vae.scaling_factor).to(device)
        drop = generator.rand(len(index)) < self.caption_dropout
        ids = [torch.where(drop[:, None], e[None].expand(len(index), -1), t[index]).to(device)
               for t, e in zip(self.ids, self.empty_ids)]
        noised = self.objective.noise(z0, generator)
        m = self.modules
        if self.family.name == "sd":
            output = m["unet"](noised.noisy, noised.timesteps, tiny.encode_prompt_sd(m["text_encoder"], ids[0])).sample
        else:
            cond, pooled = tiny.encode_prompt_sd3(m["text_encoder"], m["text_encoder_2"], ids[0], ids[1],
                                                  self.parts["transformer"].config.joint_attention_dim,
                                                  self.max_sequence_length)
            output = m["transformer"](hidden_states=noised.noisy, encoder_hidden_states=cond,
                                      pooled_projections=pooled, timestep=noised.timesteps).sample
        return self.objective.loss(output, noised).mean(), {}

    def validate(self, step, out_dir):
        return self._validate(step, out_dir)


# ---------------------------------------------------------------------------------------------------------- recipe


class PretrainRecipe(RecipeRun):
    cfg: PretrainConfig

    def run(self) -> Path:
        with sigterm_as_interrupt():
            return self._run()

    def _run(self) -> Path:
        cfg, out = self.cfg, self.out
        t_start = time.perf_counter()
        # Setup: a failure before training leaves no new run folder behind (humantune.train.run_folder).
        with self.open_folder() as folder:
            self.trainer = Trainer(out, cfg.train.mixed_precision)
            with self.trainer.accelerator.main_process_first():   # the main process renders, the others read
                world = self._world()
            images, captions = load_world_images(world)
            parts = self._load_init() if cfg.init_from is not None else None
            folder.commit()
        if parts is not None:
            vae = parts["vae"]
        else:
            from transformers import CLIPTokenizer

            if self.trainer.is_main:
                build_clip_tokenizer(caption_words(captions + cfg.validation_prompts), out / "tokenizer",
                                     cfg.text.max_length)
            self.trainer.accelerator.wait_for_everyone()
            tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
            vae = self._vae(images)
            parts = self._build(vae, tokenizer)
        latents = self._encode(vae, images)
        family = FAMILIES[cfg.family]
        ids = [tokenize(parts[k], captions) for k in family.tokenizers]
        empty = [tokenize(parts[k], [""])[0] for k in family.tokenizers]
        noise_scheduler, _ = tiny.ddpm_schedulers()
        objective = DDPMObjective(noise_scheduler, cfg.snr_gamma) if cfg.family == "sd" else \
            RectifiedFlowObjective(cfg.flow, cfg.flow.shift)
        task = DenoiserTask(family, parts, objective, latents, ids, empty, cfg.caption_dropout,
                            cfg.transformer.max_sequence_length, lambda step, d: self._validate_denoiser(parts, step, d))
        summary = self.trainer.fit(task, cfg.train, out / "denoiser", resume=self.resume, desc=f"{cfg.name} denoiser")
        model_dir = self._save(parts, time.perf_counter() - t_start, summary)
        return model_dir

    # -- stages

    def _world(self) -> Path:
        cfg = self.cfg
        if cfg.world_dir is not None:
            if not (cfg.world_dir / "metadata.jsonl").is_file():
                raise HumantuneError(f"world_dir '{cfg.world_dir}' has no metadata.jsonl (expected a pose folder)")
            return cfg.world_dir
        world = self.out / "world"
        if not (world / "world.json").is_file():
            write_world(cfg.world, world, overwrite=True)
        return world

    def _vae(self, images: torch.Tensor):
        from diffusers import AutoencoderKL

        cfg = self.cfg
        if cfg.vae_path is not None:
            try:
                return AutoencoderKL.from_pretrained(cfg.vae_path)
            except (OSError, ValueError) as e:
                raise HumantuneError(f"vae_path '{cfg.vae_path}': not an AutoencoderKL directory ({e})") from None
        final = self.out / "vae" / "final"
        if (final / "config.json").is_file():
            return AutoencoderKL.from_pretrained(final)
        torch.manual_seed(cfg.vae_train.seed)
        vae = tiny.build_vae(cfg.vae)
        task = VaeTask(vae, images, cfg.vae_crop, cfg.vae_kl_weight, images[:8])
        self.trainer.fit(task, cfg.vae_train, self.out / "vae", resume=self.resume, desc=f"{cfg.name} vae")
        vae = task.vae
        # Scale latents to unit variance (SD's scaling_factor; SD3 also centres them with shift_factor).
        gen = torch.Generator().manual_seed(cfg.vae_train.seed)
        with torch.no_grad():
            stats = torch.cat([vae.encode(to_unit_range(images[i:i + 64])).latent_dist.sample(gen)
                               for i in range(0, min(len(images), 512), 64)])
        # SD pipelines decode latents / scaling_factor and ignore shift_factor, so a VAE trained for the sd family
        # keeps shift 0 (and can be shared with an sd3 base); one trained for sd3 is also centred.
        shift = float(stats.mean()) if cfg.family == "sd3" else 0.0
        vae.register_to_config(scaling_factor=float(1.0 / stats.std()), shift_factor=shift)
        if self.trainer.is_main:
            with atomic_path(final) as tmp:
                vae.save_pretrained(tmp)
        self.trainer.accelerator.wait_for_everyone()
        return vae

    def _build(self, vae, tokenizer) -> dict:
        cfg = self.cfg
        torch.manual_seed(cfg.train.seed)
        latent = cfg.world.size // 2 ** (len(vae.config.block_out_channels) - 1)
        ch = vae.config.latent_channels
        if cfg.family == "sd":
            te = tiny.build_text_encoder(cfg.text, tokenizer)
            return {"vae": vae, "tokenizer": tokenizer, "text_encoder": te,
                    "unet": tiny.build_unet(cfg.unet, ch, latent, cfg.text.hidden_size)}
        return {"vae": vae, "tokenizer": tokenizer, "tokenizer_2": tokenizer,
                "text_encoder": tiny.build_text_encoder_with_projection(cfg.text, tokenizer),
                "text_encoder_2": tiny.build_text_encoder_with_projection(cfg.text, tokenizer),
                "transformer": tiny.build_transformer(cfg.transformer, ch, latent, cfg.text)}

    def _load_init(self) -> dict:
        """The components of ``init_from`` (float32), to continue training them."""
        from humantune.models.generation import load_pipeline

        cfg = self.cfg
        pipe = load_pipeline(cfg.init_from)
        expected = FAMILIES[cfg.family].pipeline
        if type(pipe).__name__ != expected:
            raise HumantuneError(f"init_from '{cfg.init_from}' is a {type(pipe).__name__}; family {cfg.family} needs "
                                 f"a {expected}")
        keys = ("vae",) + FAMILIES[cfg.family].tokenizers + FAMILIES[cfg.family].trainable
        return {k: pipe.components[k] for k in keys}

    def _encode(self, vae, images: torch.Tensor) -> torch.Tensor:
        """Posterior mean and std of every image, cached by sample index: (N, 2, C, h, w). Kept in
        ``OUTPUT/denoiser/latents.safetensors`` with a digest of the VAE's weights and the images, so a resumed run
        skips the encoding and a changed VAE or world re-encodes."""
        vae.eval()
        return cached_tensors(
            self.out / "denoiser" / "latents.safetensors", digest(vae, images),
            lambda: {"latents": encode_latent_stats(vae, images, batch_size=64, progress=self.trainer.is_main)},
            write=self.trainer.is_main)["latents"]

    def pipeline(self, parts: dict):
        cfg = self.cfg
        unwrap = self.trainer.unwrap
        if cfg.family == "sd":
            _, ddim = tiny.ddpm_schedulers()
            return tiny.assemble_sd(parts["vae"], unwrap(parts["text_encoder"]), parts["tokenizer"],
                                    unwrap(parts["unet"]), ddim)
        from diffusers import FlowMatchEulerDiscreteScheduler

        return tiny.assemble_sd3(parts["vae"], unwrap(parts["text_encoder"]), parts["tokenizer"],
                                 unwrap(parts["text_encoder_2"]), parts["tokenizer_2"], unwrap(parts["transformer"]),
                                 FlowMatchEulerDiscreteScheduler(shift=cfg.flow.shift))

    def generation_defaults(self) -> dict:
        cfg = self.cfg
        d = {"num_inference_steps": cfg.inference_steps, "guidance_scale": cfg.guidance_scale,
             "height": cfg.world.size, "width": cfg.world.size}
        if cfg.family == "sd3":
            d["max_sequence_length"] = cfg.transformer.max_sequence_length
        return d

    def _validate_denoiser(self, parts: dict, step: int, out_dir: Path) -> dict:
        from humantune.models.generation import generate_images

        pipe = self.pipeline(parts)
        modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
        for m in modules:
            m.eval()
        images = generate_images(pipe, self.cfg.validation_prompts, seed=0, progress=False,
                                 **self.generation_defaults())
        for m in modules:
            m.train()
        parts["vae"].eval()
        out_dir.mkdir(parents=True, exist_ok=True)
        image_grid([images]).save(out_dir / f"samples_step_{step:06d}.png")
        return {}

    def _save(self, parts: dict, seconds: float, summary: dict) -> Path:
        """Write the pipeline directory (main process)."""
        cfg = self.cfg
        model_dir = self.out / "model"
        if not self.trainer.is_main:
            return model_dir
        pipe = self.pipeline(parts)
        with atomic_path(model_dir) as tmp:
            pipe.save_pretrained(tmp, safe_serialization=True)
            write_json_atomic(tmp / "humantune.json", {
                "name": cfg.name, "family": cfg.family, "generation": self.generation_defaults(),
                "trained_on": {"world_seed": cfg.world.seed, "world_n": cfg.world.n, "world_size": cfg.world.size},
            })
            from humantune.models.model_card import write_model_card

            write_model_card(tmp, cfg, self.out, seconds, summary, self.generation_defaults())
        return model_dir


def _save_grid(grid: torch.Tensor, path: Path) -> None:
    arr = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(arr).save(path)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) ** 2).mean().item()
    return float(10 * np.log10(4.0 / mse)) if mse > 0 else float("inf")


def pretrain(cfg: PretrainConfig, output_dir: str | Path, resume: bool = True,
             allow_config_change: bool = False) -> Path:
    """Run the recipe; return the saved pipeline directory."""
    return PretrainRecipe(cfg, output_dir, resume, allow_config_change).run()
