"""Frames before scoring: check that every clip has readable frames, and extract the missing ones from videos.

Extraction writes what DataFlow-MM's VideoFrameFilter writes by default, the clip's first, middle
and last frame as ``<figure_root>/<video stem>/<clip id>/img/frame_<local index:06d>.jpg``, so that
frames from either tool score the same. Nothing here imports torch or Airflow.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError, InputError
from video_aesthetics.files import LinkInTheWayError, write_below
from video_aesthetics.frame_store import FETCH_THREADS, remote_frames, remote_has_frames
from video_aesthetics.frames import OutsideRootError, is_readable, list_frames, select_frames
from video_aesthetics.jsonl import JsonlSource
from video_aesthetics.records import (
    Sample,
    clip_id,
    clip_list,
    record_check,
    samples_of,
    stays_inside,
    video_path,
    video_stem,
)
from video_aesthetics.video import read_frames

log = logging.getLogger(__name__)

POLICIES = ("extract", "skip", "fail")
FIRST_MISSING = 20
JPEG_QUALITY = 95
_LOG_EVERY_SECONDS = 30.0
# Frames decoded per pass over a video: a record of a thousand 4K clips must not hold them all in memory.
_MAX_DECODED = 48


@dataclass
class FrameReport:
    """What a frame check found and did; small enough for an XCom."""

    records: int = 0
    clips: int = 0
    present: int = 0
    extracted: int = 0
    missing: int = 0
    unreadable_videos: int = 0
    first_missing: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def add_missing(self, name: str) -> None:
        self.missing += 1
        if len(self.first_missing) < FIRST_MISSING:
            self.first_missing.append(name)


@dataclass
class _Clip:
    sample: Sample
    name: str
    clip: Any


@dataclass
class _Group:
    """Consecutive clips of one video: the unit a worker checks, and extracts with one open of the video."""

    video: Path | None
    clips: list[_Clip] = field(default_factory=list)


@dataclass
class _GroupResult:
    present: int = 0
    extracted: int = 0
    missing: list[str] = field(default_factory=list)
    unreadable_video: bool = False


def check_frames(inputs: list[Path], config: ScoringConfig, policy: str, video_root: Path | None = None) -> FrameReport:
    """Check every clip of ``inputs`` for readable frames under ``config.figure_root``; extract, count or fail.

    ``policy`` "extract" decodes missing clips' frames from their videos, "skip" only counts (the
    scorer then records such clips as unscored with "no_frames"), "fail" raises InputError naming
    the first missing clips. Relative video paths resolve against ``video_root``, by default
    against the folder of the input file that names them. ``config.num_workers`` threads check and
    decode videos side by side (0: all in this thread).
    """
    if policy not in POLICIES:
        raise ConfigError(f"on_missing_frames must be one of {', '.join(POLICIES)}, got {policy!r}")
    report = FrameReport()
    if config.whole_video:
        # Whole videos are decoded by the scorer itself: there are no frame folders to check.
        for path in inputs:
            source = JsonlSource(Path(path), skip_bad_records=config.skip_bad_records, check=record_check(config))
            report.records += sum(1 for _ in source)
        return report
    extract = policy == "extract"
    workers = config.num_workers
    started = last_log = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="frames") if workers else None
    # A bounded window keeps memory flat on inputs of millions of clips; results are added in input order.
    window = 2 * max(1, workers)
    in_flight: deque[Future[_GroupResult] | _GroupResult] = deque()
    try:
        for group in _groups(inputs, config, video_root, report):
            if pool is not None:
                in_flight.append(pool.submit(_process_group, group, config.load_num, extract, config.frames_root))
            else:
                in_flight.append(_process_group(group, config.load_num, extract, config.frames_root))
            while len(in_flight) >= window:
                _add(report, in_flight.popleft())
            if time.monotonic() - last_log >= _LOG_EVERY_SECONDS:
                last_log = time.monotonic()
                log.info(
                    "frames: %d of %d clips seen so far are missing, %d extracted",
                    report.missing,
                    report.clips,
                    report.extracted,
                )
        while in_flight:
            _add(report, in_flight.popleft())
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    log.info(
        "frames: %d records, %d clips: %d present, %d extracted, %d missing, %d unreadable videos (%.1f s)",
        report.records,
        report.clips,
        report.present,
        report.extracted,
        report.missing,
        report.unreadable_videos,
        time.monotonic() - started,
    )
    if policy == "fail" and report.missing:
        raise InputError(_missing_message(report, config))
    return report


def _add(report: FrameReport, item: Future[_GroupResult] | _GroupResult) -> None:
    result = item.result() if isinstance(item, Future) else item
    report.present += result.present
    report.extracted += result.extracted
    report.unreadable_videos += result.unreadable_video
    for name in result.missing:
        report.add_missing(name)


def _missing_message(report: FrameReport, config: ScoringConfig) -> str:
    shown = ", ".join(report.first_missing)
    hidden = report.missing - len(report.first_missing)
    more = f" and {hidden} more" if hidden > 0 else ""
    return (
        f"{report.missing} of {report.clips} clips have no readable frames under {config.figure_root} "
        f"(expected <figure_root>/<video stem>/<clip id>/img/*.jpg): {shown}{more}. Extract their frames first "
        '(e.g. with VideoFrameFilter), or set on_missing_frames to "extract" to decode them from the videos, '
        'or to "skip" to score the rest and record these clips as unscored (no_frames)'
    )


def _groups(
    inputs: list[Path], config: ScoringConfig, video_root: Path | None, report: FrameReport
) -> Iterator[_Group]:
    """Clips grouped by video, counting records and clips into ``report`` as they are read.

    Records of one video are usually one record, or adjacent ones: grouping runs of the same video
    opens each video once without holding the whole input in memory.
    """
    for input_path in map(Path, inputs):
        base = Path(video_root) if video_root is not None else input_path.parent
        group: _Group | None = None
        seq = 0
        source = JsonlSource(input_path, skip_bad_records=config.skip_bad_records, check=record_check(config))
        for record_no, record in enumerate(source):
            report.records += 1
            samples = samples_of(record, record_no, config, seq)
            if not samples:
                continue
            seq += len(samples)
            report.clips += len(samples)
            video = resolve_video(record, config, base)
            if group is None or group.video != video:
                if group is not None:
                    yield group
                group = _Group(video)
            stem = video_stem(record, config.input_video_key) or ""
            clips = clip_list(record, config.video_clips_key or "") or []
            for sample in samples:
                clip = clips[sample.clip] if sample.clip is not None else None
                group.clips.append(_Clip(sample, f"{stem}/{clip_id(clip, stem, sample.clip or 0)}", clip))
        if group is not None:
            yield group


def resolve_video(record: dict[str, Any], config: ScoringConfig, base: Path) -> Path | None:
    """The record's video file, a relative path taken against ``base``; None when the record names none."""
    path = video_path(record, config.input_video_key)
    if path is None:
        return None
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def has_frames(folder: Path, load_num: int, root: Path | None = None) -> bool:
    """Whether the frames the scorer would read from ``folder`` exist and all decode.

    With ``root`` (figure_root), ``folder`` must lie below it, and frames count only where they
    resolve inside it, through any symbolic link.
    """
    real_root = None if root is None else os.path.realpath(root)
    if root is not None and real_root is not None and not stays_inside(folder, root, real_root):
        return False
    try:
        # The scorer's rule (batches._folder_pixels): listed and read through descriptors checked inside root.
        selected = select_frames(list_frames(folder, root), load_num)
    except OutsideRootError:
        return False
    return bool(selected) and all(is_readable(path, real_root) for path in selected)


