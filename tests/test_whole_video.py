"""Whole-video scoring (video_clips_key None or ""): load_num frames spread over the video, decoded with PyAV."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers.cli import score_args
from helpers.media import decode_rgb, read_jsonl, write_jsonl, write_video
from helpers.reference import reference_clip_score
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError
from video_aesthetics.runner import score_file
from video_aesthetics.scoring import Scorer, iter_results


def _config(model_args: dict[str, str], **changes: object) -> ScoringConfig:
    return ScoringConfig(**model_args, video_clips_key="", num_workers=0, device="cpu", **changes)


def _decoded_frames(path: Path, indices: list[int], folder: Path) -> list[Path]:
    """The frames at ``indices``, decoded independently (every frame, in order) and saved losslessly."""
    frames = decode_rgb(path)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in indices:
        paths.append(folder / f"{index}.png")
        Image.fromarray(frames[index]).save(paths[-1])
    return paths


@pytest.mark.parametrize(("suffix", "codec"), [("mp4", "libx264"), ("mkv", "libx264"), ("webm", "libvpx-vp9")])
def test_score_is_the_mean_over_frames_spread_over_the_whole_video(
    tmp_path: Path, model_args: dict, scorer: Scorer, reference: torch.nn.Module, suffix: str, codec: str
) -> None:
    # Matroska/WebM headers carry no frame count: the frames are counted another way there.
    video = write_video(tmp_path / f"clip.{suffix}", frames=25, seed=4, codec=codec)
    config = _config(model_args, load_num=3, frame_scores=True)
    [result] = list(iter_results([{"video": str(video)}], config, scorer))
    # 25 frames, load_num 3: the first, the middle and the last.
    frames = _decoded_frames(video, [0, 12, 24], tmp_path / "expected")
    head = Path(model_args["mlp_checkpoint"])
    assert result.error is None
    assert result.score == pytest.approx(reference_clip_score(reference, head, frames), abs=1e-5)
    assert result.frame_scores == pytest.approx([reference_clip_score(reference, head, [f]) for f in frames], abs=1e-5)


def test_a_video_shorter_than_load_num_uses_every_frame(
    tmp_path: Path, model_args: dict, scorer: Scorer, reference: torch.nn.Module
) -> None:
    video = write_video(tmp_path / "short.mp4", frames=2, seed=9)
    [result] = list(iter_results([{"video": [str(video)]}], _config(model_args, load_num=5), scorer))
    frames = _decoded_frames(video, [0, 1], tmp_path / "expected")
    assert len(result.frame_scores) == 2
    expected = reference_clip_score(reference, Path(model_args["mlp_checkpoint"]), frames)
    assert result.score == pytest.approx(expected, abs=1e-5)


def test_unreadable_videos_get_null_and_an_error_and_nothing_is_lost(tmp_path: Path, model_args: dict) -> None:
    good = write_video(tmp_path / "good.mp4", frames=6, seed=1)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "folder.mp4").mkdir()
    records = [
        {"video": [str(good)], "id": 1, "meta": {"k": [1, None]}},
        {"video": str(junk), "id": 2},
        {"video": str(tmp_path / "absent.mp4"), "id": 3},
        {"video": str(truncated), "id": 4},
        {"video": str(tmp_path / "folder.mp4"), "id": 5},
        {"caption": "no video: passes through", "id": 6},
    ]
    source, out = write_jsonl(tmp_path / "in.jsonl", records), tmp_path / "out.jsonl"
    stats = score_file(source, out, _config(model_args))
    got = read_jsonl(out)
    assert isinstance(got[0]["aesthetic_score"], float) and "aesthetic_error" not in got[0]
    for record in got[1:5]:
        assert record["aesthetic_score"] is None
        assert record["aesthetic_error"] == "unreadable_video"
    assert got[5] == records[5]
    for before, after in zip(records, got, strict=False):
        assert {k: v for k, v in after.items() if not k.startswith("aesthetic_")} == before
    assert (stats.records, stats.clips, stats.scored, stats.failed, stats.passthrough) == (6, 5, 1, 4, 1)
    assert stats.errors == {"unreadable_video": 4}


def test_cli_with_an_empty_clips_key_scores_whole_videos(tmp_path: Path, model_args: dict) -> None:
    records = [{"video": [str(write_video(tmp_path / f"v{i}.mp4", frames=8, seed=i))], "i": i} for i in range(3)]
    records.append({"video": str(tmp_path / "missing.mp4"), "i": 3})
    source = write_jsonl(tmp_path / "in.jsonl", records)
    expected = tmp_path / "expected.jsonl"
    score_file(source, expected, _config(model_args, load_num=3))
    out = tmp_path / "out.jsonl"
    # Decoding happens in worker processes here, in the main process for the expected output.
    command = [
        sys.executable,
        "-m",
        "video_aesthetics",
        *score_args(source, out, model_args, video_clips_key="", num_workers=2),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == expected.read_bytes()
    got = read_jsonl(out)
    assert all(isinstance(r["aesthetic_score"], float) for r in got[:3])
    assert (got[3]["aesthetic_score"], got[3]["aesthetic_error"]) == (None, "unreadable_video")
    assert '"clips": 4, "scored": 3, "failed": 1' in done.stdout


def test_relative_video_paths_are_taken_against_video_root(tmp_path: Path, model_args: dict) -> None:
    """--video-root (the DAG: the input file's folder) places relative paths; absolute ones stay as they are."""
    videos = tmp_path / "data" / "videos"
    absolute = str(write_video(videos / "a.mp4", frames=8, seed=1))
    write_video(videos / "b.mp4", frames=8, seed=2)
    records = [{"video": absolute}, {"video": "videos/b.mp4"}, {"video": ["./videos/a.mp4"]}]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def score(out: Path, **options: object) -> list[dict]:
        command = [sys.executable, "-m", "video_aesthetics", *score_args(source, out, model_args, **options)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=elsewhere, timeout=300)
        assert done.returncode == 0, done.stderr
        return read_jsonl(out)

    placed = score(tmp_path / "placed.jsonl", video_clips_key="", num_workers=0, video_root=tmp_path / "data")
    assert [r["video"] for r in placed] == [r["video"] for r in records]  # the records keep their own paths
    assert all(isinstance(r["aesthetic_score"], float) for r in placed)
    assert placed[2]["aesthetic_score"] == placed[0]["aesthetic_score"]  # one file by either path
    # Without it, relative paths are taken as they are: against the current folder, where they are not.
    unplaced = score(tmp_path / "unplaced.jsonl", video_clips_key="", num_workers=0)
    assert unplaced[0]["aesthetic_score"] == placed[0]["aesthetic_score"]
    assert [r.get("aesthetic_error") for r in unplaced[1:]] == ["unreadable_video"] * 2
    with pytest.raises(ConfigError, match="video_root must be a folder or None"):
        _config(model_args, video_root=3)


def test_hostile_video_fields_are_marked_per_record_and_nothing_else_is_opened(
    tmp_path: Path, model_args: dict
) -> None:
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    port = server.getsockname()[1]
    good = write_video(tmp_path / "good.mp4", frames=6, seed=1)
    os.mkfifo(tmp_path / "fifo.mp4")
    playlist = tmp_path / "list.mp4"
    playlist.write_text(f"#EXTM3U\n#EXTINF:10,\nhttp://127.0.0.1:{port}/seg.ts\n")
    records = [
        {"video": str(good)},
        {"video": f"http://127.0.0.1:{port}/x.mp4"},
        {"video": ["pipe:0"]},
        {"video": f"tcp://127.0.0.1:{port}"},
        {"video": str(tmp_path / "fifo.mp4")},
        {"video": "/dev/urandom"},
        {"video": [str(good), str(good)]},
        {"video": str(playlist)},
        {"video": None, "note": "passes through"},
    ]
    source, out = write_jsonl(tmp_path / "in.jsonl", records), tmp_path / "out.jsonl"
    stats = score_file(source, out, _config(model_args))
    got = read_jsonl(out)
    assert [r.get("aesthetic_error") for r in got] == [
        None,
        "unsafe_path",
        "unsafe_path",
        "unsafe_path",
        "unsafe_path",
        "unsafe_path",
        "invalid_video",
        "unreadable_video",
        None,
    ]
    assert isinstance(got[0]["aesthetic_score"], float) and "aesthetic_score" not in got[8]
    assert (stats.records, stats.clips, stats.scored, stats.failed, stats.passthrough) == (9, 8, 1, 7, 1)
    with pytest.raises(BlockingIOError):
        server.accept()  # nobody connected
    server.close()
