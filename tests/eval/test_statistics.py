import numpy as np
import pytest

from humantune.eval.preference import wilson_interval
from humantune.eval.statistics import (
    paired_ratio_difference_interval,
    proportion_difference_interval,
    rate_change,
    ratio_interval,
)


def test_ratio_interval_resamples_images():
    sums, counts = np.array([2.0, 0.0, 3.0, 1.0]), np.array([2.0, 1.0, 3.0, 2.0])
    (lo, hi), method = ratio_interval(sums, counts, n_boot=2000)
    assert lo <= 6 / 8 <= hi and 0 <= lo and hi <= 1 and "ratio" in method


def test_newcombe_interval_equals_the_published_examples():
    # Newcombe (1998), Table II, method 10: 56/70 − 48/80 and 9/10 − 3/10.
    assert proportion_difference_interval(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    assert proportion_difference_interval(9, 10, 3, 10) == pytest.approx((0.1705, 0.8090), abs=5e-5)
    l1, u1 = wilson_interval(3, 20)
    l2, u2 = wilson_interval(12, 20)
    lo, hi = proportion_difference_interval(3, 20, 12, 20)
    assert lo == pytest.approx(-0.45 - np.hypot(0.15 - l1, u2 - 0.6))
    assert hi == pytest.approx(-0.45 + np.hypot(u1 - 0.15, 0.6 - l2))


def test_rate_change_and_paired_ratio_difference():
    change = rate_change([True] * 8 + [False] * 2, [True] * 3 + [False] * 7)
    assert change["base"]["rate"] == 0.8 and change["tuned"]["rate"] == 0.3
    assert change["relative_reduction"] == pytest.approx(1 - 0.3 / 0.8)
    assert change["difference"]["ci95"] == pytest.approx(list(proportion_difference_interval(3, 10, 8, 10)))
    # every unit judged all-wrong before and all-right after: the difference is 1 in every resample
    assert paired_ratio_difference_interval([0, 0, 0], [4, 3, 4], [4, 3, 4], [4, 3, 4]) == (1.0, 1.0)
    assert paired_ratio_difference_interval([1], [2], [1], [2]) is None
