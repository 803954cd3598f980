"""Score statistics in bounded memory, finite for any finite scores: a histogram with percentiles, and moments.

The report (report.py) feeds every score of a run through these once; nothing here knows records.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable

HISTOGRAM_BINS = 16384


class ScoreHistogram:
    """Scores in bins of width 2**exponent, each bin holding its count and its smallest and largest score.

    The width doubles whenever more than ``max_bins`` bins are occupied, so memory is bounded, and
    ends as the finest that keeps the scores in ``max_bins`` bins (about the score range over
    ``max_bins``: 2**-11 for scores spread over 1..10), whatever the order of the input.

    A power-of-two width makes binning exact (``s / w`` only shifts the exponent): each score lies
    in its bin ``[k*w, (k+1)*w)``. An order statistic is estimated as the midpoint of its bin's
    smallest and largest score, so it is off by at most half their distance: less than ``w/2``, and
    nothing when the bin holds one distinct score (every bin, in a run of fewer distinct scores than
    ``max_bins``). A percentile interpolated between two such estimates, as numpy's default
    ("linear") method does, is within the same bound: ``error_bound`` is ``w/2``.
    """

    def __init__(self, max_bins: int = HISTOGRAM_BINS, exponent: int = -40) -> None:
        self.max_bins = max_bins
        self.exponent = exponent
        self.bins: dict[int, list[float]] = {}  # key -> [count, lowest score, highest score]
        self.total = 0
        self.low = math.inf
        self.high = -math.inf

    @property
    def width(self) -> float:
        return math.ldexp(1.0, self.exponent)

    @property
    def error_bound(self) -> float:
        return self.width / 2

    def add(self, value: float) -> None:
        if value != 0.0:
            # Bin keys must stay exact integers: |value / width| below 2**52.
            needed = math.frexp(value)[1] - 52
            if needed > self.exponent:
                self._coarsen(needed - self.exponent)
        key = math.floor(math.ldexp(value, -self.exponent))
        entry = self.bins.get(key)
        if entry is None:
            self.bins[key] = [1, value, value]
            while len(self.bins) > self.max_bins:
                self._coarsen(1)
        else:
            entry[0] += 1
            if value < entry[1]:
                entry[1] = value
            elif value > entry[2]:
                entry[2] = value
        self.total += 1
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    def _coarsen(self, steps: int) -> None:
        merged: dict[int, list[float]] = {}
        for key, (count, low, high) in self.bins.items():
            wider = key >> steps  # an arithmetic shift floors negative keys too
            entry = merged.get(wider)
            if entry is None:
                merged[wider] = [count, low, high]
            else:
                entry[0] += count
                entry[1] = min(entry[1], low)
                entry[2] = max(entry[2], high)
        self.bins = merged
        self.exponent += steps

    def order_statistics(self, ranks: Iterable[int]) -> dict[int, float]:
        """Estimates of the sorted scores at 0-based ``ranks``, each within ``error_bound``."""
        wanted = sorted(set(ranks))
        found: dict[int, float] = {}
        seen = 0
        position = 0
        for key in sorted(self.bins):
            count, low, high = self.bins[key]
            seen += int(count)
            while position < len(wanted) and wanted[position] < seen:
                found[wanted[position]] = midpoint(low, high)
                position += 1
            if position == len(wanted):
                break
        return found

    def percentiles(self, points: Iterable[float]) -> list[float]:
        """numpy.percentile's default (linear) method over the estimated order statistics."""
        positions = [(self.total - 1) * p / 100.0 for p in points]
        ranks = [r for h in positions for r in (math.floor(h), min(math.floor(h) + 1, self.total - 1))]
        values = self.order_statistics(ranks)
        result = []
        for h in positions:
            below, above = math.floor(h), min(math.floor(h) + 1, self.total - 1)
            result.append(lerp(values[below], values[above], h - below))
        return result

    def display(self, bins: int, low: float, high: float) -> list[int]:
        """The counts re-binned into ``bins`` equal bins over [low, high] (by each fine bin's midpoint)."""
        counts = [0] * bins
        for count, lowest, highest in self.bins.values():
            index = int(fraction(midpoint(lowest, highest), low, high) * bins)
            counts[min(max(index, 0), bins - 1)] += int(count)
        return counts


# Any finite scores make a report (1e17, +-1e308, denormals): the arithmetic below never overflows
# where the textbook formula would (a difference of two scores near the float maximum is infinite).
FLOAT_MAX = sys.float_info.max


def midpoint(low: float, high: float) -> float:
    """(low + high) / 2, finite for any finite pair."""
    middle = (low + high) / 2
    return middle if math.isfinite(middle) else low / 2 + high / 2


def lerp(low: float, high: float, t: float) -> float:
    """low + t * (high - low), numpy's linear interpolation, finite for any finite pair and t in [0, 1]."""
    if t == 0:
        return low
    value = low + t * (high - low)
    return value if math.isfinite(value) else low * (1 - t) + high * t


def fraction(value: float, low: float, high: float) -> float:
    """Where ``value`` lies between ``low`` and ``high`` (0 at low, 1 at high); 0 when they are one value."""
    span = high / 2 - low / 2  # halved: exact for normal numbers, and finite for any
    if not span > 0:
        return 0.0
    return (value / 2 - low / 2) / span


def scaled(value: float, exponent: int) -> float:
    """value * 2**exponent, the float maximum (with its sign) where that overflows."""
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        return math.copysign(FLOAT_MAX, value)


class Moments:
    """Count, mean and standard deviation in one pass (Welford's), finite for any finite scores.

    Scores are held as ``score * 2**-shift``; the shift (a power of two, so exact) rises only when
    a score's magnitude passes 2**SHIFT_AT, so no difference or square overflows. Scores of the
    usual range never move it: their statistics are Welford's, bit for bit.
    """

    SHIFT_AT = 480

    def __init__(self) -> None:
        self.count = 0
        self.shift = 0
        self._mean = 0.0
        self._m2 = 0.0

    def add(self, value: float) -> None:
        exponent = math.frexp(value)[1]
        if exponent - self.shift > self.SHIFT_AT:
            step = exponent - self.shift
            self._mean = math.ldexp(self._mean, -step)
            self._m2 = math.ldexp(self._m2, -2 * step)
            self.shift = exponent
        x = math.ldexp(value, -self.shift)
        self.count += 1
        delta = x - self._mean
        self._mean += delta / self.count
        self._m2 += delta * (x - self._mean)

    @property
    def mean(self) -> float:
        return scaled(self._mean, self.shift)

    @property
    def std(self) -> float:
        return scaled(math.sqrt(max(self._m2, 0.0) / self.count), self.shift) if self.count else 0.0


def mean_of(scores: list[float]) -> float:
    """The exactly rounded mean of ``scores``; finite even where their sum is not."""
    try:
        return math.fsum(scores) / len(scores)
    except OverflowError:
        return math.fsum(score / len(scores) for score in scores)
