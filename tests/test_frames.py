from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from helpers.bait import write_png_bomb
from helpers.clip_models import OPENAI_MEAN, OPENAI_STD
from helpers.media import picture, write_jpeg
from video_aesthetics.frames import (
    FetchedFrame,
    FrameTooLargeError,
    OutsideRootError,
    PreprocessConfig,
    check_frame_size,
    descriptor_path,
    is_readable,
    list_frames,
    load_frame,
    open_frame,
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
    pp = PreprocessConfig(mean=OPENAI_MEAN, std=OPENAI_STD)
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
        pp = PreprocessConfig(mean=OPENAI_MEAN, std=OPENAI_STD, resize_mode=mode)
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
        assert load_frame(path, PreprocessConfig(mean=OPENAI_MEAN, std=OPENAI_STD)).shape == (224, 224, 3)


def test_resized_size_follows_torchvision() -> None:
    pp = PreprocessConfig(mean=OPENAI_MEAN, std=OPENAI_STD)
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
        load_frame(bad, PreprocessConfig(mean=OPENAI_MEAN, std=OPENAI_STD))


# --- exact reference preprocessing for every PIL mode ------------------------------------------------------


def _mode_picture(mode: str, width: int, height: int) -> Image.Image:
    rgb = Image.fromarray(picture(11, width, height))
    if mode == "P":
        image = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        image.info["transparency"] = 5
        return image
    if mode == "I;16":
        ramp = (picture(12, width, height)[:, :, 0].astype(np.uint16) * 257) ^ 0x00FF
        return Image.fromarray(ramp.astype("<u2"))
    if mode == "LA":
        return Image.merge("LA", (rgb.convert("L"), Image.fromarray(picture(13, width, height)[:, :, 1])))
    if mode == "RGBA":
        return Image.merge("RGBA", (*rgb.split(), Image.fromarray(picture(14, width, height)[:, :, 2])))
    return rgb.convert(mode)


@pytest.mark.parametrize("mode", ["P", "1", "L", "LA", "RGBA", "I;16", "CMYK", "RGB"])
@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
def test_every_pil_mode_is_preprocessed_exactly_as_open_clip_does(tmp_path: Path, mode: str, resize_mode: str) -> None:
    """Resize and crop in the file's own mode, convert to RGB last: open_clip's order, to the bit."""
    import open_clip

    path = tmp_path / ("f.jpg" if mode == "CMYK" else "f.png")
    _mode_picture(mode, 300, 170).save(path)
    with Image.open(path) as opened:
        assert opened.mode == mode
        reference = open_clip.image_transform(224, is_train=False, resize_mode=resize_mode)(opened)
    pp = PreprocessConfig(mean=OPENAI_MEAN, std=OPENAI_STD, resize_mode=resize_mode)
    pixels = torch.from_numpy(load_frame(path, pp)).permute(2, 0, 1).float()
    ours = (pixels / 255.0 - torch.tensor(pp.mean).view(3, 1, 1)) / torch.tensor(pp.std).view(3, 1, 1)
    # One uint8 level is 0.015 or more in normalised units: 1e-5 means the same bytes.
    assert torch.allclose(ours, reference, atol=1e-5)


def test_converting_before_resizing_would_differ_for_these_modes(tmp_path: Path) -> None:
    """The test above can fail: for a palette picture, convert-then-resize gives other pixels."""
    image = _mode_picture("P", 300, 170)
    pp = PreprocessConfig(mean=OPENAI_MEAN, std=OPENAI_STD)
    assert not np.array_equal(to_pixels(image, pp), to_pixels(image.convert("RGB"), pp))


# --- only JPEG, PNG and WebP are decoded, whatever the name ------------------------------------------------

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("frame_1.jpg", "eps"),
        ("frame_1.jpg", "gif"),
        ("frame_1.png", "bmp"),
        ("frame_1.webp", "tiff"),
        ("frame_1.jpg", "ico"),
        ("frame_1.jpg", "pdf"),
    ],
)
def test_other_formats_are_never_decoded(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    if content == "eps":
        path.write_bytes(EPS)
    elif content == "pdf":
        path.write_bytes(b"%PDF-1.4\n" + EPS)
    else:
        Image.fromarray(picture(1, 64, 48)).save(path, format=content.upper())
    assert not is_readable(path)
    with pytest.raises((OSError, ValueError)):
        load_frame(path, PreprocessConfig(mean=OPENAI_MEAN, std=OPENAI_STD))


@pytest.mark.parametrize(("name", "fmt"), [("frame_1.jpg", "PNG"), ("frame_1.png", "JPEG"), ("frame_1.jpg", "WEBP")])
def test_accepted_formats_are_decoded_by_content_whatever_the_name(tmp_path: Path, name: str, fmt: str) -> None:
    path = tmp_path / name
    Image.fromarray(picture(1, 64, 48)).save(path, format=fmt)
    assert is_readable(path)
    assert load_frame(path, PreprocessConfig(mean=OPENAI_MEAN, std=OPENAI_STD)).shape == (224, 224, 3)


def test_eps_never_reaches_ghostscript(tmp_path: Path) -> None:
    """Whatever gs would do, the EPS plugin is never asked: Image.open is restricted to our formats."""
    from PIL import EpsImagePlugin

    calls: list[object] = []
    original = EpsImagePlugin.EpsImageFile._open
    EpsImagePlugin.EpsImageFile._open = lambda self: calls.append(self) or original(self)  # type: ignore[method-assign]
    try:
        path = tmp_path / "frame_1.jpg"
        path.write_bytes(EPS)
        assert not is_readable(path)
    finally:
        EpsImagePlugin.EpsImageFile._open = original  # type: ignore[method-assign]
    assert calls == []


# --- bounded cost per frame ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height"),
    [(1, 4000), (4000, 1), (1, 8000), (100, 1700), (1700, 100), (9000, 9000), (7681, 4321)],
)
def test_frames_outside_the_size_bounds_are_refused_from_the_header(tmp_path: Path, width: int, height: int) -> None:
    path = tmp_path / "frame_1.png"
    Image.new("L", (width, height), 7).save(path, optimize=True)
    assert path.stat().st_size < 200_000  # tiny files, large pictures
    with pytest.raises(FrameTooLargeError, match=f"{width}x{height}"):
        load_frame(path, PreprocessConfig(mean=OPENAI_MEAN, std=OPENAI_STD))
    assert not is_readable(path)
    with pytest.raises(FrameTooLargeError):
        to_pixels(Image.new("RGB", (width, height)), PreprocessConfig(mean=OPENAI_MEAN, std=OPENAI_STD))


