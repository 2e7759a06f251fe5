import math

import pytest
import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_loss_weighting_for_sd3

from humantune.losses.denoising import (
    ddpm_noisy_latents, ddpm_target, flow_matching_interpolate, flow_matching_loss, flow_matching_target,
    flow_matching_weights, logit_normal_sigmas, min_snr_weights, per_sample_mse, shift_sigmas, snr,
)


@pytest.fixture
def scheduler():
    return DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def test_ddpm_noisy_latents_equal_the_scheduler(scheduler):
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 4, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    ours = ddpm_noisy_latents(z0, eps, scheduler.alphas_cumprod, t)
    torch.testing.assert_close(ours, scheduler.add_noise(z0, eps, t))
    a = scheduler.alphas_cumprod[500]
    torch.testing.assert_close(ours[2], a.sqrt() * z0[2] + (1 - a).sqrt() * eps[2])


def test_ddpm_targets(scheduler):
    g = torch.Generator().manual_seed(1)
    z0, eps = torch.randn(3, 4, 4, 4, generator=g), torch.randn(3, 4, 4, 4, generator=g)
    t = torch.tensor([3, 300, 900])
    assert ddpm_target(z0, eps, scheduler.alphas_cumprod, t) is eps
    torch.testing.assert_close(ddpm_target(z0, eps, scheduler.alphas_cumprod, t, "v_prediction"),
                               scheduler.get_velocity(z0, eps, t))
    with pytest.raises(ValueError, match="prediction_type"):
        ddpm_target(z0, eps, scheduler.alphas_cumprod, t, "sample")


def test_per_sample_mse_is_one_value_per_sample():
    pred = torch.zeros(2, 3, 2, 2)
    target = torch.stack([torch.ones(3, 2, 2), 2 * torch.ones(3, 2, 2)])
    torch.testing.assert_close(per_sample_mse(pred, target), torch.tensor([1.0, 4.0]))


def test_flow_matching_path_and_target_by_hand():
    x0 = torch.tensor([[2.0, -1.0]])
    eps = torch.tensor([[0.5, 3.0]])
    sigma = torch.tensor([0.25])
    torch.testing.assert_close(flow_matching_interpolate(x0, eps, sigma), torch.tensor([[1.625, 0.0]]))
    torch.testing.assert_close(flow_matching_target(x0, eps), torch.tensor([[-1.5, 4.0]]))
    # A perfect velocity has zero loss; a zero prediction has loss mean(v²) = (2.25 + 16) / 2.
    assert flow_matching_loss(torch.tensor([[-1.5, 4.0]]), x0, eps, sigma).item() == 0.0
    assert flow_matching_loss(torch.zeros(1, 2), x0, eps, sigma).item() == pytest.approx(9.125)


def test_flow_matching_weights_equal_diffusers():
    sigmas = torch.tensor([0.1, 0.5, 0.9])
    for scheme in ("none", "logit_normal", "sigma_sqrt", "cosmap"):
        torch.testing.assert_close(flow_matching_weights(sigmas, scheme).float(),
                                   compute_loss_weighting_for_sd3(scheme, sigmas).float())
    assert flow_matching_weights(sigmas, "cosmap")[1].item() == pytest.approx(2 / (math.pi * 0.5))
    with pytest.raises(ValueError, match="weighting scheme"):
        flow_matching_weights(sigmas, "uniform")


