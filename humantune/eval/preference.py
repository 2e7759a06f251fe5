"""Human preference statistics: pairwise win rate with confidence intervals, Bradley–Terry strengths, and
inter-rater agreement (shared/papers.md, "Evaluation facts").

A tie counts as half a win for each side everywhere in this module: in :func:`win_rate`, as half a success in
:func:`wilson_interval` (pass ``wins + ties / 2``), as a score of 0.5 in :func:`bootstrap_interval` and as half
a win each in :func:`bradley_terry`.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Hashable, Iterable

import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.stats import norm


def _count(value, name: str) -> float:
    value = float(value)
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a non-negative count, got {value}")
    return value


def _level(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(level)


def win_rate(wins: int, losses: int, ties: int = 0) -> float:
    """Pairwise win rate of system A over system B: (wins + ½ · ties) / N, N = wins + losses + ties.

    Raises ValueError for negative counts or N = 0.
    """
    w, l_, t = _count(wins, "wins"), _count(losses, "losses"), _count(ties, "ties")
    n = w + l_ + t
    if n == 0:
        raise ValueError("no comparisons: wins + losses + ties = 0")
    return (w + 0.5 * t) / n


def wilson_interval(successes: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927):

    (p̂ + z²/(2n) ± z · sqrt(p̂(1 − p̂)/n + z²/(4n²))) / (1 + z²/n),   p̂ = successes / n,  z = Φ⁻¹(1 − (1 − level)/2).

    For a win rate pass ``successes = wins + ties / 2`` and ``n = wins + losses + ties``: ties count as half a
    success, so ``successes`` may be a half-integer (the interval then treats the data as binomial, which is
    slightly conservative for ties). Raises ValueError unless 0 ≤ successes ≤ n, n > 0 and 0 < level < 1.
    """
    s, n = _count(successes, "successes"), _count(n, "n")
    if n == 0:
        raise ValueError("n must be positive, got 0")
    if s > n:
        raise ValueError(f"successes ({s:g}) cannot exceed n ({n:g})")
    z = norm.ppf(1 - (1 - _level(level)) / 2)
    p = s / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(
    values, level: float = 0.95, n_boot: int = 10_000, seed: int = 0,
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic of i.i.d. values (Efron & Tibshirani 1993, ch. 13).

    Draw ``n_boot`` resamples of the n values with replacement, compute the statistic of each (by default the
    mean, so for per-comparison scores 1 / 0.5 / 0 it is the win rate), and return the (1 − level)/2 and
    (1 + level)/2 quantiles (numpy's linear interpolation). ``statistic`` maps a (n_boot, n) array to (n_boot,)
    along axis 1. Draws come from ``numpy.random.default_rng(seed)``.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("values contain NaN or infinite entries")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    alpha = 1 - _level(level)
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    chunk = max(1, 2_000_000 // x.size)  # bounds the (chunk, n) index array
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        sample = x[rng.integers(0, x.size, size=(stop - start, x.size))]
        stats[start:stop] = sample.mean(axis=1) if statistic is None else statistic(sample)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bradley_terry(comparisons, n_systems: int, iters: int = 10_000, tol: float = 1e-12) -> np.ndarray:
    """Bradley–Terry strengths by the MM algorithm of Hunter 2004 (Ann. Stat. 32(1), Sec. 2).

    Model: P(i beats j) = p_i / (p_i + p_j). Update, for all i at once:
        p_i ← W_i / Σ_{j≠i} n_ij / (p_i + p_j),   then p ← p / Σ_k p_k,
    where W_i is i's number of wins and n_ij the number of comparisons of i with j. Iterates until the largest
    change of a strength is below ``tol`` or ``iters`` updates are done.

    comparisons: (M, 3) rows ``(i, j, s)``: systems i ≠ j in [0, n_systems), s = 1 if i won, 0 if j won,
    0.5 for a tie (half a win each); or (M, 2) rows ``(winner, loser)``. Returns float64 (n_systems,)
    strengths summing to 1 (log-strengths: ``np.log`` of them, defined up to a common constant).
    Raises ValueError for bad rows, and when the maximum-likelihood strengths do not exist: a system never
    compared, or the win graph not strongly connected (some group of systems never beats the rest; Hunter's
    Assumption 1), e.g. a system with no win.
    """
    c = np.asarray(comparisons, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] not in (2, 3) or c.shape[0] == 0:
        raise ValueError(f"comparisons must have shape (M, 3) [i, j, score] or (M, 2) [winner, loser], got {c.shape}")
    if n_systems < 2:
        raise ValueError(f"n_systems must be at least 2, got {n_systems}")
    pairs = c[:, :2]
    if not (np.all(pairs == np.round(pairs)) and pairs.min() >= 0 and pairs.max() < n_systems):
        raise ValueError(f"system indices must be integers in [0, {n_systems}), got values in "
                         f"[{pairs.min():g}, {pairs.max():g}]")
    i, j = pairs[:, 0].astype(int), pairs[:, 1].astype(int)
    if np.any(i == j):
        raise ValueError(f"comparison {int(np.flatnonzero(i == j)[0])} compares system {i[i == j][0]} with itself")
    score = np.ones(len(c)) if c.shape[1] == 2 else c[:, 2]
    if not np.all(np.isin(score, (0.0, 0.5, 1.0))):
        raise ValueError("scores must be 1 (i won), 0 (j won) or 0.5 (tie)")

    wins = np.zeros((n_systems, n_systems))  # wins[a, b]: (half-)wins of a over b
    np.add.at(wins, (i, j), score)
    np.add.at(wins, (j, i), 1 - score)
    games = wins + wins.T
    never = np.flatnonzero(games.sum(axis=1) == 0)
    if never.size:
        raise ValueError(f"system {int(never[0])} is never compared: its strength is undefined")
    n_components, _ = connected_components(wins > 0, directed=True, connection="strong")
    if n_components > 1:
        winless = np.flatnonzero(wins.sum(axis=1) == 0)
        detail = f" (system {int(winless[0])} never wins)" if winless.size else ""
        raise ValueError("Bradley–Terry strengths do not exist: some systems never beat the others" + detail
                         + "; add comparisons or pool systems")

    total_wins = wins.sum(axis=1)
    p = np.full(n_systems, 1.0 / n_systems)
    for _ in range(iters):
        new = total_wins / np.sum(games / (p[:, None] + p[None, :]), axis=1)
        new /= new.sum()
        done = np.max(np.abs(new - p)) < tol
        p = new
        if done:
            break
    return p


def cohen_kappa(a, b) -> float:
    """Cohen's κ for two raters labelling the same items (Cohen 1960):

    κ = (p_o − p_e) / (1 − p_e),  p_o = fraction of items with equal labels,  p_e = Σ_k p_a(k) p_b(k),

    with p_a(k), p_b(k) each rater's label frequencies. Labels may be any hashable values (ints, strings).
    As sklearn's ``cohen_kappa_score``, κ is NaN when p_e = 1 (both raters always use one same label).
    Raises ValueError for label lists of different lengths or empty ones.
    """
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.ndim != 1 or a_arr.shape != b_arr.shape:
        raise ValueError(f"both raters must label the same items: got {a_arr.shape} and {b_arr.shape} labels")
    if a_arr.size == 0:
        raise ValueError("no items: the label lists are empty")
    labels, codes = np.unique(np.concatenate([a_arr, b_arr]), return_inverse=True)
    ca, cb = codes[: a_arr.size], codes[a_arr.size:]
    p_o = np.mean(ca == cb)
    p_e = float(np.sum(np.bincount(ca, minlength=labels.size) * np.bincount(cb, minlength=labels.size))) / a_arr.size**2
    if p_e == 1.0:
        return float("nan")
    return float((p_o - p_e) / (1 - p_e))


def fleiss_kappa(table) -> float:
    """Fleiss' κ for N items each rated by the same number n ≥ 2 of raters into k categories (Fleiss 1971):

    P_i = (Σ_j n_ij² − n) / (n(n − 1)),  P̄ = (1/N) Σ_i P_i,  p_j = Σ_i n_ij / (N n),  P̄_e = Σ_j p_j²,
    κ = (P̄ − P̄_e) / (1 − P̄_e).

    table: (N, k) counts n_ij of raters who put item i in category j. NaN when P̄_e = 1 (every rating in one
    category). Raises ValueError for negative or fractional counts or rows with different rater counts.
    """
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] < 2:
        raise ValueError(f"table must have shape (items, categories) with at least 2 categories, got {t.shape}")
    if not (np.all(t >= 0) and np.all(t == np.round(t))):
        raise ValueError("table entries must be non-negative integer counts")
    raters = t.sum(axis=1)
    if not np.all(raters == raters[0]):
        raise ValueError(f"every item needs the same number of raters, got row sums from {raters.min():g} to "
                         f"{raters.max():g}")
    n = raters[0]
    if n < 2:
        raise ValueError(f"Fleiss' kappa needs at least 2 raters per item, got {n:g}")
    p_i = (np.sum(t * t, axis=1) - n) / (n * (n - 1))
    p_bar = p_i.mean()
    p_j = t.sum(axis=0) / (t.shape[0] * n)
    p_e = float(np.sum(p_j * p_j))
    if p_e == 1.0:
        return float("nan")
    return float((p_bar - p_e) / (1 - p_e))


def bradley_terry_bootstrap(
    comparisons, n_systems: int, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Percentile bootstrap intervals of Bradley–Terry strengths (:func:`bradley_terry`).

    Resample the M comparison rows with replacement ``n_boot`` times (``numpy.random.default_rng(seed)``), fit the
    strengths (normalised to sum 1) on each resample, and return per system the (1 − level)/2 and (1 + level)/2
    quantiles, plus the number of resamples used: a resample whose strengths do not exist (some system never
    compared or never winning in it) is skipped. Returns (low (n_systems,), high (n_systems,), used); ValueError
    when the strengths of the data themselves do not exist or no resample could be fitted.
    """
    c = np.asarray(comparisons, dtype=np.float64)
    bradley_terry(c, n_systems)  # the data's own strengths must exist (raises the explanatory ValueError)
    alpha = 1 - _level(level)
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    fits = []
    for _ in range(n_boot):
        try:
            fits.append(bradley_terry(c[rng.integers(0, len(c), size=len(c))], n_systems, iters=2000, tol=1e-10))
        except ValueError:
            continue
    if not fits:
        raise ValueError("no bootstrap resample has Bradley–Terry strengths; add comparisons")
    low, high = np.quantile(np.stack(fits), [alpha / 2, 1 - alpha / 2], axis=0)
    return low, high, len(fits)


def majority_label(labels: Iterable[Hashable]) -> Hashable | None:
    """The label given by more raters than any other label (a plurality); None for no labels or a shared top count."""
    ranked = Counter(labels).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]
