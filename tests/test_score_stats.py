"""Score statistics (score_stats.py): percentiles within their stated bound, moments and arithmetic finite for any finite score."""

from __future__ import annotations

import math
import statistics
import sys

import numpy as np
import pytest

from video_aesthetics.report import PERCENTILES
from video_aesthetics.score_stats import FLOAT_MAX, Moments, ScoreHistogram, fraction, lerp, mean_of, midpoint, scaled

POINTS = [p for _, p in PERCENTILES]


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(np.random.default_rng(1).normal(5, 1, 5000), id="normal"),
        pytest.param(np.random.default_rng(2).normal(0, 1e-4, 3000), id="tiny-spread-around-zero"),
        pytest.param(np.concatenate([np.random.default_rng(3).uniform(1, 10, 4000), [1e6, -1e6]]), id="outliers"),
        pytest.param(np.full(100, 4.25), id="all-equal"),
        pytest.param(np.array([7.5]), id="one"),
        pytest.param(np.random.default_rng(4).integers(-3, 4, 2000).astype(float), id="ties"),
    ],
)
def test_histogram_percentiles_are_within_the_stated_bound(values: np.ndarray) -> None:
    hist = ScoreHistogram(max_bins=1024)
    for value in values:
        hist.add(float(value))
    assert len(hist.bins) <= 1024
    for got, exact in zip(hist.percentiles(POINTS), np.percentile(values, POINTS), strict=True):
        assert abs(got - exact) <= hist.error_bound + 1e-12 * max(1.0, abs(exact))
    # The bins do not depend on the order the scores came in.
    shuffled = ScoreHistogram(max_bins=1024)
    for value in np.random.default_rng(9).permutation(values):
        shuffled.add(float(value))
    assert (shuffled.bins, shuffled.exponent) == (hist.bins, hist.exponent)


def test_an_empty_histogram_has_no_order_statistics() -> None:
    hist = ScoreHistogram(max_bins=4)
    assert hist.order_statistics([]) == {} and hist.total == 0 and hist.display(3, 0.0, 1.0) == [0, 0, 0]


def test_bins_never_exceed_the_limit_and_the_width_only_grows() -> None:
    hist = ScoreHistogram(max_bins=8)
    widths = []
    for value in np.random.default_rng(5).uniform(-1e3, 1e3, 500):
        hist.add(float(value))
        assert len(hist.bins) <= 8
        widths.append(hist.width)
    assert widths == sorted(widths) and hist.total == 500


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([4.0, 5.5, 6.25, 9.0], id="usual"),
        pytest.param([FLOAT_MAX, FLOAT_MAX, -FLOAT_MAX], id="float-max"),
        pytest.param([5e-324, 1e-310, 0.0], id="denormals"),
        pytest.param([1e17, 1e17 + 16, 1e17 - 16], id="large-close"),
    ],
)
def test_moments_and_means_stay_finite_and_agree_with_exact_arithmetic(values: list[float]) -> None:
    moments = Moments()
    for value in values:
        moments.add(value)
    assert math.isfinite(moments.mean) and math.isfinite(moments.std) and math.isfinite(mean_of(values))
    exact = statistics.fmean(v / 4 for v in values) * 4  # quartered: fmean of the raw values may overflow
    assert moments.mean == pytest.approx(exact, rel=1e-12, abs=1e-320)
    assert mean_of(values) == pytest.approx(exact, rel=1e-15, abs=1e-320)
    spread = statistics.pstdev(v / 4 for v in values) * 4
    assert moments.std == pytest.approx(spread, rel=1e-9, abs=1e-300)


def test_scores_of_the_usual_range_get_welfords_moments_bit_for_bit() -> None:
    values = [float(v) for v in np.random.default_rng(6).uniform(1, 10, 1000)]
    moments = Moments()
    count, mean, m2 = 0, 0.0, 0.0
    for value in values:
        moments.add(value)
        count += 1
        delta = value - mean
        mean += delta / count
        m2 += delta * (value - mean)
    assert moments.shift == 0 and moments.mean == mean and moments.std == math.sqrt(m2 / count)


def test_the_arithmetic_never_overflows_between_finite_scores() -> None:
    big = sys.float_info.max
    assert midpoint(-big, big) == 0.0 and midpoint(big, big) == big
    assert lerp(-big, big, 0.5) == 0.0 and lerp(-big, big, 0.0) == -big and lerp(-big, big, 1.0) == big
    assert fraction(0.0, -big, big) == 0.5 and fraction(3.0, 3.0, 3.0) == 0.0
    assert scaled(big, 10) == big and scaled(-big, 10) == -big and scaled(1.5, 2) == 6.0
