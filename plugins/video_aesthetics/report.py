"""The score report: one streaming pass over scored records into a summary, and the summary as one HTML page.

``ReportBuilder`` (or ``summarise``) reads scored records once and keeps only bounded state, so a
run of any size costs the same memory:

- the score distribution in a histogram of at most ``HISTOGRAM_BINS`` occupied bins (see
  ``ScoreHistogram`` for the error bound of the percentiles read from it);
- the best and the worst ``top`` clips (two heaps of ``top`` entries);
- the ``video_rows`` best and worst videos by mean score (two heaps; "videos" are records, one
  row per record, because records are what a scored file holds and the same video may recur);
- per error reason a count and a few examples, for at most ``MAX_REASONS`` reasons.

``summary()`` is a JSON-serialisable dict without wall-clock time (the DAG puts it in its manifest,
whose bytes must not change on a rerun). ``render_html`` (``report_html``) turns it into one
self-contained page: an inline SVG histogram, thumbnails embedded as base64 JPEG, a sortable
table, no network at view time. Thumbnails are decoded only when rendering, only for the final
best and worst clips.

This module imports neither torch nor the model: frame listing is imported when thumbnails are made.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from video_aesthetics import __version__
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError, InputError
from video_aesthetics.files import atomic_writer
from video_aesthetics.filtering import passes_filter
from video_aesthetics.jsonl import JsonlSource
from video_aesthetics.parameters import BY_NAME
from video_aesthetics.records import (
    FILTERED,
    UNSCORED,
    clip_id,
    clip_list,
    clip_outcome,
    is_safe_component,
    stays_inside,
    video_invalid,
    video_path,
    video_stem,
)
from video_aesthetics.report_html import render_html

log = logging.getLogger(__name__)

SUMMARY_FORMAT = 1
# Declared with the other parameters (video_aesthetics.parameters: report_top).
DEFAULT_TOP: int = BY_NAME["report_top"].default
MAX_TOP: int = BY_NAME["report_top"].maximum or 0
DEFAULT_VIDEO_ROWS = 50
MAX_VIDEO_ROWS = 5000
HISTOGRAM_BINS = 16384
DISPLAY_BINS = 48
PERCENTILES = (("p5", 5.0), ("p25", 25.0), ("median", 50.0), ("p75", 75.0), ("p95", 95.0))
MAX_REASONS = 32
EXAMPLES_PER_REASON = 10
TEXT_LIMIT = 300

OTHER_REASONS = "other"


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


@dataclass(order=True)
class _Ranked:
    """A heap entry: ordered by ``key`` only; the payload is what the report shows."""

    key: tuple[float, int]
    payload: dict[str, Any] = field(compare=False)


class _Extremes:
    """The ``size`` entries with the largest keys seen, kept in a min-heap."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.heap: list[_Ranked] = []

    def wants(self, key: tuple[float, int]) -> bool:
        return len(self.heap) < self.size or key > self.heap[0].key

    def offer(self, key: tuple[float, int], payload: dict[str, Any]) -> None:
        if len(self.heap) < self.size:
            heapq.heappush(self.heap, _Ranked(key, payload))
        elif key > self.heap[0].key:
            heapq.heapreplace(self.heap, _Ranked(key, payload))

    def best_first(self) -> list[dict[str, Any]]:
        return [entry.payload for entry in sorted(self.heap, reverse=True)]


