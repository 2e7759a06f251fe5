"""One Diffusion-DPO training stage on the shared engine: the building block of ``humantune train diffusion-dpo``
(one stage) and of HG-DPO's easy → normal → hard curriculum (three).

:func:`train_dpo_stage` takes a pipeline whose components already carry the adapters to train (or none, for full
fine-tuning of the denoiser), preference pairs (:class:`~humantune.data.preference_pairs.PreferencePair` images or
pre-encoded :class:`PairLatents`), a :class:`DpoConfig` and a stage directory; it trains with
:func:`~humantune.losses.dpo.diffusion_dpo_loss` and saves ``STAGE_DIR/lora/pytorch_lora_weights.safetensors``
(``pipe.load_lora_weights`` reads it) or, fully fine-tuned, ``STAGE_DIR/<denoiser>/`` (``save_pretrained``).

Each step (:class:`DpoTask`): z₀ of winner and loser drawn from their cached VAE posteriors, one ε and one
timestep/σ per *pair* (:meth:`Objective.noise` of the winner, passed to the loser's), the reference errors under
``no_grad`` **first**, then winner and loser through the trained model in one batch of 2B, per-sample mean errors
(:meth:`Objective.loss`: ε-, v- or flow target), the DPO loss, plus an optional ``extra_loss(outputs)`` hook
(HG-DPO's statistics matching). Logged every step: loss, dpo_loss, implicit_accuracy, reward_margin,
model_err_w/l, ref_err_w/l (and whatever the hook returns).

The reference (``DpoConfig.reference``):

- ``adapters``: the same network with its LoRA adapters disabled — denoiser *and* text encoders — i.e. the base
  model (diffusers' SD1.5 script). The adapters are switched back on before the trained pass, so gradient
  checkpointing, which recomputes forward passes during backward with whatever adapter state is then set,
  recomputes the trained model (tested by comparing gradients with and without checkpointing).
- ``initial``: the weights the stage starts from, frozen. With LoRA: a copy of the adapter tensors taken when the
  task is built — before the engine loads a checkpoint, so a resumed stage keeps the same reference — swapped into
  the adapter parameters under ``no_grad`` for the reference pass and swapped back before the trained pass (one
  network; no second adapter, no fusing; the saved LoRA stays loadable on the plain base). A curriculum whose stage
  starts from the previous stage's LoRA (:func:`load_adapter_weights`) thus has the previous stage as reference.
  With full fine-tuning: a frozen deep copy of the denoiser (Salesforce's DiffusionDPO).

Exact resume comes from the engine: run the same stage again and it continues from its newest checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

import torch
from tqdm import tqdm

from humantune.config import option
from humantune.data.preference_pairs import PreferencePair
from humantune.errors import HumantuneError
from humantune.losses.dpo import BetaConvention, DpoLossOutput, TieHandling, diffusion_dpo_loss
from humantune.losses.objectives import (
    DDPMObjective, FlowMatchingConfig, NoisedLatents, Objective, RectifiedFlowObjective, sample_latents,
)
from humantune.models import lora
from humantune.models.encoding import PromptConditioning, cached_tensors, digest, encode_latent_stats
from humantune.models.families import Family, denoise, family_of
from humantune.train.engine import Trainer, TrainConfig
from humantune.train.sampling import BatchRandom

Reference = Literal["adapters", "initial"]


@dataclass
class DpoConfig:
    """The Diffusion-DPO loss and its reference model."""

    beta: float = option(2500.0, "β of the DPO loss, in the convention of beta_convention")
    beta_convention: BetaConvention = option(
        "logit", "logit: −logσ(β·z) (diffusers' SD1.5 script, β 2500); half: −logσ(½β·z) (Salesforce / diffusers' "
                 "SDXL script, β 5000), z = (ref_w − ref_l) − (model_w − model_l); both β give the same 2500 on z")
    ties: TieHandling = option("drop", "pairs labelled 0.5: drop them, or keep them with a symmetric 0.5 target")
    reference: Reference = option(
        "adapters", "adapters: the base (the same network with every adapter disabled, text encoder included); "
                    "initial: the weights the stage starts from, frozen (a curriculum's previous stage; with full "
                    "fine-tuning, a frozen copy)")

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"beta must be positive, got {self.beta}")


@dataclass
class PairLatents:
    """Pre-encoded pairs: VAE posterior mean and std of winners and losers, (N, 2, C, h, w) each (as
    :func:`~humantune.models.encoding.encode_latent_stats` returns), their captions and labels (probability that
    the winner is preferred: 1, or ½ for a tie)."""

    winners: torch.Tensor
    losers: torch.Tensor
    captions: list[str]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.captions)

    def subset(self, indices: Sequence[int]) -> PairLatents:
        """The pairs at ``indices``, in that order."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return PairLatents(self.winners[idx], self.losers[idx], [self.captions[i] for i in idx.tolist()],
                           self.labels[idx])


