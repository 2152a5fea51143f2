"""Benchmark statistics on known inputs (p95 = nearest rank)."""

from __future__ import annotations

import pytest

from registry_cache.bench.stats import P95_DEFINITION, percentile, speedup, summarize


def test_summary_of_one_to_ten() -> None:
    s = summarize([float(v) for v in range(10, 0, -1)])  # unsorted on purpose
    assert (s.count, s.avg, s.median, s.min, s.max) == (10, 5.5, 5.5, 1.0, 10.0)
    assert s.p95 == 10.0  # ceil(0.95 * 10) = 10th smallest


def test_p95_nearest_rank_on_twenty_values() -> None:
    values = [float(v) for v in range(1, 21)]
    # ceil(0.95 * 20) = 19: exactly the 19th value, no interpolation and no
    # floating-point overshoot to the 20th (0.95 * 20 = 19.000000000000004).
    assert percentile(values, 95) == 19.0
    assert summarize(values).p95 == 19.0


def test_p95_on_hundred_and_on_twenty_one_values() -> None:
    assert percentile([float(v) for v in range(1, 101)], 95) == 95.0
    assert percentile([float(v) for v in range(1, 22)], 95) == 20.0  # ceil(19.95) = 20


def test_percentile_is_always_a_measured_value() -> None:
    values = [0.5, 0.1, 0.9, 0.3]
    for pct in (1, 25, 50, 75, 95, 100):
        assert percentile(values, pct) in values
    assert percentile(values, 50) == 0.3  # ceil(2.0) = 2nd smallest
    assert percentile(values, 1) == 0.1


def test_single_value_and_median_of_odd_count() -> None:
    s = summarize([2.5])
    assert (s.avg, s.median, s.p95, s.min, s.max) == (2.5, 2.5, 2.5, 2.5, 2.5)
    assert summarize([3.0, 1.0, 2.0]).median == 2.0
    assert summarize([4.0, 1.0, 2.0, 3.0]).median == 2.5


def test_outlier_moves_avg_and_p95_not_median() -> None:
    s = summarize([1.0] * 19 + [100.0])
    assert s.median == 1.0
    assert s.p95 == 1.0  # 19th of 20
    assert s.max == 100.0
    assert s.avg == pytest.approx(5.95)


def test_errors_on_empty_or_bad_percentile() -> None:
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        percentile([], 95)
    with pytest.raises(ValueError):
        percentile([1.0], 0)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_speedup_for_durations_and_for_speeds() -> None:
    assert speedup(2.0, 0.5, higher_is_better=False) == 4.0  # upstream 2 s, cache 0.5 s
    assert speedup(100.0, 300.0, higher_is_better=True) == 3.0  # MB/s
    assert speedup(1.0, 0.0, higher_is_better=False) is None
    assert speedup(0.0, 5.0, higher_is_better=True) is None


def test_summary_dict_and_definition() -> None:
    assert set(summarize([1.0, 2.0]).as_dict()) == {"count", "avg", "median", "p95", "min", "max"}
    assert "nearest-rank" in P95_DEFINITION
