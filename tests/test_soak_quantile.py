"""The soak's p99 reading: a window of two cumulative bucket samples, interpolated."""

from __future__ import annotations

import math

import pytest

from bench.soak import p99_ms


def test_interpolates_within_the_bucket_like_histogram_quantile() -> None:
    before = {0.001: 0, 0.002: 0, math.inf: 0}
    after = {0.001: 50, 0.002: 100, math.inf: 100}  # the 99th of 100 is 98% into (1, 2] ms
    assert p99_ms(before, after) == pytest.approx(1.98)


def test_only_the_window_counts() -> None:
    before = {0.001: 1000, 0.002: 1000, math.inf: 1000}  # everything fast, before the window
    after = {0.001: 1000, 0.002: 1100, math.inf: 1100}
    assert p99_ms(before, after) == pytest.approx(1.99)


def test_beyond_the_last_bound_says_that_bound_and_an_empty_window_says_zero() -> None:
    assert p99_ms({}, {0.001: 0, math.inf: 10}) == pytest.approx(1.0)
    assert p99_ms({0.001: 5, math.inf: 5}, {0.001: 5, math.inf: 5}) == 0.0
