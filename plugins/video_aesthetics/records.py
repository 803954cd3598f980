"""Records: JSONL in and out, the samples a record holds, and writing scores back into it.

A record is a JSON object. In clip mode its ``video_clips_key`` holds the seed's ``{"clips": [...]}``
(a bare list of clips is accepted too) and every clip is one sample; in whole-video mode the record
itself is one sample. Everything else in a record passes through untouched.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import InputError
from video_aesthetics.files import atomic_writer

log = logging.getLogger(__name__)

SCORE = "aesthetic_score"
ERROR = "aesthetic_error"
FRAME_SCORES = "aesthetic_frame_scores"

# Sample errors written into aesthetic_error.
NO_FRAMES = "no_frames"
CORRUPT_FRAMES = "corrupt_frames"
UNSAFE_PATH = "unsafe_path"
UNREADABLE_VIDEO = "unreadable_video"
NON_FINITE = "non_finite_score"


@dataclass(frozen=True)
class BadLine:
    """A line that is not a JSON object: where it is, why, and its text (for the rejects file)."""

    source: str
    line: int
    reason: str
    text: str

    def as_reject(self) -> dict[str, Any]:
        return {"source": self.source, "line": self.line, "error": self.reason, "raw": self.text}


@dataclass
class JsonlSource:
    """A JSONL file read lazily, as often as needed (decoding workers each read it again).

    With ``skip_bad_records`` a malformed line is reported through ``bad_lines`` and skipped;
    otherwise reading stops with an InputError that names the file and the line.
    """

    path: Path
    skip_bad_records: bool = False

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for item in self._parsed():
            if isinstance(item, dict):
                yield item

    def bad_lines(self) -> Iterator[BadLine]:
        for item in self._parsed():
            if isinstance(item, BadLine):
                yield item

    def _parsed(self) -> Iterator[dict[str, Any] | BadLine]:
        try:
            handle = self.path.open("r", encoding="utf-8")
        except FileNotFoundError:
            raise InputError(f"input file {self.path} does not exist; check the --input path") from None
        with handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                record = parse_line(text, self.path, number)
                if isinstance(record, BadLine) and not self.skip_bad_records:
                    raise InputError(
                        f"{record.source}:{record.line}: {record.reason}; fix or remove that line, "
                        "or pass --skip-bad-records (skip_bad_records=True) to send such lines to a rejects file"
                    )
                yield record


def parse_line(text: str, source: Path | str, number: int) -> dict[str, Any] | BadLine:
    """One JSONL line as a record, or a BadLine saying why it is not one."""
    try:
        record = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return BadLine(str(source), number, f"malformed JSON ({err.msg} at column {err.colno})", text.rstrip("\n"))
    if not isinstance(record, dict):
        return BadLine(
            str(source), number, f"a record must be a JSON object, got {type(record).__name__}", text.rstrip("\n")
        )
    return record


@dataclass(frozen=True)
class Sample:
    """One thing to score: a clip's frame folder, or (whole-video mode) a video file.

    ``error`` is set when the sample is known to be unscorable before any decoding.
    """

    seq: int
    record: int
    clip: int | None
    path: Path | None
    error: str | None = None


@dataclass
class SampleResult:
    seq: int
    score: float | None
    error: str | None = None
    frame_scores: list[float] | None = None


@dataclass
class RecordCounts:
    records: int = 0
    clips: int = 0
    passthrough: int = 0
    rejected: int = 0
    scored: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def count_result(self, result: SampleResult) -> None:
        if result.error is None:
            self.scored += 1
        else:
            self.failed += 1
            self.errors[result.error] = self.errors.get(result.error, 0) + 1


def video_stem(record: dict[str, Any], video_key: str) -> str | None:
    """The record's video file name without extension; `video` may be a string or a one-element list."""
    video = record.get(video_key)
    if isinstance(video, list) and len(video) == 1:
        video = video[0]
    if not isinstance(video, str) or not video:
        return None
    # Windows paths from upstream tools must split on backslashes too.
    return PureWindowsPath(video).stem if "\\" in video else PurePosixPath(video).stem


def video_path(record: dict[str, Any], video_key: str) -> str | None:
    video = record.get(video_key)
    if isinstance(video, list) and len(video) == 1:
        video = video[0]
    return video if isinstance(video, str) and video else None


def clip_list(record: dict[str, Any], clips_key: str) -> list[Any] | None:
    """The record's clips, or None when it has none to score (the record then passes through)."""
    value = record.get(clips_key)
    if isinstance(value, dict):
        value = value.get("clips")
    return value if isinstance(value, list) else None


