"""Real media made at test time: JPEG frames in VideoFrameFilter's layout, short videos, JSONL inputs."""

from __future__ import annotations

import io
import json
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image


def picture(seed: int, width: int = 320, height: int = 180) -> np.ndarray:
    """A smooth, seed-dependent RGB picture (gradients plus blobs), so that JPEGs of it differ by seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.5, 4.0), rng.uniform(0.5, 4.0), rng.uniform(0, 6.28)
        channels.append(127.5 + 127.5 * np.sin(fx * x / width * 6.28 + fy * y / height * 6.28 + phase))
    image = np.stack(channels, axis=-1)
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_jpeg(path: Path, seed: int, width: int = 320, height: int = 180, quality: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture(seed, width, height)).save(path, quality=quality)
    return path


def write_frames(
    figure_root: Path,
    stem: str,
    clip_id: str,
    count: int,
    seed: int = 0,
    width: int = 320,
    height: int = 180,
    suffix: str = ".jpg",
) -> list[Path]:
    """``count`` frames at ``<figure_root>/<stem>/<clip_id>/img/frame_<i:06d><suffix>``."""
    folder = figure_root / stem / clip_id / "img"
    paths = []
    for index in range(count):
        path = folder / f"frame_{index * 25:06d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture(seed * 1000 + index, width, height)).save(path)
        paths.append(path)
    return paths


def write_video(
    path: Path,
    frames: int = 24,
    seed: int = 0,
    width: int = 160,
    height: int = 96,
    fps: int = 12,
    codec: str = "libx264",
) -> Path:
    """A short real video whose frames differ from each other (each is a different picture)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(picture(seed * 1000 + index, width, height), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_jsonl(path: Path, records: Iterable[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def clip_record(video: str, clip_ids: list[str], **extra: Any) -> dict[str, Any]:
    """A record in the seed's shape: video as a one-element list, clips under video_clips.clips."""
    clips = [
        {"id": cid, "frame_start": 30 * i, "frame_end": 30 * i + 30, "num_frames": 30} for i, cid in enumerate(clip_ids)
    ]
    return {"video": [video], "video_clips": {"clips": clips}, **extra}


def frame_dataset(root: Path, videos: int = 3, clips_per_video: int = 2, frames_per_clip: int = 4) -> tuple[Path, Path]:
    """A figure root with frames for every clip and the JSONL describing them; returns (jsonl, figure_root)."""
    figure_root = root / "frames"
    records = []
    for v in range(videos):
        stem = f"video{v}"
        ids = [f"{stem}_{c}" for c in range(clips_per_video)]
        for c, cid in enumerate(ids):
            write_frames(figure_root, stem, cid, frames_per_clip, seed=v * 100 + c)
        records.append(clip_record(f"./videos/{stem}.mp4", ids, caption=f"caption {v}", meta={"n": v}))
    return write_jsonl(root / "input.jsonl", records), figure_root


def decode_rgb(path: Path) -> list[np.ndarray]:
    """Every frame of a video as RGB, converted with swscale's exact C path (the same pixels on any CPU)."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24", interpolation="BITEXACT") for frame in container.decode(video=0)]


def save_image(path: Path, pixels: np.ndarray | Image.Image, **options: object) -> Path:
    """``pixels`` saved at ``path`` with Pillow's ``options`` (format from the suffix), its folder made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    (pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)).save(path, **options)
    return path


def pixel_delta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each pixel's absolute difference between two uint8 images."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def jpeg_bytes(seed: int = 1, width: int = 320, height: int = 180, **options: object) -> bytes:
    """A quality-90 JPEG of ``picture(seed)``, with Pillow's other ``options`` (progressive, subsampling...)."""
    buffer = io.BytesIO()
    Image.fromarray(picture(seed, width, height)).save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def without_segment(data: bytes, marker: int) -> bytes:
    """``data`` with every header segment of type ``marker`` (0xDB: quantisation tables) removed."""
    out, at = bytearray(data[:2]), 2
    while data[at + 1] != 0xDA:  # up to the start of scan
        end = at + 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
        if data[at + 1] != marker:
            out += data[at:end]
        at = end
    return bytes(out + data[at:])


def clip_frames(root: Path, videos: int = 2, clips: int = 2, width: int = 640, height: int = 360) -> list[dict]:
    """Records of ``videos`` videos of ``clips`` clips, three JPEG frames each under ``root``."""
    records = []
    for v in range(videos):
        ids = [f"v{v}_{c}" for c in range(clips)]
        for c, cid in enumerate(ids):
            write_frames(root, f"v{v}", cid, count=3, seed=v * 10 + c, width=width, height=height, suffix=".jpg")
        records.append(clip_record(f"v{v}.mp4", ids))
    return records


def write_tone(path: Path) -> Path:
    """An audio-only WAV file (a tenth of a second of silence): a container with no video stream."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def link_frames(frames: list[Path], folder: Path) -> list[Path]:
    """Relative links in ``folder`` to ``frames`` (a deduplicated clip's frames), one per frame, same names."""
    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for frame in frames:
        (folder / frame.name).symlink_to(os.path.relpath(frame, folder))
        links.append(folder / frame.name)
    return links
