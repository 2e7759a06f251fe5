"""The training objectives written once: each against the step the recipes used to write by hand, draw for draw."""

import pytest
import torch
from diffusers import DDPMScheduler

from humantune.losses.denoising import (
    ddpm_noisy_latents, ddpm_target, flow_matching_dreambooth_loss, flow_matching_interpolate, flow_matching_loss,
    logit_normal_sigmas, min_snr_weights, per_sample_mse, shift_sigmas,
)
from humantune.losses.objectives import (
    DDPMObjective, FlowMatchingConfig, RectifiedFlowObjective, cubic_timesteps, sample_latents,
)


def _z0(shape=(3, 4, 8, 8)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("prediction, gamma", [("epsilon", None), ("epsilon", 5.0), ("v_prediction", 5.0)])
def test_ddpm_objective_draws_noise_then_timesteps_and_weights_by_min_snr(prediction, gamma):
    sched = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction)
    z0 = _z0()
    noised = DDPMObjective(sched, gamma).noise(z0, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(z0.shape, generator=g)
    t = torch.randint(0, 1000, (3,), generator=g)
    assert torch.equal(noised.noise, noise) and torch.equal(noised.level, t) and torch.equal(noised.timesteps, t)
    assert torch.equal(noised.noisy, ddpm_noisy_latents(z0, noise, sched.alphas_cumprod, t))
    target = ddpm_target(z0, noise, sched.alphas_cumprod, t, prediction)
    assert torch.equal(noised.target, target)
    pred = torch.randn(z0.shape, generator=g)
    expected = per_sample_mse(pred, target)
    if gamma is not None:
        expected = expected * min_snr_weights(sched.alphas_cumprod, t, gamma, prediction)
    assert torch.equal(DDPMObjective(sched, gamma).loss(pred, noised), expected)


def test_cubic_timesteps_follow_t2i_adapter_and_favour_noisy_steps():
    u = torch.tensor([0.0, 0.5, 0.9, 0.999999])
    # t = floor((1 - u^3) T), clamped to T - 1: u = 0 is the noisiest step
    assert cubic_timesteps(u, 1000).tolist() == [999, 875, 271, 0]
    t = cubic_timesteps(torch.rand(200000, generator=torch.Generator().manual_seed(0)), 1000)
    # P(t >= 500) = P(u <= 0.5^(1/3)) = 0.794; uniform sampling would give 0.5
    assert float((t >= 500).float().mean()) == pytest.approx(0.5 ** (1 / 3), abs=0.003)


def test_ddpm_objective_with_cubic_sampling_draws_u_after_the_noise():
    sched = DDPMScheduler(num_train_timesteps=1000)
    z0 = _z0()
    noised = DDPMObjective(sched, timestep_sampling="cubic").noise(z0, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(z0.shape, generator=g)
    t = cubic_timesteps(torch.rand((3,), generator=g), 1000)
    assert torch.equal(noised.noise, noise) and torch.equal(noised.level, t)
    with pytest.raises(ValueError, match="timestep_sampling must be 'uniform' or 'cubic'"):
        DDPMObjective(sched, timestep_sampling="cosine")


@pytest.mark.parametrize("precondition", [False, True])
@pytest.mark.parametrize("sampling, weighting", [("logit_normal", "none"), ("uniform", "cosmap")])
def test_rectified_flow_objective_matches_the_flow_matching_losses(precondition, sampling, weighting):
    cfg = FlowMatchingConfig(timestep_sampling=sampling, logit_mean=0.2, logit_std=1.3, weighting=weighting,
                             precondition_outputs=precondition)
    z0 = _z0()
    objective = RectifiedFlowObjective(cfg, shift=3.0)
    noised = objective.noise(z0, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(z0.shape, generator=g)
    raw = logit_normal_sigmas(3, 0.2, 1.3, g) if sampling == "logit_normal" else torch.rand(3, generator=g)
    sigmas = shift_sigmas(raw, 3.0)
    assert torch.equal(noised.level, sigmas) and torch.equal(noised.timesteps, sigmas * 1000)
    assert torch.equal(noised.noisy, flow_matching_interpolate(z0, noise, sigmas))
    pred = torch.randn(z0.shape, generator=g)
    expected = flow_matching_dreambooth_loss(pred, z0, noise, sigmas, weighting, precondition)
    torch.testing.assert_close(objective.loss(pred, noised), expected, rtol=0, atol=0)
    if not precondition:
        assert torch.equal(objective.loss(pred, noised), flow_matching_loss(pred, z0, noise, sigmas, weighting))


def test_given_noise_and_level_are_shared_not_redrawn():
    sched = DDPMScheduler(num_train_timesteps=1000)
    z0, z1 = _z0(), _z0() + 1
    objective = DDPMObjective(sched)
    first = objective.noise(z0, torch.Generator().manual_seed(0))
    second = objective.noise(z1, torch.Generator().manual_seed(99), noise=first.noise, level=first.level)
    assert torch.equal(second.noise, first.noise) and torch.equal(second.level, first.level)
    assert torch.equal(second.noisy, ddpm_noisy_latents(z1, first.noise, sched.alphas_cumprod, first.level))


def test_sample_latents_draws_from_the_cached_posterior_then_shifts_and_scales():
    stats = torch.stack([torch.full((2, 4, 3, 3), 2.0), torch.full((2, 4, 3, 3), 0.5)], 1)
    z = sample_latents(stats, torch.Generator().manual_seed(4), shift=1.0, scale=0.25)
    n = torch.randn((2, 4, 3, 3), generator=torch.Generator().manual_seed(4))
    assert torch.equal(z, (2.0 + 0.5 * n - 1.0) * 0.25)


def test_flow_config_rejects_bad_values():
    with pytest.raises(ValueError, match="logit_std"):
        FlowMatchingConfig(logit_std=0)
    with pytest.raises(ValueError, match="shift"):
        FlowMatchingConfig(shift=-1.0)
