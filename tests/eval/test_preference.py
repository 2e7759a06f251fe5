import math

import numpy as np
import pytest
from scipy import optimize, stats

from humantune.eval.preference import (
    bootstrap_interval,
    bradley_terry,
    bradley_terry_bootstrap,
    cohen_kappa,
    fleiss_kappa,
    majority_label,
    wilson_interval,
    win_rate,
)


def test_win_rate_counts_ties_as_half():
    assert win_rate(6, 2, 2) == pytest.approx(0.7)  # (6 + 1) / 10
    assert win_rate(3, 1) == pytest.approx(0.75)
    assert win_rate(0, 0, 5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no comparisons"):
        win_rate(0, 0, 0)
    with pytest.raises(ValueError, match="losses must be a non-negative count, got -1"):
        win_rate(3, -1)


def test_wilson_interval_8_of_10_by_formula_and_scipy():
    # z = Φ⁻¹(0.975) = 1.959963984540054, p̂ = 0.8, n = 10:
    # centre = (0.8 + z²/20) / (1 + z²/10), half = z·sqrt(0.8·0.2/10 + z²/400) / (1 + z²/10)
    z = 1.959963984540054
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z * math.sqrt(0.016 + z * z / 400) / (1 + z * z / 10)
    low, high = wilson_interval(8, 10, 0.95)
    assert (low, high) == pytest.approx((centre - half, centre + half), rel=1e-12)
    assert (low, high) == pytest.approx((0.49016, 0.94332), abs=1e-5)
    ref = stats.binomtest(8, 10).proportion_ci(0.95, method="wilson")
    assert (low, high) == pytest.approx((ref.low, ref.high), rel=1e-12)


def test_wilson_interval_with_ties_and_edges():
    # 6 wins, 2 losses, 2 ties → 7 successes of 10
    assert wilson_interval(6 + 2 / 2, 10) == pytest.approx(wilson_interval(7, 10), rel=1e-15)
    low, high = wilson_interval(0, 5)
    assert low == 0.0 and 0 < high < 1
    low, high = wilson_interval(5, 5)
    assert 0 < low < 1 and high == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"successes \(11\) cannot exceed n \(10\)"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="level must be in"):
        wilson_interval(5, 10, level=95)
    with pytest.raises(ValueError, match="n must be positive"):
        wilson_interval(0, 0)


def test_bootstrap_interval_matches_scipy_percentile_bootstrap():
    rng = np.random.default_rng(0)
    scores = rng.choice([1.0, 0.5, 0.0], p=[0.5, 0.2, 0.3], size=200)
    low, high = bootstrap_interval(scores, level=0.9, n_boot=20_000, seed=1)
    ref = stats.bootstrap((scores,), np.mean, confidence_level=0.9, n_resamples=20_000, method="percentile",
                          random_state=2).confidence_interval
    # different random draws: both estimate the same quantiles to ~±0.003
    assert low == pytest.approx(ref.low, abs=0.006) and high == pytest.approx(ref.high, abs=0.006)
    assert low < scores.mean() < high
    assert bootstrap_interval(scores, 0.9, 500, seed=3) == bootstrap_interval(scores, 0.9, 500, seed=3)


