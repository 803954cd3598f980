"""A small, deterministic sample dataset: real photographs turned into short videos, clean and degraded.

Each photograph (scikit-image's bundled sample images, the ``demo`` extra) becomes a few seconds
of slow pan and zoom (the Ken Burns effect), encoded with libx264, once as it is and once per
degradation (blurred, noisy, dark, washed out), so that a scorer has something to tell apart.
The clips JSONL has the seed's shape: ``{"video": ["<path>"], "video_clips": {"clips": [...]}}``,
plus ``source_image`` and ``variant`` fields that pass through scoring untouched.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import logging
import math
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageFilter

from video_aesthetics.errors import ConfigError
from video_aesthetics.jsonl import write_jsonl

log = logging.getLogger(__name__)

VARIANTS = ("original", "blurred", "noisy", "dark", "washed_out")
CLIPS_FILE = "clips.jsonl"


def _photo(name: str, pick: Callable[[Any], np.ndarray] | None = None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        try:
            data = importlib.import_module("skimage.data")
        except ImportError as err:
            raise ConfigError("the sample dataset needs scikit-image: pip install 'video-aesthetics[demo]'") from err
        image = getattr(data, name)()
        return pick(image) if pick else image

    return load


# Photographs that ship inside scikit-image (no download), most pleasing first.
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _photo("astronaut"),
    "coffee": _photo("coffee"),
    "chelsea": _photo("chelsea"),
    "rocket": _photo("rocket"),
    "motorcycle": _photo("stereo_motorcycle", lambda images: images[0]),
    "hubble": _photo("hubble_deep_field"),
    "camera": _photo("camera"),
}


@dataclass(frozen=True)
class SampleVideo:
    path: Path
    photo: str
    variant: str
    frames: int
    clips: tuple[dict[str, Any], ...]

    @property
    def stem(self) -> str:
        return self.path.stem


@dataclass(frozen=True)
class SampleDataset:
    """What was generated: ``jsonl`` lists every video of ``videos`` with its clips."""

    root: Path
    jsonl: Path
    videos: tuple[SampleVideo, ...]

    @property
    def clips(self) -> int:
        return sum(len(v.clips) for v in self.videos)


def generate_sample(
    out_dir: Path | str,
    *,
    videos: int = 4,
    clips_per_video: int = 3,
    seconds: float = 4.0,
    fps: int = 12,
    width: int = 320,
    height: int = 180,
    seed: int = 0,
    variants: Sequence[str] = VARIANTS,
    absolute_paths: bool = False,
) -> SampleDataset:
    """Write ``videos`` photographs x ``variants`` videos and their clips JSONL under ``out_dir``.

    Videos go to ``<out_dir>/videos/<photo>_<variant>.mp4``, the records to ``<out_dir>/clips.jsonl``
    with video paths relative to that file (absolute with ``absolute_paths``). The same arguments
    always give the same pixels and the same JSONL.
    """
    validate_sample_args(videos, clips_per_video, seconds, fps, width, height, variants)
    root = Path(out_dir).resolve()
    frames = round(seconds * fps)
    made = []
    for number, photo_name in enumerate(list(PHOTOS)[:videos]):
        photo = _as_rgb(PHOTOS[photo_name]())
        motion = _motion(np.random.default_rng([seed, number]))
        for variant in variants:
            path = root / "videos" / f"{photo_name}_{variant}.mp4"
            noise = np.random.default_rng([seed, number, VARIANTS.index(variant)])
            pictures = (degrade(frame, variant, noise) for frame in ken_burns(photo, frames, width, height, motion))
            encode_video(path, pictures, fps, width, height)
            made.append(
                SampleVideo(path, photo_name, variant, frames, tuple(clip_spans(path.stem, frames, clips_per_video)))
            )
    jsonl = root / CLIPS_FILE
    write_jsonl(jsonl, (_record(video, root, absolute_paths) for video in made))
    log.info("sample: %d videos, %d clips in %s", len(made), sum(len(v.clips) for v in made), root)
    return SampleDataset(root, jsonl, tuple(made))


def validate_sample_args(
    videos: int,
    clips_per_video: int = 3,
    seconds: float = 4.0,
    fps: int = 12,
    width: int = 320,
    height: int = 180,
    variants: Sequence[str] = VARIANTS,
) -> None:
    """Raise ConfigError naming the first argument of generate_sample that cannot work."""
    if not 1 <= videos <= len(PHOTOS):
        raise ConfigError(
            f"videos must be between 1 and {len(PHOTOS)} (one per photograph: {', '.join(PHOTOS)}), got {videos}"
        )
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ConfigError(f"variants must be a non-empty selection of {', '.join(VARIANTS)}, got {list(variants)}")
    if width % 2 or height % 2 or width < 32 or height < 32:
        raise ConfigError(f"width and height must be even and at least 32 (yuv420p), got {width}x{height}")
    if fps < 1 or clips_per_video < 1 or round(seconds * fps) < clips_per_video:
        raise ConfigError(f"{seconds} s at {fps} fps is too short for {clips_per_video} clips of at least one frame")


def _record(video: SampleVideo, root: Path, absolute: bool) -> dict[str, Any]:
    path = str(video.path) if absolute else video.path.relative_to(root).as_posix()
    return {
        "video": [path],
        "video_clips": {"clips": [dict(c) for c in video.clips]},
        "source_image": video.photo,
        "variant": video.variant,
    }


def clip_spans(stem: str, frames: int, count: int) -> list[dict[str, Any]]:
    """``count`` back-to-back clips covering ``frames`` frames, frame_end exclusive, ids ``<stem>_<i>``."""
    edges = [round(i * frames / count) for i in range(count + 1)]
    return [
        {"id": f"{stem}_{i}", "frame_start": start, "frame_end": end, "num_frames": end - start}
        for i, (start, end) in enumerate(itertools.pairwise(edges))
    ]


@dataclass(frozen=True)
class Motion:
    """A pan and zoom: zoom factor and window centre (fractions of the photo) at the start and the end."""

    zoom: tuple[float, float]
    start: tuple[float, float]
    end: tuple[float, float]


def _motion(rng: np.random.Generator) -> Motion:
    zooms = (1.0, float(rng.uniform(1.15, 1.35)))
    zoom = zooms if rng.random() < 0.5 else zooms[::-1]
    start = (float(rng.uniform(0.4, 0.6)), float(rng.uniform(0.4, 0.6)))
    end = (float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.35, 0.65)))
    return Motion(zoom, start, end)


def ken_burns(photo: np.ndarray, frames: int, width: int, height: int, motion: Motion) -> Iterator[np.ndarray]:
    """``frames`` RGB frames of ``width`` x ``height`` panning and zooming smoothly over ``photo``."""
    image = Image.fromarray(photo)
    photo_h, photo_w = photo.shape[:2]
    # The largest window of the output's aspect ratio that fits the photo, at zoom 1.
    base_w = min(photo_w, photo_h * width / height)
    for index in range(frames):
        t = index / max(1, frames - 1)
        t = t * t * (3 - 2 * t)  # ease in and out: no jolt at either end
        zoom = motion.zoom[0] + (motion.zoom[1] - motion.zoom[0]) * t
        win_w = base_w / zoom
        win_h = win_w * height / width
        cx = (motion.start[0] + (motion.end[0] - motion.start[0]) * t) * photo_w
        cy = (motion.start[1] + (motion.end[1] - motion.start[1]) * t) * photo_h
        left = min(max(cx - win_w / 2, 0.0), photo_w - win_w)
        top = min(max(cy - win_h / 2, 0.0), photo_h - win_h)
        frame = image.resize((width, height), Image.Resampling.BICUBIC, box=(left, top, left + win_w, top + win_h))
        yield np.asarray(frame)


def degrade(frame: np.ndarray, variant: str, rng: np.random.Generator) -> np.ndarray:
    """``frame`` spoiled the way ``variant`` says; "original" returns it as it is."""
    if variant == "original":
        return frame
    if variant == "blurred":
        return np.asarray(Image.fromarray(frame).filter(ImageFilter.GaussianBlur(radius=frame.shape[1] / 80)))
    pixels = frame.astype(np.float32)
    if variant == "noisy":
        pixels += rng.normal(0.0, 40.0, pixels.shape)
    elif variant == "dark":
        return _dark_table()[frame]
    elif variant == "washed_out":
        pixels = 150.0 + 0.35 * pixels
    else:
        raise ConfigError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


@functools.cache
def _dark_table() -> np.ndarray:
    """Gamma 2.2 at 35 % as a table: no entry is near a rounding tie, so any libm's pow gives the same bytes."""
    exact = [255.0 * (i / 255.0) ** 2.2 * 0.35 for i in range(256)]
    assert all(abs(v - math.floor(v) - 0.5) > 1e-6 for v in exact)
    return np.array([round(v) for v in exact], dtype=np.uint8)


