"""The score report: one streaming pass over scored records into a summary, and the summary as one HTML page.

``ReportBuilder`` (or ``summarise``) reads scored records once and keeps only bounded state, so a
run of any size costs the same memory:

- the score distribution in a histogram of at most ``HISTOGRAM_BINS`` occupied bins (see
  ``score_stats.ScoreHistogram`` for the error bound of the percentiles read from it);
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from video_aesthetics import __version__
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError, InputError
from video_aesthetics.files import PendingFile, atomic_writer
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
from video_aesthetics.score_stats import Moments, ScoreHistogram, lerp, mean_of

log = logging.getLogger(__name__)

SUMMARY_FORMAT = 1
# Declared with the other parameters (video_aesthetics.parameters: report_top).
DEFAULT_TOP: int = BY_NAME["report_top"].default
MAX_TOP: int = BY_NAME["report_top"].maximum or 0
DEFAULT_VIDEO_ROWS = 50
MAX_VIDEO_ROWS = 5000
DISPLAY_BINS = 48
PERCENTILES = (("p5", 5.0), ("p25", 25.0), ("median", 50.0), ("p75", 75.0), ("p95", 95.0))
MAX_REASONS = 32
EXAMPLES_PER_REASON = 10
TEXT_LIMIT = 300

OTHER_REASONS = "other"


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
                "video_root": config.video_root,
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
    from video_aesthetics.frames import OutsideRootError, list_frames, select_frames

    root = config.frames_root
    real_root = os.path.realpath(root)
    folder = root / stem / cid / "img"
    if not stays_inside(folder, root, real_root):
        return None
    try:
        chosen = select_frames(list_frames(folder, root), config.load_num)
    except OutsideRootError:
        return None
    middle = len(chosen) // 2
    for index in sorted(range(len(chosen)), key=lambda i: (abs(i - middle), i)):
        if frame_opens(chosen[index], real_root):
            return str(chosen[index])
    return None


def frame_opens(path: Path, real_root: str | None = None) -> bool:
    """Whether frames.open_frame accepts ``path`` (inside ``real_root``) from its header: what the scorer would decode."""
    from video_aesthetics.frames import open_frame

    try:
        with open_frame(path, real_root):
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


@dataclass(frozen=True)
class ReportOutput:
    """A run's HTML report: written from the run's records before they are published, and published with them.

    So a run whose report cannot be written publishes nothing, and an interrupted one leaves the
    previous records and report as they were, a matching pair.
    """

    path: Path
    run: dict[str, Any]

    def pending(self, records: PendingFile, shown_as: Path, config: ScoringConfig, **options: Any) -> PendingFile:
        """The report of the finished but unpublished ``records`` (to be published as ``shown_as``), itself unpublished."""
        records.finish()
        summary = summarise_file(records.tmp, config, source=str(shown_as), run=self.run, **options)
        pending = PendingFile(self.path, "wb")
        try:
            pending.handle.write(encode_page(render_html(summary)))
        except BaseException:
            pending.discard()
            raise
        return pending


def write_html(path: Path | str, page: str) -> Path:
    with atomic_writer(path, "wb") as handle:
        handle.write(encode_page(page))
    return Path(path)


def encode_page(page: str) -> bytes:
    """``page`` as UTF-8; a file name that is not UTF-8 (surrogate escapes) shows as \\udcff instead of failing."""
    return page.encode("utf-8", "backslashreplace")


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
