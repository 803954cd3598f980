"""Frames in an object store: listed and fetched like local ones (fsspec's in-memory store here; S3 in test_s3.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from helpers.media import write_jpeg
from video_aesthetics import frame_store
from video_aesthetics.frame_store import RemoteFrames
from video_aesthetics.frames import PreprocessConfig, is_readable, list_frames, load_frame


def test_remote_frames_are_listed_and_read_like_local_ones(tmp_path: Path) -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    local = tmp_path / "v" / "v_0" / "img"
    names = ["frame_10.jpg", "frame_2.jpg", "._frame_1.jpg", "notes.txt"]
    for index, name in enumerate(names[:3]):
        write_jpeg(local / name, seed=index)
    (local / "notes.txt").write_text("not a frame")
    root = f"memory://frames-{os.getpid()}-{id(tmp_path)}"
    fs = MemoryFileSystem()
    for name in names:
        fs.pipe_file(f"{root}/v/v_0/img/{name}", (local / name).read_bytes())
    store = RemoteFrames(root)
    listed = store.list(Path(root) / "v" / "v_0" / "img")
    assert [p.name for p in listed] == [p.name for p in list_frames(local)] == ["frame_2.jpg", "frame_10.jpg"]
    assert store.list(Path(root) / "v" / "absent" / "img") == []
    pp = PreprocessConfig()
    fetched = store.fetch(listed)
    assert all(np.array_equal(load_frame(f, pp), load_frame(local / f.name, pp)) for f in fetched)
    assert all(is_readable(f) for f in fetched)
    huge = f"{root}/v/v_0/img/frame_99.jpg"
    fs.pipe_file(huge, b"\xff" * 64)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(frame_store, "MAX_REMOTE_FRAME_BYTES", 32)
        [refused] = store.fetch([fs._strip_protocol(huge)])
    assert refused.data is None and "larger than" in str(refused.error)
