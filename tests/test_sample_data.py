"""The demo's sample dataset: real photographs as videos, their degradations measured on the decoded videos."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from helpers.media import decode_rgb, read_jsonl
from video_aesthetics import video
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError
from video_aesthetics.extraction import check_frames
from video_aesthetics.sample_data import (
    PHOTOS,
    VARIANTS,
    Motion,
    SampleDataset,
    encode_video,
    generate_sample,
    ken_burns,
    rgb_to_yuv420p,
)

SMALL = {"videos": 2, "seconds": 2.0, "fps": 12, "clips_per_video": 3}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleDataset:
    return generate_sample(tmp_path_factory.mktemp("sample"), **SMALL)


def decode(path: Path) -> np.ndarray:
    return np.stack(decode_rgb(path)).astype(np.float32)


def luma(frames: np.ndarray) -> np.ndarray:
    return frames @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def sharpness(frames: np.ndarray) -> float:
    """Variance of the Laplacian of the luma: high for detail and noise, low for blur."""
    y = luma(frames)
    lap = -4 * y[:, 1:-1, 1:-1] + y[:, :-2, 1:-1] + y[:, 2:, 1:-1] + y[:, 1:-1, :-2] + y[:, 1:-1, 2:]
    return float(lap.var())


def test_records_have_the_seed_shape_and_real_videos(sample: SampleDataset) -> None:
    records = read_jsonl(sample.jsonl)
    assert len(records) == len(sample.videos) == 2 * len(VARIANTS)
    assert {(r["source_image"], r["variant"]) for r in records} == {
        (photo, variant) for photo in list(PHOTOS)[:2] for variant in VARIANTS
    }
    ids = []
    for record in records:
        [relative] = record["video"]
        path = sample.jsonl.parent / relative
        assert not Path(relative).is_absolute() and path.is_file()
        assert video.probe(path) == video.VideoInfo(frames=24, fps=12.0, width=320, height=180)
        clips = record["video_clips"]["clips"]
        assert len(clips) == 3
        # Back to back over the whole video, frame_end exclusive.
        assert [c["frame_start"] for c in clips] == [0, 8, 16]
        assert [c["frame_end"] for c in clips] == [8, 16, 24]
        assert all(c["num_frames"] == c["frame_end"] - c["frame_start"] for c in clips)
        assert [c["id"] for c in clips] == [f"{path.stem}_{i}" for i in range(3)]
        ids += [c["id"] for c in clips]
    assert len(set(ids)) == len(ids) == sample.clips


def test_same_seed_same_dataset_other_seed_other_motion(sample: SampleDataset, tmp_path: Path) -> None:
    again = generate_sample(tmp_path / "again", **SMALL, variants=("original",))
    first = next(v for v in sample.videos if v.variant == "original")
    np.testing.assert_array_equal(decode(again.videos[0].path), decode(first.path))
    assert again.jsonl.read_text().splitlines()[0] == sample.jsonl.read_text().splitlines()[0]
    other = generate_sample(tmp_path / "other", **SMALL, variants=("original",), seed=1)
    assert np.abs(decode(other.videos[0].path) - decode(first.path)).mean() > 5.0


def test_videos_pan_and_zoom(sample: SampleDataset) -> None:
    frames = decode(next(v for v in sample.videos if v.variant == "original").path)
    steps = [float(np.abs(frames[i + 1] - frames[i]).mean()) for i in range(len(frames) - 1)]
    # Moving all the time, smoothly: no frame is a still copy, none jumps ahead of the others.
    assert min(steps) > 0.2
    assert max(steps) < 3 * float(np.mean(steps))
    assert float(np.abs(frames[-1] - frames[0]).mean()) > 3 * float(np.median(steps))


def test_ken_burns_geometry() -> None:
    photo = np.asarray(Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 200, 3), dtype=np.uint8)))
    still = list(ken_burns(photo, 3, 64, 36, Motion((1.0, 1.0), (0.5, 0.5), (0.5, 0.5))))
    # At zoom 1 the window is the widest 16:9 crop of the photo, centred.
    expected = np.asarray(Image.fromarray(photo).resize((64, 36), Image.Resampling.BICUBIC, box=(20, 0, 180, 90)))
    for frame in still:
        np.testing.assert_array_equal(frame, expected)
    zooming = list(ken_burns(photo, 5, 64, 36, Motion((1.0, 2.0), (0.5, 0.5), (0.5, 0.5))))
    np.testing.assert_array_equal(zooming[0], expected)
    centre = np.asarray(Image.fromarray(photo).resize((64, 36), Image.Resampling.BICUBIC, box=(60, 22.5, 140, 67.5)))
    np.testing.assert_array_equal(zooming[-1], centre)


def test_degradations_survive_encoding(sample: SampleDataset) -> None:
    for photo in list(PHOTOS)[:2]:
        frames = {v.variant: decode(v.path) for v in sample.videos if v.photo == photo}
        original = frames["original"]
        assert sharpness(frames["blurred"]) < 0.3 * sharpness(original), photo
        assert sharpness(frames["noisy"]) > 3 * sharpness(original), photo
        assert abs(float(luma(frames["noisy"]).mean() - luma(original).mean())) < 12, photo
        assert luma(frames["dark"]).mean() < 0.5 * luma(original).mean(), photo
        assert luma(frames["washed_out"]).std() < 0.5 * luma(original).std(), photo
        assert luma(frames["washed_out"]).mean() > luma(original).mean(), photo


def test_every_clip_extracts(sample: SampleDataset, tmp_path: Path) -> None:
    config = ScoringConfig(figure_root=str(tmp_path / "frames"), num_workers=2)
    report = check_frames([sample.jsonl], config, "extract")
    assert (report.clips, report.extracted, report.missing) == (sample.clips, sample.clips, 0)


def test_absolute_paths(tmp_path: Path) -> None:
    dataset = generate_sample(
        tmp_path / "abs",
        videos=1,
        seconds=1.0,
        fps=4,
        clips_per_video=2,
        variants=("dark",),
        absolute_paths=True,
        width=64,
        height=36,
    )
    [record] = read_jsonl(dataset.jsonl)
    assert Path(record["video"][0]) == dataset.videos[0].path and dataset.videos[0].path.is_absolute()
    assert video.probe(dataset.videos[0].path).frames == 4
    assert not [p for p in dataset.jsonl.parent.rglob("*") if ".tmp" in p.name]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"videos": 0}, "astronaut"),
        ({"videos": len(PHOTOS) + 1}, "between 1 and"),
        ({"variants": ("original", "sepia")}, "sepia"),
        ({"variants": ()}, "non-empty"),
        ({"width": 321}, "even"),
        ({"seconds": 0.1, "clips_per_video": 3}, "too short"),
    ],
)
def test_bad_arguments(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        generate_sample(tmp_path / "bad", **{**SMALL, **changes})
    assert not (tmp_path / "bad").exists()


def test_decoded_planes_are_exactly_the_frames_made_here(tmp_path: Path) -> None:
    # Reproducibility on any machine rests on this: YUV made in integer numpy, coded losslessly, so
    # neither swscale's nor x264's CPU-specific code can change a decoded sample.
    photo = np.random.default_rng(3).integers(0, 255, (90, 160, 3), dtype=np.uint8)
    frames = list(ken_burns(photo, 6, 64, 36, Motion((1.0, 1.3), (0.4, 0.5), (0.6, 0.5))))
    path = encode_video(tmp_path / "v.mp4", iter(frames), 12, 64, 36)
    with av.open(str(path)) as container:
        planes = [frame.to_ndarray() for frame in container.decode(video=0)]  # yuv420p as stored: no conversion
    assert len(planes) == len(frames)
    for plane, frame in zip(planes, frames, strict=False):
        np.testing.assert_array_equal(plane, rgb_to_yuv420p(frame))


def test_yuv_conversion_matches_bt601_within_rounding() -> None:
    rgb = np.random.default_rng(4).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    yuv = rgb_to_yuv420p(rgb).astype(np.float64)
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    assert np.abs(yuv[:8] - y).max() <= 1.0
    with pytest.raises(ConfigError, match="even"):
        rgb_to_yuv420p(rgb[:7])
