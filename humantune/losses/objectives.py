"""The diffusion training step, written once: draw the noise and the timestep, build the noisy input and the
regression target, and turn a prediction into per-sample losses.

Two objectives cover the models humantune trains:

- :class:`DDPMObjective` — SD1.5-style UNets: z_t = √ᾱ_t·z_0 + √(1−ᾱ_t)·ε with an integer t ~ U{0 … T−1}, target ε
  (or v), optional Min-SNR-γ weights;
- :class:`RectifiedFlowObjective` — SD3-style MMDiTs: x_σ = (1−σ)·x_0 + σ·ε with σ logit-normal (or uniform) and
  shifted, target ε − x_0 (or, with diffusers' output preconditioning, x_0 against x_σ − σ·v_θ), weights w(σ).

Both return a :class:`NoisedLatents` from :meth:`noise` and per-sample losses from :meth:`loss`, so a recipe's loss
is a few lines and a paper loss (heatmap weighting, prior preservation, Diffusion-DPO, statistics matching) is a
small pure function on per-sample errors (``humantune.losses``). All randomness comes from the random source
passed in — the engine's :class:`~humantune.train.sampling.BatchRandom` (each sample's draws from that sample's own
generator) or a plain ``torch.Generator`` — in a fixed order (noise, then timesteps), so a training step is
reproducible from its seed alone and a sample draws the same whichever process and micro-batch it lands in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from humantune.config import option
from humantune.losses.denoising import (
    ddpm_noisy_latents, ddpm_target, flow_matching_interpolate, flow_matching_preconditioned_prediction,
    flow_matching_target, flow_matching_weights, logit_normal_sigmas, min_snr_weights, per_sample_mse, shift_sigmas,
)
from humantune.train.sampling import BatchRandom, draws


@dataclass
class FlowMatchingConfig:
    """Rectified-flow training of the SD3 family (diffusers' SD3 training scripts' options)."""

    timestep_sampling: Literal["logit_normal", "uniform"] = option(
        "logit_normal", "σ = sigmoid(u), u ~ N(m, s²) (SD3 §3.1); or σ ~ U(0, 1)")
    logit_mean: float = option(0.0, "m of the logit-normal density")
    logit_std: float = option(1.0, "s of the logit-normal density")
    shift: float | None = option(None, "timestep shift σ' = sσ/(1 + (s−1)σ) (SD3 uses 3.0 at 1024²; 1.0 suits 16² "
                                       "latents); null: the base scheduler's shift")
    weighting: Literal["none", "logit_normal", "sigma_sqrt", "cosmap"] = option(
        "none", "loss weight w(σ): 1 (none, logit_normal), σ⁻², or 2/(π(1 − 2σ + 2σ²))")
    precondition_outputs: bool = option(
        False, "diffusers' DreamBooth default: train x_σ − σ·v_θ against x_0 (the velocity loss × σ²); false: v_θ "
               "against ε − x_0")

    def __post_init__(self) -> None:
        for name in ("logit_mean", "logit_std", "shift"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if self.logit_std <= 0:
            raise ValueError(f"logit_std must be positive, got {self.logit_std}")
        if self.shift is not None and self.shift <= 0:
            raise ValueError(f"shift must be positive, got {self.shift}")


@dataclass
class NoisedLatents:
    """One batch at its drawn noise level.

    ``noisy``: the denoiser's input (z_t or x_σ); ``timesteps``: its timestep argument (integer t, or 1000·σ);
    ``target``: what :meth:`Objective.prediction` of the output is regressed on; ``weights``: per-sample loss weights
    (B,); ``noise``: ε; ``level``: t (DDPM, integer) or σ (rectified flow), one per sample."""

    noisy: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor
    weights: torch.Tensor
    noise: torch.Tensor
    level: torch.Tensor


class Objective:
    """What every training objective offers; see the module docstring."""

    def noise(self, z0: torch.Tensor, generator: torch.Generator | BatchRandom, noise: torch.Tensor | None = None,
              level: torch.Tensor | None = None) -> NoisedLatents:
        """Draw ε (unless given) and then the noise level (unless given) for ``z0`` from ``generator`` (one row per
        sample of a :class:`~humantune.train.sampling.BatchRandom`, or a ``torch.Generator``). Passing
        ``noise`` and ``level`` shares them between batches (Diffusion-DPO's winner and loser)."""
        raise NotImplementedError

    def prediction(self, output: torch.Tensor, noised: NoisedLatents) -> torch.Tensor:
        """The network output as the quantity compared with ``noised.target`` (identity unless preconditioned)."""
        return output

    def loss(self, output: torch.Tensor, noised: NoisedLatents) -> torch.Tensor:
        """Per-sample loss  ℓ_i = w_i · mean ‖prediction_i − target_i‖²  (float32, shape (B,))."""
        return per_sample_mse(self.prediction(output, noised), noised.target) * noised.weights


def cubic_timesteps(u: torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
    """T2I-Adapter's non-uniform timestep sampling (Mou et al. 2023, §3.4):  t = ⌊(1 − u³)·T⌋  with  u ~ U[0, 1),
    clamped to {0 … T−1}. It favours large t (P(t ≥ T/2) = 0.79), the noisy steps where the layout — and so a
    structural condition such as a pose — is decided."""
    t = ((1.0 - u.double() ** 3) * num_train_timesteps).floor().long()
    return t.clamp(0, num_train_timesteps - 1)


class DDPMObjective(Objective):
    """ε- (or v-) prediction on a DDPM schedule (Ho et al. 2020):  z_t = √ᾱ_t·z_0 + √(1−ᾱ_t)·ε,  t ~ U{0 … T−1}
    (or :func:`cubic_timesteps`), loss  w_t·mean ‖ε_θ(z_t, t, c) − ε‖²  with  w_t = 1, or Min-SNR-γ's
    min(SNR(t), γ)/SNR(t)  (Hang et al. 2023)."""

    def __init__(self, scheduler, snr_gamma: float | None = None,
                 timestep_sampling: Literal["uniform", "cubic"] = "uniform") -> None:
        if timestep_sampling not in ("uniform", "cubic"):
            raise ValueError(f"timestep_sampling must be 'uniform' or 'cubic', got {timestep_sampling!r}")
        self.alphas_cumprod = scheduler.alphas_cumprod
        self.num_train_timesteps = scheduler.config.num_train_timesteps
        self.prediction_type = scheduler.config.prediction_type
        self.snr_gamma = snr_gamma
        self.timestep_sampling = timestep_sampling

    def noise(self, z0, generator, noise=None, level=None):
        device, rng = z0.device, draws(generator)
        if noise is None:
            noise = rng.randn(z0.shape).to(device)
        if level is None and self.timestep_sampling == "cubic":
            level = cubic_timesteps(rng.rand((len(z0),)), self.num_train_timesteps).to(device)
        elif level is None:
            level = rng.randint(0, self.num_train_timesteps, (len(z0),)).to(device)
        if self.snr_gamma is None:
            weights = torch.ones(len(z0), device=device)
        else:
            weights = min_snr_weights(self.alphas_cumprod, level, self.snr_gamma, self.prediction_type).to(device)
        return NoisedLatents(
            noisy=ddpm_noisy_latents(z0, noise, self.alphas_cumprod, level), timesteps=level,
            target=ddpm_target(z0, noise, self.alphas_cumprod, level, self.prediction_type), weights=weights,
            noise=noise, level=level)


class RectifiedFlowObjective(Objective):
    """Rectified flow (SD3, Esser et al. 2024):  x_σ = (1−σ)·x_0 + σ·ε,  σ' = sσ/(1 + (s−1)σ) of a logit-normal or
    uniform σ; loss  w(σ)·mean ‖v_θ(x_σ, 1000σ, c) − (ε − x_0)‖², or with output preconditioning
    w(σ)·mean ‖(x_σ − σ·v_θ) − x_0‖²  (= the velocity loss × σ²; diffusers' DreamBooth-LoRA default)."""

    def __init__(self, cfg: FlowMatchingConfig, shift: float) -> None:
        self.cfg, self.shift = cfg, shift

    def noise(self, z0, generator, noise=None, level=None):
        cfg, device, rng = self.cfg, z0.device, draws(generator)
        if noise is None:
            noise = rng.randn(z0.shape).to(device)
        if level is None:
            if cfg.timestep_sampling == "logit_normal":
                sigmas = logit_normal_sigmas(len(z0), cfg.logit_mean, cfg.logit_std, rng)
            else:
                sigmas = rng.rand(len(z0))
            level = shift_sigmas(sigmas, self.shift).to(device)
        target = z0 if cfg.precondition_outputs else flow_matching_target(z0, noise)
        return NoisedLatents(
            noisy=flow_matching_interpolate(z0, noise, level), timesteps=level * 1000, target=target,
            weights=flow_matching_weights(level, cfg.weighting).to(device), noise=noise, level=level)

    def prediction(self, output, noised):
        if not self.cfg.precondition_outputs:
            return output
        return flow_matching_preconditioned_prediction(output, noised.noisy, noised.level)


def sample_latents(stats: torch.Tensor, generator: torch.Generator | BatchRandom, shift: float = 0.0,
                   scale: float = 1.0) -> torch.Tensor:
    """z_0 from cached VAE posteriors: ``stats`` (B, 2, C, h, w) holds each sample's mean μ and std s;
    z_0 = (μ + s·n − shift)·scale,  n ~ N(0, I) from ``generator`` (the latent_dist.sample() of diffusers'
    scripts, then the VAE's shift_factor and scaling_factor)."""
    mean, std = stats[:, 0].float(), stats[:, 1].float()
    z = mean + std * draws(generator).randn(mean.shape).to(stats.device)
    return (z - shift) * scale