@dataclass
class DpoStepOutputs:
    """What an ``extra_loss`` hook sees each step (B pairs): the noised winner and loser latents (same noise and
    level), their clean latents z₀, the trained model's raw outputs and predictions (:meth:`Objective.prediction`),
    the objective, the pairs' dataset indices, the DPO terms and the stage's :class:`PairLatents`."""

    noised_w: NoisedLatents
    noised_l: NoisedLatents
    z0_w: torch.Tensor
    z0_l: torch.Tensor
    output_w: torch.Tensor
    output_l: torch.Tensor
    pred_w: torch.Tensor
    pred_l: torch.Tensor
    objective: Objective
    samples: torch.Tensor
    dpo: DpoLossOutput
    latents: PairLatents


ExtraLoss = Callable[[DpoStepOutputs], tuple[torch.Tensor, dict[str, float]]]
"""A term added to the DPO loss each step: ``(scalar tensor, scalars to log)``."""


def objective_for(pipe, family: Family, flow: FlowMatchingConfig | None = None,
                  snr_gamma: float | None = None) -> Objective:
    """The family's training objective: DDPM ε/v-prediction from the pipeline's scheduler config (sd), or
    rectified flow with ``flow`` and the scheduler's shift unless ``flow.shift`` is set (sd3)."""
    if family.objective == "ddpm":
        from diffusers import DDPMScheduler

        return DDPMObjective(DDPMScheduler.from_config(pipe.scheduler.config), snr_gamma)
    flow = flow or FlowMatchingConfig()
    shift = flow.shift if flow.shift is not None else float(pipe.scheduler.config.get("shift", 1.0))
    return RectifiedFlowObjective(flow, shift)


def encode_pairs(pipe, pairs: Iterable[PreferencePair], resolution: int, cache: Path | None = None,
                 key: str | None = None, progress: bool = False, batch_size: int = 32, write: bool = True,
                 what: str = "the pairs") -> PairLatents:
    """VAE posteriors of every pair's winner and loser at ``resolution`` (short side resized, centre-cropped),
    encoded ``batch_size`` pairs at a time in float32, so only the latents of a large set stay in memory.

    ``cache``: a .safetensors file holding the result (captions and labels included) under a digest of the VAE
    and ``key`` — a caller's fingerprint of the pairs (e.g. :func:`~humantune.data.preference_pairs.
    source_fingerprint` of a file), or, when None, of every image (``pairs`` is then read into a list); ``write``:
    whether this process writes the cache (the main one); ``what``: how an error names the pairs."""
    from humantune.data.prepare import resize_centre_crop, to_chw

    vae = pipe.vae

    def pixels(chunk: list[PreferencePair]) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.stack([to_chw(resize_centre_crop(p.winner, resolution)) for p in chunk]),
                torch.stack([to_chw(resize_centre_crop(p.loser, resolution)) for p in chunk]))

    if cache is not None and key is None:
        pairs = list(pairs)
        key = digest(*(pixels(pairs[i:i + batch_size]) for i in range(0, len(pairs), batch_size)))

    def compute() -> dict[str, torch.Tensor]:
        winners, losers, captions, labels = [], [], [], []
        for chunk in tqdm(batched(pairs, batch_size), desc="encoding pairs", unit="batch", disable=not progress):
            w, lo = pixels(chunk)
            winners.append(encode_latent_stats(vae, w, batch_size))
            losers.append(encode_latent_stats(vae, lo, batch_size))
            captions += [p.caption for p in chunk]
            labels += [float(p.label) for p in chunk]
        if not captions:
            raise HumantuneError(f"{what}: no preference pairs to train on (all dropped as ties, or none at all)")
        return {"winners": torch.cat(winners), "losers": torch.cat(losers), "labels": torch.tensor(labels),
                "captions": torch.tensor(list(json.dumps(captions).encode()), dtype=torch.uint8)}

    dtype = vae.dtype   # encode (and fingerprint) in float32: a half-precision VAE gives NaN latents (papers.md §2)
    if dtype != torch.float32:
        vae.float()
    try:
        stats = cached_tensors(cache, digest(vae, str(resolution), key or ""), compute, write)
    finally:
        if dtype != torch.float32:
            vae.to(dtype)
    return PairLatents(stats["winners"], stats["losers"], json.loads(bytes(stats["captions"].tolist()).decode()),
                       stats["labels"])