class ReportBuilder:
    """Reads scored records one at a time (``add``) and keeps what the report needs, in bounded memory.

    ``config`` says where the scores are (``output_key`` or, whole-video, the record itself), which
    thresholds count as kept (``aes_min``/``aes_max``), where the frames are (``figure_root``) and
    which frames were scored (``load_num``).
    """

    def __init__(self, config: ScoringConfig, *, top: int = DEFAULT_TOP, video_rows: int = DEFAULT_VIDEO_ROWS) -> None:
        _bounded("top", top, MAX_TOP)
        _bounded("video_rows", video_rows, MAX_VIDEO_ROWS)
        self.config = config
        self.top = top
        self.video_rows = video_rows
        self.records = 0
        self.clips = 0
        self.scored = 0
        self.failed = 0
        self.passthrough = 0
        self.kept = 0
        self.flags = {"true": 0, "false": 0}
        self.errors: dict[str, int] = {}
        self.examples: dict[str, list[dict[str, Any]]] = {}
        self.histogram = ScoreHistogram()
        self.moments = Moments()
        self._seq = 0
        self._best = _Extremes(top)
        self._worst = _Extremes(top)
        self.videos = 0
        self.videos_unscored = 0
        self._best_videos = _Extremes(video_rows)
        self._worst_videos = _Extremes(video_rows)

    def add(self, record: Any) -> None:
        """Count one scored record (records in file order; a non-object counts as passed through)."""
        record_no = self.records
        self.records += 1
        count = sample_count(record, self.config)
        if not count:
            self.passthrough += 1
            return
        config = self.config
        targets: list[Any] = [record] if config.whole_video else (clip_list(record, config.output_key) or [])
        inputs = [] if config.whole_video else (clip_list(record, config.video_clips_key or "") or [])
        video = _short(video_path(record, config.input_video_key) or "")
        stem = video_stem(record, config.input_video_key) or ""
        scores = []
        for index in range(count):
            source = inputs[index] if index < len(inputs) else None
            # A clip missing from the output (an unscored file) is named by its input and has no score.
            target = targets[index] if index < len(targets) else ({} if isinstance(source, dict) else source)
            named = target if isinstance(target, dict) and target else source
            cid = _short(stem if config.whole_video else clip_id(named, stem, index))
            score = self._add_sample(target, cid, video, stem, record_no, None if config.whole_video else index)
            if score is not None:
                scores.append(score)
        self._add_video(record_no, video, count, scores)

    def _add_sample(
        self, target: Any, cid: str, video: str, stem: str, record_no: int, clip: int | None
    ) -> float | None:
        self.clips += 1
        seq = self._seq
        self._seq += 1
        if isinstance(target, dict) and isinstance(target.get(FILTERED), bool):
            self.flags["true" if target[FILTERED] else "false"] += 1
        if self.config.filtering and passes_filter(target, self.config.aes_min, self.config.aes_max):
            self.kept += 1
        score, reason = clip_outcome(target)
        if score is None:
            self._add_failure(reason or UNSCORED, {"clip_id": cid, "video": video, "record": record_no})
            return None
        self.scored += 1
        self.histogram.add(score)
        self.moments.add(score)
        # Ties keep the earlier clip: the later one has the smaller -seq and leaves the heap first.
        best_key, worst_key = (score, -seq), (-score, -seq)
        if self._best.wants(best_key) or self._worst.wants(worst_key):
            entry = {"clip_id": cid, "video": video, "stem": _short(stem), "record": record_no, "clip": clip}
            entry["score"] = score
            self._best.offer(best_key, entry)
            self._worst.offer(worst_key, entry)
        return score

    def _add_failure(self, reason: str, example: dict[str, Any]) -> None:
        self.failed += 1
        reason = _short(reason)
        if reason not in self.errors and len(self.errors) >= MAX_REASONS:
            reason = OTHER_REASONS
        self.errors[reason] = self.errors.get(reason, 0) + 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(example)

    def _add_video(self, record_no: int, video: str, clips: int, scores: list[float]) -> None:
        self.videos += 1
        if not scores:
            self.videos_unscored += 1
            return
        mean = mean_of(scores)
        row = {
            "video": video,
            "record": record_no,
            "clips": clips,
            "scored": len(scores),
            "mean": mean,
            "min": min(scores),
            "max": max(scores),
        }
        self._best_videos.offer((mean, -record_no), row)
        self._worst_videos.offer((-mean, -record_no), row)

    def summary(
        self,
        *,
        model: Mapping[str, Any] | None = None,
        run: Mapping[str, Any] | None = None,
        rejected: int | None = None,
        source: str | None = None,
    ) -> dict[str, Any]:
        """Everything the report shows, as JSON values; the same input always gives the same dict.

        ``model`` (the scorer's identity), ``run`` (e.g. dag_id, run_id, partition, logical_date)
        and ``rejected`` (input lines that never became records) come from the caller, who knows them.
        """
        config = self.config
        return {
            "format": SUMMARY_FORMAT,
            "version": __version__,
            "source": source,
            "unit": "video" if config.whole_video else "clip",
            "counts": {
                "records": self.records,
                "clips": self.clips,
                "scored": self.scored,
                "failed": self.failed,
                "passthrough": self.passthrough,
                "rejected": rejected,
                "errors": dict(sorted(self.errors.items())),
            },
            "scores": self._score_stats(),
            "filter": self._filter_stats(),
            "flags": dict(self.flags),
            "best": [self._with_frame(entry) for entry in self._best.best_first()],
            "worst": [self._with_frame(entry) for entry in self._worst.best_first()],
            "failures": {
                reason: {"count": self.errors[reason], "examples": self.examples[reason]}
                for reason in sorted(self.errors, key=lambda r: (-self.errors[r], r))
            },
            "videos": self._video_table(),
            "model": dict(model or {}),
            "run": dict(run or {}),
            "config": {
                "figure_root": config.figure_root,
                "input_video_key": config.input_video_key,
                "video_clips_key": config.video_clips_key,
                "output_key": config.output_key,
                "load_num": config.load_num,
                "reduction": config.reduction,
                "aes_min": config.aes_min,
                "aes_max": config.aes_max,
            },
        }

    def _score_stats(self) -> dict[str, Any] | None:
        hist = self.histogram
        if not hist.total:
            return None
        stats: dict[str, Any] = {
            "count": hist.total,
            "mean": self.moments.mean,
            "std": self.moments.std,
            "min": hist.low,
            "max": hist.high,
        }
        values = hist.percentiles(p for _, p in PERCENTILES)
        stats.update({name: value for (name, _), value in zip(PERCENTILES, values, strict=True)})
        stats["percentile_error"] = hist.error_bound
        low, high = hist.low, hist.high
        for threshold in (self.config.aes_min, self.config.aes_max):
            if threshold is not None:
                low, high = min(low, threshold), max(high, threshold)
        bins = DISPLAY_BINS if high > low else 1
        stats["histogram"] = {
            "edges": [_edge(low, high, i, bins) for i in range(bins + 1)],
            "counts": hist.display(bins, low, high),
        }
        return stats

    def _filter_stats(self) -> dict[str, Any] | None:
        if not self.config.filtering:
            return None
        return {
            "aes_min": self.config.aes_min,
            "aes_max": self.config.aes_max,
            "kept": self.kept,
            "filtered_out": self.clips - self.kept,
        }

    def _video_table(self) -> dict[str, Any]:
        rows: dict[int, dict[str, Any]] = {}
        for row in [*self._best_videos.best_first(), *self._worst_videos.best_first()]:
            rows[row["record"]] = row
        ordered = sorted(rows.values(), key=lambda r: (-r["mean"], r["record"]))
        scored_videos = self.videos - self.videos_unscored
        return {
            "count": self.videos,
            "without_scores": self.videos_unscored,
            "complete": len(ordered) == scored_videos,
            "limit": self.video_rows,
            "rows": ordered,
        }

    def _with_frame(self, entry: dict[str, Any]) -> dict[str, Any]:
        """The entry with ``frame``: its middle scored frame's file (clip mode), found after the pass."""
        entry = dict(entry)
        entry["frame"] = None if self.config.whole_video else middle_frame(self.config, entry["stem"], entry["clip_id"])
        return entry