def test_bootstrap_interval_constant_values_and_custom_statistic():
    assert bootstrap_interval(np.full(7, 0.5), n_boot=100) == (0.5, 0.5)
    values = np.arange(10.0)
    low, high = bootstrap_interval(values, n_boot=2_000, statistic=lambda s: np.max(s, axis=1))
    # max of a resample of 0..9 is ≤ 5 with probability 0.6¹⁰ ≈ 0.006 and ≤ 6 with 0.7¹⁰ ≈ 0.028:
    # the 2.5% quantile is 6; it is 9 with probability 1 − 0.9¹⁰ ≈ 0.65, so the 97.5% quantile is 9.
    assert (low, high) == (6.0, 9.0)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        bootstrap_interval([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_interval([1.0, np.nan])


def test_bradley_terry_two_systems_closed_form_with_ties():
    # 6 wins, 2 losses, 2 ties of system 0 over 1 → W = (7, 3) and the MLE is p0/p1 = 7/3.
    rows = [(0, 1, 1.0)] * 6 + [(1, 0, 1.0)] * 2 + [(0, 1, 0.5)] * 2
    np.testing.assert_allclose(bradley_terry(rows, 2), [0.7, 0.3], rtol=1e-10)
    # (winner, loser) rows are the same data without ties
    np.testing.assert_allclose(bradley_terry([(0, 1)] * 3 + [(1, 0)], 2), [0.75, 0.25], rtol=1e-10)


def _simulate(strengths, per_pair, rng):
    rows = []
    k = len(strengths)
    for i in range(k):
        for j in range(i + 1, k):
            p = strengths[i] / (strengths[i] + strengths[j])
            outcomes = rng.random(per_pair) < p
            rows += [(i, j, float(o)) for o in outcomes]
    return np.array(rows)


def test_bradley_terry_recovers_known_strengths():
    truth = np.array([0.45, 0.3, 0.15, 0.1])
    rows = _simulate(truth, 3_000, np.random.default_rng(4))
    np.testing.assert_allclose(bradley_terry(rows, 4), truth, atol=0.015)


def test_bradley_terry_is_the_maximum_likelihood_estimate():
    rng = np.random.default_rng(5)
    rows = _simulate(np.array([0.5, 0.2, 0.2, 0.1]), 15, rng)
    rows[:3, 2] = 0.5  # a few ties
    p = bradley_terry(rows, 4)
    i, j, s = rows[:, 0].astype(int), rows[:, 1].astype(int), rows[:, 2]

    def neg_log_lik(theta_free):
        theta = np.concatenate([[0.0], theta_free])  # log-strength of system 0 fixed at 0
        d = theta[i] - theta[j]
        return -np.sum(s * d - np.logaddexp(0.0, d))

    res = optimize.minimize(neg_log_lik, np.zeros(3), method="BFGS", options={"gtol": 1e-10})
    expected = np.exp(np.concatenate([[0.0], res.x]))
    np.testing.assert_allclose(p, expected / expected.sum(), rtol=1e-5)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_bradley_terry_errors():
    with pytest.raises(ValueError, match="system 2 is never compared"):
        bradley_terry([(0, 1), (1, 0)], 3)
    with pytest.raises(ValueError, match=r"system 1 never wins"):
        bradley_terry([(0, 1), (0, 1), (2, 0), (0, 2)], 3)
    with pytest.raises(ValueError, match="compares system 1 with itself"):
        bradley_terry([(0, 1), (1, 1)], 2)
    with pytest.raises(ValueError, match=r"integers in \[0, 2\)"):
        bradley_terry([(0, 2)], 2)
    with pytest.raises(ValueError, match="scores must be 1"):
        bradley_terry([(0, 1, 0.3)], 2)
    with pytest.raises(ValueError, match=r"\(M, 3\)"):
        bradley_terry(np.zeros((2, 4)), 2)


def test_cohen_kappa_textbook_example():
    # 50 items: both "yes" 20, A yes/B no 5, A no/B yes 10, both "no" 15.
    # p_o = 35/50 = 0.7; p_yes(A) = 0.5, p_yes(B) = 0.6 → p_e = 0.5·0.6 + 0.5·0.4 = 0.5; κ = 0.2/0.5 = 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4, abs=1e-12)
    assert cohen_kappa([0, 1, 2, 1], [0, 1, 2, 1]) == 1.0
    assert math.isnan(cohen_kappa([1, 1, 1], [1, 1, 1]))
    with pytest.raises(ValueError, match=r"\(3,\) and \(2,\)"):
        cohen_kappa([1, 2, 3], [1, 2])


def test_fleiss_kappa_textbook_example():
    # Fleiss' kappa example (14 raters, 10 items, 5 categories):
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    # Σ n_ij² = 828 → P̄ = (828 − 10·14) / (10·14·13) = 688/1820;
    # column sums 20, 28, 39, 21, 32 of 140 → P̄_e = (20² + 28² + 39² + 21² + 32²) / 140² = 4170/19600
    p_bar, p_e = 688 / 1820, 4170 / 19600
    assert fleiss_kappa(table) == pytest.approx((p_bar - p_e) / (1 - p_e), rel=1e-12)
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_edges_and_errors():
    assert fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == pytest.approx(1.0)
    assert math.isnan(fleiss_kappa([[3, 0], [3, 0]]))
    with pytest.raises(ValueError, match="same number of raters, got row sums from 3 to 4"):
        fleiss_kappa([[3, 0], [2, 2]])
    with pytest.raises(ValueError, match="non-negative integer counts"):
        fleiss_kappa([[1.5, 1.5], [3, 0]])
    with pytest.raises(ValueError, match="at least 2 raters"):
        fleiss_kappa([[1, 0], [0, 1]])


def test_bradley_terry_bootstrap_matches_a_hand_loop_and_skips_degenerate_resamples():
    # 0 beats 1 in 7 of 10, 1 beats 2 in 6 of 10, 0 beats 2 in 8 of 10
    c = np.array([(0, 1, 1)] * 7 + [(0, 1, 0)] * 3 + [(1, 2, 1)] * 6 + [(1, 2, 0)] * 4
                 + [(0, 2, 1)] * 8 + [(0, 2, 0)] * 2, dtype=float)
    low, high, used = bradley_terry_bootstrap(c, 3, n_boot=300, seed=1)
    rng = np.random.default_rng(1)
    fits = []
    for _ in range(300):
        try:
            fits.append(bradley_terry(c[rng.integers(0, len(c), size=len(c))], 3, iters=2000, tol=1e-10))
        except ValueError:
            pass
    assert used == len(fits)
    assert low == pytest.approx(np.quantile(fits, 0.025, axis=0))
    assert high == pytest.approx(np.quantile(fits, 0.975, axis=0))
    point = bradley_terry(c, 3)
    assert np.all(low <= point) and np.all(point <= high)
    with pytest.raises(ValueError, match="never"):
        bradley_terry_bootstrap([(0, 1, 1), (0, 2, 1)], 3, n_boot=10)


def test_majority_label_needs_a_unique_plurality():
    assert majority_label(["a", "b", "a"]) == "a"
    assert majority_label(["a", "b", "tie", "tie"]) == "tie"
    assert majority_label(["a", "b"]) is None
    assert majority_label([]) is None
    assert majority_label([2, 2, 1]) == 2
