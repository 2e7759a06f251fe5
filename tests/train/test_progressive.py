"""Ent-Prog's pure functions and freezing machinery against hand computations and toy models."""

import math

import pytest
import torch

from humantune.models.blocks import Block
from humantune.studies.entprog_cei import block_priorities
from humantune.train.progressive import (
    OptimizerCarry, ProgressiveBlocks, SavedTensorBytes, best_candidate, candidate_efficiencies, cei_priority,
    convergence_efficiency, drop_frozen_state, rank_blocks, sample_moments, supernet_choice, training_state_bytes,
)


def test_cei_priority_readings_against_hand_computation():
    full = torch.tensor([[1.0, -1, 1, -1], [2, -2, 2, -2]])      # σ = 1, 2
    skipped = torch.tensor([[2.0, -2, 2, -2], [2, -2, 2, -2]])   # σ = 2, 2: ratios 2 and 1
    f, s = sample_moments(full), sample_moments(skipped)
    assert cei_priority(f, s, "sample", "log_ratio") == pytest.approx((math.log(2) + 0) / 2)
    assert cei_priority(f, s, "sample", "ratio") == pytest.approx(math.log(1.5))
    # pooled: σ over all 8 elements: sqrt((4·1 + 4·4)/8) = sqrt(2.5) vs 2
    assert cei_priority(f, s, "pooled") == pytest.approx(math.log(2 / math.sqrt(2.5)))
    with pytest.raises(ValueError):
        cei_priority(f, s[:1])