def _edge(low: float, high: float, index: int, bins: int) -> float:
    edge = low + (high - low) * index / bins
    return edge if math.isfinite(edge) else lerp(low, high, index / bins)


def sample_count(record: Any, config: ScoringConfig) -> int:
    """How many samples ``records.samples_of`` finds in ``record``, without making their paths.

    samples_of builds a Path per clip, which would make the report's pass several times slower on
    millions of clips; tests/test_report.py checks that both count alike, record shape by shape.
    """
    if not isinstance(record, dict):
        return 0
    key = config.input_video_key
    if config.whole_video:
        return int(video_path(record, key) is not None or video_invalid(record, key))
    clips = clip_list(record, config.video_clips_key or "")
    if clips is None or (video_stem(record, key) is None and not video_invalid(record, key)):
        return 0
    return len(clips)


def middle_frame(config: ScoringConfig, stem: str, cid: str) -> str | None:
    """The middle one of the frames scoring read for a clip, by the scorer's own rules; None when there is none.

    The same rules as scoring, in the same functions: a clip folder that a link leads out of
    figure_root is not read (the scorer marks it unsafe_path: records.stays_inside); the frames are
    ``load_num`` evenly spaced over list_frames; a frame counts only if frames.open_frame accepts it
    (JPEG, PNG or WebP by content, within the size bounds), as the scorer skips any other. Of those,
    the one nearest the middle of the selection is shown.
    """
    if not (is_safe_component(stem) and is_safe_component(cid)):
        return None
    from video_aesthetics.frames import list_frames, select_frames

    root = config.frames_root
    folder = root / stem / cid / "img"
    if not stays_inside(folder, root, os.path.realpath(root)):
        return None
    chosen = select_frames(list_frames(folder), config.load_num)
    middle = len(chosen) // 2
    for index in sorted(range(len(chosen)), key=lambda i: (abs(i - middle), i)):
        if frame_opens(chosen[index]):
            return str(chosen[index])
    return None


