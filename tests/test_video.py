"""video.probe and video.read_frames against real encoded videos, checked against a straight decode."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from helpers.media import decode_rgb, picture, write_video
from video_aesthetics import video


def write_gop_video(
    path: Path,
    frames: int,
    fps: Fraction | int,
    codec: str = "libx264",
    gop: int = 10,
    width: int = 96,
    height: int = 64,
) -> Path:
    """A video with a keyframe every ``gop`` frames (and B-frames for x264), so that seeking matters."""
    options = {"g": str(gop), "bf": "2"} if codec == "libx264" else {"g": str(gop)}
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(picture(index, width, height), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


decode_all = decode_rgb


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    path = write_gop_video(tmp_path_factory.mktemp("video") / "long.mp4", frames=240, fps=24)
    return path, decode_all(path)


def test_probe(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", frames=30, fps=15, width=160, height=96)
    assert video.probe(path) == video.VideoInfo(frames=30, fps=15.0, width=160, height=96)


def test_probe_ntsc_rate_and_a_container_without_frame_count(tmp_path: Path) -> None:
    ntsc = write_gop_video(tmp_path / "ntsc.mp4", frames=45, fps=Fraction(30000, 1001))
    info = video.probe(ntsc)
    assert (info.frames, info.width, info.height) == (45, 96, 64)
    assert info.fps == pytest.approx(29.97, abs=0.01)
    # WebM headers carry no frame count: it comes from the duration.
    webm = write_gop_video(tmp_path / "v.webm", frames=36, fps=12, codec="libvpx-vp9")
    assert video.probe(webm).frames == 36


def test_read_frames_matches_a_straight_decode_across_seeks(long_video) -> None:
    path, reference = long_video
    # Far apart indices (240 frames at 24 fps, keyframes every 10): these take the seeking path.
    indices = [3, 100, 101, 150, 239, 60, 200]
    images = video.read_frames(path, indices)
    assert len(images) == len(indices)
    for index, image in zip(indices, images, strict=False):
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), reference[index])


def test_read_frames_random_sets(long_video) -> None:
    path, reference = long_video
    rng = random.Random(1)
    for _ in range(15):
        indices = [rng.randrange(len(reference)) for _ in range(rng.randint(1, 5))]
        for index, image in zip(indices, video.read_frames(path, indices), strict=False):
            np.testing.assert_array_equal(np.asarray(image), reference[index])


def test_read_frames_any_order_and_repeats(long_video) -> None:
    path, reference = long_video
    indices = [180, 2, 180, 90, 2, 0]
    images = video.read_frames(path, indices)
    assert [
        int(np.argmin([np.abs(np.asarray(img, dtype=int) - ref).mean() for ref in reference])) for img in images
    ] == indices


def test_index_past_the_end_gives_the_last_frame(long_video, tmp_path: Path) -> None:
    path, reference = long_video
    late, last, way_past = video.read_frames(path, [238, 10_000, 240])
    np.testing.assert_array_equal(np.asarray(late), reference[238])
    np.testing.assert_array_equal(np.asarray(last), reference[-1])
    np.testing.assert_array_equal(np.asarray(way_past), reference[-1])
    short = write_video(tmp_path / "short.mp4", frames=5)
    np.testing.assert_array_equal(np.asarray(video.read_frames(short, [7])[0]), decode_all(short)[-1])


def test_other_containers_and_codecs(tmp_path: Path) -> None:
    for name, codec in (("v.mkv", "libx264"), ("v.webm", "libvpx-vp9"), ("v.avi", "mpeg4")):
        path = write_gop_video(tmp_path / name, frames=80, fps=25, codec=codec)
        reference = decode_all(path)
        indices = [79, 0, 55, 56]
        for index, image in zip(indices, video.read_frames(path, indices), strict=False):
            np.testing.assert_array_equal(np.asarray(image), reference[index], err_msg=f"{name} frame {index}")


def test_empty_and_negative_indices(long_video) -> None:
    path, _ = long_video
    assert video.read_frames(path, []) == []
    with pytest.raises(ValueError, match="negative"):
        video.read_frames(path, [0, -1])


def test_not_a_video_raises(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01 definitely not a video " * 64)
    with pytest.raises((av.error.FFmpegError, ValueError)):
        video.probe(junk)
    with pytest.raises((av.error.FFmpegError, ValueError)):
        video.read_frames(junk, [0])
    with pytest.raises(FileNotFoundError):
        video.read_frames(tmp_path / "absent.mp4", [0])


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(ValueError, match="no video stream"):
        video.probe(path)
    with pytest.raises(ValueError, match="no video stream"):
        video.read_frames(path, [0])


@pytest.fixture
def listener():
    """A local TCP server that only counts who connects: any connection is a network read."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)  # never answers: a reader would hang

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


