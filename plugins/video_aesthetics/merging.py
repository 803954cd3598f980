"""Merging a sharded run: the scored shards back into one output in input order, checked record by record.

Every scored shard is compared with the shard it came from, so that a lost, duplicated or
reordered record fails the run (MergeError) instead of reaching the output. Clips are counted
under the one outcome vocabulary (records.clip_outcome), as the manifest and the report count them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import VideoAestheticsError
from video_aesthetics.records import ERROR, FILTERED, FRAME_SCORES, SCORE, clip_list, clip_outcome
from video_aesthetics.report import sample_count
from video_aesthetics.sharding import FileShard, ShardPlan


class MergeError(VideoAestheticsError):
    """A scored shard does not hold exactly the records of its input shard, in order."""


@dataclass
class ShardSummary:
    """What the merge found in one scored shard."""

    name: str
    records: int
    first_record: int
    clips: int
    scored: int
    failed: int
    sha256: str


@dataclass
class MergeResult:
    records: int = 0
    clips: int = 0
    scored: int = 0
    failed: int = 0
    passthrough: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    sha256: str = ""
    bytes: int = 0
    shards: list[ShardSummary] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def scored_keys(config: ScoringConfig) -> frozenset[str]:
    """The top-level keys scoring may add or change; every other key must come through untouched."""
    if config.whole_video:
        return frozenset({SCORE, ERROR, FRAME_SCORES, FILTERED})
    return frozenset({config.output_key})


def merge_scored_shards(
    plan: ShardPlan,
    config: ScoringConfig,
    out: IO[bytes],
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> MergeResult:
    """Write every scored shard of ``plan`` to ``out`` in input order, checking it against its input shard.

    Raises MergeError when a scored shard is missing, has more or fewer records than its input, or
    holds a record that is not its input record plus scores: any of these means a record was
    lost, duplicated or reordered, and the run must not publish the output.

    ``on_record`` receives each scored record, parsed and checked, in output order: whatever else
    the run derives from its records (a report, the kept records) comes from this one pass.
    """
    result = MergeResult()
    total = hashlib.sha256()
    untouched = scored_keys(config)
    expected = 0
    for shard in sorted(plan.shards, key=lambda s: s.index):
        if shard.first_record != expected:
            raise MergeError(
                f"{shard.name} starts at record {shard.first_record}, expected {expected}: "
                "the shard plan has a gap or an overlap"
            )
        expected += shard.records
        summary = _merge_one(shard, config, untouched, out, total, result, on_record)
        result.shards.append(summary)
    if result.records != plan.records:
        raise MergeError(f"merged {result.records} records, the plan holds {plan.records}")
    result.sha256 = total.hexdigest()
    result.errors = dict(sorted(result.errors.items()))
    return result


def _merge_one(
    shard: FileShard,
    config: ScoringConfig,
    untouched: frozenset[str],
    out: IO[bytes],
    total: Any,
    result: MergeResult,
    on_record: Callable[[dict[str, Any]], None] | None,
) -> ShardSummary:
    scored_path = Path(shard.output)
    if not scored_path.is_file():
        raise MergeError(f"{shard.name}: scored output {scored_path} is missing; its score_shard task did not write it")
    digest = hashlib.sha256()
    summary = ShardSummary(shard.name, 0, shard.first_record, 0, 0, 0, "")
    with Path(shard.input).open("rb") as inputs, scored_path.open("rb") as scored:
        in_lines = (line for line in inputs if line.strip())
        for number, line in enumerate((line for line in scored if line.strip()), start=1):
            source = next(in_lines, None)
            if source is None:
                raise MergeError(
                    f"{shard.name}: scored output has more records than the {shard.records} of its "
                    f"input (extra record at line {number} of {scored_path}): records were duplicated"
                )
            record, original = json.loads(line), json.loads(source)
            if _strip(record, untouched) != _strip(original, untouched):
                raise MergeError(
                    f"{shard.name}: record {number} of {scored_path} is not record {number} of "
                    f"{shard.input}: records were lost, duplicated or reordered"
                )
            _count_clips(original, record, number - 1, config, summary, result)
            if on_record is not None:
                on_record(record)
            ended = line if line.endswith(b"\n") else line + b"\n"
            digest.update(ended)
            total.update(ended)
            out.write(ended)
            result.bytes += len(ended)
            summary.records += 1
        if next(in_lines, None) is not None or summary.records != shard.records:
            raise MergeError(
                f"{shard.name}: scored output holds {summary.records} records, its input "
                f"{shard.records}: records were lost"
            )
    summary.sha256 = digest.hexdigest()
    result.records += summary.records
    return summary


def _strip(record: Any, keys: frozenset[str]) -> Any:
    return {k: v for k, v in record.items() if k not in keys} if isinstance(record, dict) else record


def _count_clips(
    original: dict[str, Any],
    record: dict[str, Any],
    record_no: int,
    config: ScoringConfig,
    summary: ShardSummary,
    result: MergeResult,
) -> None:
    """Count the samples of ``original`` and how ``record`` scored them."""
    # samples_of's count without its per-clip paths: making those was most of a large merge's time.
    samples = sample_count(original, config)
    if not samples:
        result.passthrough += 1
        return
    targets = [record] if config.whole_video else (clip_list(record, config.output_key) or [])
    if len(targets) != samples:
        raise MergeError(
            f"{summary.name}: record {record_no + 1} has {samples} clips in its input and "
            f"{len(targets)} in its scored output"
        )
    for target in targets:
        _score, reason = clip_outcome(target)
        summary.clips += 1
        result.clips += 1
        if reason is None:
            summary.scored += 1
            result.scored += 1
        else:
            summary.failed += 1
            result.failed += 1
            result.errors[reason] = result.errors.get(reason, 0) + 1