def _process_group(group: _Group, load_num: int, extract: bool, root: Path) -> _GroupResult:
    result = _GroupResult()
    todo: list[_Clip] = []
    for item in group.clips:
        if item.sample.error is None and item.sample.path is not None and has_frames(item.sample.path, load_num, root):
            result.present += 1
        elif extract and item.sample.error is None and item.sample.path is not None and clip_range(item.clip):
            todo.append(item)
        else:
            result.missing.append(item.name)
    done = 0
    for batch in _frame_batches(todo):
        try:
            images = _decode(group.video, batch)
        except Exception as err:  # noqa: BLE001 - PyAV raises its own error tree; one bad video must not end the check
            log.warning("cannot decode frames from video %s: %s", group.video, err)
            result.unreadable_video = True
            result.missing.extend(item.name for item in todo[done:])
            break
        done += len(batch)
        # Write errors (a full disk, no permission) are not the video's fault: they fail the task, to be retried.
        for item in batch:
            folder = item.sample.path
            assert folder is not None  # todo holds only samples with a folder (above)
            try:
                for local, index in clip_indices(item.clip).items():
                    _write_jpeg(images[index], root, folder.relative_to(root).parts, f"frame_{local:06d}.jpg")
            except LinkInTheWayError as err:
                log.warning("not extracting %s: %s", item.name, err)
                result.missing.append(item.name)
                continue
            if has_frames(folder, load_num, root):
                result.extracted += 1
            else:
                result.missing.append(item.name)
    return result


def _frame_batches(todo: list[_Clip]) -> Iterator[list[_Clip]]:
    """Clips in input order, in batches needing at most _MAX_DECODED frames: decoded frames are held in memory."""
    batch: list[_Clip] = []
    frames = 0
    for item in todo:
        count = len(clip_indices(item.clip))
        if batch and frames + count > _MAX_DECODED:
            yield batch
            batch, frames = [], 0
        batch.append(item)
        frames += count
    if batch:
        yield batch


def _decode(source: Path | None, batch: list[_Clip]) -> dict[int, Any]:
    """Every frame ``batch`` needs, by index in the video, from one pass over it."""
    if source is None:
        raise InputError("the record names no video file")
    wanted = sorted({index for item in batch for index in clip_indices(item.clip).values()})
    return dict(zip(wanted, read_frames(source, wanted), strict=False))