@pytest.mark.parametrize(("width", "height"), [(16, 256), (256, 16), (7680, 4320), (3840, 240)])
def test_frames_inside_the_bounds_are_read(width: int, height: int) -> None:
    check_frame_size(width, height)
    assert to_pixels(
        Image.new("RGB", (width, height), (9, 8, 7)), PreprocessConfig(mean=OPENAI_MEAN, std=OPENAI_STD)
    ).shape == (224, 224, 3)


def test_a_frame_over_the_bound_is_skipped_like_a_corrupt_one(tmp_path: Path, model_args: dict) -> None:
    from helpers.media import clip_record, read_jsonl, write_frames, write_jsonl
    from video_aesthetics.config import ScoringConfig
    from video_aesthetics.runner import score_file

    root = tmp_path / "frames"
    write_frames(root, "v", "v_0", count=2, seed=1)
    write_frames(root, "v", "v_1", count=1, seed=2)
    Image.new("L", (1, 4000)).save(root / "v" / "v_0" / "img" / "frame_000001.png")
    Image.new("L", (1, 8000)).save(root / "v" / "v_1" / "img" / "frame_000000.jpg", format="PNG")
    source = write_jsonl(tmp_path / "in.jsonl", [clip_record("v.mp4", ["v_0", "v_1"])])
    config = ScoringConfig(**model_args, figure_root=str(root), num_workers=0, device="cpu", frame_scores=True)
    stats = score_file(source, tmp_path / "out.jsonl", config)
    clips = read_jsonl(tmp_path / "out.jsonl")[0]["video_clips"]["clips"]
    assert len(clips[0]["aesthetic_frame_scores"]) == 2  # the two good frames of three
    assert clips[1]["aesthetic_error"] == "corrupt_frames"
    assert (stats.scored, stats.failed) == (1, 1)


