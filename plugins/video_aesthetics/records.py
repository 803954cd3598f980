"""Records: JSONL in and out, the samples a record holds, and writing scores back into it.

A record is a JSON object. In clip mode its ``video_clips_key`` holds the seed's ``{"clips": [...]}``
(a bare list of clips is accepted too) and every clip is one sample; in whole-video mode the record
itself is one sample. Everything else in a record passes through untouched.

A line is a record only if it can be written back without loss: valid UTF-8 (a BOM on the first
line is allowed), one JSON object, finite numbers, no lone UTF-16 surrogates, no repeated keys, at
most MAX_DEPTH levels deep and integers of at most 4300 digits. Any other non-blank line is a
malformed line: it stops the run with file:line, or (skip_bad_records) goes to the rejects file,
where ``raw`` holds its text exactly, or ``raw_base64`` its bytes when they are not UTF-8.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import logging
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, TypeGuard

from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError, InputError
from video_aesthetics.files import atomic_writer, is_stream, is_within, looks_like_url

log = logging.getLogger(__name__)

SCORE = "aesthetic_score"
ERROR = "aesthetic_error"
FRAME_SCORES = "aesthetic_frame_scores"
FILTERED = "filtered"

# Sample errors written into aesthetic_error.
NO_FRAMES = "no_frames"
CORRUPT_FRAMES = "corrupt_frames"
UNSAFE_PATH = "unsafe_path"
UNREADABLE_VIDEO = "unreadable_video"
NON_FINITE = "non_finite_score"
INVALID_CLIP = "invalid_clip"
INVALID_VIDEO = "invalid_video"
# A written clip without a score and without a reason (a file that was never scored).
UNSCORED = "unscored"
# A written score that is not a number at all (a string, a bool).
INVALID_SCORE = "invalid_score"

# Deeper records could not be copied and written back within Python's recursion limit.
MAX_DEPTH = 100
BOM = b"\xef\xbb\xbf"
_JSON_SPACE = b" \t\r\n"
# A lone surrogate can only come from a \uD800-\uDFFF escape; most lines have none and skip the check.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
Check = Callable[[dict[str, Any]], "str | None"]


@dataclass(frozen=True)
class BadLine:
    """A line that is not a record: where it is, why, and its bytes exactly (without the newline)."""

    source: str
    line: int
    reason: str
    raw: bytes

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", "replace")

    def as_reject(self) -> dict[str, Any]:
        """The rejects-file record: ``raw`` is the line's text, or ``raw_base64`` its bytes when not UTF-8."""
        # A file name with undecodable bytes must not make the rejects file unwritable.
        source = self.source.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        reject: dict[str, Any] = {"source": source, "line": self.line, "error": self.reason}
        try:
            reject["raw"] = self.raw.decode("utf-8")
        except UnicodeDecodeError:
            reject["raw_base64"] = base64.b64encode(self.raw).decode("ascii")
        return reject


def raw_line(reject: dict[str, Any]) -> bytes:
    """The exact bytes of a rejected line, from its rejects-file record."""
    if "raw_base64" in reject:
        return base64.b64decode(reject["raw_base64"])
    return str(reject["raw"]).encode("utf-8")


@dataclass
class JsonlSource:
    """A JSONL file read lazily, as often as needed (decoding workers each read it again).

    With ``skip_bad_records`` a malformed line is reported through ``bad_lines`` and skipped;
    otherwise reading stops with an InputError that names the file and the line. ``name`` is how
    messages and rejects call the input (default: its path); ``check`` may refuse parsed records
    (see ``record_check``). The file must be a regular file: streams are spooled by ``score_file``.
    """

    path: Path
    skip_bad_records: bool = False
    name: str | None = None
    check: Check | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def label(self) -> str:
        return self.name if self.name is not None else str(self.path)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for item in self._parsed():
            if isinstance(item, dict):
                yield item

    def bad_lines(self) -> Iterator[BadLine]:
        for item in self._parsed():
            if isinstance(item, BadLine):
                yield item

    def _parsed(self) -> Iterator[dict[str, Any] | BadLine]:
        for number, raw in read_lines(self.path, self.label):
            record = parse_line(raw, self.label, number)
            if isinstance(record, dict) and self.check is not None:
                problem = self.check(record)
                if problem is not None:
                    record = BadLine(self.label, number, problem, raw)
            if isinstance(record, BadLine) and not self.skip_bad_records:
                raise InputError(
                    f"{record.source}:{record.line}: {record.reason}; fix or remove that line, "
                    "or pass --skip-bad-records (skip_bad_records=True) to send such lines to a rejects file"
                )
            yield record


