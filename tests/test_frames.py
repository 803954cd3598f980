from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from helpers.media import picture, write_jpeg
from video_aesthetics.frames import (
    PreprocessConfig,
    is_readable,
    list_frames,
    load_frame,
    resized_size,
    select_evenly,
    select_frames,
    to_pixels,
)


@pytest.mark.parametrize(
    ("count", "load_num", "expected"),
    [
        (10, 3, [0, 4, 9]),  # 4.5 rounds to even
        (7, 3, [0, 3, 6]),
        (5, 5, [0, 1, 2, 3, 4]),
        (2, 3, [0, 1]),  # fewer than asked: all of them, no padding
        (0, 3, []),
        (9, 1, [4]),
        (100, 4, [0, 33, 66, 99]),
    ],
)
def test_select_evenly_spaces_first_and_last(count: int, load_num: int, expected: list[int]) -> None:
    assert select_evenly(count, load_num) == expected


def test_list_frames_in_frame_order_and_only_images(tmp_path: Path) -> None:
    for name in ["frame_10.jpg", "frame_2.JPG", "frame_1.png", "frame_3.webp", "notes.txt", "frame_4.jpeg"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.jpg").mkdir()
    assert [p.name for p in list_frames(tmp_path)] == [
        "frame_1.png",
        "frame_2.JPG",
        "frame_3.webp",
        "frame_4.jpeg",
        "frame_10.jpg",
    ]
    assert list_frames(tmp_path / "missing") == []
    assert [p.name for p in select_frames(list_frames(tmp_path), 2)] == ["frame_1.png", "frame_10.jpg"]


@pytest.mark.parametrize("size", [(1280, 720), (720, 1280), (300, 300), (225, 500), (100, 60)])
def test_pixels_equal_open_clip_preprocessing(tmp_path: Path, size: tuple[int, int]) -> None:
    """uint8 pixels scaled and normalised give exactly what the torchvision transform gives."""
    import open_clip

    path = write_jpeg(tmp_path / "f.jpg", seed=3, width=size[0], height=size[1])
    pp = PreprocessConfig()
    reference = open_clip.image_transform(224, is_train=False)(Image.open(path))
    pixels = torch.from_numpy(load_frame(path, pp)).permute(2, 0, 1).float()
    mean = torch.tensor(pp.mean).view(3, 1, 1)
    std = torch.tensor(pp.std).view(3, 1, 1)
    ours = (pixels / 255.0 - mean) / std
    assert ours.shape == reference.shape == (3, 224, 224)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_squash_and_longest_modes_match_open_clip(tmp_path: Path) -> None:
    import open_clip

    image = Image.fromarray(picture(5, 400, 240))
    for mode in ("squash", "longest"):
        pp = PreprocessConfig(resize_mode=mode)
        reference = open_clip.image_transform(224, is_train=False, resize_mode=mode)(image)
        ours = (
            torch.from_numpy(to_pixels(image, pp)).permute(2, 0, 1).float() / 255.0
            - torch.tensor(pp.mean).view(3, 1, 1)
        ) / torch.tensor(pp.std).view(3, 1, 1)
        assert torch.allclose(ours, reference, atol=1e-5), mode


def test_grayscale_and_alpha_images_become_rgb(tmp_path: Path) -> None:
    gray = tmp_path / "g.png"
    Image.fromarray(picture(1)[:, :, 0]).save(gray)
    rgba = tmp_path / "a.png"
    Image.fromarray(np.dstack([picture(2), np.full((180, 320), 255, np.uint8)])).save(rgba)
    for path in (gray, rgba):
        assert load_frame(path, PreprocessConfig()).shape == (224, 224, 3)


def test_resized_size_follows_torchvision() -> None:
    pp = PreprocessConfig()
    assert resized_size(1280, 720, pp) == (398, 224)
    assert resized_size(720, 1280, pp) == (224, 398)
    assert transforms.Resize(224)(Image.new("RGB", (1280, 720))).size == (398, 224)


def test_truncated_jpeg_is_unreadable(tmp_path: Path) -> None:
    good = write_jpeg(tmp_path / "good.jpg", seed=1)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[:400])
    assert is_readable(good)
    assert not is_readable(bad)
    with pytest.raises(OSError):
        load_frame(bad, PreprocessConfig())
