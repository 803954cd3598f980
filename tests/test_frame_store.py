"""Frames in an object store: listed and fetched like local ones (fsspec's in-memory store here; S3 in test_s3.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from helpers.media import write_jpeg
from video_aesthetics import frame_store
from video_aesthetics.errors import StoreAccessError
from video_aesthetics.frame_store import RemoteFrames
from video_aesthetics.frames import PreprocessConfig, is_readable, list_frames, load_frame


def test_remote_frames_are_listed_and_read_like_local_ones(tmp_path: Path) -> None:
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


class _FaultyFileSystem(MemoryFileSystem):
    """An in-memory store whose reads of chosen paths fail as a store's client fails them."""

    protocol = "faulty"
    failures: ClassVar[dict[str, BaseException]] = {}

    @classmethod
    def _strip_protocol(cls, path):
        text = str(path)
        return super()._strip_protocol("memory://" + text[len("faulty://") :] if text.startswith("faulty://") else text)

    def ls(self, path, detail=True, **kwargs):
        self._fail(path)
        return super().ls(path, detail=detail, **kwargs)

    def cat_file(self, path, start=None, end=None, **kwargs):
        self._fail(path)
        return super().cat_file(path, start=start, end=end, **kwargs)

    def _fail(self, path: str) -> None:
        error = self.failures.get(self._strip_protocol(path).lstrip("/"))
        if error is not None:
            raise error


class _ServerError(Exception):
    """As botocore's ClientError carries it: the store's own code in ``response``."""

    def __init__(self, code: str) -> None:
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}}


# Every kind of failure that is the store's, not one object's: each fails the run.
STORE_FAILURES = {
    "denied": PermissionError(13, "Access Denied"),
    "refused": ConnectionRefusedError(111, "Connection refused"),
    "timeout": TimeoutError("read timed out"),
    "io": OSError(5, "Internal Error"),
    "expired": _ServerError("ExpiredToken"),
    "throttled": _ServerError("SlowDown"),
}


@pytest.fixture
def faulty(tmp_path: Path):
    fsspec.register_implementation("faulty", _FaultyFileSystem, clobber=True)
    root = f"faulty://frames-{os.getpid()}-{id(tmp_path)}"
    fs = _FaultyFileSystem()
    for index in range(3):
        local = write_jpeg(tmp_path / f"frame_{index}.jpg", seed=index)
        fs.pipe_file(f"{root}/v/v_0/img/frame_{index}.jpg", local.read_bytes())
    _FaultyFileSystem.failures = {}
    yield root, fs
    _FaultyFileSystem.failures = {}


@pytest.mark.parametrize("kind", sorted(STORE_FAILURES))
def test_a_store_failure_is_an_access_error_never_an_unreadable_frame(faulty, kind: str) -> None:
    root, fs = faulty
    store = RemoteFrames(root)
    folder = Path(root) / "v" / "v_0" / "img"
    listed = store.list(folder)
    error = STORE_FAILURES[kind]
    _FaultyFileSystem.failures = {listed[1].as_posix().lstrip("/"): error}
    with pytest.raises(StoreAccessError, match=rf"figure_root {root}: the store failed to read .*frame_1\.jpg") as err:
        store.fetch(listed)
    if isinstance(error, _ServerError):
        assert f"the store said {error.response['Error']['Code']}" in str(err.value)
    assert "not a damaged frame" in str(err.value)
    _FaultyFileSystem.failures = {fs._strip_protocol(f"{root}/v/v_0/img").lstrip("/"): error}
    with pytest.raises(StoreAccessError, match="the store failed to list"):
        store.list(folder)


@pytest.mark.parametrize("error", [FileNotFoundError(2, "No such key"), IsADirectoryError(21, "a folder")], ids=str)
def test_a_missing_object_is_a_missing_frame_not_a_store_failure(faulty, error: OSError) -> None:
    root, fs = faulty
    store = RemoteFrames(root)
    folder = Path(root) / "v" / "v_0" / "img"
    listed = store.list(folder)
    _FaultyFileSystem.failures = {listed[0].as_posix().lstrip("/"): error}
    fetched = store.fetch(listed)
    assert fetched[0].data is None and all(f.data is not None for f in fetched[1:])
    assert not is_readable(fetched[0]) and all(is_readable(f) for f in fetched[1:])
    _FaultyFileSystem.failures = {fs._strip_protocol(f"{root}/v/v_0/img").lstrip("/"): FileNotFoundError(2, "gone")}
    assert store.list(folder) == []
