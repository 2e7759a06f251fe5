"""Ent-Prog's training machinery (``shared/papers.md`` §3), generic over a list of named block modules.

- :func:`cei_priority` — Conditional Entropy Inflation of a block from the predicted-noise statistics with and
  without it, π(b) = log(σ_skip(b)(ε̂) / σ(ε̂)), in both readings (σ pooled or per sample; mean of log-ratios or
  log of the mean ratio);
- :func:`convergence_efficiency` — CE(m) = −Σ_{s≥2}(ℓ_m(s) − ℓ_m(s−1)) / Σ_{s≥2} T_m(s), and
  :func:`candidate_efficiencies`, the loss traces of the nested supernet read two ways (``trace`` below);
- :class:`ProgressiveBlocks` — the top-m blocks by priority train, the others are frozen (``requires_grad`` False,
  gradients None; :func:`drop_frozen_state` removes optimizer state of frozen parameters), and the *frozen prefix*
  (every block before the first trainable one in forward order, and whatever the model runs before it) runs under
  ``no_grad`` so its activations are not stored. (In PyTorch, ``requires_grad`` freezing already keeps autograd out
  of a prefix none of whose inputs requires grad; the no-grad context guarantees it when one does — a trainable
  embedding or condition encoder feeding the prefix, whose gradient then stops there. Frozen blocks *after* the
  first trainable one must still store what their input gradients need.);
- :func:`supernet_choice` — the m a supernet step trains, a function of (seed, stage, step) alone, so a run resumed
  inside a supernet epoch trains the same m at every step;
- :class:`SavedTensorBytes` — bytes autograd saves for backward (the activation part of the training state).

Reading the supernet traces (``trace``): the forward network is the full one for every m, so "evaluate every
candidate after each step" gives one held-out loss per step, not one per candidate. Two readings are offered:

- ``sampled``: ℓ_m(s) is the held-out loss after the steps that trained m (in order), T_m(s) those steps' times;
  CE(m) is the equation on that subsequence. It telescopes to (ℓ_m(first) − ℓ_m(last)) / Σ T_m, so it credits m
  with whatever the other candidates' steps in between did too.
- ``credited``: each step s that trained m is credited with its own drop of the held-out loss, ℓ(s−1) − ℓ(s),
  CE(m) = Σ_{s: m_s = m} (ℓ(s−1) − ℓ(s)) / Σ_{s: m_s = m} T(s) — the equation applied to every step's two-point
  trace (before, after) and summed: held-out loss decrease per second of steps that trained m.

A lookahead reading (each candidate takes a trial step from the current weights, measured and reverted) is not
implemented.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Literal, Sequence

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook


# ---------------------------------------------------------------------------------------------------------- CEI


def sample_moments(eps: torch.Tensor) -> torch.Tensor:
    """Per-sample (count, Σx, Σx²) of a batch of predictions (B, …), float64 (B, 3): the sufficient statistics of
    σ in both readings, so that CEI can be accumulated batch by batch."""
    flat = eps.detach().double().reshape(len(eps), -1)
    return torch.stack([torch.full((len(eps),), float(flat.shape[1]), dtype=torch.float64), flat.sum(1),
                        (flat * flat).sum(1)], 1)


def _sigma(moments: torch.Tensor) -> torch.Tensor:
    n, s, q = moments.unbind(-1)
    return ((q / n - (s / n) ** 2).clamp_min(0)).sqrt()


def cei_priority(full: torch.Tensor, skipped: torch.Tensor, sigma: Literal["sample", "pooled"] = "sample",
                 average: Literal["log_ratio", "ratio"] = "log_ratio") -> float:
    """Conditional Entropy Inflation of a block (papers.md §3):

        π(b) = log( σ_skip(b)(ε̂) / σ(ε̂) )

    the Gaussian entropy change ΔH = H(ε̂ | x_t, t; skip(b), c) − H(ε̂ | x_t, t; c) per dimension. ``full`` and
    ``skipped`` are :func:`sample_moments` (N, 3) of the same N samples (x_t, t, c) predicted by the full model and
    with block b skipped. ``sigma="sample"``: σ_i is the standard deviation of sample i's prediction;
    ``"pooled"``: one σ over every element of all N samples (then ``average`` is moot: one ratio). ``average``:
    ``"log_ratio"`` = (1/N) Σ_i log(σ_skip,i / σ_i); ``"ratio"`` = log((1/N) Σ_i σ_skip,i / σ_i)."""
    if full.shape != skipped.shape or full.ndim != 2 or full.shape[1] != 3:
        raise ValueError(f"expected two (N, 3) moment tensors of the same samples, got {tuple(full.shape)} and "
                         f"{tuple(skipped.shape)}")
    if sigma == "pooled":
        return math.log(float(_sigma(skipped.sum(0)) / _sigma(full.sum(0))))
    ratio = _sigma(skipped) / _sigma(full)
    if average == "log_ratio":
        return float(ratio.log().mean())
    return math.log(float(ratio.mean()))


def rank_blocks(priorities: dict[str, float]) -> list[str]:
    """Block names by descending priority π; equal priorities keep their (forward) order."""
    names = list(priorities)
    return sorted(names, key=lambda n: (-priorities[n], names.index(n)))


# ---------------------------------------------------------------------------------------------------------- CE


def convergence_efficiency(losses: Sequence[float], times: Sequence[float]) -> float:
    """Convergence efficiency of a candidate from its held-out loss trace ℓ(1 … S) and step times T(1 … S)
    (papers.md §3):

        CE = − Σ_{s≥2} (ℓ(s) − ℓ(s−1)) / Σ_{s≥2} T(s)

    The numerator telescopes to ℓ(1) − ℓ(S): only the fixed held-out set (fixed timesteps and noises) makes two
    candidates' traces comparable. Needs S ≥ 2 and a positive time."""
    if len(losses) != len(times) or len(losses) < 2:
        raise ValueError(f"CE needs at least two (loss, time) points of equal count, got {len(losses)} losses and "
                         f"{len(times)} times")
    drop = -sum(losses[s] - losses[s - 1] for s in range(1, len(losses)))
    seconds = sum(times[1:])
    if seconds <= 0:
        raise ValueError(f"CE needs a positive total time, got {seconds}")
    return drop / seconds


