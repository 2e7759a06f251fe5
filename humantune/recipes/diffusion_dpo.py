"""Recipe: Diffusion-DPO (Wallace et al. 2024; ``shared/papers.md`` §2), done as the reference scripts do it and
with their pitfalls closed.

``humantune train diffusion-dpo --config configs/diffusion_dpo/quick.yaml --output-dir DIR`` fine-tunes a
text-to-image model on preference pairs (winner, loser, caption) with the loss
:func:`~humantune.losses.dpo.diffusion_dpo_loss`, one stage on the shared engine (:mod:`.dpo_training`):

- three families: ``StableDiffusionPipeline`` (UNet, ε- or v-prediction from its scheduler),
  ``StableDiffusionXLPipeline`` (UNet on both CLIP encoders, pooled text_embeds + time_ids (H, W, 0, 0, H, W) of
  the training resolution, as diffusers' ``train_diffusion_dpo_sdxl.py``; configs/diffusion_dpo/sdxl.yaml) and
  ``StableDiffusion3Pipeline`` (MMDiT, rectified flow, target ε − x₀, :class:`FlowMatchingConfig`);
- winner and loser share their noise and timestep; errors are per-sample means (β does not change with the
  resolution); the sigmoid is applied per pair; β in a named convention (``dpo.beta_convention``);
- LoRA on the denoiser (and optionally the CLIP text encoders, with their own learning rate); the reference is the
  same network with every adapter disabled, under ``no_grad``, switched back on before the trained pass (so
  gradient checkpointing recomputes the trained model); ``lora: null`` fine-tunes the whole denoiser against a
  frozen copy (``dpo.reference: initial``), as Salesforce's script;
- logged every step (metrics.jsonl, TensorBoard): loss, implicit accuracy, reward margin, model and reference
  errors of winner and loser — the loss alone often stays flat while the model improves.

Pairs: a Pick-a-Pic parquet file or folder of shards (``yuvalkirstain/pickapic_v2``'s layout; what diffusers'
script reads), a humantune pairs folder (``pairs.jsonl`` + images, :mod:`humantune.data.preference_pairs`), or
``mannequin``: for each prompt the mannequin world's render (the person as the prompt says, whole) is the winner
and the base model's own sample for it the loser — offline pairs that move the model toward the world, written
to ``OUT/data/pairs`` in the folder layout (reused by a resumed run).

Outputs: ``OUT/dpo/`` (the engine's stage: metrics.jsonl, checkpoints, validation grids),
``OUT/lora/pytorch_lora_weights.safetensors`` + ``README.md`` + ``humantune_lora.json`` (stock
``pipe.load_lora_weights(OUT/lora)`` loads it; full fine-tuning: ``OUT/dpo/<denoiser>/``), ``OUT/report.html``
(validation grid base vs tuned with the same seeds, loss / implicit-accuracy / reward-margin curves).
Running the same command again resumes exactly from the last checkpoint.

Assumes: square images (resized on the short side and centre-cropped); no random flips; a T5 encoder, when the
base has one, is used only to cache embeddings; under mixed precision frozen weights are cast and adapters stay
float32; pairs are VAE-encoded in float32 whatever the training precision (a half-precision SDXL VAE gives NaN
latents; ``vae`` swaps in another, e.g. ``madebyollin/sdxl-vae-fp16-fix``); SDXL's crop coordinates are (0, 0).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from humantune.config import config_to_dict, option
from humantune.data.preference_pairs import (
    PreferencePair, check_pairs_source, iter_pairs, normalise_pair, source_fingerprint, write_pairs_folder,
)
from humantune.errors import ConfigError
from humantune.io import json_safe, write_json_atomic, write_text_atomic
from humantune.losses.objectives import FlowMatchingConfig
from humantune.models import lora
from humantune.models.families import family_of
from humantune.models.generation import load_vae
from humantune.recipes.dpo_training import DpoConfig, PairLatents, encode_pairs, objective_for, train_dpo_stage
from humantune.report.grid import image_grid
from humantune.train.engine import Trainer, TrainConfig, read_metrics, read_validation
from humantune.train.run_folder import RecipeRun, sigterm_as_interrupt

DEFAULT_PROMPTS = [
    "a man in a red shirt and blue jeans standing on the grass",
    "a woman in a blue dress walking on the street",
    "a man in a white t-shirt and black trousers waving on the beach",
    "a woman in a green shirt and gray shorts standing in a room",
]
"""Mannequin-grammar prompts of the offline pairs (configs/diffusion_dpo/quick.yaml)."""


@dataclass
class MannequinPairsConfig:
    """Offline pairs: the mannequin world's render (winner) vs the base model's sample (loser) of each prompt."""

    prompts: list[str] = option(DEFAULT_PROMPTS, "prompts in the mannequin caption grammar")
    pairs_per_prompt: int = option(4, "pairs per prompt (render i and sample i use seed + i)")
    seed: int = option(0, "world seed and sampling seed of the pairs")


@dataclass
class DiffusionDpoConfig:
    """``humantune train diffusion-dpo``: Diffusion-DPO fine-tuning on preference pairs."""

    model: str = option("tiny-sd", "the model to tune: shipped name (humantune models list), pipeline directory or "
                                   "hub id; StableDiffusionPipeline, StableDiffusionXLPipeline or "
                                   "StableDiffusion3Pipeline")
    pairs: str = option("mannequin", "preference pairs: a Pick-a-Pic parquet file or folder of shards (jpg_0, jpg_1, "
                                     "label_0, caption), a folder with pairs.jsonl, or 'mannequin' (offline pairs)")
    mannequin: MannequinPairsConfig = option(MannequinPairsConfig(), "the offline pairs of pairs: mannequin")
    vae: str | None = option(None, "another AutoencoderKL in place of the model's (a directory holding its "
                                   "config.json or a pipeline's vae/, or a hub id), e.g. madebyollin/sdxl-vae-fp16-fix "
                                   "for SDXL under fp16; null: the model's own (pairs are always encoded in float32)")
    max_pairs: int | None = option(None, "use at most this many pairs (the first ones, after dropped ties)")
    validation_pairs: int = option(0, "pairs held out of training (evenly spaced through the set) whose implicit "
                                      "accuracy and reward margin every validation logs at fixed noise")
    lora: lora.PipelineLoraConfig | None = option(
        lora.PipelineLoraConfig(denoiser=lora.LoraConfig(rank=8)),
        "LoRA adapters (the denoiser's, optionally the text encoders' with their own learning_rate); null: full "
        "fine-tuning of the denoiser against a frozen copy (needs dpo.reference: initial)")
    dpo: DpoConfig = option(DpoConfig(), "the DPO loss: β, its convention, ties, the reference")
    flow: FlowMatchingConfig = option(FlowMatchingConfig(), "flow-matching noise levels and target "
                                                            "(StableDiffusion3Pipeline)")
    resolution: int | None = option(None, "training image size; null: the model's own (its humantune.json, else "
                                          "the denoiser's sample size × VAE factor)")
    max_sequence_length: int | None = option(None, "SD3 T5 slots; null: the model's humantune.json, else 77")
    train: TrainConfig = option(TrainConfig(max_steps=200, batch_size=4, learning_rate=1e-5, checkpoint_every=100),
                                "optimisation")
    validation_prompts: list[str] | None = option(None, "prompts of the validation grid; null: up to 4 of the pairs' "
                                                        "captions")
    inference_steps: int | None = option(None, "sampling steps of validation and mannequin losers; null: the "
                                               "model's")
    guidance_scale: float | None = option(None, "guidance of validation and mannequin losers; null: the model's")

    def __post_init__(self) -> None:
        if self.lora is None and self.dpo.reference != "initial":
            raise ValueError("lora: null (full fine-tuning) needs dpo.reference: initial (a frozen copy of the "
                             "denoiser); 'adapters' is the LoRA-free base")
        if self.validation_pairs < 0:
            raise ValueError(f"validation_pairs must be at least 0, got {self.validation_pairs}")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise ValueError(f"max_pairs must be at least 1, got {self.max_pairs}")
        if self.mannequin.pairs_per_prompt < 1:
            raise ValueError(f"mannequin.pairs_per_prompt must be at least 1, got {self.mannequin.pairs_per_prompt}")
        if self.resolution is not None and self.resolution < 8:
            raise ValueError(f"resolution must be at least 8 pixels, got {self.resolution}")


class DiffusionDpoRecipe(RecipeRun):
    """setup() loads the model and the pairs and adds the adapters; train() runs the DPO stage; save() writes the
    LoRA, its card and the report."""

    cfg: DiffusionDpoConfig

    def run(self) -> Path:
        t0 = time.perf_counter()
        with sigterm_as_interrupt():
            self.setup()
            result = self.train()
            return self.save(result, time.perf_counter() - t0)

    # -- setup

    def setup(self) -> None:
        with self.open_folder() as folder:
            self._setup()
            folder.commit()

    def _setup(self) -> None:
        from humantune.models.generation import generation_settings, load_pipeline, model_info, resolve_model

        cfg = self.cfg
        if cfg.pairs != "mannequin":
            check_pairs_source(cfg.pairs)   # before the model loads
        self.trainer = Trainer(self.out, cfg.train.mixed_precision)
        self.source = resolve_model(cfg.model)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.train.mixed_precision, torch.float32)
        self.pipe = pipe = load_pipeline(self.source, dtype=dtype)
        self.family = family_of(pipe, f"model '{cfg.model}'")
        if cfg.vae is not None:
            pipe.register_modules(vae=load_vae(cfg.vae, dtype))
        for m in pipe.components.values():
            if isinstance(m, torch.nn.Module):
                m.requires_grad_(False).eval()
        pipe.to(self.trainer.device)
        info = model_info(Path(self.source)) if Path(self.source).is_dir() else {}
        self.resolution = self._resolution(info)
        self.generation = generation_settings(self.source, cfg.inference_steps, cfg.guidance_scale, self.resolution)
        self.max_sequence_length = 0 if self.family.name != "sd3" else (
            cfg.max_sequence_length or int(self.generation.get("max_sequence_length", 77)))
        with self.trainer.accelerator.main_process_first():   # the main process writes the cache, others read
            pairs, key = self._pairs()
            cache = self.out / "dpo" / "pair_latents.safetensors"
            self.latents = encode_pairs(pipe, pairs, self.resolution, cache, key, progress=self.trainer.is_main,
                                        write=self.trainer.is_main,
                                        what=f"pairs '{cfg.pairs}' (dpo.ties: {cfg.dpo.ties})")
        self.latents, self.heldout = split_heldout(self.latents, cfg.validation_pairs, cfg.pairs)
        self.captions = self.latents.captions
        self.base_images = self._generate()   # before training: adapters are zero, the base model draws
        torch.manual_seed(cfg.train.seed)      # the adapters' initial A matrices
        self.lora_groups = cfg.lora.groups(self.family) if cfg.lora is not None else None
        if self.lora_groups is not None:
            lora.add_adapters(pipe.components, self.lora_groups)

    def _resolution(self, info: dict) -> int:
        from humantune.models.generation import check_image_size

        size = self.cfg.resolution or info.get("generation", {}).get("height")
        if size is None:
            size = self.pipe.components[self.family.denoiser].config.sample_size * self.pipe.vae_scale_factor
        check_image_size(self.pipe, size, size, "resolution")
        return int(size)

    def _pairs(self) -> tuple[Iterable[PreferencePair], str | None]:
        """The pairs (read lazily from a file or folder) and a fingerprint of them for the latent cache (None:
        hash the images)."""
        cfg = self.cfg
        if cfg.pairs == "mannequin":
            return self._mannequin_pairs()[:cfg.max_pairs], None
        key = json.dumps([source_fingerprint(cfg.pairs), cfg.dpo.ties, cfg.max_pairs])
        return iter_pairs(cfg.pairs, cfg.dpo.ties, cfg.max_pairs), key

    def _mannequin_pairs(self) -> list[PreferencePair]:
        """World render (winner) vs the base model's sample (loser) per prompt and index, cached in OUT/data/pairs."""
        from humantune.data.mannequin.prompted import render_prompt_scenes
        from humantune.data.preference_pairs import read_pairs_folder
        from humantune.models.generation import generate_images
        from PIL import Image

        mc = self.cfg.mannequin
        folder = self.out / "data" / "pairs"
        wanted = json.loads(json.dumps({"model": str(self.cfg.model), "prompts": mc.prompts,
                                        "pairs_per_prompt": mc.pairs_per_prompt, "seed": mc.seed,
                                        "resolution": self.resolution, "generation": self.generation}))
        manifest = folder / "made_by.json"
        if manifest.is_file() and json.loads(manifest.read_text()) == wanted:
            return read_pairs_folder(folder, "keep")
        n = mc.pairs_per_prompt
        prompts = [p for p in mc.prompts for _ in range(n)]
        winners = [Image.fromarray(s.image) for p, prompt in enumerate(mc.prompts)
                   for s in render_prompt_scenes(prompt, n, mc.seed + p, self.resolution)]
        losers = generate_images(self.pipe, prompts, per_image_seeds=[mc.seed + i for i in range(len(prompts))],
                                 progress=self.trainer.is_main, **self.generation)
        pairs = [normalise_pair(w, lo, c, 1.0) for w, lo, c in zip(winners, losers, prompts)]
        write_pairs_folder(pairs, folder, overwrite=True)
        write_json_atomic(manifest, wanted)
        return pairs

    # -- train

    def validation_prompts(self) -> list[str]:
        return self.cfg.validation_prompts or list(dict.fromkeys(self.captions))[:4]

    def _generate(self) -> list:
        from humantune.models.generation import generate_images

        modules = [m for m in self.pipe.components.values() if isinstance(m, torch.nn.Module)]
        training = {m: m.training for m in modules}
        for m in modules:
            m.eval()
        try:
            with self.trainer.accelerator.autocast():
                return generate_images(self.pipe, self.validation_prompts(), seed=0, progress=False,
                                       **self.generation)
        finally:
            for m, was in training.items():
                m.train(was)

    def validation_grid(self, step: int, out_dir: Path) -> dict:
        """Top row: the base model; bottom row: the tuned model; same prompts and seeds."""
        self.tuned_images = self._generate()
        out_dir.mkdir(parents=True, exist_ok=True)
        image_grid([self.base_images, self.tuned_images]).save(out_dir / f"samples_step_{step:06d}.png")
        return {}

    def train(self):
        cfg = self.cfg
        objective = objective_for(self.pipe, self.family, cfg.flow)
        return train_dpo_stage(
            self.trainer, self.pipe, self.latents, cfg.dpo, cfg.train, self.out / "dpo", lora_groups=self.lora_groups,
            objective=objective, max_sequence_length=self.max_sequence_length, validate=self.validation_grid,
            heldout=self.heldout, resume=self.resume, desc=f"diffusion-dpo ({self.family.name})")

    # -- save

    def save(self, result, seconds: float) -> Path:
        """Write the LoRA folder (a copy of the stage's, with a card) and report.html (main process)."""
        import shutil

        cfg = self.cfg
        report = self.out / "report.html"
        if not self.trainer.is_main:
            return report
        rows, validation = read_metrics(self.out / "dpo"), read_validation(self.out / "dpo")
        tail = rows[-max(1, len(rows) // 10):]
        info = {
            "recipe": "diffusion-dpo", "model": str(cfg.model), "family": self.family.name,
            "pipeline": type(self.pipe).__name__, "resolution": self.resolution, "pairs": cfg.pairs,
            "num_pairs": len(self.latents), "lora": None if cfg.lora is None else config_to_dict(cfg.lora),
            "dpo": config_to_dict(cfg.dpo), "steps": cfg.train.max_steps, "summary": result.summary,
            "final": {k: sum(r.get(k, float("nan")) for r in tail) / len(tail) for k in CURVE_KEYS} if tail else {},
            "heldout": {k: v for k, v in validation[-1].items() if k.startswith("heldout_")} if validation else {},
            "num_heldout_pairs": 0 if self.heldout is None else len(self.heldout), "seconds": seconds,
        }
        if cfg.lora is not None:
            from humantune.io import atomic_path

            lora_dir = self.out / "lora"
            with atomic_path(lora_dir) as tmp:
                shutil.copytree(result.weights.parent, tmp)
                write_json_atomic(tmp / "humantune_lora.json", json_safe(info))
                write_text_atomic(tmp / "README.md", dpo_lora_card(info))
        write_json_atomic(self.out / "results.json", json_safe(info))
        return self._report(info, rows, validation)

    def _report(self, info: dict, rows: list[dict], validation: list[dict]) -> Path:
        from humantune.report.curves import StageCurves, stage_curves_figure
        from humantune.report.html import HtmlReport

        report = HtmlReport(f"diffusion-dpo: {self.out.name}")
        report.paragraph(f"Diffusion-DPO of {info['model']} ({info['pipeline']}, {info['resolution']}²) on "
                         f"{info['num_pairs']} pairs from {info['pairs']}, {info['steps']} steps, β "
                         f"{self.cfg.dpo.beta:g} ({self.cfg.dpo.beta_convention} convention), reference: "
                         f"{self.cfg.dpo.reference}.")
        report.heading("Last 10 % of steps (mean)")
        report.table([{k: v for k, v in info["final"].items()}])
        if info["heldout"]:
            report.heading(f"Held-out pairs ({info['num_heldout_pairs']}, fixed noise), last validation")
            report.table([info["heldout"]])
        report.heading("Validation: base (top) vs tuned (bottom), same seeds")
        prompts = self.validation_prompts()
        items = [(im, f"base: {p}") for im, p in zip(self.base_images, prompts)]
        items += [(im, f"tuned: {p}") for im, p in zip(getattr(self, "tuned_images", None) or self._generate(),
                                                           prompts)]
        report.image_grid(items, columns=len(prompts), thumb_size=160)
        report.heading("Training curves")
        report.figure(stage_curves_figure([
            StageCurves("loss", "DPO loss", rows, [("dpo_loss", "-", "loss")]),
            StageCurves("accuracy", "implicit accuracy", rows, [("implicit_accuracy", "-", "implicit accuracy")],
                        validation),
            StageCurves("margin", "reward margin", rows, [("reward_margin", "-", "β_eff·z")]),
            StageCurves("errors", "mean errors", rows, [
                ("model_err_w", "-", "model w"), ("model_err_l", "-", "model l"), ("ref_err_w", "--", "ref w"),
                ("ref_err_l", "--", "ref l")]),
        ], "heldout_implicit_accuracy", "held-out implicit accuracy"))
        if self.cfg.lora is not None:
            report.heading("Load the result")
            report.code(f"pipe.load_lora_weights({str(self.out / 'lora')!r})")
        return report.save(self.out / "report.html")


def split_heldout(latents: PairLatents, n: int, source: str) -> tuple[PairLatents, PairLatents | None]:
    """(training pairs, ``n`` held-out pairs evenly spaced through the set, or None for n = 0); ConfigError when
    fewer than one training pair would be left."""
    if n == 0:
        return latents, None
    if n >= len(latents):
        raise ConfigError(f"validation_pairs {n}: pairs '{source}' has only {len(latents)} pairs; at least one "
                          "must be left to train on")
    held = sorted({int(round(i)) for i in np.linspace(0, len(latents) - 1, n)})
    rest = [i for i in range(len(latents)) if i not in set(held)]
    return latents.subset(rest), latents.subset(held)


CURVE_KEYS = ("dpo_loss", "implicit_accuracy", "reward_margin", "model_err_w", "model_err_l", "ref_err_w",
              "ref_err_l")


def dpo_lora_card(info: dict) -> str:
    """The LoRA folder's README: what it is, how to load it, how it was trained."""
    cls = info["pipeline"]
    extra = ("  # a T5-less tiny base also needs text_encoder_3=None, tokenizer_3=None" if info["family"] == "sd3"
             else "")
    return (f"# Diffusion-DPO LoRA for {info['model']}\n\n"
            f"Trained by `humantune train diffusion-dpo` ({cls}, {info['resolution']}² images, {info['steps']} steps) "
            f"on {info['num_pairs']} preference pairs from `{info['pairs']}`; β {info['dpo']['beta']:g} in the "
            f"`{info['dpo']['beta_convention']}` convention, reference `{info['dpo']['reference']}`.\n\n"
            f"Load with stock diffusers:\n\n```python\nfrom diffusers import {cls}\n"
            f"pipe = {cls}.from_pretrained(BASE){extra}\npipe.load_lora_weights(\"PATH/TO/THIS/FOLDER\")\n```\n\n"
            "Settings and final training terms: `humantune_lora.json`.\n")


def train_diffusion_dpo(cfg: DiffusionDpoConfig, output_dir: str | Path, resume: bool = True,
                        allow_config_change: bool = False) -> Path:
    """Run the recipe; return the path of ``report.html``."""
    return DiffusionDpoRecipe(cfg, output_dir, resume, allow_config_change).run()
