"""The report's thumbnails (thumbnails.py): small JPEGs of frames and videos, read only where the scorer would read."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from helpers.media import write_frames, write_video
from video_aesthetics.config import ScoringConfig
from video_aesthetics.report import summarise
from video_aesthetics.thumbnails import thumbnail


def _picture(uri: str | None) -> Image.Image:
    assert uri is not None and uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


@pytest.mark.parametrize("px", [16, 160])
def test_a_frame_becomes_a_jpeg_no_larger_than_asked(tmp_path: Path, px: int) -> None:
    [frame, *_] = write_frames(tmp_path / "frames", "v", "v_0", 3, width=320, height=200)
    summary = {"unit": "clip", "config": {"figure_root": str(tmp_path / "frames")}}
    picture = _picture(thumbnail({"clip_id": "v_0", "frame": str(frame)}, summary, px))
    assert picture.format == "JPEG" and max(picture.size) == px and picture.size[0] > picture.size[1]


def test_a_frame_outside_figure_root_or_missing_gets_no_thumbnail(tmp_path: Path) -> None:
    [inside, *_] = write_frames(tmp_path / "frames", "v", "v_0", 1)
    [outside, *_] = write_frames(tmp_path / "elsewhere", "v", "v_0", 1)
    summary = {"unit": "clip", "config": {"figure_root": str(tmp_path / "frames")}}
    (tmp_path / "frames" / "link.jpg").symlink_to(outside)
    for frame in (outside, tmp_path / "frames" / "link.jpg", tmp_path / "frames", tmp_path / "frames" / "none.jpg"):
        assert thumbnail({"clip_id": "x", "frame": str(frame)}, summary) is None, frame
    assert thumbnail({"clip_id": "x", "frame": None}, summary) is None
    assert thumbnail({"clip_id": "x", "frame": str(inside)}, {"unit": "clip", "config": {}}) is None
    assert thumbnail({"clip_id": "x", "frame": str(inside)}, summary) is not None


def test_whole_video_thumbnails_open_only_local_regular_files(tmp_path: Path) -> None:
    """A separate process: a FIFO that was opened would block it (the subprocess timeout ends it), not the suite."""
    real = write_video(tmp_path / "real.mp4", frames=9, seed=1)
    os.mkfifo(tmp_path / "fifo.mp4")
    script = textwrap.dedent(
        f"""
        import json
        from video_aesthetics.config import ScoringConfig
        from video_aesthetics.report import summarise
        from video_aesthetics.thumbnails import thumbnail
        videos = [{str(real)!r}, {str(tmp_path / "fifo.mp4")!r}, "http://127.0.0.1:9/x.mp4", "pipe:0", "/dev/zero"]
        records = [{{"video": v, "aesthetic_score": 9.0 - i}} for i, v in enumerate(videos)]
        summary = summarise(records, ScoringConfig(video_clips_key=""), top=5)
        print(json.dumps([thumbnail(entry, summary) is not None for entry in summary["best"]]))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1]) == [True, False, False, False, False]


def test_relative_video_paths_are_taken_against_video_root_as_the_scorer_takes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    videos = tmp_path / "videos"
    write_video(videos / "clip.mp4", frames=9, seed=1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "clip.mp4").write_bytes(b"a same-named file in the working folder, not a video")
    monkeypatch.chdir(elsewhere)
    records = [{"video": "clip.mp4", "aesthetic_score": 5.0}]
    rooted = summarise(records, ScoringConfig(video_clips_key="", video_root=str(videos)), top=1)
    assert rooted["config"]["video_root"] == str(videos)
    assert thumbnail(rooted["best"][0], rooted) is not None
    unrooted = summarise(records, ScoringConfig(video_clips_key=""), top=1)
    assert thumbnail(unrooted["best"][0], unrooted) is None  # the working folder's file is no video
