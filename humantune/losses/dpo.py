"""Diffusion-DPO (Wallace et al. 2024; ``shared/papers.md`` §2): the preference loss on per-sample denoising errors.

For a pair (x_w preferred to x_l) noised with the **same** ε and timestep, let e_w = ‖f_θ(x_w,t) − y_w‖² and
e_l likewise under the trained model, r_w and r_l under the frozen reference (y: the objective's target — ε, v or
ε − x₀). The loss is

    L = −log σ( β_eff · z ),   z = (r_w − r_l) − (e_w − e_l)

per pair, then averaged over pairs (never σ of the batch mean). Two conventions for β are in use:

- ``logit`` (diffusers' SD1.5 ``train_diffusion_dpo.py``):  −log σ(β·z), β = 2500, so β_eff = β;
- ``half`` (SalesforceAIResearch/DiffusionDPO and diffusers' SDXL script):  −log σ(−½β·(model_diff − ref_diff))
  with model_diff = e_w − e_l, ref_diff = r_w − r_l, β = 5000, so β_eff = β/2.

Both put the same 2500 on z. Errors are per-sample **means** over the latent elements (as both reference scripts):
a sum would multiply z by the number of latent elements and so rescale β with the resolution (SimpleTuner's
flow-DPO sums, which is why its β is 1).

Labels generalise the winner-first pair: ``label`` p is the probability that the first image is preferred
(Pick-a-Pic's ``label_0``), and the loss is the binary cross-entropy  −p·log σ(β_eff·z) − (1−p)·log σ(−β_eff·z);
p = 1 is the formula above, p = 0 says the second image wins (the same as swapping the pair), p = ½ is a tie kept
as a symmetric target (``ties="keep"``) or given zero weight (``ties="drop"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

BetaConvention = Literal["logit", "half"]
TieHandling = Literal["drop", "keep"]

BETA_CONVENTIONS = {"logit": 1.0, "half": 0.5}
"""β_eff / β per convention."""


def effective_beta(beta: float, convention: BetaConvention = "logit") -> float:
    """The factor on z = (r_w − r_l) − (e_w − e_l):  β (``logit``) or β/2 (``half``)."""
    if convention not in BETA_CONVENTIONS:
        raise ValueError(f"beta_convention must be one of {', '.join(BETA_CONVENTIONS)}, got {convention!r}")
    return beta * BETA_CONVENTIONS[convention]


@dataclass
class DpoLossOutput:
    """Per-pair terms of :func:`diffusion_dpo_loss` and the scalars worth logging.

    ``loss`` (B,): per-pair loss; ``weights`` (B,): 1, or 0 for a dropped tie; ``logits`` (B,): z;
    ``implicit_accuracy``: mean(s·z > 0) + ½·mean(z == 0) over the non-tie pairs, s = +1 when the first image is
    preferred, −1 when the second is (NaN when every pair is a tie); ``reward_margin``: mean of s·β_eff·z (the
    implicit reward of the preferred image minus the other's); the mean errors of winner/loser under the model
    and the reference."""

    loss: torch.Tensor
    weights: torch.Tensor
    logits: torch.Tensor
    implicit_accuracy: torch.Tensor
    reward_margin: torch.Tensor
    model_err_w: torch.Tensor
    model_err_l: torch.Tensor
    ref_err_w: torch.Tensor
    ref_err_l: torch.Tensor

    def mean(self) -> torch.Tensor:
        """The batch loss: the weighted mean over pairs (0, still differentiable, when every pair is dropped)."""
        return (self.loss * self.weights).sum() / self.weights.sum().clamp(min=1.0)

    def scalars(self) -> dict[str, float]:
        """The logged terms as floats."""
        return {"implicit_accuracy": float(self.implicit_accuracy), "reward_margin": float(self.reward_margin),
                "model_err_w": float(self.model_err_w), "model_err_l": float(self.model_err_l),
                "ref_err_w": float(self.ref_err_w), "ref_err_l": float(self.ref_err_l),
                "dpo_loss": float(self.mean().detach())}


def diffusion_dpo_loss(model_err_w: torch.Tensor, model_err_l: torch.Tensor, ref_err_w: torch.Tensor,
                       ref_err_l: torch.Tensor, beta: float = 2500.0, convention: BetaConvention = "logit",
                       labels: torch.Tensor | None = None, ties: TieHandling = "drop") -> DpoLossOutput:
    """Diffusion-DPO on per-sample mean errors (see the module docstring):

        z = (r_w − r_l) − (e_w − e_l),   ℓ = −p·log σ(β_eff·z) − (1 − p)·log σ(−β_eff·z)

    ``model_err_*`` (B,): e_w, e_l of the trained model (with gradients); ``ref_err_*`` (B,): r_w, r_l of the
    reference (detached here); ``beta`` and ``convention`` give β_eff (:func:`effective_beta`); ``labels`` (B,):
    p, the probability that the first image of the pair is preferred (None: all 1, winner first); ``ties``: a pair
    with p = ½ is kept with that symmetric target, or dropped (weight 0)."""
    if ties not in ("drop", "keep"):
        raise ValueError(f"ties must be 'drop' or 'keep', got {ties!r}")
    scale = effective_beta(beta, convention)
    e_w, e_l = model_err_w.float(), model_err_l.float()
    r_w, r_l = ref_err_w.detach().float(), ref_err_l.detach().float()
    logits = (r_w - r_l) - (e_w - e_l)
    p = torch.ones_like(logits) if labels is None else labels.to(logits.device, torch.float32)
    if ((p < 0) | (p > 1)).any():
        raise ValueError(f"labels must lie in [0, 1], got {p.tolist()}")
    inside = scale * logits
    loss = -p * F.logsigmoid(inside) - (1 - p) * F.logsigmoid(-inside)
    tie = p == 0.5
    weights = torch.where(tie, 0.0, 1.0) if ties == "drop" else torch.ones_like(p)
    with torch.no_grad():
        sign = torch.sign(2 * p - 1)   # +1: first preferred, −1: second preferred, 0: tie
        decided = sign != 0
        signed = (sign * logits)[decided]
        if decided.any():
            accuracy = (signed > 0).float().mean() + 0.5 * (signed == 0).float().mean()
            margin = (scale * signed).mean()
        else:
            accuracy = margin = torch.tensor(float("nan"))
    return DpoLossOutput(loss=loss, weights=weights, logits=logits.detach(), implicit_accuracy=accuracy,
                         reward_margin=margin, model_err_w=e_w.detach().mean(), model_err_l=e_l.detach().mean(),
                         ref_err_w=r_w.mean(), ref_err_l=r_l.mean())
