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
import logging
import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from video_aesthetics.files import is_within

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

# A frame's path: a local Path, or a PurePosixPath inside an object store (frame_store).
FramePath = TypeVar("FramePath", bound=PurePath)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
# What Image.open may try, so that no other plugin (EPS runs Ghostscript) ever sees a frame file.
FRAME_FORMATS = ("JPEG", "PNG", "WEBP")
# MPO is how Pillow names a JPEG with extra pictures (phone cameras write them).
_DECODED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP"})
# Bounds on a frame's size, checked from its header before any pixel is decoded. The resize before
# the crop holds MAX_ASPECT times the model's input area at most; decoding holds one 8K UHD picture.
MAX_ASPECT = 16
MAX_FRAME_PIXELS = 7680 * 4320


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


def natural_key(path: Path | PurePosixPath) -> list[object]:
    # frame_2.jpg sorts before frame_10.jpg even where upstream did not zero-pad.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


class OutsideRootError(OSError):
    """A frame or frame folder whose opened descriptor lies outside figure_root: it is never read."""


# Opening never blocks (a FIFO swapped in for a frame) and never leaks into a child process.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def descriptor_path(fd: int, path: Path | str) -> str:
    """The real path of what ``fd`` (opened from ``path``) holds: the file actually opened, not the name.

    On Linux the kernel says it (/proc/self/fd). Elsewhere ``path`` is resolved, and that is
    trusted only if it still names the very file open on ``fd`` (device and inode); if the name
    was swapped meanwhile, OutsideRootError.
    """
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass
    real = os.path.realpath(path)
    opened = os.fstat(fd)
    try:
        named = os.stat(real)
    except OSError:
        named = None
    if named is None or (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
        raise OutsideRootError(f"{path} changed while it was opened; not reading it")
    return real


def open_inside(path: Path | str, real_root: str | None, directory: bool = False) -> int:
    """A read-only descriptor of the regular file (or, with ``directory``, the folder) at ``path``.

    With ``real_root`` (figure_root, resolved), what was opened must lie inside it, checked on the
    descriptor itself (descriptor_path), so that swapping a link between a check and the read
    cannot lead the read outside: the caller reads this descriptor, never the name again. Raises
    OutsideRootError when it does not, OSError when it is not a regular file (or folder).
    """
    fd = os.open(path, _OPEN_FLAGS | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
            raise OSError(f"{path} is not a {'folder' if directory else 'regular file'}")
        if real_root is not None:
            real = descriptor_path(fd, path)
            if not is_within(real, real_root):
                raise OutsideRootError(f"{path} leads to {real}, outside figure_root {real_root}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def list_frames(folder: Path, root: Path | None = None) -> list[Path]:
    """The image files directly in ``folder``, in frame order; empty when the folder does not exist.

    Hidden files (macOS's ``._frame_1.jpg``, ``.DS_Store``) are not frames. A frame that is a
    symbolic link counts only if it resolves to a regular file inside ``root`` (figure_root; by
    default ``folder`` itself), so that nothing outside it is ever read. With ``root``, the folder
    is listed through a descriptor whose real path must lie inside it (OutsideRootError if not):
    a folder link swapped after records.stays_inside checked it lists nothing from outside. The
    frames are then read through frames.open_inside, which checks each opened file the same way.
    """
    limit = os.path.realpath(root if root is not None else folder)
    try:
        fd = open_inside(folder, limit if root is not None else None, directory=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    try:
        real_folder = descriptor_path(fd, folder)
        entries = list(os.scandir(fd))
    finally:
        os.close(fd)
    frames = []
    for entry in entries:
        if entry.name.startswith(".") or os.path.splitext(entry.name)[1].lower() not in IMAGE_SUFFIXES:
            continue
        try:
            if entry.is_symlink():
                # Resolved from the folder actually listed, not from its name (which may lead elsewhere now).
                real = os.path.realpath(os.path.join(real_folder, entry.name))
                if not (is_within(real, limit) and os.path.isfile(real)):
                    log.warning("skipping frame %s: it links to %s, outside %s", Path(folder) / entry.name, real, limit)
                    continue
            elif not entry.is_file(follow_symlinks=False):
                continue
        except OSError:
            continue
        frames.append(Path(folder) / entry.name)
    return sorted(frames, key=natural_key)


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


def select_frames(frames: Sequence[FramePath], load_num: int) -> list[FramePath]:
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
def open_frame(path: Path | FetchedFrame, real_root: str | None = None) -> Iterator[Image.Image]:
    """A frame file opened as JPEG, PNG or WebP (by content), its size checked; pixels not decoded yet.

    The one way any part of the project opens a frame: the scorer's decoders and the report's
    thumbnails (report.middle_frame, thumbnails.thumbnail) alike, so no reader has laxer rules.
    A local frame is opened without blocking, must be a regular file and, with ``real_root``
    (figure_root, resolved), must lie inside it as opened (open_inside); it is decoded from that
    descriptor.
    """
    with contextlib.ExitStack() as stack:
        if isinstance(path, FetchedFrame):
            source: Any = io.BytesIO(path.content())
        else:
            source = stack.enter_context(os.fdopen(open_inside(path, real_root), "rb"))
        try:
            image = stack.enter_context(Image.open(source, formats=FRAME_FORMATS))
        except UnidentifiedImageError as err:
            raise UnidentifiedImageError(f"cannot identify image file {str(path)!r}") from err
        if image.format not in _DECODED_FORMATS:
            raise ValueError(f"{path} holds a {image.format} picture; frames must be JPEG, PNG or WebP")
        check_frame_size(*image.size)
        yield image


def load_frame(path: Path | FetchedFrame, pp: PreprocessConfig, real_root: str | None = None) -> np.ndarray:
    """Decode one image file into model pixels; raises OSError/ValueError when it cannot be read.

    With ``real_root``, a local frame whose opened file lies outside it raises OutsideRootError.
    """
    with open_frame(path, real_root) as image:
        image.load()
        return to_pixels(image, pp)


def is_readable(path: Path | FetchedFrame, real_root: str | None = None) -> bool:
    """Whether an image decodes completely (truncated JPEGs fail here, not only in the header)."""
    try:
        with open_frame(path, real_root) as image:
            image.load()
        return True
    except Exception:  # noqa: BLE001 - PIL raises many types for damaged files
        return False


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
