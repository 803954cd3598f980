"""Scores written back: each record copied with its samples' results in it, records and results zipped in order."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from video_aesthetics.config import ScoringConfig
from video_aesthetics.filtering import passes_filter
from video_aesthetics.records import (
    ERROR,
    FILTERED,
    FRAME_SCORES,
    SCORE,
    RecordCounts,
    Sample,
    SampleResult,
    outcome,
    samples_of,
)

# One sample's outcome as written: its score and no error, or no score and why (records.outcome), and its
# frames' scores (None: none written).
Outcome = tuple[float | None, str | None, list[float] | None]


def with_results(
    record: dict[str, Any], results: list[SampleResult], config: ScoringConfig, *, owned: bool = False
) -> dict[str, Any]:
    """A copy of ``record`` with its samples' results written in; ``record`` itself is not changed.

    ``owned``: the caller parsed ``record`` for this write alone, so its clips may be written into
    rather than copied, unless output_key puts them beside the originals.
    """
    return with_outcomes(record, [(*outcome(result), result.frame_scores) for result in results], config, owned=owned)


def with_outcomes(
    record: dict[str, Any], outcomes: list[Outcome], config: ScoringConfig, *, owned: bool = False
) -> dict[str, Any]:
    """``with_results`` from outcomes already classified (records.outcome): rescore writes these, without a
    SampleResult per clip; both write through ``_write_outcome``, so the same outcome is the same bytes."""
    if config.whole_video:
        scored = dict(record)
        _write_outcomes(outcomes, [scored], config)
        return scored
    clips_key = config.video_clips_key or ""
    in_place = owned and config.output_key == clips_key
    container = record[clips_key] if in_place else copy.deepcopy(record[clips_key])
    _write_outcomes(outcomes, container["clips"] if isinstance(container, dict) else container, config)
    scored = dict(record)
    scored[config.output_key] = container
    return scored


def _write_outcomes(outcomes: list[Outcome], targets: list[Any], config: ScoringConfig) -> None:
    """Each outcome into its target (a clip or a record), in order; a target that is no object is left as it is."""
    frame_scores, filtering = config.frame_scores, config.filtering
    for (score, error, frames), target in zip(outcomes, targets, strict=True):
        if not isinstance(target, dict):
            continue
        target[SCORE] = score  # None where there is an error (records.classify)
        # A rerun over already-scored records must not keep a stale error or frame list.
        if ERROR in target:
            del target[ERROR]
        if FRAME_SCORES in target:
            del target[FRAME_SCORES]
        if error is not None:
            target[ERROR] = error
        if frames is not None and frame_scores:
            # JSON has no NaN or infinity: such a frame's score is written as null.
            target[FRAME_SCORES] = [s if s is not None and math.isfinite(s) else None for s in frames]
        if filtering:
            target[FILTERED] = passes_filter(target, config.aes_min, config.aes_max)


def merge_results(
    records: Iterable[dict[str, Any]],
    results: Iterable[SampleResult],
    config: ScoringConfig,
    counts: RecordCounts,
    on_result: Callable[[SampleResult], None] | None = None,
    on_sample: Callable[[dict[str, Any], Sample, SampleResult], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Zip records with their samples' results (both in input order) into scored records.

    ``on_sample`` sees each sample with its record and result, in input order (the embeddings writer).
    """
    pending = iter(results)
    seq = 0
    for record_no, record in enumerate(records):
        samples = samples_of(record, record_no, config, seq)
        seq += len(samples)
        counts.records += 1
        if not samples:
            counts.passthrough += 1
            yield record
            continue
        got = []
        for sample in samples:
            result = next(pending, None)
            if result is None or result.seq != sample.seq:
                raise RuntimeError(f"internal error: result for sample {sample.seq} missing (got {result!r})")
            counts.clips += 1
            counts.count_result(result)
            if on_result is not None:
                on_result(result)
            if on_sample is not None:
                on_sample(record, sample, result)
            got.append(result)
        yield with_results(record, got, config)
    leftover = next(pending, None)
    if leftover is not None:
        raise RuntimeError(f"internal error: result for unknown sample {leftover.seq}")
