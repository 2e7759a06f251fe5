"""Diffusion-DPO loss: a hand computation, the formulas of diffusers' and Salesforce's scripts written out on the same
tensors, ties, a second-image-wins label, and the errors of the ε-, v- and flow targets."""

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from humantune.losses.dpo import diffusion_dpo_loss, effective_beta
from humantune.losses.objectives import DDPMObjective, FlowMatchingConfig, RectifiedFlowObjective


def _errors(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, generator=g) * 0.2 + 0.1 for _ in range(4)]


def test_hand_computation():
    out = diffusion_dpo_loss(torch.tensor([0.1]), torch.tensor([0.3]), torch.tensor([0.2]), torch.tensor([0.25]),
                             beta=10.0)
    z = (0.2 - 0.25) - (0.1 - 0.3)          # 0.15
    assert out.logits.item() == pytest.approx(z)
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(-10 * z)), rel=1e-6)
    assert out.implicit_accuracy.item() == 1.0
    assert out.reward_margin.item() == pytest.approx(10 * z, rel=1e-6)
    assert (out.model_err_w.item(), out.ref_err_l.item()) == pytest.approx((0.1, 0.25))


def test_matches_diffusers_sd15_script():
    """diffusers examples/research_projects/diffusion_dpo/train_diffusion_dpo.py, β 2500, no ½."""
    mw, ml, rw, rl = _errors()
    beta = 2500
    model_diff = mw - ml
    ref_diff = rw - rl
    logits = ref_diff - model_diff
    loss = -1 * F.logsigmoid(beta * logits).mean()
    implicit_acc = (logits > 0).sum().float() / logits.size(0)
    implicit_acc += 0.5 * (logits == 0).sum().float() / logits.size(0)
    ours = diffusion_dpo_loss(mw, ml, rw, rl, beta=2500, convention="logit")
    assert ours.mean().item() == pytest.approx(loss.item(), rel=1e-6)
    assert ours.implicit_accuracy.item() == pytest.approx(implicit_acc.item())
    assert 0 < implicit_acc < 1    # the fixture has pairs on both sides


def test_matches_salesforce_and_sdxl_scripts():
    """SalesforceAIResearch/DiffusionDPO train.py and diffusers' SDXL script: −½·β, β 5000."""
    mw, ml, rw, rl = _errors(seed=1)
    beta_dpo = 5000
    model_diff = mw - ml
    ref_diff = rw - rl
    scale_term = -0.5 * beta_dpo
    inside_term = scale_term * (model_diff - ref_diff)
    implicit_acc = (inside_term > 0).sum().float() / inside_term.size(0)
    loss = -1 * F.logsigmoid(inside_term).mean()
    ours = diffusion_dpo_loss(mw, ml, rw, rl, beta=5000, convention="half")
    assert ours.mean().item() == pytest.approx(loss.item(), rel=1e-6)
    assert ours.implicit_accuracy.item() == pytest.approx(implicit_acc.item())
    # the same effective 2500 as the SD1.5 convention
    same = diffusion_dpo_loss(mw, ml, rw, rl, beta=2500, convention="logit")
    assert torch.allclose(ours.loss, same.loss)
    assert effective_beta(5000, "half") == effective_beta(2500, "logit") == 2500


def test_sigmoid_is_per_pair_not_of_the_batch_mean():
    mw, ml, rw, rl = _errors(seed=2)
    out = diffusion_dpo_loss(mw, ml, rw, rl, beta=100)
    z = (rw - rl) - (mw - ml)
    assert out.mean().item() == pytest.approx((-F.logsigmoid(100 * z)).mean().item(), rel=1e-6)
    assert out.mean().item() != pytest.approx(-F.logsigmoid(100 * z.mean()).item(), rel=1e-3)


def test_second_image_wins_label_equals_the_swapped_pair():
    mw, ml, rw, rl = _errors(seed=3)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    out = diffusion_dpo_loss(mw, ml, rw, rl, beta=50, labels=labels)
    swap = labels == 0
    w, lo = torch.where(swap, ml, mw), torch.where(swap, mw, ml)
    rw2, rl2 = torch.where(swap, rl, rw), torch.where(swap, rw, rl)
    swapped = diffusion_dpo_loss(w, lo, rw2, rl2, beta=50)
    assert torch.allclose(out.loss, swapped.loss)
    assert out.implicit_accuracy.item() == pytest.approx(swapped.implicit_accuracy.item())
    assert out.reward_margin.item() == pytest.approx(swapped.reward_margin.item(), rel=1e-5)


def test_tie_kept_as_symmetric_target_or_dropped():
    mw, ml, rw, rl = [torch.tensor(v) for v in ([0.1, 0.1], [0.3, 0.2], [0.2, 0.2], [0.25, 0.2])]
    labels = torch.tensor([1.0, 0.5])
    keep = diffusion_dpo_loss(mw, ml, rw, rl, beta=10, labels=labels, ties="keep")
    z = (0.2 - 0.2) - (0.1 - 0.2)            # 0.1 for the tie
    expected_tie = -0.5 * math.log(1 / (1 + math.exp(-1.0))) - 0.5 * math.log(1 / (1 + math.exp(1.0)))
    assert keep.loss[1].item() == pytest.approx(expected_tie, rel=1e-6)
    assert keep.logits[1].item() == pytest.approx(z)
    assert keep.mean().item() == pytest.approx(keep.loss.mean().item())
    drop = diffusion_dpo_loss(mw, ml, rw, rl, beta=10, labels=labels, ties="drop")
    assert drop.weights.tolist() == [1.0, 0.0]
    assert drop.mean().item() == pytest.approx(drop.loss[0].item())
    # a tie's symmetric loss is smallest at z = 0: it pulls winner and loser errors together
    at_zero = diffusion_dpo_loss(torch.tensor([0.2]), torch.tensor([0.2]), torch.tensor([0.2]), torch.tensor([0.2]),
                                 beta=10, labels=torch.tensor([0.5]), ties="keep")
    assert at_zero.loss.item() == pytest.approx(math.log(2)) and at_zero.loss.item() < keep.loss[1].item()
    # accuracy counts only decided pairs; all ties: NaN
    assert keep.implicit_accuracy.item() == 1.0
    assert math.isnan(at_zero.implicit_accuracy.item())