def candidate_efficiencies(rows: Sequence[dict], candidates: Sequence[int], trace: Literal["sampled", "credited"],
                           start_loss: float | None = None, key: str = "heldout_loss") -> dict[int, float | None]:
    """CE(m) of every candidate from a supernet epoch's rows (in step order), each ``{"m", key, "step_seconds"}``
    (``key``: the held-out loss after the step), read as ``trace`` says (module docstring). ``start_loss`` is the
    held-out loss before the first step (``credited`` needs it for the first step's drop). A candidate with too few
    points (``sampled``: fewer than 2 steps; ``credited``: none) gets None."""
    out: dict[int, float | None] = {}
    for m in candidates:
        if trace == "sampled":
            own = [r for r in rows if r["m"] == m]
            out[m] = (convergence_efficiency([r[key] for r in own], [r["step_seconds"] for r in own])
                      if len(own) >= 2 else None)
            continue
        drop = seconds = 0.0
        previous = start_loss
        for r in rows:
            if r["m"] == m and previous is not None:
                # the step's own two-point trace (before, after): CE's numerator ℓ(before) − ℓ(after), time T(s)
                drop += previous - r[key]
                seconds += r["step_seconds"]
            previous = r[key]
        out[m] = drop / seconds if seconds > 0 else None
    return out


def best_candidate(efficiencies: dict[int, float | None]) -> int:
    """argmax_m CE(m); ties go to the smaller m (cheaper); candidates without a CE are never chosen unless none has
    one (then the largest m: train the most)."""
    scored = {m: ce for m, ce in efficiencies.items() if ce is not None and math.isfinite(ce)}
    if not scored:
        return max(efficiencies)
    return max(sorted(scored), key=lambda m: scored[m])


def supernet_choice(seed: int, stage: int, step: int, candidates: Sequence[int]) -> int:
    """The m that supernet step ``step`` of stage ``stage`` trains: uniform over ``candidates``, drawn from
    ``default_rng([seed, stage, step])`` alone (the same after a resume)."""
    return int(candidates[int(np.random.default_rng([seed, stage, step]).integers(len(candidates)))])


# ---------------------------------------------------------------------------------------------------------- freezing


def drop_frozen_state(optimizer: torch.optim.Optimizer) -> int:
    """Remove the optimizer state of every parameter that no longer requires grad; return how many were dropped.
    (AdamW skips parameters whose gradient is None, so a frozen parameter then carries no state and no update.)"""
    frozen = [p for group in optimizer.param_groups for p in group["params"]
              if not p.requires_grad and p in optimizer.state]
    for p in frozen:
        del optimizer.state[p]
    return len(frozen)


