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


def with_results(
    record: dict[str, Any], results: list[SampleResult], config: ScoringConfig, *, owned: bool = False
) -> dict[str, Any]:
    """A copy of ``record`` with its samples' results written in; ``record`` itself is not changed.

    ``owned``: the caller parsed ``record`` for this write alone, so its clips may be written into
    rather than copied (rescore's speed), unless output_key puts them beside the originals.
    """
    if config.whole_video:
        scored = dict(record)
        _write_result(scored, results[0], config)
        return scored
    clips_key = config.video_clips_key or ""
    in_place = owned and config.output_key == clips_key
    container = record[clips_key] if in_place else copy.deepcopy(record[clips_key])
    clips = container["clips"] if isinstance(container, dict) else container
    for result, clip in zip(results, clips, strict=True):
        if isinstance(clip, dict):
            _write_result(clip, result, config)
    scored = dict(record)
    scored[config.output_key] = container
    return scored


def _write_result(target: dict[str, Any], result: SampleResult, config: ScoringConfig) -> None:
    score, error = outcome(result)
    target[SCORE] = score
    # A rerun over already-scored records must not keep a stale error or frame list.
    target.pop(ERROR, None)
    target.pop(FRAME_SCORES, None)
    if error is not None:
        target[SCORE] = None
        target[ERROR] = error
    if config.frame_scores and result.frame_scores is not None:
        # JSON has no NaN or infinity: such a frame's score is written as null.
        target[FRAME_SCORES] = [s if s is not None and math.isfinite(s) else None for s in result.frame_scores]
    if config.filtering:
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