class Contraction(torch.nn.Module):
    """x → (1 − a)·x: its residual branch is −a·x, so skipping it multiplies the output's σ by 1/(1 − a)."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = a

    def forward(self, x):
        return (1 - self.a) * x


def test_cei_of_blocks_with_known_importance():
    """Skipping block b of a chain of contractions inflates σ by exactly 1/(1 − a_b): π(b) = −log(1 − a_b) in every
    reading, and the ranking follows a."""
    a = [0.1, 0.5, 0.0, 0.3]
    chain = torch.nn.Sequential(*[Contraction(v) for v in a])
    blocks = [Block(f"blocks.{i}", m, "hidden") for i, m in enumerate(chain)]
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(5, 3, 4, generator=g) * torch.arange(1, 6).view(5, 1, 1) for _ in range(3)]
    result = block_priorities(chain, lambda x: chain(x), batches, blocks, progress=False)
    for reading, scores in result["priorities"].items():
        for i, v in enumerate(a):
            assert scores[f"blocks.{i}"] == pytest.approx(-math.log(1 - v), abs=1e-6), reading
    assert rank_blocks(result["priorities"]["sample/log_ratio"]) == ["blocks.1", "blocks.3", "blocks.0", "blocks.2"]


def test_convergence_efficiency_against_hand_computation():
    losses, times = [1.0, 0.8, 0.7, 0.75], [9.0, 1.0, 2.0, 1.0]
    # −((0.8−1) + (0.7−0.8) + (0.75−0.7)) / (1 + 2 + 1): the first step's time is not summed (s ≥ 2)
    assert convergence_efficiency(losses, times) == pytest.approx(0.25 / 4)
    with pytest.raises(ValueError):
        convergence_efficiency([1.0], [1.0])


def test_candidate_efficiencies_both_traces():
    rows = [{"m": 1, "loss": 0.9, "step_seconds": 1.0}, {"m": 2, "loss": 0.85, "step_seconds": 2.0},
            {"m": 1, "loss": 0.8, "step_seconds": 1.0}, {"m": 2, "loss": 0.78, "step_seconds": 2.0}]
    credited = candidate_efficiencies(rows, [1, 2, 3], "credited", start_loss=1.0, key="loss")
    assert credited[1] == pytest.approx((0.1 + 0.05) / 2) and credited[2] == pytest.approx((0.05 + 0.02) / 4)
    assert credited[3] is None
    sampled = candidate_efficiencies(rows, [1, 2], "sampled", key="loss")
    assert sampled[1] == pytest.approx(0.1 / 1.0) and sampled[2] == pytest.approx(0.07 / 2.0)
    assert best_candidate(credited) == 1 and best_candidate({4: None, 6: None}) == 6
    assert best_candidate({2: 0.5, 4: 0.5}) == 2


def test_supernet_choice_is_a_function_of_seed_stage_and_step():
    draws = [supernet_choice(0, 1, s, [2, 4, 6]) for s in range(60)]
    assert draws == [supernet_choice(0, 1, s, [2, 4, 6]) for s in range(60)]
    assert set(draws) == {2, 4, 6}
    assert draws != [supernet_choice(0, 2, s, [2, 4, 6]) for s in range(60)]


def _chain(n=4, width=6):
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Tanh())
                                 for _ in range(n)])


def test_frozen_blocks_get_no_gradient_and_no_optimizer_state():
    chain = _chain()
    blocks = ProgressiveBlocks([f"b{i}" for i in range(4)], list(chain), ["b2", "b0", "b3", "b1"])
    trained = blocks.train_top(2)
    optimizer = torch.optim.AdamW(list(chain.parameters()))
    chain(torch.randn(3, 6)).square().mean().backward()
    optimizer.step()
    ids = {id(p) for p in trained}
    for p in chain.parameters():
        assert (p.grad is not None) == (id(p) in ids)
        assert (p in optimizer.state) == (id(p) in ids)
    blocks.train_top(1)   # b0 freezes: its gradient and optimizer state go
    assert all(p.grad is None for p in chain[0].parameters())
    assert drop_frozen_state(optimizer) == 2
    assert all(p not in optimizer.state for p in chain[0].parameters())
    assert all(p in optimizer.state for p in chain[2].parameters())


def test_frozen_prefix_stores_no_activations_and_gives_the_same_gradients():
    """b2, b3 train; b0, b1 are the frozen prefix. Its input requires grad (as a trainable embedding's output would):
    without the no-grad prefix autograd stores the prefix's activations, with it only b2 and b3 store theirs."""
    chain = _chain()
    blocks = ProgressiveBlocks([f"b{i}" for i in range(4)], list(chain), ["b2", "b3", "b0", "b1"])
    blocks.train_top(2)
    params = list(chain.parameters())
    results = {}
    for prefix in (False, True):
        for p in params:
            p.grad = None
        x = torch.randn(8, 6, generator=torch.Generator().manual_seed(0)).requires_grad_()
        with SavedTensorBytes(exclude=params) as saved, blocks.frozen_prefix(prefix):
            out = chain(x).square().mean()
        assert torch.is_grad_enabled()
        out.backward()
        results[prefix] = (saved.bytes, saved.count, [p.grad.clone() for p in blocks.parameters(["b2", "b3"])])
    # with the prefix, what is stored is exactly what b2, b3 and the loss store: the same as when nothing before b2
    # requires grad; without it the prefix adds b0's tanh output (8×6 float32; b1's is b2's input, stored anyway)
    with SavedTensorBytes(exclude=params) as alone:
        chain[3](chain[2](chain[1](chain[0](x.detach())).detach())).square().mean()
    assert results[True][0] == alone.bytes
    assert results[False][0] - results[True][0] == 8 * 6 * 4
    for a, b in zip(results[False][2], results[True][2]):
        assert torch.equal(a, b)
    with torch.no_grad(), blocks.frozen_prefix(True):   # inside no_grad the hook must not turn grad on
        assert not chain(torch.randn(2, 6)).requires_grad


def test_training_state_bytes_sums_the_parts():
    chain = _chain(2, 4)
    trained = list(chain[1].parameters())
    state = training_state_bytes(list(chain.parameters()), trained, activation_bytes=100)
    assert state == {"params": 2 * 20 * 4, "grads": 20 * 4, "optimizer": 2 * 20 * 4, "activations": 100,
                     "total": 2 * 20 * 4 + 20 * 4 + 2 * 20 * 4 + 100}


def test_optimizer_carry_hands_adamw_state_to_the_next_phase_and_starts_new_parameters_fresh():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    carry = OptimizerCarry()

    def phase(params, steps):
        opt = torch.optim.AdamW(params, lr=0.1)
        for _ in range(steps):
            sum(p.sum() for p in params).backward()
            opt.step()
            opt.zero_grad()
        return opt

    with carry.phase():
        first = phase([a], 3)
    moment = first.state[a]["exp_avg"].clone()
    with carry.phase():
        second = phase([a, b], 1)
    # a continues: step 4 and its first moment β1·m + (1 − β1)·g with g = 1; b starts at step 1
    assert float(second.state[a]["step"]) == 4 and float(second.state[b]["step"]) == 1
    assert torch.allclose(second.state[a]["exp_avg"], 0.9 * moment + 0.1)
    assert carry.seeded == 1
    with carry.phase(enabled=False):
        assert float(phase([b], 1).state[b]["step"]) == 1   # disabled: a new AdamW
