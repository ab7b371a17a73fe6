"""The benchmark's statistics: the median's confidence interval printed beside the added time to first token."""

from __future__ import annotations

import random

import pytest

from bench.harness import median_ci, summary

pytestmark = pytest.mark.unit


def test_the_median_interval_is_the_binomial_order_statistics() -> None:
    assert median_ci([float(v) for v in range(200)]) == (86.0, 113.0)  # ranks 100 -/+ 1.96 * sqrt(200) / 2
    assert median_ci([5.0]) == (5.0, 5.0)
    assert median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0)
    result = summary([float(v) for v in range(200)])
    assert (result["lo"], result["p50"], result["hi"]) == (86.0, 99.5, 113.0)


def test_the_median_interval_covers_the_true_median_about_95_percent_of_the_time() -> None:
    rng = random.Random(7)
    runs = 2000
    covered = 0
    for _ in range(runs):
        lo, hi = median_ci([rng.expovariate(1.0) for _ in range(200)])  # skewed, like latencies
        covered += lo <= 0.6931471805599453 <= hi  # the exponential's median, ln 2
    assert 0.93 <= covered / runs <= 0.97