def input_kind(path: Path | str, label: str | None = None) -> str:
    """ "file" (read as often as needed) or "stream" (a pipe, FIFO or socket: read once); InputError otherwise."""
    label = label if label is not None else str(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(f"input file {label} does not exist; check the --input path") from None
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read input {label}: {getattr(err, 'strerror', None) or err}") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"input {label} is a folder; pass one JSONL file (the DAG takes folders and globs)")
    if is_stream(mode):
        return "stream"
    if not stat.S_ISREG(mode):
        raise InputError(f"input {label} is a device, not a file of records; pass a JSONL file, a pipe or -")
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as err:
        raise InputError(f"cannot read input {label}: {err.strerror}; check its permissions") from None
    return "file"


def open_input(path: Path | str, label: str | None = None) -> Any:
    """A regular file opened for reading in binary; InputError (saying what to change) when it cannot be."""
    label = label if label is not None else str(path)
    if input_kind(path, label) == "stream":
        raise InputError(
            f"input {label} is a pipe or socket, which can be read only once but is read several times "
            "here; score_file and the CLI copy such inputs first, or save it to a file"
        )
    try:
        return open(path, "rb")
    except OSError as err:
        raise InputError(f"cannot read input {label}: {err.strerror}; check its permissions") from None


def read_lines(path: Path | str, label: str | None = None) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without the newline) of each non-blank line; only "\\n" ends a line."""
    label = label if label is not None else str(path)
    with open_input(path, label) as handle:
        number = 0
        while True:
            try:
                raw = handle.readline()
            except OSError as err:
                raise InputError(f"cannot read input {label} after line {number}: {err.strerror}") from None
            if not raw:
                return
            number += 1
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            body = raw[len(BOM) :] if number == 1 and raw.startswith(BOM) else raw
            if body.strip(_JSON_SPACE):
                yield number, raw


def parse_line(data: str | bytes, source: Path | str, number: int) -> dict[str, Any] | BadLine:
    """One JSONL line (bytes or text, with or without its newline) as a record, or a BadLine saying why not."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    body = raw[len(BOM) :] if number == 1 and raw.startswith(BOM) else raw

    def bad(reason: str) -> BadLine:
        return BadLine(str(source), number, reason, raw)

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        return bad(f"not valid UTF-8 (byte 0x{body[err.start]:02x} at byte {err.start + 1})")
    try:
        record = json.loads(
            text, parse_constant=_no_constant, parse_float=_finite_float, object_pairs_hook=_unique_keys
        )
    except json.JSONDecodeError as err:
        return bad(f"malformed JSON ({err.msg} at column {err.colno})")
    except RecursionError:
        return bad(f"nested deeper than {MAX_DEPTH} levels")
    except ValueError as err:
        message = str(err)
        if "integer string conversion" in message:
            message = f"an integer of more than {_int_digits()} digits"
        return bad(message)
    if not isinstance(record, dict):
        return bad(f"a record must be a JSON object, got {type(record).__name__}")
    problem = _unwritable(record, text)
    return bad(problem) if problem else record


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (only finite numbers can be written back)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large for a 64-bit float")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"key {key!r} appears twice in one object (one value would be lost)")
            seen.add(key)
    return record


def _int_digits() -> int:
    import sys

    return sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300


def _unwritable(record: dict[str, Any], text: str) -> str | None:
    """Why a parsed record could not be written back as it came, or None."""
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(record) > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    if _SURROGATE_ESCAPE.search(text):
        try:
            dumps(record).encode("utf-8")
        except UnicodeEncodeError:
            return "a lone UTF-16 surrogate escape (\\ud800-\\udfff without its pair) cannot be written as UTF-8"
    return None


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def output_key_conflict(record: dict[str, Any], config: ScoringConfig) -> str | None:
    """Why scoring ``record`` would overwrite a field that is not a clips container, or None.

    With an ``output_key`` other than ``video_clips_key``, the scored clips replace that field;
    a record already holding something else there (text, the video path, a number) is refused
    rather than silently losing it. A clips container from an earlier run may be replaced.
    """
    if config.whole_video or config.output_key == config.video_clips_key:
        return None
    value = record.get(config.output_key)
    if value is None or _is_clips_container(value) or not samples_of(record, 0, config, 0):
        return None
    return (
        f"field {config.output_key!r} (output_key) already holds a {type(value).__name__} that is not a clips "
        "container, and the scored clips would replace it; choose another output_key or remove that field"
    )


