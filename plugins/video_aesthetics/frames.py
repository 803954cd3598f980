"""Frames: where a clip's extracted frames are, which of them to read, and how to turn one into pixels.

The pixel path is open_clip's own eval transform (resize, centre crop, convert to RGB, in that
order, for every PIL mode), stopped before ToTensor and Normalize: workers ship uint8, a quarter of
the bytes, and scaling and normalisation happen on the scoring device. Only JPEG, PNG and WebP
files are decoded, whatever their names say, and a frame whose size would make it cost more than a
bounded amount (see ``check_frame_size``) is refused like a damaged one.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import posixpath
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from video_aesthetics.files import is_within

if TYPE_CHECKING:
    from video_aesthetics.config import ScoringConfig
    from video_aesthetics.extraction import FrameReport

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
# What Image.open may try, so that no other plugin (EPS runs Ghostscript) ever sees a frame file.
FRAME_FORMATS = ("JPEG", "PNG", "WEBP")
# MPO is how Pillow names a JPEG with extra pictures (phone cameras write them).
_DECODED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP"})
# Bounds on a frame's size, checked from its header before any pixel is decoded. The resize before
# the crop holds MAX_ASPECT times the model's input area at most; decoding holds one 8K UHD picture.
MAX_ASPECT = 16
MAX_FRAME_PIXELS = 7680 * 4320
# Frames fetched at once from a remote figure_root by one process (a decoding worker): enough to hide
# an object store's latency, few enough that N workers do not open N x many connections.
FETCH_THREADS = 8
# A remote frame is read into memory whole (a local one can be streamed): larger objects are refused.
MAX_REMOTE_FRAME_BYTES = 256 << 20
_LOCAL_PROTOCOLS = frozenset({"", "file", "local"})


@dataclass(frozen=True)
class PreprocessConfig:
    """A model's own preprocessing (open_clip's preprocess_cfg, reduced to what the pixels need)."""

    size: int = 224
    # None: CLIP's (open_clip.constants.OPENAI_DATASET_MEAN / _STD), resolved where torch is loaded
    # anyway; listing frames and making thumbnails must not import open_clip.
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0


class FrameTooLargeError(ValueError):
    """A frame whose size is outside the bounds every frame is held to."""


def _natural_key(path: Path) -> list[object]:
    # frame_2.jpg sorts before frame_10.jpg even where upstream did not zero-pad.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def list_frames(folder: Path, root: Path | None = None) -> list[Path]:
    """The image files directly in ``folder``, in frame order; empty when the folder does not exist.

    Hidden files (macOS's ``._frame_1.jpg``, ``.DS_Store``) are not frames. A frame that is a
    symbolic link counts only if it resolves to a regular file inside ``root`` (figure_root; by
    default ``folder`` itself), so that nothing outside it is ever read.
    """
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    limit: str | None = None
    frames = []
    for entry in entries:
        if entry.name.startswith(".") or os.path.splitext(entry.name)[1].lower() not in IMAGE_SUFFIXES:
            continue
        try:
            if entry.is_symlink():
                limit = limit or os.path.realpath(root if root is not None else folder)
                real = os.path.realpath(entry.path)
                if not (is_within(real, limit) and os.path.isfile(real)):
                    log.warning("skipping frame %s: it links to %s, outside %s", entry.path, real, limit)
                    continue
            elif not entry.is_file(follow_symlinks=False):
                continue
        except OSError:
            continue
        frames.append(Path(folder) / entry.name)
    return sorted(frames, key=_natural_key)


def select_evenly(count: int, load_num: int) -> list[int]:
    """Indices of ``load_num`` items evenly spaced over ``count``, first and last included; all when fewer.

    A single pick takes the middle item, the one that best stands for the whole.
    """
    if count <= load_num:
        return list(range(count))
    if load_num == 1:
        return [(count - 1) // 2]
    step = (count - 1) / (load_num - 1)
    return [round(i * step) for i in range(load_num)]


def select_frames(frames: Sequence[Path], load_num: int) -> list[Path]:
    return [frames[i] for i in select_evenly(len(frames), load_num)]


def resized_size(width: int, height: int, pp: PreprocessConfig) -> tuple[int, int]:
    """The size before cropping, computed as torchvision's Resize and open_clip's ResizeKeepRatio do."""
    if pp.resize_mode == "squash":
        return pp.size, pp.size
    if pp.resize_mode == "longest":
        # ResizeKeepRatio's own arithmetic (a ratio, then a division), so that halves round alike.
        ratio = max(height / pp.size, width / pp.size)
        return max(1, round(width / ratio)), max(1, round(height / ratio))
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(pp.size * long / short)
    return (pp.size, new_long) if width <= height else (new_long, pp.size)


def check_frame_size(width: int, height: int) -> None:
    """Refuse (FrameTooLargeError) a frame larger than 8K UHD or more than MAX_ASPECT times longer than wide.

    Without it an 85-byte 1x4000 PNG would be resized to 224x896000 pixels (GBs, seconds) before
    the crop throws almost all of it away.
    """
    short, long = sorted((width, height))
    if short < 1 or width * height > MAX_FRAME_PIXELS or long > MAX_ASPECT * short:
        raise FrameTooLargeError(
            f"a {width}x{height} frame is outside the bounds of a video frame (at most {MAX_FRAME_PIXELS} "
            f"pixels, sides at most {MAX_ASPECT} to 1)"
        )


def to_pixels(image: Image.Image, pp: PreprocessConfig) -> np.ndarray:
    """An RGB uint8 array of shape (size, size, 3): open_clip's resize and centre crop (or pad), then RGB.

    The conversion to RGB comes last, as in the reference: palette, 1-bit, alpha, 16-bit and CMYK
    pictures are resized in their own mode, as open_clip resizes them.
    """
    check_frame_size(*image.size)
    pixels = np.array(_pil_steps(pp)(image))  # a writable copy: torch warns on read-only arrays
    if pixels.shape != (pp.size, pp.size, 3):
        raise ValueError(f"preprocessing gave pixels of shape {pixels.shape}, not ({pp.size}, {pp.size}, 3)")
    return pixels


@functools.lru_cache(maxsize=16)
def _pil_steps(pp: PreprocessConfig) -> Callable[[Image.Image], Any]:
    """open_clip's eval transform for ``pp`` without its trailing ToTensor and Normalize: exact by construction."""
    from open_clip.transform import image_transform
    from torchvision.transforms import Compose, Normalize, ToTensor

    # mean and std only shape the Normalize step, which is dropped below.
    transform = image_transform(
        pp.size,
        is_train=False,
        resize_mode=pp.resize_mode,
        interpolation=pp.interpolation,
        fill_color=pp.fill_color,
    )
    steps = list(transform.transforms)
    while steps and isinstance(steps[-1], (ToTensor, Normalize)):
        steps.pop()
    return Compose(steps)


@contextlib.contextmanager
def open_frame(path: Path | FetchedFrame) -> Iterator[Image.Image]:
    """A frame file opened as JPEG, PNG or WebP (by content), its size checked; pixels not decoded yet."""
    source: Any = io.BytesIO(path.content()) if isinstance(path, FetchedFrame) else path
    with Image.open(source, formats=FRAME_FORMATS) as image:
        if image.format not in _DECODED_FORMATS:
            raise ValueError(f"{path} holds a {image.format} picture; frames must be JPEG, PNG or WebP")
        check_frame_size(*image.size)
        yield image


def load_frame(path: Path | FetchedFrame, pp: PreprocessConfig) -> np.ndarray:
    """Decode one image file into model pixels; raises OSError/ValueError when it cannot be read."""
    with open_frame(path) as image:
        image.load()
        return to_pixels(image, pp)


def is_readable(path: Path | FetchedFrame) -> bool:
    """Whether an image decodes completely (truncated JPEGs fail here, not only in the header)."""
    try:
        with open_frame(path) as image:
            image.load()
        return True
    except Exception:  # noqa: BLE001 - PIL raises many types for damaged files
        return False


# --- frames in an object store ----------------------------------------------------------------------
#
# figure_root may be a URL (s3://bucket/frames). The library reaches it through fsspec alone, with
# the storage options the config carries (the Airflow wing makes them from a connection). A clip's
# frames are listed, the selected ones fetched side by side on a small per-process thread pool, and
# handed to the same decoders as local files, as FetchedFrame: what cannot be fetched fails to
# decode like a damaged file, so a missing or corrupt frame is skipped exactly as a local one.


@dataclass(frozen=True)
class FetchedFrame:
    """A remote frame's location and bytes, or why they could not be fetched; decoders read it as a file."""

    path: str
    data: bytes | None
    error: str | None = None

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def content(self) -> bytes:
        """The frame's bytes; OSError when it could not be fetched (the decoders skip it as unreadable)."""
        if self.data is None:
            raise OSError(f"cannot fetch frame {self.path}: {self.error}")
        return self.data

    def __str__(self) -> str:
        return self.path


def is_remote_root(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` is a URL of a store other than the local file system (s3://, gs://, memory://...)."""
    text = os.fspath(root)
    return "://" in text and text.split("://", 1)[0].lower() not in _LOCAL_PROTOCOLS


class RemoteFrames:
    """The frames below a remote figure_root: listed and fetched with fsspec.

    ``records.samples_of`` names a clip's folder as ``Path(figure_root) / stem / clip / "img"`` (a
    Path folds the URL's "//"): ``url`` maps such a folder back to its URL.
    """

    def __init__(self, root: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.root = root.rstrip("/")
        self.folded = Path(root)
        self.storage_options = dict(storage_options or {})
        self._opened: tuple[int, Any, str] | None = None
        self.fs  # noqa: B018 - a store fsspec cannot open is a ConfigError here, not a skipped frame per clip

    @property
    def fs(self) -> Any:
        """The fsspec file system, opened once per process: a forked decoding worker must not share its connections."""
        if self._opened is None or self._opened[0] != os.getpid():
            try:
                import fsspec

                fs, path = fsspec.core.url_to_fs(self.root, **self.storage_options)
            except (ImportError, ValueError) as err:
                from video_aesthetics.errors import ConfigError

                raise ConfigError(
                    f"figure_root {self.root!r}: fsspec cannot open this store ({err}); install its package "
                    "(s3fs for s3://: pip install 'video-aesthetics[s3]') or give a local folder"
                ) from err
            self._opened = (os.getpid(), fs, path)
        return self._opened[1]

    @property
    def root_path(self) -> str:
        self.fs  # noqa: B018
        return self._opened[2]  # type: ignore[index]

    def relative(self, folder: Path | str) -> str:
        return Path(folder).relative_to(self.folded).as_posix()

    def url(self, folder: Path | str) -> str:
        relative = self.relative(folder)
        return self.root if relative == "." else f"{self.root}/{relative}"

    def list(self, folder: Path | str) -> list[PurePosixPath]:
        """The image files directly in ``folder``, in frame order; empty when there are none (as list_frames)."""
        relative = self.relative(folder)
        target = self.root_path.rstrip("/") if relative == "." else f"{self.root_path.rstrip('/')}/{relative}"
        try:
            entries = self.fs.ls(target, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        frames = []
        for entry in entries:
            name = posixpath.basename(str(entry.get("name", "")).rstrip("/"))
            if entry.get("type") != "file" or name.startswith("."):
                continue
            if posixpath.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                frames.append(PurePosixPath(str(entry["name"])))
        return sorted(frames, key=_natural_key)  # type: ignore[arg-type]

    def fetch(self, paths: Sequence[PurePosixPath | str]) -> list[FetchedFrame]:
        """The frames at ``paths``, fetched concurrently (at most FETCH_THREADS at once), in order."""
        if len(paths) <= 1:
            return [self._fetch_one(path) for path in paths]
        return list(_fetch_pool().map(self._fetch_one, paths))

    def _fetch_one(self, path: PurePosixPath | str) -> FetchedFrame:
        location = f"{self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]}://{path}"
        try:
            # A ranged read: an object far larger than any frame is refused without holding it all.
            data = self.fs.cat_file(str(path), start=0, end=MAX_REMOTE_FRAME_BYTES + 1)
            if len(data) > MAX_REMOTE_FRAME_BYTES:
                return FetchedFrame(
                    location, None, f"larger than {MAX_REMOTE_FRAME_BYTES >> 20} MiB, not a video frame"
                )
            return FetchedFrame(location, data)
        except Exception as err:  # noqa: BLE001 - any store error makes this one frame unreadable, not the clip
            return FetchedFrame(location, None, f"{type(err).__name__}: {err}")


_pool_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}


def _fetch_pool() -> ThreadPoolExecutor:
    """This process's fetch threads; a forked decoding worker makes its own (threads do not survive a fork)."""
    with _pool_lock:
        pid = os.getpid()
        if pid not in _pools:
            _pools.clear()
            _pools[pid] = ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="frame-fetch")
        return _pools[pid]


def remote_frames(config: ScoringConfig) -> RemoteFrames | None:
    """The store of ``config``'s frames when figure_root is a URL, else None (local frames).

    One per process and store: each sample of a run asks for it.
    """
    if not is_remote_root(config.figure_root):
        return None
    options = dict(config.frames_storage_options or {})
    key = (config.figure_root, json.dumps(options, sort_keys=True, default=repr))
    with _pool_lock:
        store = _stores.get(key)
    if store is None:
        store = RemoteFrames(config.figure_root, options)
        with _pool_lock:
            if len(_stores) >= 8:
                _stores.clear()
            _stores[key] = store
    return store


_stores: dict[tuple[str, str], RemoteFrames] = {}


def remote_has_frames(store: RemoteFrames, folder: Path, load_num: int) -> bool:
    """Whether the frames the scorer would read from remote ``folder`` exist and all decode (extraction.has_frames)."""
    selected = select_frames(store.list(folder), load_num)
    return bool(selected) and all(is_readable(frame) for frame in store.fetch(selected))


def check_remote_frames(inputs: Sequence[Path], config: ScoringConfig, policy: str) -> FrameReport:
    """extraction.check_frames for a remote figure_root, read-only: counts, or fails, never extracts.

    "extract" cannot write into the store: it is refused with ConfigError when a clip lacks frames.
    """
    from video_aesthetics import extraction
    from video_aesthetics.errors import ConfigError, InputError
    from video_aesthetics.records import JsonlSource, clip_id, clip_list, record_check, samples_of, video_stem

    if policy not in extraction.POLICIES:
        raise ConfigError(f"on_missing_frames must be one of {', '.join(extraction.POLICIES)}, got {policy!r}")
    if config.whole_video:
        return extraction.check_frames(list(inputs), config, policy)
    store = remote_frames(config)
    if store is None:
        raise ValueError(f"figure_root {config.figure_root!r} is not a remote store")
    report = extraction.FrameReport()
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