def test_all_pairs_dropped_gives_zero_loss():
    mw = torch.tensor([0.1], requires_grad=True)
    out = diffusion_dpo_loss(mw, torch.tensor([0.2]), torch.tensor([0.1]), torch.tensor([0.2]), beta=10,
                             labels=torch.tensor([0.5]), ties="drop")
    total = out.mean()
    total.backward()
    assert total.item() == 0.0 and mw.grad.item() == 0.0


def test_gradient_lowers_the_winner_error_and_raises_the_loser_error():
    mw = torch.tensor([0.2], requires_grad=True)
    ml = torch.tensor([0.2], requires_grad=True)
    diffusion_dpo_loss(mw, ml, torch.tensor([0.2]), torch.tensor([0.2]), beta=10).mean().backward()
    assert mw.grad.item() > 0 > ml.grad.item()    # descent lowers e_w, raises e_l
    assert mw.grad.item() == pytest.approx(10 * 0.5)


def test_bad_labels_and_options_are_refused():
    e = torch.tensor([0.1])
    with pytest.raises(ValueError, match="labels"):
        diffusion_dpo_loss(e, e, e, e, labels=torch.tensor([1.5]))
    with pytest.raises(ValueError, match="beta_convention"):
        diffusion_dpo_loss(e, e, e, e, convention="sum")
    with pytest.raises(ValueError, match="ties"):
        diffusion_dpo_loss(e, e, e, e, ties="first")


def _pair_latents(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 4, 4,
                                                                                                     generator=g)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "flow"])
def test_targets_give_the_expected_errors(kind):
    """Winner and loser noised with the same ε and level; the errors fed to the loss are per-sample means against
    ε, v = √ᾱ·ε − √(1−ᾱ)·z₀ or ε − x₀, and equal a hand computation."""
    z_w, z_l, out = _pair_latents()
    noise = torch.randn(z_w.shape, generator=torch.Generator().manual_seed(9))
    if kind == "flow":
        objective = RectifiedFlowObjective(FlowMatchingConfig(), shift=1.0)
        level = torch.tensor([0.3, 0.8])
    else:
        sched = DDPMScheduler(num_train_timesteps=1000, prediction_type=kind)
        objective = DDPMObjective(sched)
        level = torch.tensor([10, 700])
    nw = objective.noise(z_w, torch.Generator().manual_seed(1), noise=noise, level=level)
    nl = objective.noise(z_l, torch.Generator().manual_seed(2), noise=nw.noise, level=nw.level)
    assert torch.equal(nl.noise, nw.noise) and torch.equal(nl.level, nw.level)

    def target(z0):
        if kind == "flow":
            return noise - z0
        a = sched.alphas_cumprod[level].view(-1, 1, 1, 1)
        return noise if kind == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * z0

    e_w, e_l = objective.loss(out, nw), objective.loss(out, nl)
    hand_w = ((out - target(z_w)) ** 2).mean(dim=(1, 2, 3))
    hand_l = ((out - target(z_l)) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(e_w, hand_w, rtol=1e-5) and torch.allclose(e_l, hand_l, rtol=1e-5)
    ref_w, ref_l = hand_w * 1.1, hand_l * 0.9
    loss = diffusion_dpo_loss(e_w, e_l, ref_w, ref_l, beta=3.0)
    z = (ref_w - ref_l) - (hand_w - hand_l)
    assert torch.allclose(loss.loss, -F.logsigmoid(3.0 * z), rtol=1e-5)


def test_mean_reduction_does_not_rescale_beta_with_latent_size():
    """The same image at twice the latent side (each element repeated 2×2) has the same per-sample mean error, so
    the same loss; a sum would be 4× larger and act as a 4× larger β."""
    z_w, z_l, out = _pair_latents(1)
    objective = RectifiedFlowObjective(FlowMatchingConfig(), shift=1.0)
    noise = torch.randn(z_w.shape, generator=torch.Generator().manual_seed(3))
    level = torch.tensor([0.5, 0.5])
    up = lambda x: x.repeat_interleave(2, -1).repeat_interleave(2, -2)  # noqa: E731

    def loss(zw, zl, o, n):
        nw = objective.noise(zw, torch.Generator(), noise=n, level=level)
        nl = objective.noise(zl, torch.Generator(), noise=n, level=level)
        return diffusion_dpo_loss(objective.loss(o, nw), objective.loss(o, nl), torch.full((2,), 0.5),
                                  torch.full((2,), 0.6), beta=5.0).loss

    assert torch.allclose(loss(z_w, z_l, out, noise), loss(up(z_w), up(z_l), up(out), up(noise)), rtol=1e-5)
