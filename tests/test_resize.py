"""resize.py: Pillow's resize and the model's centre crop or pad, bit for bit, on torch tensors.

The reference is frames.to_pixels (open_clip's transform: PIL's Image.resize, then the crop or
pad) on the same pixels; random pixels make every tap's weight and every rounding count.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from video_aesthetics.frames import PreprocessConfig, to_pixels
from video_aesthetics.resize import (
    PRECISION_BITS,
    axis_taps,
    crop_window,
    resize_crop_exact,
)

PREPROCESS = {
    "bicubic": PreprocessConfig(),
    "bilinear": PreprocessConfig(interpolation="bilinear"),
    "squash": PreprocessConfig(resize_mode="squash"),
    "longest-padded": PreprocessConfig(resize_mode="longest", fill_color=128),
    "size160": PreprocessConfig(size=160),
    "bilinear-longest": PreprocessConfig(interpolation="bilinear", resize_mode="longest", fill_color=7),
}
# Video frames (landscape and portrait), odd and prime sizes, sizes just around the model's, tiny ones
# scaled up, 1-pixel sides, and sizes where Pillow 13 shrinks height first (tall frames).
SIZES = [
    (1920, 1080),
    (1280, 720),
    (1080, 1920),
    (720, 1280),
    (640, 360),
    (401, 239),
    (225, 224),
    (224, 224),
    (223, 225),
    (100, 60),
    (37, 23),
    (3, 7),
    (1, 1),
    (1, 9),
    (9, 1),
    (500, 2000),
    (2000, 500),
]


def _random(width: int, height: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _ours(pixels: np.ndarray, pp: PreprocessConfig) -> np.ndarray:
    return resize_crop_exact(torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0), pp)[0].numpy()


@pytest.mark.parametrize("name", list(PREPROCESS))
@pytest.mark.parametrize(("width", "height"), SIZES)
def test_pixels_equal_pillows_bit_for_bit(name: str, width: int, height: int) -> None:
    pp = PREPROCESS[name]
    pixels = _random(width, height, seed=width * 7919 + height)
    expected = to_pixels(Image.fromarray(pixels), pp)
    np.testing.assert_array_equal(_ours(pixels, pp), expected)


def test_greyscale_frames_equal_pillows_l_mode_resize() -> None:
    """A greyscale JPEG decodes to 3 equal channels; Pillow resizes it in mode L, then converts: the same bits."""
    grey = _random(640, 360, seed=3)[..., 0]
    expected = to_pixels(Image.fromarray(grey, mode="L"), PreprocessConfig())
    np.testing.assert_array_equal(_ours(np.repeat(grey[..., None], 3, axis=2), PreprocessConfig()), expected)


def test_a_batch_equals_its_frames_one_by_one_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = np.stack([_random(320, 180, seed) for seed in range(5)])
    batch = torch.from_numpy(frames).permute(0, 3, 1, 2)
    whole = resize_crop_exact(batch, PreprocessConfig())
    # A chunk of two frames at most: the chunking must not change a bit.
    monkeypatch.setattr("video_aesthetics.resize.CPU_CHUNK_BYTES", 2 * 3 * 180 * 320 * 4)
    chunked = resize_crop_exact(batch, PreprocessConfig())
    singles = [to_pixels(Image.fromarray(frame), PreprocessConfig()) for frame in frames]
    np.testing.assert_array_equal(whole.numpy(), np.stack(singles))
    np.testing.assert_array_equal(chunked.numpy(), whole.numpy())


def test_an_empty_batch_gives_no_pixels() -> None:
    empty = torch.zeros((0, 3, 90, 160), dtype=torch.uint8)
    assert tuple(resize_crop_exact(empty, PreprocessConfig()).shape) == (0, 224, 224, 3)


def test_coefficients_are_pillows_fixed_point_and_cached() -> None:
    taps = axis_taps(1920, 398, "bicubic")
    # Each output's weights sum to 1.0 in fixed point, give or take the per-weight rounding.
    sums = taps.weight.astype(np.int64).sum(axis=0)
    assert np.all(np.abs(sums - (1 << PRECISION_BITS)) <= taps.weight.shape[0])
    # Support 2 * 1920 / 398 per side: 2 * ceil(9.65) + 1 taps.
    assert taps.weight.shape == (21, 398) and taps.index.min() >= 0 and taps.index.max() < 1920
    assert axis_taps(1920, 398, "bicubic") is taps
    cropped = axis_taps(1920, 398, "bicubic", 87, 311)
    np.testing.assert_array_equal(cropped.weight, taps.weight[:, 87:311])


def test_only_what_the_crop_keeps_is_computed() -> None:
    assert crop_window(398, 224) == (87, 311, 0)
    assert crop_window(224, 224) == (0, 224, 0)
    assert crop_window(126, 224) == (0, 126, 49)
    rows = axis_taps(1080, 224, "bicubic")
    cols = axis_taps(1920, 398, "bicubic", *crop_window(398, 224)[:2])
    assert (rows.first, rows.stop) == (0, 1080)
    # The crop's 224 of 398 columns read about 224/398 of the frame's width.
    assert 1000 < cols.stop - cols.first < 1120


def test_an_interpolation_without_an_exact_resize_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="interpolation 'lanczos' has no exact resize.*bicubic, bilinear"):
        resize_crop_exact(torch.zeros((1, 3, 90, 160), dtype=torch.uint8), PreprocessConfig(interpolation="lanczos"))
    with pytest.raises(ValueError, match="expected uint8 images"):
        resize_crop_exact(torch.zeros((1, 3, 90, 160)), PreprocessConfig())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (1280, 720), (720, 1280), (100, 60)])
def test_the_gpu_computes_the_same_bits(width: int, height: int) -> None:
    frames = torch.from_numpy(np.stack([_random(width, height, seed) for seed in range(3)])).permute(0, 3, 1, 2)
    for pp in PREPROCESS.values():
        on_gpu = resize_crop_exact(frames.cuda(), pp).cpu()
        np.testing.assert_array_equal(on_gpu.numpy(), resize_crop_exact(frames, pp).numpy())