class ProgressiveBlocks:
    """The blocks of a denoiser in forward order (``names`` ↔ ``modules``) and a priority ``ranking`` of their
    names (highest first). :meth:`train_top` makes the top-m train and freezes the rest; :meth:`frozen_prefix`
    runs everything before the first trainable block under ``no_grad``."""

    def __init__(self, names: Sequence[str], modules: Sequence[torch.nn.Module], ranking: Sequence[str]) -> None:
        if sorted(names) != sorted(ranking) or len(set(names)) != len(names):
            raise ValueError("ranking must order exactly the block names, each once")
        self.names, self.modules, self.ranking = list(names), list(modules), list(ranking)
        self.trained: set[str] = set(self.names)

    def top(self, m: int) -> list[str]:
        """The names of the top-m blocks by priority."""
        if not 1 <= m <= len(self.names):
            raise ValueError(f"m must be within 1 … {len(self.names)}, got {m}")
        return self.ranking[:m]

    def parameters(self, names: Sequence[str]) -> list[torch.nn.Parameter]:
        wanted = set(names)
        return [p for n, mod in zip(self.names, self.modules) if n in wanted for p in mod.parameters()]

    def train_top(self, m: int) -> list[torch.nn.Parameter]:
        """requires_grad True for the top-m blocks' parameters, False (and gradient None) for the other blocks';
        returns the trained parameters."""
        return self.train_only(self.top(m))

    def train_only(self, names: Sequence[str]) -> list[torch.nn.Parameter]:
        self.trained = set(names)
        for name, module in zip(self.names, self.modules):
            on = name in self.trained
            for p in module.parameters():
                p.requires_grad_(on)
                if not on:
                    p.grad = None
        return self.parameters(names)

    def first_trained(self) -> int | None:
        """Forward index of the first trainable block (None: none trains)."""
        return next((i for i, n in enumerate(self.names) if n in self.trained), None)

    @contextlib.contextmanager
    def frozen_prefix(self, enabled: bool = True) -> Iterator[None]:
        """Run a forward pass of the denoiser inside this context: grad is off from the start until the first
        trainable block begins (a forward pre-hook turns it back on), so nothing before that block — embeddings,
        frozen blocks — stores activations for backward. Grad mode is restored on exit."""
        first = self.first_trained()
        if not enabled or first is None or not torch.is_grad_enabled():
            yield
            return
        def enable_grad(module, args) -> None:   # returns None: the block's inputs stay as they are
            torch.set_grad_enabled(True)

        handle = self.modules[first].register_forward_pre_hook(enable_grad)
        try:
            with torch.no_grad():
                yield
        finally:
            handle.remove()
            torch.set_grad_enabled(True)


class OptimizerCarry:
    """AdamW state carried from one engine phase to the next (a stage's supernet epoch → its continuation → the next
    stage): the engine builds a new optimizer per phase over the parameters that then require grad; inside
    :meth:`phase`, a global optimizer step pre-hook gives that optimizer, before its first step, the carried state
    (exp_avg, exp_avg_sq, step) of every parameter it has none for, and on exit the phase's state is kept for the
    next. A parameter newly trained starts fresh; a checkpoint loaded on resume keeps its own state (only missing
    entries are filled). In memory only: a process resumed at a phase boundary starts that phase's state fresh."""

    def __init__(self) -> None:
        self.state: dict[torch.nn.Parameter, dict] = {}
        self._optimizer: torch.optim.Optimizer | None = None
        self.seeded = 0

    def _pre_step(self, optimizer, args, kwargs) -> None:
        if optimizer is self._optimizer:
            return
        self._optimizer = optimizer
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p not in optimizer.state and p in self.state:
                    optimizer.state[p] = self.state[p]
                    self.seeded += 1

    @contextlib.contextmanager
    def phase(self, enabled: bool = True) -> Iterator[None]:
        if not enabled:
            yield
            return
        handle = register_optimizer_step_pre_hook(self._pre_step)
        try:
            yield
        finally:
            handle.remove()
            if self._optimizer is not None:
                self.state.update(self._optimizer.state)
            self._optimizer = None


# ---------------------------------------------------------------------------------------------------------- memory


class SavedTensorBytes:
    """Context manager counting the bytes autograd saves for backward (distinct storages once, ``exclude``'s never),
    via ``torch.autograd.graph.saved_tensors_hooks``: the activation part of the training state."""

    def __init__(self, exclude: Sequence[torch.Tensor] = ()) -> None:
        self.bytes = 0
        self.count = 0
        # storages of ``exclude`` (the parameters: saved weights are not activations) are never counted
        self._seen: set[int] = {t.untyped_storage().data_ptr() for t in exclude}

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        self.count += 1
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in self._seen:
            self._seen.add(key)
            self.bytes += storage.nbytes()
        return tensor

    def __enter__(self) -> SavedTensorBytes:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


def training_state_bytes(all_params: Sequence[torch.nn.Parameter], trained: Sequence[torch.nn.Parameter],
                         activation_bytes: int, optimizer_slots: int = 2) -> dict[str, int]:
    """The training state of a step: parameters (all of the denoiser), gradients (trained only), optimizer state
    (``optimizer_slots`` tensors per trained parameter: AdamW's exp_avg and exp_avg_sq) and saved activations."""
    params = sum(p.numel() * p.element_size() for p in all_params)
    grads = sum(p.numel() * p.element_size() for p in trained)
    state = {"params": params, "grads": grads, "optimizer": optimizer_slots * grads, "activations": activation_bytes}
    state["total"] = sum(state.values())
    return state