def clip_id(clip: Any, stem: str, index: int) -> str:
    if isinstance(clip, dict) and clip.get("id") not in (None, ""):
        return str(clip["id"])
    return f"{stem}_{index}"


def is_safe_component(name: str) -> bool:
    """A stem or clip id must name one folder directly below its parent: no separators, no '..'."""
    return bool(name) and name not in (".", "..") and not re.search(r"[/\\\x00]", name) and not os.path.isabs(name)


def samples_of(record: dict[str, Any], record_no: int, config: ScoringConfig, seq: int) -> list[Sample]:
    """The samples of one record, numbered from ``seq``; empty when the record passes through."""
    if config.whole_video:
        path = video_path(record, config.input_video_key)
        if path is None:
            return []
        return [Sample(seq, record_no, None, Path(path))]
    stem = video_stem(record, config.input_video_key)
    clips = clip_list(record, config.video_clips_key or "")
    if stem is None or clips is None:
        return []
    samples = []
    for index, clip in enumerate(clips):
        cid = clip_id(clip, stem, index)
        if not isinstance(clip, dict):
            samples.append(Sample(seq + index, record_no, index, None, "invalid_clip"))
        elif is_safe_component(stem) and is_safe_component(cid):
            samples.append(Sample(seq + index, record_no, index, config.frames_root / stem / cid / "img"))
        else:
            samples.append(Sample(seq + index, record_no, index, None, UNSAFE_PATH))
    return samples


def iter_samples(records: Iterable[dict[str, Any]], config: ScoringConfig) -> Iterator[Sample]:
    seq = 0
    for record_no, record in enumerate(records):
        samples = samples_of(record, record_no, config, seq)
        seq += len(samples)
        yield from samples


def with_results(record: dict[str, Any], results: list[SampleResult], config: ScoringConfig) -> dict[str, Any]:
    """A copy of ``record`` with its samples' results written in; ``record`` itself is not changed."""
    if config.whole_video:
        scored = dict(record)
        _write_result(scored, results[0], config)
        return scored
    clips_key = config.video_clips_key or ""
    container = copy.deepcopy(record[clips_key])
    clips = container["clips"] if isinstance(container, dict) else container
    for result, clip in zip(results, clips, strict=True):
        if isinstance(clip, dict):
            _write_result(clip, result, config)
    scored = dict(record)
    scored[config.output_key] = container
    return scored


def _write_result(target: dict[str, Any], result: SampleResult, config: ScoringConfig) -> None:
    score = result.score
    error = result.error
    if score is not None and not math.isfinite(score):
        score, error = None, NON_FINITE
    target[SCORE] = score
    # A rerun over already-scored records must not keep a stale error or frame list.
    target.pop(ERROR, None)
    target.pop(FRAME_SCORES, None)
    if error is not None:
        target[SCORE] = None
        target[ERROR] = error
    if config.frame_scores and result.frame_scores is not None:
        target[FRAME_SCORES] = result.frame_scores


def dumps(record: dict[str, Any]) -> str:
    """One output line; non-ASCII is kept as it is, NaN is refused rather than written as invalid JSON."""
    return json.dumps(record, ensure_ascii=False, allow_nan=False)


def write_jsonl(path: Path | str, records: Iterable[dict[str, Any]]) -> int:
    count = 0
    with atomic_writer(path) as handle:
        for record in records:
            handle.write(dumps(record) + "\n")
            count += 1
    return count


def rejects_location(output: str) -> str:
    """``<output stem>.rejects.jsonl`` beside ``output``, a path or a URL (pathlib would fold a URL's "//")."""
    stem = output[: -len(".jsonl")] if output.endswith(".jsonl") else output
    return f"{stem}.rejects.jsonl"


def default_rejects_path(output: Path | str) -> Path:
    return Path(rejects_location(str(output)))


def count_records(records: Iterable[dict[str, Any]], config: ScoringConfig) -> RecordCounts:
    """A pass over the input that counts records and samples (and, for a JSONL source, validates every line)."""
    counts = RecordCounts()
    seq = 0
    for record_no, record in enumerate(records):
        samples = samples_of(record, record_no, config, seq)
        seq += len(samples)
        counts.records += 1
        counts.clips += len(samples)
        counts.passthrough += not samples
    return counts


def merge_results(
    records: Iterable[dict[str, Any]],
    results: Iterable[SampleResult],
    config: ScoringConfig,
    counts: RecordCounts,
    on_result: Callable[[SampleResult], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Zip records with their samples' results (both in input order) into scored records."""
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
            got.append(result)
        yield with_results(record, got, config)
    leftover = next(pending, None)
    if leftover is not None:
        raise RuntimeError(f"internal error: result for unknown sample {leftover.seq}")
