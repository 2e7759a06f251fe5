"""The two denoising objectives every recipe builds on: DDPM ε-prediction (SD1.5-style UNets) and rectified-flow
velocity prediction (SD3-style MMDiTs). Pure functions on tensors; randomness comes in through an explicit
``torch.Generator`` so a training step is reproducible from its seed alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from humantune.train.sampling import BatchRandom, draws


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


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio of DDPM timesteps:  SNR(t) = ᾱ_t / (1 − ᾱ_t)."""
    a = alphas_cumprod.to(torch.float32)[timesteps.cpu()]
    return a / (1 - a)


def min_snr_weights(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float,
                    prediction_type: str = "epsilon") -> torch.Tensor:
    """Min-SNR-γ loss weights (Hang et al. 2023, eq. 9, as diffusers' training scripts apply them to the MSE of
    the network's own target):  w_t = min(SNR(t), γ) / SNR(t) for ε-prediction,  min(SNR(t), γ) / (SNR(t) + 1)
    for v-prediction. They down-weight the easy low-noise timesteps, which speeds up convergence."""
    s = snr(alphas_cumprod, timesteps)
    clipped = torch.clamp(s, max=gamma)
    if prediction_type == "epsilon":
        return clipped / s
    if prediction_type == "v_prediction":
        return clipped / (s + 1)
    raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")


def logit_normal_sigmas(n: int, mean: float = 0.0, std: float = 1.0,
                        generator: torch.Generator | BatchRandom | None = None) -> torch.Tensor:
    """Rectified-flow timesteps σ ~ logit-normal(m, s):  σ = sigmoid(u), u ~ N(m, s²)   (Esser et al. 2024, SD3
    §3.1 "logit-normal sampling"), the default of diffusers' SD3 training scripts. ``generator``: a
    ``torch.Generator`` or the engine's per-sample :class:`~humantune.train.sampling.BatchRandom`."""
    u = (torch.randn(n) if generator is None else draws(generator).randn(n)) * std + mean
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


def flow_matching_preconditioned_prediction(pred: torch.Tensor, x_sigma: torch.Tensor,
                                            sigmas: torch.Tensor) -> torch.Tensor:
    """The EDM-style output preconditioning of diffusers' SD3 DreamBooth-LoRA script (``precondition_outputs``,
    ``shared/papers.md`` §4 reference settings): the velocity v_θ becomes a clean-sample estimate
    x̂_0 = x_σ − σ·v_θ  (``model_pred * (−sigmas) + noisy_model_input``). With the exact velocity v = ε − x_0
    and x_σ = (1 − σ)·x_0 + σ·ε it returns x_0."""
    s = sigmas.to(pred.dtype).view((-1,) + (1,) * (pred.ndim - 1))
    return x_sigma - s * pred


def flow_matching_dreambooth_loss(pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor,
                                  weighting: str = "none", precondition: bool = True) -> torch.Tensor:
    """Per-sample flow-matching loss of SD3 DreamBooth-LoRA (``shared/papers.md`` §4), with the preconditioning
    choice explicit:

    - ``precondition=True`` (diffusers' default):  L = w(σ) · mean ‖(x_σ − σ·v_θ) − x_0‖²,  target x_0;
      since x_σ − σ·(ε − x_0) = x_0 this equals w(σ)·σ²·mean ‖v_θ − (ε − x_0)‖²: the plain loss re-weighted by σ²;
    - ``precondition=False``:  L = w(σ) · mean ‖v_θ − (ε − x_0)‖²,  the velocity target (:func:`flow_matching_loss`).

    x_σ = (1 − σ)·x_0 + σ·ε (:func:`flow_matching_interpolate`); w(σ) is :func:`flow_matching_weights`."""
    if not precondition:
        return flow_matching_loss(pred, x0, noise, sigmas, weighting)
    x_sigma = flow_matching_interpolate(x0, noise, sigmas)
    estimate = flow_matching_preconditioned_prediction(pred, x_sigma, sigmas)
    return flow_matching_weights(sigmas, weighting).to(pred.device) * per_sample_mse(estimate, x0)


def prior_preservation_loss(per_sample: torch.Tensor, prior_loss_weight: float
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DreamBooth's prior-preservation objective (Ruiz et al. 2023, eq. 2; ``shared/papers.md`` §4) over a batch
    whose first half are instance samples and second half class samples (generated by the base model):

        L = (1/B) Σ_{i<B} ℓ_i  +  λ · (1/B) Σ_{i≥B} ℓ_i,   2B = len(per_sample),  λ = ``prior_loss_weight``.

    ``per_sample``: the per-sample denoising losses ℓ_i. Returns (L, instance term, prior term)."""
    if per_sample.ndim != 1 or len(per_sample) % 2:
        raise ValueError(f"prior preservation needs an even 1-D batch [instance; class], got shape "
                         f"{tuple(per_sample.shape)}")
    instance, prior = per_sample.chunk(2)
    instance_loss, prior_loss = instance.mean(), prior.mean()
    return instance_loss + prior_loss_weight * prior_loss, instance_loss, prior_loss
