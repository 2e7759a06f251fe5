"""The two denoising objectives every recipe builds on: DDPM ε-prediction (SD1.5-style UNets) and rectified-flow
velocity prediction (SD3-style MMDiTs). Pure functions on tensors; randomness comes in through an explicit
``torch.Generator`` so a training step is reproducible from its seed alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def ddpm_noisy_latents(z0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor,
                       timesteps: torch.Tensor) -> torch.Tensor:
    """Forward diffusion q(z_t | z_0):  z_t = √ᾱ_t · z_0 + √(1 − ᾱ_t) · ε   (Ho et al. 2020, eq. 4).

    ``alphas_cumprod`` is the scheduler's ᾱ table; ``timesteps`` are integer indices into it, one per sample."""
    a = alphas_cumprod.to(z0.device, torch.float32)[timesteps].to(z0.dtype)
    shape = (-1,) + (1,) * (z0.ndim - 1)
    return a.sqrt().view(shape) * z0 + (1 - a).sqrt().view(shape) * noise


def ddpm_target(z0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, timesteps: torch.Tensor,
                prediction_type: str = "epsilon") -> torch.Tensor:
    """What the network is trained to predict: ε (``epsilon``) or v = √ᾱ_t·ε − √(1−ᾱ_t)·z_0 (``v_prediction``)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        a = alphas_cumprod.to(z0.device, torch.float32)[timesteps].to(z0.dtype)
        shape = (-1,) + (1,) * (z0.ndim - 1)
        return a.sqrt().view(shape) * noise - (1 - a).sqrt().view(shape) * z0
    raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """‖pred − target‖² averaged over every dimension but the batch: one value per sample (float32)."""
    return F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)


def logit_normal_sigmas(n: int, mean: float = 0.0, std: float = 1.0,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Rectified-flow timesteps σ ~ logit-normal(m, s):  σ = sigmoid(u), u ~ N(m, s²)   (Esser et al. 2024, SD3
    §3.1 "logit-normal sampling"), the default of diffusers' SD3 training scripts."""
    u = torch.randn(n, generator=generator) * std + mean
    return torch.sigmoid(u)


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Resolution-dependent timestep shift of SD3 (§5.3.2):  σ' = s·σ / (1 + (s − 1)·σ); s = 1 is the identity.
    FlowMatchEulerDiscreteScheduler applies the same map at inference."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def flow_matching_interpolate(x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Rectified-flow path:  x_σ = (1 − σ)·x_0 + σ·ε   (SD3 eq. 1 with a_t = 1 − t, b_t = t)."""
    s = sigmas.to(x0.dtype).view((-1,) + (1,) * (x0.ndim - 1))
    return (1 - s) * x0 + s * noise


def flow_matching_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity the MMDiT predicts:  v = dx_σ/dσ = ε − x_0."""
    return noise - x0


def flow_matching_weights(sigmas: torch.Tensor, scheme: str = "none") -> torch.Tensor:
    """Per-sample loss weights w(σ) of diffusers' ``compute_loss_weighting_for_sd3``:
    ``none`` (and ``logit_normal``, whose emphasis is in the σ sampling) → 1;  ``sigma_sqrt`` → σ⁻²;
    ``cosmap`` → 2 / (π·(1 − 2σ + 2σ²))."""
    if scheme in ("none", "logit_normal"):
        return torch.ones_like(sigmas)
    if scheme == "sigma_sqrt":
        return sigmas.float() ** -2.0
    if scheme == "cosmap":
        return 2.0 / (math.pi * (1 - 2 * sigmas + 2 * sigmas**2))
    raise ValueError(f"weighting scheme must be none, logit_normal, sigma_sqrt or cosmap, got {scheme!r}")


def flow_matching_loss(pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor,
                       weighting: str = "none") -> torch.Tensor:
    """Per-sample flow-matching loss:  L = w(σ) · mean ‖v_θ(x_σ, σ) − (ε − x_0)‖²."""
    return flow_matching_weights(sigmas, weighting).to(pred.device) * per_sample_mse(pred, flow_matching_target(x0, noise))
