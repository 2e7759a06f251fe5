import math

import pytest
import torch
from diffusers import DDPMScheduler

from humantune.losses.denoising import ddpm_noisy_latents, ddpm_target, flow_matching_interpolate, flow_matching_target
from humantune.losses.statistics_matching import channel_statistics, predicted_clean, statistics_matching_loss


def test_statistics_matching_loss_against_a_hand_computation():
    # one sample, two channels of four pixels each
    gen = torch.tensor([[[[1.0, 3.0], [1.0, 3.0]], [[0.0, 0.0], [0.0, 4.0]]]])
    real = torch.tensor([[[[2.0, 2.0], [2.0, 2.0]], [[1.0, 1.0], [1.0, 1.0]]]])
    # channel 0: μ 2 vs 2, σ 1 vs 0 → 1;  channel 1: μ 1 vs 1, σ √3 vs 0 → √3
    loss = statistics_matching_loss(gen, real)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(1.0 + math.sqrt(3.0), abs=1e-5)
    # shift the mean of channel 0 by 0.5: adds 0.5
    assert statistics_matching_loss(gen + torch.tensor([0.5, 0.0]).view(1, 2, 1, 1), real).item() == \
        pytest.approx(1.5 + math.sqrt(3.0), abs=1e-5)


def test_statistics_matching_loss_is_per_sample_and_zero_for_equal_statistics():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 8, 8, generator=g)
    permuted = x.flatten(2)[:, :, torch.randperm(64, generator=g)].view(3, 4, 8, 8)  # same statistics per channel
    torch.testing.assert_close(statistics_matching_loss(x, permuted), torch.zeros(3), atol=1e-5, rtol=0)
    other = x.clone()
    other[1] *= 2.0
    loss = statistics_matching_loss(x, other)
    assert loss[0].item() == pytest.approx(0.0, abs=1e-5) and loss[2].item() == pytest.approx(0.0, abs=1e-5)
    mu, sd = channel_statistics(x[1:2])
    assert loss[1].item() == pytest.approx((mu.abs() + sd).sum().item(), rel=1e-5)
    with pytest.raises(ValueError, match="channel"):
        statistics_matching_loss(x, x[:, :3])


def test_statistics_matching_loss_has_finite_gradients_for_a_constant_channel():
    x = torch.ones(1, 2, 4, 4, requires_grad=True)
    statistics_matching_loss(x, torch.randn(1, 2, 4, 4)).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_predicted_clean_inverts_the_forward_process():
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    g = torch.Generator().manual_seed(1)
    z0, eps = torch.randn(3, 4, 4, 4, generator=g), torch.randn(3, 4, 4, 4, generator=g)
    t = torch.tensor([5, 400, 900])
    zt = ddpm_noisy_latents(z0, eps, scheduler.alphas_cumprod, t)
    torch.testing.assert_close(predicted_clean(eps, zt, t, "epsilon", scheduler.alphas_cumprod), z0, atol=1e-4,
                               rtol=1e-4)
    v = ddpm_target(z0, eps, scheduler.alphas_cumprod, t, "v_prediction")
    torch.testing.assert_close(predicted_clean(v, zt, t, "v_prediction", scheduler.alphas_cumprod), z0, atol=1e-4,
                               rtol=1e-4)
    sigmas = torch.tensor([0.1, 0.5, 0.9])
    xs = flow_matching_interpolate(z0, eps, sigmas)
    torch.testing.assert_close(predicted_clean(flow_matching_target(z0, eps), xs, sigmas, "flow"), z0, atol=1e-5,
                               rtol=1e-5)
    assert predicted_clean(z0, xs, sigmas, "sample") is z0
    with pytest.raises(ValueError, match="alphas_cumprod"):
        predicted_clean(eps, zt, t, "epsilon")