def _is_clips_container(value: Any) -> bool:
    return isinstance(value, list) or (isinstance(value, dict) and isinstance(value.get("clips"), list))


def record_check(config: ScoringConfig) -> Check | None:
    """The per-record refusal a JsonlSource applies for ``config`` (picklable, for spawned ranks), or None."""
    if config.whole_video or config.output_key == config.video_clips_key:
        return None
    return functools.partial(_check_with, config=config)


def _check_with(record: dict[str, Any], config: ScoringConfig) -> str | None:
    return output_key_conflict(record, config)


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
    # Only when embeddings are asked for (video_aesthetics.embeddings): each frame's name and the
    # (frames, D) L2-normalised embeddings the head saw; the writer drops them once stored.
    frames: list[str] | None = None
    embeddings: Any = None


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
        error = outcome(result)[1]
        if error is None:
            self.scored += 1
        else:
            self.failed += 1
            self.errors[error] = self.errors.get(error, 0) + 1


def classify(score: Any, error: Any) -> tuple[float | None, str | None]:
    """A clip's outcome: its score and no reason, or no score and why.

    The one vocabulary of outcomes: the scorer's results, the merge's check of scored shards, the
    manifest, the summary and the report all classify clips here, so they count under the same keys.
    """
    if error is not None:
        return None, str(error)
    if score is None:
        return None, UNSCORED
    if isinstance(score, bool) or not isinstance(score, int | float):
        return None, INVALID_SCORE
    if not is_finite_number(score):
        return None, NON_FINITE
    return float(score), None


def outcome(result: SampleResult) -> tuple[float | None, str | None]:
    """(score, error) as written: a NaN or infinite score is no score, with error non_finite_score."""
    return classify(result.score, result.error)


def clip_outcome(target: Any) -> tuple[float | None, str | None]:
    """The outcome of a clip as written in an output record (``classify``); a clip that is no object is invalid."""
    if not isinstance(target, dict):
        return None, INVALID_CLIP
    return classify(target.get(SCORE), target.get(ERROR))


def video_stem(record: dict[str, Any], video_key: str) -> str | None:
    """The record's video file name without extension; `video` may be a string or a one-element list."""
    video = video_path(record, video_key)
    if video is None:
        return None
    # Windows paths from upstream tools must split on backslashes too.
    return PureWindowsPath(video).stem if "\\" in video else PurePosixPath(video).stem


def video_path(record: dict[str, Any], video_key: str) -> str | None:
    video = record.get(video_key)
    if isinstance(video, list) and len(video) == 1:
        video = video[0]
    return video if isinstance(video, str) and video else None


def video_invalid(record: dict[str, Any], video_key: str) -> bool:
    """Whether the record names a video in a form that names no one file (two paths, a number, a dict).

    Such a record's samples are marked ``invalid_video``; a record with no video at all (absent,
    null, "" or []) passes through.
    """
    video = record.get(video_key)
    if video is None or video in ("", []):
        return False
    return video_path(record, video_key) is None


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
    """The samples of one record, numbered from ``seq``; empty when the record passes through.

    Only the record is looked at (no file system): ``iter_samples`` adds the checks that need it.
    """
    if config.whole_video:
        path = video_path(record, config.input_video_key)
        if path is None:
            invalid = video_invalid(record, config.input_video_key)
            return [Sample(seq, record_no, None, None, INVALID_VIDEO)] if invalid else []
        if looks_like_url(path) or "\x00" in path:
            # FFmpeg would open "http://...", "pipe:0", "concat:..." as protocols: only local files are read.
            return [Sample(seq, record_no, None, None, UNSAFE_PATH)]
        video = Path(path).expanduser()
        # A relative path is taken against video_root when set (the DAG sets the input file's folder).
        if config.video_root and not video.is_absolute():
            video = Path(config.video_root).expanduser() / video
        return [Sample(seq, record_no, None, video)]
    clips = clip_list(record, config.video_clips_key or "")
    if clips is None:
        return []
    stem = video_stem(record, config.input_video_key)
    if stem is None:
        if not video_invalid(record, config.input_video_key):
            return []
        return [
            Sample(seq + index, record_no, index, None, INVALID_VIDEO if isinstance(clip, dict) else INVALID_CLIP)
            for index, clip in enumerate(clips)
        ]
    samples = []
    for index, clip in enumerate(clips):
        cid = clip_id(clip, stem, index)
        if not isinstance(clip, dict):
            samples.append(Sample(seq + index, record_no, index, None, INVALID_CLIP))
        elif is_safe_component(stem) and is_safe_component(cid):
            samples.append(Sample(seq + index, record_no, index, config.frames_root / stem / cid / "img"))
        else:
            samples.append(Sample(seq + index, record_no, index, None, UNSAFE_PATH))
    return samples


