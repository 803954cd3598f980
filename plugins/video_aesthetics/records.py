"""The record model: the samples a record holds, their results, and the one vocabulary of outcomes.

A record is a JSON object (read by jsonl.py). In clip mode its ``video_clips_key`` holds the seed's
``{"clips": [...]}`` (a bare list of clips is accepted too) and every clip is one sample; in
whole-video mode the record itself is one sample. Everything else in a record passes through
untouched. Writing results back into a record is writeback.py's; the threshold filter is filtering.py's.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, TypeGuard

from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import InputError
from video_aesthetics.files import is_within, looks_like_url
from video_aesthetics.jsonl import Check

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
    if type(score) is float and math.isfinite(score):
        return score, None  # the common case, first: classify runs for every clip written
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


def is_finite_number(value: Any) -> TypeGuard[float]:
    """Whether ``value`` is a score: an int or float (not a bool) that is a finite 64-bit float.

    A JSON integer of hundreds of digits is a Python int that no float holds (math.isfinite raises).
    """
    if type(value) is float:
        return math.isfinite(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def video_stem(record: dict[str, Any], video_key: str) -> str | None:
    """The record's video file name without extension; `video` may be a string or a one-element list."""
    video = video_path(record, video_key)
    if video is None:
        return None
    # Windows paths from upstream tools must split on backslashes too.
    return PureWindowsPath(video).stem if "\\" in video else _posix_stem(video)


def _posix_stem(video: str) -> str:
    """PurePosixPath(video).stem, without building the path (which cost rescore about 2 µs a record)."""
    name = video.rsplit("/", 1)[-1]
    if name in ("", "."):
        # pathlib skips empty and "." parts: the name is an earlier part.
        return PurePosixPath(video).stem
    dot = name.rfind(".")
    return name[:dot] if 0 < dot < len(name) - 1 else name


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
    """A stem or clip id must name one folder directly below its parent: no separators, no '..'.

    Without a separator no name is absolute, on POSIX or Windows ("C:" alone is relative there).
    """
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\x00" not in name


def samples_of(
    record: dict[str, Any], record_no: int, config: ScoringConfig, seq: int, *, paths: bool = True
) -> list[Sample]:
    """The samples of one record, numbered from ``seq``; empty when the record passes through.

    Only the record is looked at (no file system): ``iter_samples`` adds the checks that need it.
    ``paths=False`` leaves out the frame folders' and videos' paths, for a reader that never opens
    them (rescore), where building them costs more than the rest of a clip's work.
    """
    if config.whole_video:
        path = video_path(record, config.input_video_key)
        if path is None:
            invalid = video_invalid(record, config.input_video_key)
            return [Sample(seq, record_no, None, None, INVALID_VIDEO)] if invalid else []
        if looks_like_url(path) or "\x00" in path:
            # FFmpeg would open "http://...", "pipe:0", "concat:..." as protocols: only local files are read.
            return [Sample(seq, record_no, None, None, UNSAFE_PATH)]
        return [Sample(seq, record_no, None, video_file(path, config.video_root) if paths else None)]
    plan = clip_plan(record, config)
    if plan is None:
        return []
    stem, planned = plan
    return [
        Sample(
            seq + index,
            record_no,
            index,
            config.frames_root / stem / cid / "img" if paths and error is None and cid is not None else None,
            error,
        )
        for index, (cid, error) in enumerate(planned)
    ]


def clip_plan(record: dict[str, Any], config: ScoringConfig) -> tuple[str, list[tuple[str | None, str | None]]] | None:
    """Clip mode: the record's video stem and, for each clip in order, its id and the error known before decoding.

    None when the record passes through. The id is None where the record names no usable video (every
    clip is then ``invalid_video`` or ``invalid_clip``, and the stem is ""). ``samples_of`` builds its
    samples from this; rescore reads it directly, without a Sample per clip.
    """
    clips = clip_list(record, config.video_clips_key or "")
    if clips is None:
        return None
    stem = video_stem(record, config.input_video_key)
    if stem is None:
        if not video_invalid(record, config.input_video_key):
            return None
        return "", [(None, INVALID_VIDEO if isinstance(clip, dict) else INVALID_CLIP) for clip in clips]
    safe_stem = is_safe_component(stem)
    planned: list[tuple[str | None, str | None]] = []
    for index, clip in enumerate(clips):
        cid = clip_id(clip, stem, index)
        if not isinstance(clip, dict):
            planned.append((cid, INVALID_CLIP))
        elif safe_stem and is_safe_component(cid):
            planned.append((cid, None))
        else:
            planned.append((cid, UNSAFE_PATH))
    return stem, planned


def video_file(path: str, video_root: str | None) -> Path:
    """The file a record's video path names: a relative one is taken against ``video_root`` when set.

    The scorer and the report's thumbnails both resolve it here (the DAG sets the input file's folder).
    """
    video = Path(path).expanduser()
    if video_root and not video.is_absolute():
        video = Path(video_root).expanduser() / video
    return video


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
