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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from PIL import Image

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
def open_frame(path: Path | FetchedFrame) -> Iterator[Image.Image]:
    """A frame file opened as JPEG, PNG or WebP (by content), its size checked; pixels not decoded yet.

    The one way any part of the project opens a frame: the scorer's decoders and the report's
    thumbnails (report.middle_frame, thumbnails.thumbnail) alike, so no reader has laxer rules.
    """
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