def encode_video(path: Path, frames: Iterator[np.ndarray], fps: int, width: int, height: int) -> Path:
    """Lossless H.264 of ``frames``, written to a temporary file and renamed.

    Reproducible by construction: the RGB frames become YUV 4:2:0 in integer arithmetic here
    (FFmpeg's swscale has CPU-specific code paths), and lossless coding (qp 0) makes the decoded
    planes equal to those whatever choices x264's CPU-specific code makes. The same seed therefore
    gives the same decoded pixels on every machine.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of our own rather than mkstemp's: FFmpeg creates the file, with the umask's usual mode.
    temp = str(path.with_name(f".{path.stem}.{secrets.token_hex(6)}.tmp{path.suffix}"))
    try:
        with av.open(temp, mode="w", format="mp4") as container:
            stream = container.add_stream(
                "libx264", rate=Fraction(fps), options={"qp": "0", "preset": "veryfast", "threads": "1"}
            )
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range YUV 4:2:0 of an (H, W, 3) uint8 image, in PyAV's (H * 3 // 2, W) plane layout."""
    height, width = rgb.shape[:2]
    if height % 2 or width % 2:
        raise ConfigError(f"yuv420p needs an even width and height, got {width}x{height}")
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16

    def quad_sum(c: np.ndarray) -> np.ndarray:  # the 2x2 block sums that 4:2:0 chroma averages
        return c[0::2, 0::2] + c[0::2, 1::2] + c[1::2, 0::2] + c[1::2, 1::2]

    rs, gs, bs = quad_sum(r), quad_sum(g), quad_sum(b)
    u = ((-38 * rs - 74 * gs + 112 * bs + 512) >> 10) + 128
    v = ((112 * rs - 94 * gs - 18 * bs + 512) >> 10) + 128
    planes = [np.clip(p, 0, 255).astype(np.uint8).reshape(-1) for p in (y, u, v)]
    return np.concatenate(planes).reshape(height * 3 // 2, width)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))
