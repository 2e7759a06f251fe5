"""HG-DPO's statistics-matching loss (``shared/papers.md`` §2, hard stage): keep the colour statistics of what the
model generates at those of real images, the fix for the colour shift that real-winner DPO leaves.

    L_stat = Σ_c |μ_c^gen − μ_c^real| + |σ_c^gen − σ_c^real|

with μ_c, σ_c the mean and (population) standard deviation of channel c over the spatial positions of one image,
summed over channels and computed per sample (:func:`statistics_matching_loss`). The channels are the latent's
(``space: latent``) or, after the frozen VAE decoder, the image's RGB (``space: pixel``): an option of the recipe.

What "generated" is during a training step (no sampling loop runs while training): the trained model's clean-sample
estimate x̂₀ (:func:`predicted_clean`) from the noised latent of the pair's *loser* — an image the current model
generated — at the step's shared noise and timestep; "real" is the *winner*'s clean latent z₀ʷ, the real image
(HG-DPO's hard stage: winner = real, loser = generated). So the loss pulls the channel statistics of the model's
denoised output for its own images towards those of the real image of the same prompt. The recipe's ``stat_source:
winner`` option uses x̂₀ from the noised winner instead (a reconstruction of the real image, matched to itself).
"""

from __future__ import annotations

import torch


def channel_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and population standard deviation over the spatial dimensions:
    (B, C, *spatial) → μ, σ of shape (B, C), in float32;  μ_c = mean_p x_{c,p},  σ_c = √(mean_p (x_{c,p} − μ_c)²)."""
    flat = x.float().flatten(2)
    mean = flat.mean(2)
    # +1e-12 under the root: the gradient of √ stays finite for a constant channel
    std = ((flat - mean.unsqueeze(2)) ** 2).mean(2).add(1e-12).sqrt()
    return mean, std


def statistics_matching_loss(generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """HG-DPO's statistics-matching loss, one value per sample (shape (B,), float32):

        L_stat = Σ_c |μ_c(generated) − μ_c(real)| + |σ_c(generated) − σ_c(real)|

    over the channels c of (B, C, *spatial) tensors (latent or RGB), with μ_c, σ_c from :func:`channel_statistics`.
    The two tensors need the same batch and channel count; their spatial sizes may differ."""
    if generated.shape[:2] != real.shape[:2]:
        raise ValueError(f"generated {tuple(generated.shape)} and real {tuple(real.shape)} must share batch and "
                         "channel dimensions")
    mu_g, sd_g = channel_statistics(generated)
    mu_r, sd_r = channel_statistics(real)
    return ((mu_g - mu_r).abs() + (sd_g - sd_r).abs()).sum(1)


def predicted_clean(output: torch.Tensor, noisy: torch.Tensor, level: torch.Tensor, kind: str,
                    alphas_cumprod: torch.Tensor | None = None) -> torch.Tensor:
    """The clean-sample estimate x̂₀ of a denoiser output at its noise level (one level per sample):

    - ``epsilon`` (DDPM):  x̂₀ = (z_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t;
    - ``v_prediction`` (DDPM):  x̂₀ = √ᾱ_t·z_t − √(1−ᾱ_t)·v̂;
    - ``flow`` (rectified flow, velocity v̂ ≈ ε − x₀):  x̂₀ = x_σ − σ·v̂;
    - ``sample`` (an output that already is x̂₀, e.g. preconditioned flow outputs): the output itself.

    ``level``: integer t (DDPM, indexing ``alphas_cumprod``) or σ (flow)."""
    shape = (-1,) + (1,) * (output.ndim - 1)
    if kind == "sample":
        return output
    if kind == "flow":
        return noisy - level.to(output.dtype).view(shape) * output
    if kind not in ("epsilon", "v_prediction"):
        raise ValueError(f"kind must be epsilon, v_prediction, flow or sample, got {kind!r}")
    if alphas_cumprod is None:
        raise ValueError(f"kind {kind} needs alphas_cumprod")
    a = alphas_cumprod.to(output.device, torch.float32)[level.long()].to(output.dtype).view(shape)
    if kind == "epsilon":
        return (noisy - (1 - a).sqrt() * output) / a.sqrt()
    return a.sqrt() * noisy - (1 - a).sqrt() * output
