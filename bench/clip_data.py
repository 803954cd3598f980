"""The benchmarks' data: video-like JPEG frames in VideoFrameFilter's layout and the JSONL naming them.

Clip ``n`` is ``video{n // 4}_{n % 4}`` of ``videos/video{n // 4}.mp4``, its frames
``<root>/frames/<video>/<clip>/img/frame_000000.jpg``, ``..._000030.jpg``, ...; the records, one per
video, go to ``<root>/input.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

FRAMES_PER_CLIP = 3
CLIPS_PER_VIDEO = 4
# The frame sizes the benchmarks time: 720p and 1080p video.
SIZES = ((1280, 720), (1920, 1080))


def smooth_picture(width: int, height: int) -> np.ndarray:
    """A picture with the spatial detail of a video frame: noise upsampled 8x (JPEG-compresses like one)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(base).resize((width, height), Image.Resampling.BICUBIC))


def frame_paths(root: Path, clips: int) -> Iterator[list[Path]]:
    """For each of ``clips`` clips, the paths its FRAMES_PER_CLIP frames are to be written to (folders made)."""
    for clip in range(clips):
        stem = f"video{clip // CLIPS_PER_VIDEO}"
        folder = root / "frames" / stem / f"{stem}_{clip % CLIPS_PER_VIDEO}" / "img"
        folder.mkdir(parents=True, exist_ok=True)
        yield [folder / f"frame_{frame * 30:06d}.jpg" for frame in range(FRAMES_PER_CLIP)]


def write_records(root: Path, clips: int) -> Path:
    """The JSONL of ``clips`` clips, one record per video; returns its path."""
    lines: list[dict] = []
    for clip in range(clips):
        stem = f"video{clip // CLIPS_PER_VIDEO}"
        if clip % CLIPS_PER_VIDEO == 0:
            lines.append({"video": [f"videos/{stem}.mp4"], "video_clips": {"clips": []}})
        entry = {"id": f"{stem}_{clip % CLIPS_PER_VIDEO}", "frame_start": 0, "frame_end": 90, "num_frames": 90}
        lines[-1]["video_clips"]["clips"].append(entry)
    source = root / "input.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return source
