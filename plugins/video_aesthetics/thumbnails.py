"""The report's thumbnails: a clip's middle scored frame (or a video's) as a small JPEG ``data:`` URI.

Pictures are opened by the scorer's own rules (frames.open_frame, its checks on a video), and only
inside the summary's figure_root: a summary is data, and data names no file to read outside it.
"""

from __future__ import annotations

import base64
import io
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from video_aesthetics.files import is_within, looks_like_url
from video_aesthetics.records import video_file

log = logging.getLogger(__name__)

THUMBNAIL_PX = 160


def thumbnail(entry: Mapping[str, Any], summary: Mapping[str, Any], px: int = THUMBNAIL_PX) -> str | None:
    """A ``data:`` URI of the entry's middle scored frame, at most ``px`` on its longer side; None if unreadable."""
    try:
        image = _thumbnail_image(entry, summary, px)
    except Exception as err:  # noqa: BLE001 - a frame that cannot be shown must not cost the whole report
        log.warning("no thumbnail for %s: %s", entry.get("clip_id"), err)
        return None
    if image is None:
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _thumbnail_image(entry: Mapping[str, Any], summary: Mapping[str, Any], px: int) -> Any:
    """The picture a thumbnail shows, opened by the scorer's rules (frames.open_frame, its checks on a video)."""
    from PIL import Image

    if summary.get("unit") == "video":
        image = _video_picture(entry, summary)
        if image is None:
            return None
    else:
        frame = _confined_frame(entry, summary)
        if frame is None:
            return None
        from video_aesthetics.frames import open_frame

        # Checked again on the file opened: a link swapped since _confined_frame looked must not be read.
        root = os.path.realpath(summary["config"]["figure_root"])
        with open_frame(Path(frame), root) as opened:
            opened.draft("RGB", (px * 2, px * 2))  # JPEG: let libjpeg decode at a fraction of full size
            image = opened.convert("RGB")
    image.thumbnail((px, px), Image.Resampling.LANCZOS)
    return image


def _confined_frame(entry: Mapping[str, Any], summary: Mapping[str, Any]) -> str | None:
    """The entry's frame if it resolves inside the summary's figure_root; a summary is data, and data names no file outside."""
    frame, root = entry.get("frame"), (summary.get("config") or {}).get("figure_root")
    if not isinstance(frame, str) or not frame or not isinstance(root, str) or not root:
        return None
    real_root = os.path.realpath(root)
    real = os.path.realpath(frame)
    if not is_within(real, real_root) or real == real_root:
        log.warning("no thumbnail for %s: its frame %s is outside figure_root %s", entry.get("clip_id"), frame, root)
        return None
    return frame


def _video_picture(entry: Mapping[str, Any], summary: Mapping[str, Any]) -> Any:
    """The middle scored frame of the entry's video: a local regular file only, as the scorer reads videos."""
    from video_aesthetics import video
    from video_aesthetics.frames import check_frame_size, select_evenly

    named = entry.get("video")
    if not isinstance(named, str) or not named or looks_like_url(named) or "\x00" in named:
        return None  # FFmpeg would open a URL or a protocol ("http:", "pipe:"): only local files are read
    path = video_file(named, (summary.get("config") or {}).get("video_root"))
    load_num = int((summary.get("config") or {}).get("load_num", 3))
    try:
        # Probed and read through one checked descriptor, as the scorer reads it: never a FIFO or device.
        with video.pinned(path) as source:
            chosen = select_evenly(video.probe(source).frames, load_num)
            if not chosen:
                return None
            image = video.read_frames(source, [chosen[len(chosen) // 2]])[0]
    except (video.UnsafeVideoError, FileNotFoundError):
        return None  # the scorer marked it unsafe_path or unreadable_video
    check_frame_size(*image.size)
    return image