def iter_samples(records: Iterable[dict[str, Any]], config: ScoringConfig) -> Iterator[Sample]:
    """Every sample of ``records`` in order, checked against the file system before anything is read.

    A clip folder that resolves outside figure_root (a symbolic link out of it anywhere on the
    way) and, in whole-video mode, a video that is a FIFO, socket or device (reading could block
    forever) become ``unsafe_path`` samples.
    """
    real_root = os.path.realpath(config.frames_root)
    seq = 0
    for record_no, record in enumerate(records):
        samples = samples_of(record, record_no, config, seq)
        seq += len(samples)
        for sample in samples:
            yield _checked(sample, config, real_root)


def _checked(sample: Sample, config: ScoringConfig, real_root: str) -> Sample:
    if sample.error is not None or sample.path is None:
        return sample
    if config.whole_video:
        try:
            mode = os.stat(sample.path).st_mode
        except (OSError, ValueError):
            return sample  # missing or unreadable: the decoder reports it as unreadable_video
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            return sample
        log.warning("not reading %s: it is not a regular file", sample.path)
        return replace(sample, path=None, error=UNSAFE_PATH)
    if stays_inside(sample.path, config.frames_root, real_root):
        return sample
    log.warning("not reading %s: it leads outside figure_root %s through a symbolic link", sample.path, real_root)
    return replace(sample, path=None, error=UNSAFE_PATH)


def stays_inside(path: Path, root: Path, real_root: str) -> bool:
    """Whether ``path``, below ``root``, resolves inside ``real_root``; one lstat per level when no link is met."""
    current = Path(root)
    for part in Path(path).relative_to(root).parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except OSError:
            return True  # nothing there, so nothing to read
        if stat.S_ISLNK(mode):
            return is_within(os.path.realpath(path), real_root)
    return True


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


def passes_filter(target: Any, aes_min: float | None, aes_max: float | None) -> bool:
    """DataFlow-MM VideoAestheticFilter's rule for one clip (or, whole-video, one record).

    It passes when its score is a finite number with aes_min <= score <= aes_max (an unset bound
    does not limit); no score fails; and a sample an earlier filter marked ``filtered: false`` stays failed.
    """
    if not isinstance(target, dict) or target.get(FILTERED) is False:
        return False
    score = target.get(SCORE)
    if not is_finite_number(score):
        return False
    return (aes_min is None or score >= aes_min) and (aes_max is None or score <= aes_max)


def is_finite_number(value: Any) -> TypeGuard[float]:
    """Whether ``value`` is a score: an int or float (not a bool) that is a finite 64-bit float.

    A JSON integer of hundreds of digits is a Python int that no float holds (math.isfinite raises).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


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
    """A pass over the input that counts records and samples (and, for a JSONL source, validates every line).

    Raises InputError for a record whose output_key field scoring would clobber (a JsonlSource
    made with ``record_check`` has already refused those, naming file and line).
    """
    counts = RecordCounts()
    seq = 0
    for record_no, record in enumerate(records):
        problem = output_key_conflict(record, config)
        if problem is not None:
            raise InputError(f"record {record_no + 1}: {problem}")
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


def kept_records(records: Iterable[dict[str, Any]], config: ScoringConfig) -> Iterator[dict[str, Any]]:
    """The scored ``records`` with only their clips that pass the filter; records left with none are dropped.

    Clip mode keeps the passing clips of ``output_key`` (its other keys, and every other field,
    unchanged); whole-video mode keeps the records that pass. Passing is ``passes_filter`` with
    ``config``'s thresholds, so on output scored with the same thresholds it is ``filtered: true``.
    """
    if not config.filtering:
        raise ConfigError("kept records need a threshold: set aes_min and/or aes_max")
    for record in records:
        kept = _kept(record, config)
        if kept is not None:
            yield kept


def _kept(record: dict[str, Any], config: ScoringConfig) -> dict[str, Any] | None:
    if config.whole_video:
        return record if passes_filter(record, config.aes_min, config.aes_max) else None
    clips = clip_list(record, config.output_key)
    passing = [clip for clip in clips or [] if passes_filter(clip, config.aes_min, config.aes_max)]
    if not passing:
        return None
    container = record[config.output_key]
    kept = dict(record)
    kept[config.output_key] = {**container, "clips": passing} if isinstance(container, dict) else passing
    return kept
