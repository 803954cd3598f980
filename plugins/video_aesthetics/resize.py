"""Pillow's resize, bit for bit, on uint8 image batches on any torch device, fused with the model's centre crop.

The exact path resizes with ``PIL.Image.resize(size, BICUBIC or BILINEAR)`` (frames.to_pixels, through
open_clip's transform). Pillow (libImaging/Resample.c) resizes in two separable passes, horizontal
first, each in fixed point: per output pixel a window of input pixels (``precompute_coeffs``),
weights normalised to sum to 1 then scaled by 2**22 and rounded away from zero
(``normalize_coeffs_8bpc``), a 32-bit sum that starts at 2**21 (rounding), and ``sum >> 22``
clipped to 0..255; the horizontal pass's output is uint8 again. The same integers computed by
torch give the same pixels on the CPU and on a GPU: no float rounding is left to differ.

Only what the centre crop keeps is computed: the output columns and rows inside the crop, and
in the first pass only the input rows the second pass reads. Each pass is a loop over the filter's
taps (a gather of one input pixel per output pixel, a multiply-add in int32).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from video_aesthetics.frames import PreprocessConfig, resized_size

# Pillow's fixed point: 8 bits of result, 2 of headroom for the filters' negative lobes and overshoot.
PRECISION_BITS = 32 - 8 - 2
# Images resized at once, as int32 bytes of their full size. On a GPU, few kernels for a whole batch; on a
# CPU one 1080p frame at a time, whose accumulators stay in cache (2.4 times faster than 8 at once).
CHUNK_BYTES = 256 << 20
CPU_CHUNK_BYTES = 32 << 20


def _bicubic(x: np.ndarray) -> np.ndarray:
    # Resample.c's bicubic_filter with a = -0.5, operation for operation (the same doubles).
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


# PIL's filters by the names open_clip's PreprocessConfig.interpolation uses, with their supports.
FILTERS = {"bicubic": (_bicubic, 2.0), "bilinear": (_bilinear, 1.0)}


@dataclass(frozen=True, eq=False)
class Taps:
    """One axis's resampling: output i reads input ``index[t, i]`` with weight ``weight[t, i]`` for each tap t.

    Taps beyond an output's window have weight 0 and read the window's first pixel, so that every
    output has the same number of taps. Compared and hashed by identity (axis_taps caches them).
    """

    index: np.ndarray  # (taps, outputs) int64
    weight: np.ndarray  # (taps, outputs) int32, Pillow's fixed-point coefficients

    @property
    def first(self) -> int:
        """The first input index any output reads."""
        return int(self.index.min())

    @property
    def stop(self) -> int:
        """One past the last input index any output reads."""
        return int(self.index.max()) + 1


@functools.lru_cache(maxsize=256)
def axis_taps(in_size: int, out_size: int, interpolation: str, start: int = 0, stop: int | None = None) -> Taps:
    """Pillow's coefficients for resizing one axis from ``in_size`` to ``out_size``, outputs start..stop only."""
    if interpolation not in FILTERS:
        raise ValueError(
            f"interpolation {interpolation!r} has no exact resize here; the model's preprocessing must use "
            f"one of {', '.join(FILTERS)}"
        )
    if in_size < 1 or out_size < 1:
        raise ValueError(f"cannot resize an axis of {in_size} pixels to {out_size}")
    stop = out_size if stop is None else stop
    kernel, filter_support = FILTERS[interpolation]
    # precompute_coeffs, vectorised over the outputs; every step is the same double operation as in C.
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = filter_support * filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    outputs = np.arange(start, stop, dtype=np.float64)
    center = (outputs + 0.5) * scale
    # C's (int) truncates toward zero; a negative xmin is clamped to 0 right after, as in C.
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64) - xmin
    ss = 1.0 / filterscale
    weights = np.zeros((ksize, len(outputs)), dtype=np.float64)
    total = np.zeros(len(outputs), dtype=np.float64)
    for tap in range(ksize):
        inside = tap < xmax
        w = np.where(inside, kernel(((tap + xmin) - center + 0.5) * ss), 0.0)
        weights[tap] = w
        total += w  # tap by tap: the C loop's order of additions
    weights = np.where(total != 0.0, weights / np.where(total != 0.0, total, 1.0), weights)
    # normalize_coeffs_8bpc: scale by 2**22, round half away from zero by truncation.
    scaled = weights * float(1 << PRECISION_BITS)
    fixed = np.trunc(np.where(scaled < 0, scaled - 0.5, scaled + 0.5)).astype(np.int32)
    taps = np.arange(ksize)[:, None]
    index = np.where(taps < xmax[None, :], xmin[None, :] + taps, xmin[None, :])
    fixed = np.where(taps < xmax[None, :], fixed, 0).astype(np.int32)
    index.setflags(write=False)
    fixed.setflags(write=False)
    return Taps(index=index, weight=fixed)


