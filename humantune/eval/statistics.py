"""Intervals for evaluation results, all at 95 % unless a level is given.

- A mean over images: a percentile bootstrap over images (:func:`mean_interval`, 10 000 resamples, seed 0).
- A mean over people or keypoints (OKS, PCK, attribute judgements): a bootstrap over images of the ratio of
  per-image sums (:func:`ratio_interval`), so images stay the resampled unit.
- A rate over images (anomaly rate): the Wilson score interval (:func:`humantune.eval.preference.wilson_interval`).
- The change of a rate between two models (:func:`rate_change`): Newcombe's hybrid score interval for two
  independent proportions (:func:`proportion_difference_interval`; conservative when the same seeds pair the
  images).
- The change of a ratio between two models on the same seeds: a paired bootstrap over seeds
  (:func:`paired_ratio_difference_interval`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from humantune.eval.anatomy import anomaly_rate
from humantune.eval.preference import bootstrap_interval, wilson_interval

N_BOOT = 10_000
BOOT_SEED = 0


def mean_interval(values: np.ndarray, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> tuple[tuple | None, str]:
    """95 % percentile-bootstrap interval of the mean of the finite per-image ``values`` (None for fewer than 2)."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return None, "none (fewer than 2 images)"
    method = f"percentile bootstrap over images, {n_boot} resamples, seed {seed}"
    return bootstrap_interval(x, 0.95, n_boot, seed), method


def ratio_interval(numerators: np.ndarray, denominators: np.ndarray, n_boot: int = N_BOOT,
                   seed: int = BOOT_SEED) -> tuple[tuple | None, str]:
    """95 % bootstrap interval of Σ numerator / Σ denominator, resampling images (the clusters).

    For a mean over people (keypoints) pass each image's sum of per-person values and its number of people: the
    statistic of the full sample is the mean over people, while images, not people, are drawn with replacement.
    Images with a zero denominator are left out.
    """
    num = np.asarray(numerators, np.float64)
    den = np.asarray(denominators, np.float64)
    keep = den > 0
    num, den = num[keep], den[keep]
    if num.size < 2:
        return None, "none (fewer than 2 images)"

    def statistic(sample: np.ndarray) -> np.ndarray:
        idx = sample.astype(np.int64)
        return num[idx].sum(axis=1) / den[idx].sum(axis=1)

    interval = bootstrap_interval(np.arange(num.size, dtype=np.float64), 0.95, n_boot, seed, statistic)
    return interval, f"bootstrap over images of the ratio of per-image sums, {n_boot} resamples, seed {seed}"


def proportion_difference_interval(k1: int, n1: int, k2: int, n2: int, level: float = 0.95) -> tuple[float, float]:
    """Interval for p₁ − p₂ of two independent proportions p_i = k_i / n_i: Newcombe's hybrid score interval
    (Newcombe 1998, Stat. Med. 17, method 10). With (l_i, u_i) the Wilson interval of p_i and δ = p₁ − p₂:

        lower = δ − √((p₁ − l₁)² + (u₂ − p₂)²),   upper = δ + √((u₁ − p₁)² + (p₂ − l₂)²).

    Raises ValueError for an empty sample or k > n."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError(f"both samples need at least one observation, got n1={n1}, n2={n2}")
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, level)
    l2, u2 = wilson_interval(k2, n2, level)
    d = p1 - p2
    return (float(d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)), float(d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)))


def paired_ratio_difference_interval(num_a: Sequence[float], den_a: Sequence[float], num_b: Sequence[float],
                                     den_b: Sequence[float], n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                                     level: float = 0.95) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of Σnum_b/Σden_b − Σnum_a/Σden_a over paired units: unit i (the same seed
    for both models) is drawn with replacement on both sides together. None for fewer than 2 units."""
    na, da, nb, db = (np.asarray(x, np.float64) for x in (num_a, den_a, num_b, den_b))
    if not (len(na) == len(da) == len(nb) == len(db)):
        raise ValueError("paired samples must have equal lengths")
    if len(na) < 2:
        return None

    def statistic(sample: np.ndarray) -> np.ndarray:
        idx = sample.astype(np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return nb[idx].sum(1) / db[idx].sum(1) - na[idx].sum(1) / da[idx].sum(1)

    return bootstrap_interval(np.arange(len(na), dtype=np.float64), level, n_boot, seed, statistic)


def rate_entry(flags: Sequence[bool]) -> dict[str, Any]:
    """The anomaly rate of ``flags`` (one per image) with its Wilson 95 % interval, as results files write it:
    ``rate``, ``ci95``, ``anomalous`` (the count flagged) and ``n``."""
    r = anomaly_rate(list(map(bool, flags)))
    return {"rate": r.rate, "ci95": [r.ci95_lo, r.ci95_hi], "anomalous": r.flagged, "n": r.n}


def rate_change(base_flags: Sequence[bool], tuned_flags: Sequence[bool]) -> dict[str, Any]:
    """Anomaly rate of each model with its Wilson interval, the difference tuned − base with Newcombe's interval,
    and the relative reduction 1 − rate_tuned / rate_base (null when the base rate is 0)."""
    base, tuned = rate_entry(base_flags), rate_entry(tuned_flags)
    lo, hi = proportion_difference_interval(tuned["anomalous"], tuned["n"], base["anomalous"], base["n"])
    return {
        "base": base, "tuned": tuned,
        "difference": {"value": tuned["rate"] - base["rate"], "ci95": [lo, hi],
                       "ci_method": "Newcombe hybrid score interval (method 10), independent proportions"},
        "relative_reduction": (1.0 - tuned["rate"] / base["rate"]) if base["rate"] > 0 else None,
    }