# --- which files are frames --------------------------------------------------------------------------------


def test_hidden_files_are_not_frames(tmp_path: Path) -> None:
    for name in ["frame_1.jpg", "._frame_1.jpg", ".DS_Store", ".frame_2.png", "._.jpg"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_frames(tmp_path)] == ["frame_1.jpg"]


def test_frame_links_count_only_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "frames"
    folder, sibling = root / "v" / "c" / "img", root / "v" / "d" / "img"
    folder.mkdir(parents=True)
    sibling.mkdir(parents=True)
    outside = write_jpeg(tmp_path / "secret.jpg", seed=1)
    write_jpeg(sibling / "frame_9.jpg", seed=2)
    write_jpeg(folder / "frame_0.jpg", seed=3)
    (folder / "frame_1.jpg").symlink_to(outside)
    (folder / "frame_2.jpg").symlink_to(sibling / "frame_9.jpg")
    (folder / "frame_3.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (folder / "frame_4.jpg").symlink_to("/dev/zero")
    os.mkfifo(folder / "frame_5.jpg")
    assert [p.name for p in list_frames(folder, root)] == ["frame_0.jpg", "frame_2.jpg"]
    # Without a root, the folder itself is the limit.
    assert [p.name for p in list_frames(folder)] == ["frame_0.jpg"]


# --- frames fetched from an object store (frame_store.py lists and fetches them) -------------------------


def test_a_frame_that_cannot_be_fetched_or_decoded_is_unreadable() -> None:
    broken = FetchedFrame("s3://b/f/frame_1.jpg", b"\xff\xd8\xff not a jpeg")
    gone = FetchedFrame("s3://b/f/frame_2.jpg", None, "FileNotFoundError: gone")
    assert not is_readable(broken) and not is_readable(gone)
    with pytest.raises(OSError, match="cannot fetch frame s3://b/f/frame_2.jpg: FileNotFoundError"):
        load_frame(gone, PreprocessConfig())


def test_a_small_png_that_decodes_to_a_huge_picture_is_refused_before_decoding(tmp_path: Path) -> None:
    bomb = write_png_bomb(tmp_path / "frame_1.png")  # about 20 KB; 13000 x 13000 once decoded
    assert bomb.stat().st_size < 64 << 10
    with pytest.raises(FrameTooLargeError, match="13000x13000"), open_frame(bomb) as image:
        image.load()  # never reached: the header's size is refused first
    assert not is_readable(bomb)


# --- what is checked is what is read: a link swapped between listing and reading -----------------------


def _relink(link: Path, target: Path) -> None:
    """Point the symbolic link ``link`` at ``target`` in one step, as a writer racing the scorer does."""
    staged = link.with_name(link.name + ".swap")
    staged.symlink_to(target)
    os.replace(staged, link)


def _without_blocking(call: Callable[[], object]) -> object:
    """What ``call`` returned or raised, failing the test if it is still blocked after 10 seconds."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as err:  # noqa: BLE001 - the test inspects whatever was raised
            outcome.append(err)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "reading a FIFO swapped in for a frame must not block"
    return outcome[0]


def _race_root(tmp_path: Path) -> tuple[Path, Path, Path]:
    """figure_root with a frame folder ``v/c/img`` and, outside it, a folder holding a different frame_0.jpg."""
    root = tmp_path / "frames"
    write_jpeg(root / "v" / "c" / "real" / "frame_0.jpg", seed=1)
    write_jpeg(root / "v" / "c" / "inside.jpg", seed=2)
    outside = tmp_path / "outside"
    write_jpeg(outside / "frame_0.jpg", seed=3)
    return root, root / "v" / "c", outside


def test_a_frame_link_swapped_outside_after_listing_is_never_read(tmp_path: Path) -> None:
    root, clip, outside = _race_root(tmp_path)
    folder = clip / "img"
    folder.mkdir()
    (folder / "frame_0.jpg").symlink_to(clip / "inside.jpg")
    real_root = os.path.realpath(root)
    [listed] = list_frames(folder, root)
    pp = PreprocessConfig(size=32)
    inside_pixels = load_frame(listed, pp, real_root)  # a link that stays inside is read
    np.testing.assert_array_equal(inside_pixels, load_frame(clip / "inside.jpg", pp))
    _relink(folder / "frame_0.jpg", outside / "frame_0.jpg")  # the check above no longer holds
    with pytest.raises(OutsideRootError, match="outside figure_root"):
        load_frame(listed, pp, real_root)
    with pytest.raises(OutsideRootError), open_frame(listed, real_root):
        pass
    assert not is_readable(listed, real_root)
    assert [p.name for p in list_frames(folder, root)] == []  # listed again: refused as any link out is


def test_a_clip_folder_link_swapped_outside_after_listing_is_never_read(tmp_path: Path) -> None:
    root, clip, outside = _race_root(tmp_path)
    folder = clip / "img"
    folder.symlink_to(clip / "real")  # a folder link that stays inside figure_root: fine
    real_root = os.path.realpath(root)
    [listed] = list_frames(folder, root)
    pp = PreprocessConfig(size=32)
    np.testing.assert_array_equal(load_frame(listed, pp, real_root), load_frame(clip / "real" / "frame_0.jpg", pp))
    _relink(folder, outside)  # same name, same frame name, now outside figure_root
    with pytest.raises(OutsideRootError, match="outside figure_root"):
        load_frame(listed, pp, real_root)
    assert not is_readable(listed, real_root)
    # Listed now, the folder itself is refused: its descriptor's real path is outside the root.
    with pytest.raises(OutsideRootError, match="outside figure_root"):
        list_frames(folder, root)


def test_a_fifo_swapped_in_for_a_frame_or_its_folder_never_blocks(tmp_path: Path) -> None:
    root, clip, _ = _race_root(tmp_path)
    folder = clip / "img"
    write_jpeg(folder / "frame_0.jpg", seed=4)
    real_root = os.path.realpath(root)
    [listed] = list_frames(folder, root)
    listed.unlink()
    os.mkfifo(listed)
    pp = PreprocessConfig(size=32)
    for read in (lambda: load_frame(listed, pp, real_root), lambda: load_frame(listed, pp)):
        refused = _without_blocking(read)
        assert isinstance(refused, OSError) and "not a regular file" in str(refused)
    assert _without_blocking(lambda: is_readable(listed, real_root)) is False
    # A FIFO in place of the clip folder: no folder, so no frames.
    listed.unlink()
    folder.rmdir()
    os.mkfifo(folder)
    assert _without_blocking(lambda: list_frames(folder, root)) == []


def test_a_link_to_a_frame_inside_the_root_is_listed_and_read(tmp_path: Path) -> None:
    root, clip, _ = _race_root(tmp_path)
    folder = clip / "img"
    folder.mkdir()
    (folder / "frame_0.jpg").symlink_to("../real/frame_0.jpg")  # relative, as dedup tools write them
    [listed] = list_frames(folder, root)
    pp = PreprocessConfig(size=32)
    np.testing.assert_array_equal(
        load_frame(listed, pp, os.path.realpath(root)), load_frame(clip / "real" / "frame_0.jpg", pp)
    )


def test_without_proc_a_descriptor_is_trusted_only_while_its_name_still_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Systems without /proc/self/fd (macOS): the name is resolved and must still be the file opened.
    real_readlink = os.readlink

    def no_proc(path: str, *args: object, **kwargs: object) -> str:
        if str(path).startswith("/proc/self/fd/"):
            raise FileNotFoundError(path)
        return real_readlink(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "readlink", no_proc)
    root, clip, outside = _race_root(tmp_path)
    link = clip / "frame.jpg"
    link.symlink_to(clip / "inside.jpg")
    fd = os.open(link, os.O_RDONLY)
    try:
        assert descriptor_path(fd, link) == os.path.realpath(clip / "inside.jpg")
        _relink(link, outside / "frame_0.jpg")
        with pytest.raises(OutsideRootError, match="changed while it was opened"):
            descriptor_path(fd, link)
    finally:
        os.close(fd)
    pp = PreprocessConfig(size=32)
    with pytest.raises(OutsideRootError, match="outside figure_root"):
        load_frame(link, pp, os.path.realpath(root))