def extract_clip_frames(video: Path, clip: dict[str, Any], folder: Path) -> list[Path]:
    """Write ``clip``'s first, middle and last frame from ``video`` into ``folder``; the paths written.

    Raises InputError when the clip has no usable frame range, and whatever PyAV raises when the
    video cannot be decoded.
    """
    indices = clip_indices(clip)
    if not indices:
        raise InputError(
            f"clip {clip!r} has no usable frame range: it needs frame_start, and frame_end "
            "(exclusive) or num_frames, covering at least one frame"
        )
    images = read_frames(video, list(indices.values()))
    paths = []
    for (local, _), image in zip(indices.items(), images, strict=False):
        paths.append(_write_jpeg(image, Path(folder), (), f"frame_{local:06d}.jpg"))
    return paths


def clip_range(clip: Any) -> tuple[int, int] | None:
    """(first frame, frame count) of a clip, from frame_start with frame_end (exclusive) or num_frames."""
    if not isinstance(clip, dict):
        return None
    start = _int(clip.get("frame_start"))
    end = _int(clip.get("frame_end"))
    count = end - start if end is not None and start is not None else _int(clip.get("num_frames"))
    if start is None or start < 0 or count is None or count < 1:
        return None
    return start, count


def clip_indices(clip: Any) -> dict[int, int]:
    """Local frame index (within the clip) -> frame index in the video, for the first, middle and last frame."""
    bounds = clip_range(clip)
    if bounds is None:
        return {}
    start, count = bounds
    return {local: start + local for local in sorted({0, count // 2, count - 1})}


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _write_jpeg(image: Any, root: Path, parts: tuple[str, ...], name: str) -> Path:
    """``image`` as ``root/<parts>/name``, written atomically and never through a symbolic link below ``root``."""
    encoded = io.BytesIO()
    image.convert("RGB").save(encoded, format="JPEG", quality=JPEG_QUALITY)
    return write_below(root, parts, name, encoded.getvalue())


def check_remote_frames(inputs: Sequence[Path], config: ScoringConfig, policy: str) -> FrameReport:
    """extraction.check_frames for a remote figure_root, read-only: counts, or fails, never extracts.

    "extract" cannot write into the store: it is refused with ConfigError when a clip lacks frames.
    A store that refuses or fails a read raises StoreAccessError (frame_store): no clip is counted missing.
    """
    if policy not in POLICIES:
        raise ConfigError(f"on_missing_frames must be one of {', '.join(POLICIES)}, got {policy!r}")
    if config.whole_video:
        return check_frames(list(inputs), config, policy)
    store = remote_frames(config)
    if store is None:
        raise ValueError(f"figure_root {config.figure_root!r} is not a remote store")
    report = FrameReport()
    # Clips are checked side by side (each one's frames fetched side by side too), in a bounded window
    # so that memory stays flat on millions of clips; results are counted in input order.
    window: deque[tuple[str, Future[bool] | None]] = deque()
    with ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="frame-check") as pool:
        for input_path in inputs:
            seq = 0
            source = JsonlSource(Path(input_path), skip_bad_records=config.skip_bad_records, check=record_check(config))
            for record_no, record in enumerate(source):
                report.records += 1
                samples = samples_of(record, record_no, config, seq)
                seq += len(samples)
                report.clips += len(samples)
                stem = video_stem(record, config.input_video_key) or ""
                clips = clip_list(record, config.video_clips_key or "") or []
                for sample in samples:
                    clip = clips[sample.clip] if sample.clip is not None and sample.clip < len(clips) else None
                    name = f"{stem}/{clip_id(clip, stem, sample.clip or 0)}"
                    check = None
                    if sample.error is None and sample.path is not None:
                        check = pool.submit(remote_has_frames, store, sample.path, config.load_num)
                    window.append((name, check))
                    while len(window) >= 4 * FETCH_THREADS:
                        _count_check(report, *window.popleft())
        while window:
            _count_check(report, *window.popleft())
    log.info(
        "frames under %s: %d records, %d clips: %d present, %d missing",
        config.figure_root,
        report.records,
        report.clips,
        report.present,
        report.missing,
    )
    missing = (
        f"{report.missing} of {report.clips} clips have no readable frames under {config.figure_root} "
        f"(expected <figure_root>/<video stem>/<clip id>/img/*.jpg; first: {', '.join(report.first_missing)})"
    )
    if report.missing and policy == "fail":
        raise InputError(f'{missing}. Put their frames in the store first, or set on_missing_frames to "skip"')
    if report.missing and policy == "extract":
        raise ConfigError(
            f"{missing}, and frames cannot be extracted into a remote figure_root: put them in the store "
            'beforehand, or set on_missing_frames to "skip" (score the rest, these clips unscored) or "fail"'
        )
    return report


def _count_check(report: FrameReport, name: str, check: Future[bool] | None) -> None:
    if check is not None and check.result():
        report.present += 1
    else:
        report.add_missing(name)
