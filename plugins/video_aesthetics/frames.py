"""Frames: where a clip's extracted frames are, which of them to read, and how to turn one into pixels.

The pixel path reproduces the CLIP preprocessing that open_clip/torchvision apply to a PIL image
(resize with PIL's antialiasing filter, centre crop, the same rounding), but stops at uint8 so that
workers ship a quarter of the bytes; scaling and normalisation happen on the scoring device.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class PreprocessConfig:
    """A model's own preprocessing (open_clip's preprocess_cfg, reduced to what the pixels need)."""

    size: int = 224
    mean: tuple[float, float, float] = OPENAI_DATASET_MEAN
    std: tuple[float, float, float] = OPENAI_DATASET_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0


def _natural_key(path: Path) -> list[object]:
    # frame_2.jpg sorts before frame_10.jpg even where upstream did not zero-pad.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def list_frames(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, in frame order; empty when the folder does not exist."""
    try:
        entries = list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    frames = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
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
        scale = pp.size / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(pp.size * long / short)
    return (pp.size, new_long) if width <= height else (new_long, pp.size)


def to_pixels(image: Image.Image, pp: PreprocessConfig) -> np.ndarray:
    """An RGB uint8 array of shape (size, size, 3): the model's resize, then a centre crop or pad."""
    image = image.convert("RGB")
    target = resized_size(*image.size, pp)
    if target != image.size:
        image = image.resize(target, _RESAMPLE[pp.interpolation])
    return _center_crop_or_pad(np.asarray(image), pp.size, pp.fill_color)


def _center_crop_or_pad(pixels: np.ndarray, size: int, fill: int) -> np.ndarray:
    height, width = pixels.shape[:2]
    if height < size or width < size:
        canvas = np.full((max(size, height), max(size, width), 3), fill, dtype=np.uint8)
        top, left = (canvas.shape[0] - height) // 2, (canvas.shape[1] - width) // 2
        canvas[top : top + height, left : left + width] = pixels
        pixels, height, width = canvas, canvas.shape[0], canvas.shape[1]
    top = round((height - size) / 2.0)
    left = round((width - size) / 2.0)
    return np.array(pixels[top : top + size, left : left + size])  # a writable copy: torch warns on read-only arrays


def load_frame(path: Path, pp: PreprocessConfig) -> np.ndarray:
    """Decode one image file into model pixels; raises OSError/ValueError when it cannot be read."""
    with Image.open(path) as image:
        image.load()
        return to_pixels(image, pp)


def is_readable(path: Path) -> bool:
    """Whether an image decodes completely (truncated JPEGs fail here, not only in the header)."""
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