@functools.lru_cache(maxsize=256)
def _device_taps(taps: Taps, device: torch.device, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.from_numpy(taps.index - offset).to(device)
    weight = torch.from_numpy(taps.weight.copy()).to(device)
    return index, weight


def _resample(images: torch.Tensor, taps: Taps, dim: int, offset: int = 0) -> torch.Tensor:
    """One pass along ``dim`` (-1: columns, -2: rows) of uint8 images whose index 0 is input index ``offset``."""
    index, weight = _device_taps(taps, images.device, offset)
    if images.is_cuda:
        # Cached tensors are read from many streams: one evicted from the cache must not be reused
        # before this stream's kernels that read it are done.
        index.record_stream(torch.cuda.current_stream(images.device))
        weight.record_stream(torch.cuda.current_stream(images.device))
    shape = list(images.shape)
    shape[dim] = index.shape[1]
    acc = torch.full(shape, 1 << (PRECISION_BITS - 1), dtype=torch.int32, device=images.device)
    view = (-1, 1) if dim == -2 else (-1,)
    # One int32 copy of the chunk (its size is bounded for that), so that every kernel below takes one
    # dtype: mixed uint8 and int32 operands rest on type promotion that differs between devices' kernels.
    pixels = images.to(torch.int32)
    for tap in range(index.shape[0]):
        acc.addcmul_(pixels.index_select(dim, index[tap]), weight[tap].view(view))
    return (acc >> PRECISION_BITS).clamp_(0, 255).to(torch.uint8)


def _chunk_bytes(device: torch.device) -> int:
    return CPU_CHUNK_BYTES if device.type == "cpu" else CHUNK_BYTES


def crop_window(length: int, size: int) -> tuple[int, int, int]:
    """(start, stop, pad): the part of a resized axis of ``length`` the centre crop to ``size`` keeps, and
    where it lands: frames._center_crop_or_pad's (and torchvision's) placement and rounding."""
    if length < size:
        return 0, length, (size - length) // 2
    start = round((length - size) / 2.0)
    return start, start + size, 0


def resize_crop_exact(images: torch.Tensor, pp: PreprocessConfig) -> torch.Tensor:
    """uint8 images (N, 3, H, W) of one size as the model's pixels (N, size, size, 3), on their device.

    Bit for bit what frames.to_pixels makes of the same pixels with Pillow: the resize to
    ``resized_size``, then the centre crop, or the pad with ``pp.fill_color``.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    height, width = images.shape[-2:]
    target_width, target_height = resized_size(width, height, pp)
    top, bottom, pad_top = crop_window(target_height, pp.size)
    left, right, pad_left = crop_window(target_width, pp.size)
    # Pillow leaves an axis of unchanged size alone: only the crop applies there.
    rows = axis_taps(height, target_height, pp.interpolation, top, bottom) if target_height != height else None
    cols = axis_taps(width, target_width, pp.interpolation, left, right) if target_width != width else None
    plan = _Plan(rows, cols, (top, bottom), (left, right), _vertical_first(width, height, target_width, target_height))
    if not len(images):
        return images.new_zeros((0, pp.size, pp.size, images.shape[1]))
    step = max(1, _chunk_bytes(images.device) // (images.shape[1] * height * width * 4))
    kept = torch.cat([plan.run(images[i : i + step]) for i in range(0, len(images), step)])
    if kept.shape[-2:] != (pp.size, pp.size):
        canvas = kept.new_full((*kept.shape[:-2], pp.size, pp.size), pp.fill_color)
        canvas[..., pad_top : pad_top + kept.shape[-2], pad_left : pad_left + kept.shape[-1]] = kept
        kept = canvas
    return kept.permute(0, 2, 3, 1).contiguous()


@dataclass(frozen=True)
class _Plan:
    """The two passes over a chunk of images, in Pillow's order, reading only what the crop needs."""

    rows: Taps | None
    cols: Taps | None
    row_span: tuple[int, int]
    col_span: tuple[int, int]
    vertical_first: bool

    def run(self, images: torch.Tensor) -> torch.Tensor:
        # The first pass reads only the lines the second one needs (Pillow's ybox_first..ybox_last).
        if self.vertical_first:
            first, stop = _span(self.cols, self.col_span)
            images = self._vertical(images[..., first:stop])
            return self._horizontal(images, first)
        first, stop = _span(self.rows, self.row_span)
        images = self._horizontal(images[:, :, first:stop])
        return self._vertical(images, first)

    def _horizontal(self, images: torch.Tensor, offset: int = 0) -> torch.Tensor:
        if self.cols is None:
            return images[..., self.col_span[0] - offset : self.col_span[1] - offset]
        return _resample(images, self.cols, -1, offset)

    def _vertical(self, images: torch.Tensor, offset: int = 0) -> torch.Tensor:
        if self.rows is None:
            return images[:, :, self.row_span[0] - offset : self.row_span[1] - offset]
        return _resample(images, self.rows, -2, offset)


def _span(taps: Taps | None, crop: tuple[int, int]) -> tuple[int, int]:
    return (taps.first, taps.stop) if taps is not None else crop


def _vertical_first(width: int, height: int, target_width: int, target_height: int) -> bool:
    """Whether Pillow runs the vertical pass first for this resize.

    Pillow 13 does when the height shrinks by more than twice as many pixels as the width (a
    speed-up); older releases always start with the horizontal pass. The order changes the
    rounding of the uint8 intermediate, so the installed Pillow's rule is followed.
    """
    shrink = height - target_height
    return shrink > 0 and shrink > (width - target_width) * 2 and _pillow_shrinks_tall_images_vertically_first()


@functools.cache
def _pillow_shrinks_tall_images_vertically_first() -> bool:
    """Asks the installed Pillow: a small random picture shrunk mostly in height, resized both ways here."""
    from PIL import Image

    pixels = np.random.default_rng(20).integers(0, 256, (96, 40, 3), dtype=np.uint8)
    reference = np.asarray(Image.fromarray(pixels).resize((36, 12), Image.Resampling.BICUBIC))
    source = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)
    rows, cols = axis_taps(96, 12, "bicubic"), axis_taps(40, 36, "bicubic")
    vertical = _resample(_resample(source, rows, -2), cols, -1)[0].permute(1, 2, 0).numpy()
    horizontal = _resample(_resample(source, cols, -1), rows, -2)[0].permute(1, 2, 0).numpy()
    if np.array_equal(vertical, reference) == np.array_equal(horizontal, reference):
        raise RuntimeError(
            f"the installed Pillow ({Image.__version__}) resizes in neither known order; "
            "video_aesthetics.resize must be updated to follow it"
        )
    return bool(np.array_equal(vertical, reference))