def frame_opens(path: Path) -> bool:
    """Whether frames.open_frame accepts ``path`` from its header (format and size): what the scorer would decode."""
    from video_aesthetics.frames import open_frame

    try:
        with open_frame(path):
            return True
    except Exception:  # noqa: BLE001 - PIL raises many types for files that are not frames
        return False


def summarise(
    records: Iterable[Any],
    config: ScoringConfig,
    *,
    top: int = DEFAULT_TOP,
    video_rows: int = DEFAULT_VIDEO_ROWS,
    model: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
    rejected: int | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """The summary of scored ``records`` (any iterable, read once)."""
    builder = ReportBuilder(config, top=top, video_rows=video_rows)
    for record in records:
        builder.add(record)
    return builder.summary(model=model, run=run, rejected=rejected, source=source)


def summarise_file(path: Path | str, config: ScoringConfig, **options: Any) -> dict[str, Any]:
    """The summary of a scored JSONL file; ``options`` are ``summarise``'s."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"scored file {path} does not exist; pass the output of `video-aesthetics score`")
    options.setdefault("source", str(path))
    # With skip_bad_records a malformed line is left out of the report, as scoring leaves it out of the output.
    return summarise(JsonlSource(path, skip_bad_records=config.skip_bad_records), config, **options)


def write_report(
    scored_path: Path | str,
    output_path: Path | str,
    config: ScoringConfig,
    **options: Any,
) -> dict[str, Any]:
    """Summarise a scored JSONL file and write its HTML report atomically; returns the summary."""
    output_path = Path(output_path)
    if output_path.is_dir():
        raise ConfigError(f"report path {output_path} is a directory; pass a file name such as report.html")
    summary = summarise_file(scored_path, config, **options)
    write_html(output_path, render_html(summary))
    return summary


def write_html(path: Path | str, page: str) -> Path:
    with atomic_writer(path) as handle:
        handle.write(page)
    return Path(path)


class Headline(TypedDict):
    """The few numbers a list of runs shows (the DAG's merge returns them in its summary)."""

    records: int
    clips: int
    scored: int
    failed: int
    median: float | None
    kept: int | None


def headline(summary: Mapping[str, Any]) -> Headline:
    """The few numbers a list of runs shows: clips, scored, failed, median, kept."""
    counts, scores, kept = summary["counts"], summary.get("scores") or {}, summary.get("filter") or {}
    return {
        "records": counts["records"],
        "clips": counts["clips"],
        "scored": counts["scored"],
        "failed": counts["failed"],
        "median": scores.get("median"),
        "kept": kept.get("kept"),
    }


def _short(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


def _bounded(name: str, value: Any, maximum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise ConfigError(f"{name} must be an integer from 1 to {maximum}, got {value!r}")
