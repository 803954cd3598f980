"""nvdec_source.py: what NVDEC's own FFmpeg may open, MP4/MOV files alone, and the very file checked."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from video_aesthetics.nvdec import make_test_video
from video_aesthetics.nvdec_source import NvdecError, open_mp4, pinned_mp4
from video_aesthetics.video import UnsafeVideoError, fd_path


def test_nvdec_reads_an_mp4_through_the_descriptor_it_checked(tmp_path: Path) -> None:
    path = make_test_video(tmp_path / "v.mp4", frames=3)
    with pinned_mp4(path) as pinned:
        assert pinned.startswith("/proc/self/fd/")
        # Replacing the path after the check changes nothing: the name refers to the file opened.
        path.rename(tmp_path / "moved.mp4")
        path.write_bytes(b"#EXTM3U\n#EXT-X-TARGETDURATION:1\nhttp://127.0.0.1:9/x.ts\n")
        assert Path(pinned).read_bytes()[4:8] == b"ftyp"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("playlist.mp4", b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:9/segment.ts\n"),
        ("concat.mp4", b"ffconcat version 1.0\nfile /etc/passwd\n"),
        ("dash.mp4", b'<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011"></MPD>'),
        ("short.mp4", b"ftyp"),
        ("empty.mp4", b""),
    ],
)
def test_anything_but_an_mp4_is_left_to_pyav(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(NvdecError, match="is not an MP4/MOV file"), pinned_mp4(path):
        pass


def test_a_fifo_or_folder_never_reaches_nvdec(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(NvdecError, match="not a regular file"), pinned_mp4(fifo):
        pass
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(NvdecError, match="not a regular file"), pinned_mp4(tmp_path / "folder.mp4"):
        pass


@pytest.mark.parametrize("kind", ["fifo", "folder", "socket", "device"])
def test_nvdec_opens_as_the_pyav_path_does_and_leaves_nothing_open(tmp_path: Path, kind: str) -> None:
    """One opening for both decoders (video.open_regular): without blocking, refused on the descriptor, closed."""
    path = tmp_path / "v.mp4"
    if kind == "fifo":
        os.mkfifo(path)  # no writer: a blocking open would wait forever
    elif kind == "folder":
        path.mkdir()
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    else:
        os.symlink("/dev/zero", path)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(NvdecError, match="not a regular file") as caught, pinned_mp4(path):
        pass
    assert isinstance(caught.value.__cause__, UnsafeVideoError)
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_path_swapped_after_the_check_reaches_nvdec_as_the_file_checked(tmp_path: Path) -> None:
    path = make_test_video(tmp_path / "v.mp4", frames=3)
    original = path.read_bytes()
    before = len(os.listdir("/proc/self/fd"))
    fd = open_mp4(path)
    try:
        spare = tmp_path / "fifo"
        os.mkfifo(spare)
        os.replace(spare, path)  # a FIFO in the name's place: NVDEC's FFmpeg still opens the file checked
        assert Path(fd_path(fd)).read_bytes() == original
    finally:
        os.close(fd)
    assert len(os.listdir("/proc/self/fd")) == before
