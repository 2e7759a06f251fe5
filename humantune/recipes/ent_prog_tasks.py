"""What Ent-Prog trains: a denoiser, its eligible residual blocks, a training task, a fixed held-out loss and the
samples of the report, for each ``task`` of :class:`~humantune.recipes.ent_prog.EntProgConfig`.

- ``text_image``: a StableDiffusion3Pipeline's transformer (or a StableDiffusionPipeline's UNet) on images +
  captions (VAE posteriors and text embeddings cached by sample index; the family's objective), every residual
  block eligible;
- ``pose_image`` / ``pose_video``: the pose-guided LatteTransformer3DModel of :mod:`humantune.recipes.pose_video`
  in its ``pose`` phase (spatial blocks eligible) or ``video`` phase (temporal blocks eligible, clips of the
  model's frame count), through that recipe's :func:`~humantune.recipes.pose_video.phase_task`.

The held-out loss is the training task's own loss on held-out samples with fixed draws: batch b always draws its
latents, noises and timesteps from ``torch.Generator().manual_seed(heldout_seed + b)``, so every evaluation of
every arm sees the same (x_t, t, c).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from humantune.data.sources import open_source
from humantune.errors import HumantuneError
from humantune.io import atomic_path
from humantune.models.blocks import Block, residual_blocks
from humantune.models.encoding import digest
from humantune.studies.entprog_cei import EncodedData, fixed_noised, objective_of, predict
from humantune.train.sampling import GeneratorDraws


class TextImageTask:
    """The denoiser on cached latents + captions with its family's objective (rectified flow / DDPM)."""

    def __init__(self, family_name: str, denoiser, data: EncodedData, objective) -> None:
        self.family_name, self.model, self.data, self.objective = family_name, denoiser, data, objective

    def trainable_modules(self):
        return {"denoiser": self.model}

    def frozen_modules(self):
        return {}

    def attach(self, modules):
        self.model = modules["denoiser"]

    def dataset(self):
        return range(len(self.data))

    def collate(self, items):
        return torch.tensor(items)

    def loss(self, batch, generator):
        device = next(self.model.parameters()).device
        noised = self.data.batch(batch.cpu(), self.objective, generator).to(device)
        return self.objective.loss(predict(self.family_name, self.model, noised), noised.noised).mean(), {}

    def validate(self, step, out_dir):
        return {}


class TaskSetup:
    """A task ready for Ent-Prog: ``denoiser``, eligible ``blocks`` (forward order), ``train_task``,
    ``predict(batch) → ε̂`` and ``cei_batches(cfg)`` for CEI, ``data_key`` (digest of the training data),
    :meth:`heldout_loss`, :meth:`save_denoiser` / :meth:`load_denoiser`, :meth:`samples` and ``full_trainable`` (the
    top-level modules plain full fine-tuning trains; None: every parameter)."""

    def __init__(self, denoiser, blocks: list[Block], train_task, heldout_task, predict: Callable,
                 cei_batches: Callable, data_key: str, heldout_batch_size: int, heldout_seed: int, device,
                 samples: Callable | None = None, full_trainable: list[str] | None = None) -> None:
        self.denoiser, self.blocks, self.train_task, self.heldout_task = denoiser, blocks, train_task, heldout_task
        self.predict, self.cei_batches, self.data_key = predict, cei_batches, data_key
        self.heldout_batch_size, self.heldout_seed, self.device = heldout_batch_size, heldout_seed, device
        self._samples = samples
        self.full_trainable = full_trainable   # modules full fine-tuning trains (None: every parameter)

    @torch.no_grad()
    def heldout_loss(self, batches: int | None = None) -> torch.Tensor:
        """The training loss of each held-out batch (fixed draws; the first ``batches`` only, when given), on the
        denoiser's current weights."""
        from accelerate.utils import send_to_device

        task, n, size = self.heldout_task, len(self.heldout_task.dataset()), self.heldout_batch_size
        items = list(task.dataset())
        losses = []
        for b, i in enumerate(range(0, n, size)[:batches]):
            batch = send_to_device(task.collate(items[i:i + size]), self.device)
            draws = GeneratorDraws(torch.Generator().manual_seed(self.heldout_seed + b))
            losses.append(float(task.loss(batch, draws)[0]))
        return torch.tensor(losses)

    def save_denoiser(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            self.denoiser.save_pretrained(tmp, safe_serialization=True)

    def load_denoiser(self, path: Path) -> None:
        from safetensors.torch import load_file

        files = sorted(Path(path).glob("*.safetensors"))
        if not files:
            raise HumantuneError(f"{path}: no saved denoiser weights (delete the stage folder to retrain it)")
        state = {}
        for f in files:
            state.update(load_file(str(f)))
        self.denoiser.load_state_dict(state)

    def samples(self, n: int, steps: int, guidance: float) -> list:
        """Up to ``n`` report samples of the current weights: ``[(caption, PIL image or list of frames)]``."""
        return self._samples(n, steps, guidance) if self._samples is not None and n > 0 else []


def setup_task(cfg, out: Path, device) -> TaskSetup:
    """The :class:`TaskSetup` of ``cfg.task``."""
    if cfg.task == "text_image":
        return _text_image(cfg, out, device)
    from humantune.recipes.ent_prog_video import pose_setup

    return pose_setup(cfg, out, device)


def _text_image(cfg, out: Path, device) -> TaskSetup:
    from humantune.models.families import family_of
    from humantune.models.generation import load_pipeline, model_info, resolve_model

    pipe = load_pipeline(cfg.base_model, device)
    family = family_of(pipe, f"base_model '{cfg.base_model}' (task text_image)")
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.requires_grad_(False)
    denoiser = pipe.components[family.denoiser]
    source = resolve_model(cfg.base_model)
    info = model_info(Path(source)) if Path(source).is_dir() else {}
    length = 0 if family.name != "sd3" else int(info.get("generation", {}).get("max_sequence_length", 77))
    train = EncodedData(pipe, open_source(cfg.train_data, "train_data", out / "data" / "train"), cfg.resolution, length)
    heldout = EncodedData(pipe, open_source(cfg.heldout_data, "heldout_data", out / "data" / "heldout"),
                          cfg.resolution, length)
    objective = objective_of(pipe)
    train_task = TextImageTask(family.name, denoiser, train, objective)
    heldout_task = TextImageTask(family.name, denoiser, heldout, objective)
    captions = heldout.captions

    def cei_batches(cei_cfg):
        return fixed_noised(train, objective, cei_cfg.samples, cei_cfg.batch_size, cei_cfg.seed)

    def samples(n: int, steps: int, guidance: float):
        from humantune.models.generation import generate_images

        prompts = list(dict.fromkeys(captions))[:n]
        images = generate_images(pipe, prompts, seed=0, progress=False, num_inference_steps=steps,
                                 guidance_scale=guidance, height=cfg.resolution, width=cfg.resolution,
                                 **({"max_sequence_length": length} if family.name == "sd3" else {}))
        return list(zip(prompts, images))

    return TaskSetup(denoiser, residual_blocks(denoiser), train_task, heldout_task,
                     lambda batch: predict(family.name, denoiser, batch), cei_batches,
                     digest(train.latents, train.text.embeds), cfg.heldout_batch_size, cfg.heldout_seed, device,
                     samples)
