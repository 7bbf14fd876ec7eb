"""The statistics of `benchmarks/bench_overhead.py`: the interval for a median of paired timing ratios."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_overhead import median_interval, paired_ratio  # noqa: E402


@pytest.mark.parametrize(("n", "ranks"), [(10, (2, 9)), (21, (6, 16)), (7, (1, 7))])
def test_median_interval_uses_the_order_statistics_of_the_binomial_table(n, ranks):
    # the standard table of distribution-free 95% intervals for a median: n = 10 -> x(2), x(9); n = 21 -> x(6), x(16);
    # n = 7 -> the whole range (x(1), x(7) covers 98.4%, x(2), x(6) only 87.5%)
    values = [float(v) for v in range(100, 100 + n)][::-1]  # unsorted on purpose
    mid, low, high = median_interval(values)
    assert mid == pytest.approx(100 + (n - 1) / 2)
    assert (low, high) == (100 + ranks[0] - 1, 100 + ranks[1] - 1)


def test_paired_ratio_divides_within_repeats():
    # a machine that slows down over the run: the per-repeat ratio stays 1.02, the ratio of medians would not
    times = {"sam": [1.0, 2.0, 3.0, 4.0, 5.0], "medsa": [1.02, 2.04, 3.06, 4.08, 5.10]}
    assert paired_ratio(times, "medsa").startswith("1.020 (95% interval of the median 1.020-1.020, 5 paired repeats; ")