def batched(items: Iterable, n: int) -> Iterator[list]:
    """Lists of ``n`` consecutive items (the last one shorter)."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def load_adapter_weights(components: dict[str, torch.nn.Module], lora_dir: str | Path) -> None:
    """Set the adapters of ``components`` (pipeline component name → module with a LoRA of the same rank and
    targets) to the weights saved in ``lora_dir`` (:func:`~humantune.models.lora.save_lora`'s file), e.g. a
    curriculum stage starting from the previous stage. HumantuneError when a component's weights are missing or
    do not fit."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    directory = lora.check_lora(lora_dir)
    saved = load_file(str(directory / lora.LORA_WEIGHTS_NAME))
    for name, module in components.items():
        prefix = name + "."
        state = {k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix)}
        own = lora.lora_state_dict(module)
        if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
            raise HumantuneError(f"LoRA '{directory}' does not fit component '{name}' (different layers or ranks)")
        dtype = next(iter(lora.lora_parameters(module))).dtype
        set_peft_model_state_dict(module, {k: v.to(dtype) for k, v in state.items()})


class DpoTask:
    """One engine stage of Diffusion-DPO (see the module docstring).

    ``pipe``: the pipeline (its modules, adapters already added where ``lora_groups`` says); ``lora_groups``:
    component name → :class:`~humantune.models.lora.LoraConfig` of the adapters to train (None: full fine-tuning
    of the denoiser, text encoders frozen); ``latents``: the pairs; ``text``: their captions' conditioning;
    ``validate(step, out_dir) -> dict``: the stage's validation (may be None)."""

    def __init__(self, pipe, family: Family, lora_groups: dict[str, lora.LoraConfig] | None, dpo: DpoConfig,
                 objective: Objective, latents: PairLatents, text: PromptConditioning, learning_rate: float,
                 extra_loss: ExtraLoss | None = None, validate: Callable[[int, Path], dict] | None = None):
        self.pipe, self.family, self.lora_groups, self.dpo = pipe, family, lora_groups, dpo
        self.objective, self.latents, self.text, self.learning_rate = objective, latents, text, learning_rate
        self.extra_loss, self._validate = extra_loss, validate
        self.heldout: PairLatents | None = None   # pairs scored by validate() (train_dpo_stage's heldout)
        self.heldout_seed = 0
        self.autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext   # the engine's
        self.latent_scale = pipe.vae.config.scaling_factor
        self.latent_shift = (pipe.vae.config.shift_factor or 0.0) if family.name == "sd3" else 0.0
        components = pipe.components
        if lora_groups is None:
            self.frozen_ref = copy.deepcopy(components[family.denoiser]).requires_grad_(False).eval()
            # trained weights in float32 (the optimizer's precision); the engine casts the frozen copy
            self.trained = {family.denoiser: components[family.denoiser].float().requires_grad_(True)}
        else:
            missing = [k for k in lora_groups if not lora.has_lora(components[k])]
            if missing:
                raise HumantuneError(f"components {', '.join(missing)} have no LoRA adapter to train")
            self.trained = {k: components[k] for k in lora_groups}
            self.frozen_ref = None
        # the reference weights of reference="initial" with LoRA: the adapters as the stage starts
        self.initial = ({k: [p.detach().clone() for p in lora.lora_parameters(m)] for k, m in self.trained.items()}
                        if lora_groups is not None and dpo.reference == "initial" else None)
        self.modules = dict(self.trained)

    # -- the engine's protocol

    def trainable_modules(self):
        return dict(self.trained)

    def frozen_modules(self):
        frozen = {"vae": self.pipe.vae}
        frozen.update({k: self.pipe.components[k] for k in self.family.text_encoders if k not in self.trained})
        if self.family.denoiser not in self.trained:
            frozen[self.family.denoiser] = self.pipe.components[self.family.denoiser]
        if self.frozen_ref is not None:
            frozen["reference"] = self.frozen_ref
        return frozen

    def attach(self, modules):
        self.modules = modules

    def param_groups(self):
        if self.lora_groups is None:
            return [{"params": [p for m in self.trained.values() for p in m.parameters() if p.requires_grad],
                     "lr_scale": 1.0}]
        return lora.lora_param_groups(self.trained, self.lora_groups, self.learning_rate)

    def dataset(self):
        return range(len(self.latents))

    def collate(self, items):
        return torch.tensor(items)

    def validate(self, step, out_dir):
        scalars = self.pair_terms(self.heldout, self.heldout_seed) if self.heldout is not None else {}
        return {**scalars, **(self._validate(step, out_dir) if self._validate is not None else {})}

    def pair_terms(self, latents: PairLatents, seed: int = 0, repeats: int = 4, batch_size: int = 8,
                   prefix: str = "heldout_") -> dict[str, float]:
        """The DPO terms (implicit accuracy, reward margin, loss, errors) of ``latents`` — e.g. pairs held out of
        training — under the current weights, without gradients: every pair at ``repeats`` noise draws that depend
        only on ``seed``, so values at different steps (or stages) compare the same draws. Means over the draws,
        keys prefixed with ``prefix``."""
        held = copy.copy(self)
        # the unwrapped modules: validation runs on the main process only, and a DDP-wrapped forward would wait for
        # the other processes (its buffer broadcast)
        held.latents, held.extra_loss, held.modules = latents, None, dict(self.trained)
        device = next(held.denoiser.parameters()).device
        if getattr(self, "_heldout_text", (None, None))[0] is not latents:
            self._heldout_text = (latents, PromptConditioning(self.pipe, self.family, latents.captions,
                                                              self.text.trained, self.text.max_sequence_length,
                                                              device))
        held.text = self._heldout_text[1]
        items = torch.arange(len(latents)).repeat(repeats)
        sums: dict[str, float] = {}
        with torch.no_grad(), self.autocast():
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                _, logs = held.loss(chunk.to(device), BatchRandom(seed, range(start, start + len(chunk))))
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v * len(chunk)
        return {prefix + k: v / len(items) for k, v in sums.items()}

    # -- the step

    @property
    def denoiser(self) -> torch.nn.Module:
        """The denoiser the step runs: the engine-wrapped one when it trains."""
        return self.modules.get(self.family.denoiser, self.pipe.components[self.family.denoiser])

    def _denoise(self, denoiser, noisy, timesteps, cond, pooled):
        # the image size the latents decode to: SDXL's time_ids (the pipeline's default call at that size)
        size = (noisy.shape[-2] * self.pipe.vae_scale_factor, noisy.shape[-1] * self.pipe.vae_scale_factor)
        return denoise(self.family, denoiser, noisy, timesteps, cond, pooled, size)

    def _conditioning(self, samples: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        cond, pooled = self.text(samples, self.modules)
        return cond.to(device), None if pooled is None else pooled.to(device)

    @contextlib.contextmanager
    def reference_weights(self):
        """The block runs the reference: adapters disabled (``adapters``), or the stage's initial adapter weights
        swapped in (``initial``); the trained state is back afterwards."""
        modules = list(self.trained.values())   # the unwrapped modules: peft's switches live there
        if self.initial is None:
            with lora.adapters_disabled(*modules):
                yield
            return
        saved = {}
        with torch.no_grad():
            for k, module in zip(self.trained, modules):
                params = lora.lora_parameters(module)
                saved[k] = [p.detach().clone() for p in params]
                if self.initial[k] and self.initial[k][0].device != params[0].device:   # once, after placement
                    self.initial[k] = [ref.to(p.device) for p, ref in zip(params, self.initial[k])]
                for p, ref in zip(params, self.initial[k]):
                    p.copy_(ref)
        try:
            yield
        finally:
            with torch.no_grad():
                for k, module in zip(self.trained, modules):
                    for p, value in zip(lora.lora_parameters(module), saved[k]):
                        p.copy_(value)

    def reference_errors(self, noised: NoisedLatents, samples: torch.Tensor, device) -> torch.Tensor:
        """Per-sample errors (2B,) of the reference on the stacked [winner; loser] batch, under ``no_grad``."""
        with torch.no_grad():
            if self.frozen_ref is not None:
                cond, pooled = self._conditioning(samples, device)
                output = self._denoise(self.frozen_ref, noised.noisy, noised.timesteps, cond.repeat(2, 1, 1),
                                       None if pooled is None else pooled.repeat(2, 1))
            else:
                with self.reference_weights():
                    cond, pooled = self._conditioning(samples, device)
                    output = self._denoise(self.denoiser, noised.noisy, noised.timesteps,
                                           cond.repeat(2, 1, 1), None if pooled is None else pooled.repeat(2, 1))
            return self.objective.loss(output.float(), noised)

    def loss(self, batch, generator: BatchRandom):
        device, samples = batch.device, batch.long().cpu()
        b = len(samples)
        z0_w = sample_latents(self.latents.winners[samples], generator, self.latent_shift, self.latent_scale)
        z0_l = sample_latents(self.latents.losers[samples], generator, self.latent_shift, self.latent_scale)
        z0_w, z0_l = z0_w.to(device), z0_l.to(device)
        noised_w = self.objective.noise(z0_w, generator)
        noised_l = self.objective.noise(z0_l, generator, noise=noised_w.noise, level=noised_w.level)
        both = stack_noised(noised_w, noised_l)
        ref = self.reference_errors(both, samples, device)   # first: the trained state is set for the pass below
        cond, pooled = self._conditioning(samples, device)
        output = self._denoise(self.denoiser, both.noisy, both.timesteps, cond.repeat(2, 1, 1),
                               None if pooled is None else pooled.repeat(2, 1))
        model = self.objective.loss(output, both)
        dpo = diffusion_dpo_loss(model[:b], model[b:], ref[:b], ref[b:], self.dpo.beta, self.dpo.beta_convention,
                                 self.latents.labels[samples], self.dpo.ties)
        total, logs = dpo.mean(), dpo.scalars()
        if self.extra_loss is not None:
            pred = self.objective.prediction(output, both)
            extra, extra_logs = self.extra_loss(DpoStepOutputs(
                noised_w, noised_l, z0_w, z0_l, output[:b], output[b:], pred[:b], pred[b:], self.objective,
                samples, dpo, self.latents))
            total = total + extra
            logs.update(extra_logs)
        return total, logs


def stack_noised(a: NoisedLatents, b: NoisedLatents) -> NoisedLatents:
    """The batch [a; b] (winner rows, then loser rows) for one forward pass."""
    return NoisedLatents(*(torch.cat([getattr(a, f), getattr(b, f)]) for f in
                           ("noisy", "timesteps", "target", "weights", "noise", "level")))


@dataclass
class DpoStageResult:
    """What :func:`train_dpo_stage` returns: the engine's summary plus the saved weights' path."""

    summary: dict[str, Any]
    weights: Path
    task: DpoTask = field(repr=False)


def train_dpo_stage(trainer: Trainer, pipe, pairs: Sequence[PreferencePair] | PairLatents, dpo: DpoConfig,
                    train: TrainConfig, stage_dir: str | Path, *,
                    lora_groups: dict[str, lora.LoraConfig] | None, objective: Objective | None = None,
                    resolution: int | None = None, max_sequence_length: int = 0,
                    extra_loss: ExtraLoss | None = None, validate: Callable[[int, Path], dict] | None = None,
                    heldout: PairLatents | None = None, resume: bool = True,
                    desc: str = "diffusion-dpo") -> DpoStageResult:
    """Train one Diffusion-DPO stage on ``trainer`` in ``stage_dir`` and save its weights.

    ``pipe``: the pipeline, with adapters already added to the components named by ``lora_groups`` (and set to
    the weights the stage starts from, e.g. with :func:`load_adapter_weights`); ``lora_groups`` None: full
    fine-tuning of the denoiser (then ``dpo.reference`` must be ``initial``: a frozen copy). ``pairs``: images
    (encoded at ``resolution``, cached in ``STAGE_DIR/pair_latents.safetensors``) or :class:`PairLatents`.
    ``objective``: None = :func:`objective_for` the family's default. ``max_sequence_length``: SD3's T5 slots.
    ``extra_loss``: added to the DPO loss every step (:data:`ExtraLoss`). ``validate(step, out_dir)``: run by the
    engine at ``train.validate_every`` and at the end. ``heldout``: pairs left out of training whose DPO terms
    (:meth:`DpoTask.pair_terms`, fixed noise from ``train.seed``) every validation logs as ``heldout_*``.

    Saves ``STAGE_DIR/lora/pytorch_lora_weights.safetensors`` (LoRA) or ``STAGE_DIR/<denoiser>/`` (full
    fine-tuning, ``save_pretrained``). Running it again after a kill resumes from the stage's last checkpoint.
    """
    stage_dir = Path(stage_dir)
    family = family_of(pipe, "the DPO pipeline")
    if lora_groups is None and dpo.reference != "initial":
        raise HumantuneError("full fine-tuning (no LoRA) needs dpo.reference: initial (a frozen copy of the "
                             "denoiser); 'adapters' means the LoRA-free base")
    if not isinstance(pairs, PairLatents):
        if resolution is None:
            raise HumantuneError("train_dpo_stage: give the resolution to encode the pair images at")
        with trainer.accelerator.main_process_first():
            pairs = encode_pairs(pipe, pairs, resolution, stage_dir / "pair_latents.safetensors",
                                 write=trainer.is_main)
    if len(pairs) == 0:
        raise HumantuneError("no preference pairs to train on")
    objective = objective or objective_for(pipe, family)
    trains_text = lora_groups is not None and any(k in lora_groups for k in family.text_encoders)
    text = PromptConditioning(pipe, family, pairs.captions, trains_text, max_sequence_length, trainer.device)
    task = DpoTask(pipe, family, lora_groups, dpo, objective, pairs, text, train.learning_rate, extra_loss, validate)
    task.heldout, task.heldout_seed, task.autocast = heldout, train.seed, trainer.accelerator.autocast
    summary = trainer.fit(task, train, stage_dir, resume=resume, desc=desc)
    if lora_groups is not None:
        weights = stage_dir / "lora" / lora.LORA_WEIGHTS_NAME
        if trainer.is_main:
            lora.save_lora(type(pipe), weights.parent, {k: trainer.unwrap(pipe.components[k]) for k in lora_groups})
    else:
        weights = stage_dir / family.denoiser
        if trainer.is_main:
            from humantune.io import atomic_path

            with atomic_path(weights) as tmp:
                trainer.unwrap(pipe.components[family.denoiser]).save_pretrained(tmp, safe_serialization=True)
    trainer.accelerator.wait_for_everyone()
    return DpoStageResult(summary, weights, task)