def test_logit_normal_sigmas_are_reproducible_and_centred():
    a = logit_normal_sigmas(20000, generator=torch.Generator().manual_seed(3))
    b = logit_normal_sigmas(20000, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert ((a > 0) & (a < 1)).all()
    assert a.median().item() == pytest.approx(0.5, abs=0.01)     # sigmoid(N(0, 1)) has median 1/2
    shifted = logit_normal_sigmas(20000, mean=1.0, generator=torch.Generator().manual_seed(3))
    assert shifted.median().item() == pytest.approx(1 / (1 + math.exp(-1)), abs=0.01)


def test_shift_sigmas_matches_the_flow_scheduler():
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    unshifted = torch.linspace(1, 1 / 1000, 1000)
    torch.testing.assert_close(shift_sigmas(unshifted, 3.0), sched.sigmas, atol=1e-5, rtol=1e-5)
    s = torch.tensor([0.2, 0.7])
    torch.testing.assert_close(shift_sigmas(s, 1.0), s)


def test_min_snr_weights_match_diffusers_training_scripts(scheduler):
    from diffusers.training_utils import compute_snr

    t = torch.tensor([0, 50, 300, 999])
    s = compute_snr(scheduler, t)
    torch.testing.assert_close(snr(scheduler.alphas_cumprod, t), s)
    # diffusers' train_text_to_image.py: mse_loss_weights = min(snr, γ) / snr  (ε)  or / (snr + 1)  (v)
    torch.testing.assert_close(min_snr_weights(scheduler.alphas_cumprod, t, 5.0),
                               torch.stack([s, 5.0 * torch.ones_like(s)], 1).min(1)[0] / s)
    torch.testing.assert_close(min_snr_weights(scheduler.alphas_cumprod, t, 5.0, "v_prediction"),
                               torch.clamp(s, max=5.0) / (s + 1))
    # by hand at t = 999: SNR ≪ γ, so the ε weight is exactly 1; at t = 0 it is γ / SNR(0)
    a0 = scheduler.alphas_cumprod[0]
    w = min_snr_weights(scheduler.alphas_cumprod, t, 5.0)
    assert w[3] == 1.0
    assert math.isclose(w[0].item(), 5.0 / (a0 / (1 - a0)).item(), rel_tol=1e-5)


# --- DreamBooth-LoRA (shared/papers.md §4): SD3 output preconditioning and prior preservation -----------------------

from humantune.losses.denoising import (  # noqa: E402
    flow_matching_dreambooth_loss, flow_matching_preconditioned_prediction, prior_preservation_loss,
)


def test_preconditioned_prediction_of_the_exact_velocity_is_the_clean_sample():
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    sigmas = torch.tensor([0.1, 0.5, 0.9])
    x_sigma = flow_matching_interpolate(x0, noise, sigmas)
    torch.testing.assert_close(flow_matching_preconditioned_prediction(noise - x0, x_sigma, sigmas), x0)


def test_dreambooth_flow_loss_by_hand():
    x0 = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    noise = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    sigmas = torch.tensor([0.5, 0.25])
    pred = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    # x_σ = [0.5, 1.5], [0.5, −0.25];  x_σ − σ·pred = [0, 1], [0.5, −0.25];  against x_0: MSE 1 and 0.40625
    torch.testing.assert_close(flow_matching_dreambooth_loss(pred, x0, noise, sigmas, "none", True),
                               torch.tensor([1.0, 0.40625]))
    # velocity target ε − x_0 = [−1, −1], [2, 3]: MSE 4 and 6.5; preconditioned = σ² × these
    torch.testing.assert_close(flow_matching_dreambooth_loss(pred, x0, noise, sigmas, "none", False),
                               torch.tensor([4.0, 6.5]))
    # w(σ) = σ⁻² cancels the σ² of the preconditioning
    torch.testing.assert_close(flow_matching_dreambooth_loss(pred, x0, noise, sigmas, "sigma_sqrt", True),
                               torch.tensor([4.0, 6.5]))
    cosmap = torch.tensor([2 / (math.pi * 0.5), 2 / (math.pi * 0.625)])    # 2 / (π(1 − 2σ + 2σ²))
    torch.testing.assert_close(flow_matching_dreambooth_loss(pred, x0, noise, sigmas, "cosmap", True),
                               cosmap * torch.tensor([1.0, 0.40625]))


def test_prior_preservation_loss_splits_the_batch_in_halves():
    total, instance, prior = prior_preservation_loss(torch.tensor([1.0, 3.0, 10.0, 20.0]), 0.5)
    assert (instance.item(), prior.item(), total.item()) == (2.0, 15.0, 2.0 + 0.5 * 15.0)
    with pytest.raises(ValueError, match="even 1-D batch"):
        prior_preservation_loss(torch.tensor([1.0, 2.0, 3.0]), 1.0)