@pytest.mark.parametrize(
    "scheme", ["http://127.0.0.1:{port}/x.mp4", "tcp://127.0.0.1:{port}", "pipe:0", "file:{local}"]
)
def test_urls_and_protocols_are_never_opened(tmp_path: Path, listener, scheme: str) -> None:
    port, accepted = listener
    local = write_video(tmp_path / "v.mp4", frames=4)
    target = scheme.format(port=port, local=local)
    for call in (lambda: video.probe(target), lambda: video.read_frames(target, [0])):
        with pytest.raises(video.UnsafeVideoError, match="URL or protocol"):
            call()
    assert accepted == []


@pytest.mark.parametrize(
    ("name", "content"),
    [
        (
            "list.m3u8",
            "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:{port}/seg.ts\n#EXT-X-ENDLIST\n",
        ),
        ("list.mp4", "#EXTM3U\n#EXTINF:10,\nhttp://127.0.0.1:{port}/seg.ts\n"),
        ("list.mp4", "ffconcat version 1.0\nfile v.mp4\n"),
        ("list.mkv", "ffconcat version 1.0\nfile http://127.0.0.1:{port}/x.mp4\n"),
    ],
)
def test_local_playlists_and_lists_open_nothing_else(tmp_path: Path, listener, name: str, content: str) -> None:
    port, accepted = listener
    write_video(tmp_path / "v.mp4", frames=4)
    path = tmp_path / name
    path.write_text(content.format(port=port))
    with pytest.raises((av.error.FFmpegError, ValueError)):
        video.probe(path)
    assert accepted == []


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "socket"])
def test_files_that_are_not_regular_are_refused_at_once(tmp_path: Path, kind: str) -> None:
    import os
    import socket

    path = tmp_path / "v.mp4"
    if kind == "fifo":
        os.mkfifo(path)  # opening it would wait for a writer forever
    elif kind == "device":
        path = Path("/dev/zero")
    elif kind == "folder":
        path.mkdir()
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
    with pytest.raises(video.UnsafeVideoError, match="not a regular file"):
        video.probe(path)
    with pytest.raises(video.UnsafeVideoError):
        video.read_frames(path, [0])


def test_odd_but_local_names_are_opened_as_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_video(tmp_path / "v.mp4", frames=4)
    for name in ("a:b.mp4", "http:x.mp4", "pipe:0", "with space|pipe.mp4", "-dash.mp4", "q?x=1#y.mp4"):
        path = tmp_path / name
        path.write_bytes(source.read_bytes())
        assert video.probe(path).frames == 4, name
    monkeypatch.chdir(tmp_path)
    # Relative names: a scheme-like start is refused, a "./" in front makes it a plain local file.
    assert video.probe("a:b.mp4").frames == 4
    assert video.probe("./http:x.mp4").frames == 4
    with pytest.raises(video.UnsafeVideoError):
        video.probe("http:x.mp4")


def test_probe_with_clock_numbers_frames_as_read_frames_does(long_video) -> None:
    path, reference = long_video
    info, clock = video.probe_with_clock(path)
    assert info == video.probe(path) and clock.rate == 24
    # B-frames decode out of order: the clock numbers each frame by its presentation time.
    with av.open(str(path)) as container:
        numbers = [clock.number(frame.pts) for frame in container.decode(video=0)]
    assert numbers == list(range(len(reference)))
    ntsc = video.probe_with_clock(write_gop_video(Path(path).parent / "ntsc.mp4", 12, Fraction(30000, 1001)))[1]
    assert ntsc.rate == Fraction(30000, 1001) and ntsc.number(ntsc.start) == 0
