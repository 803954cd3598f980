"""video.probe and video.read_frames against real encoded videos, checked against a straight decode."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from helpers.media import decode_rgb, picture, write_tone, write_video
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
    path = write_tone(tmp_path / "tone.wav")
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


# --- The file checked is the file decoded: one opening, checked on the descriptor -------------------------------------


def fds_open() -> int:
    return len(os.listdir("/proc/self/fd"))


def finishes(call: Callable[[], Any], fifos: Sequence[Path] = (), limit: float = 120) -> Any:
    """``call()``'s result, or its exception raised here; a call still blocked after ``limit`` s fails the test.

    A guard, not a timing: an opening that waits for a FIFO's writer would wait forever, so the
    test's own thread opens the writing end of each of ``fifos`` to release it, and then fails.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as err:  # noqa: BLE001 - handed back to the test's thread, raised there
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        for fifo in fifos:
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(30)
        pytest.fail(f"still blocked after {limit} s: a FIFO was opened and waited on")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def frames_of(container: av.container.InputContainer) -> list[np.ndarray]:
    return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def same_frames(got: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> bool:
    return len(got) == len(reference) and all(np.array_equal(a, b) for a, b in zip(got, reference, strict=True))


def put_in_place(kind: str, path: Path, elsewhere: Path) -> None:
    """Replace ``path`` (atomically) by a thing of ``kind``; ``elsewhere`` is a video outside its folder."""
    spare = path.with_name(path.name + ".new")
    if kind == "fifo":
        os.mkfifo(spare)
    elif kind == "folder":
        spare.mkdir()
        os.remove(path)  # a folder cannot be renamed over a file
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(spare))
        sock.close()
    elif kind == "device":
        os.symlink("/dev/zero", spare)
    elif kind == "link out":
        os.symlink(elsewhere, spare)
    else:
        raise AssertionError(kind)
    os.replace(spare, path)


SWAPS = ["fifo", "folder", "socket", "device", "link out"]


@pytest.fixture
def inside_and_out(tmp_path: Path) -> tuple[Path, Path, list[np.ndarray]]:
    """``root/race.mp4``, a link to ``root/inside.mp4``; ``outside/secret.mp4``, another video (other size)."""
    root = tmp_path / "root"
    inside = write_video(root / "inside.mp4", frames=6, seed=1)
    secret = write_video(tmp_path / "outside" / "secret.mp4", frames=9, seed=2, width=64, height=48)
    os.symlink("inside.mp4", root / "race.mp4")
    return root / "race.mp4", secret, decode_all(inside)


@pytest.mark.parametrize("kind", SWAPS)
def test_a_path_swapped_after_the_check_still_decodes_the_file_checked(inside_and_out, kind: str) -> None:
    race, secret, reference = inside_and_out
    before = fds_open()
    fd = video.open_video_file(race)  # the check: the descriptor is a regular file
    try:
        real = os.readlink(video.fd_path(fd))
        put_in_place(kind, race, secret)  # the writer's move, between the check and FFmpeg's opening
        fifos = [race] if kind == "fifo" else []
        with finishes(lambda: video.open_container(fd, race), fifos) as container:
            assert same_frames(frames_of(container), reference)
        # The descriptor names the file checked, inside the root, whatever the name now is.
        assert real == os.readlink(video.fd_path(fd)) == str(race.parent / "inside.mp4")
    finally:
        os.close(fd)
    assert fds_open() == before


@pytest.mark.parametrize("kind", SWAPS)
def test_what_the_path_names_at_the_opening_is_what_is_checked(inside_and_out, kind: str) -> None:
    """Swapped before the opening, the path is refused (not waited on), or decoded as what it now is."""
    race, secret, _ = inside_and_out
    put_in_place(kind, race, secret)
    before = fds_open()
    fifos = [race] if kind == "fifo" else []
    if kind == "link out":
        # No containment for whole videos: a link is followed, and the file it leads to is decoded (see SECURITY.md).
        assert finishes(lambda: video.probe(race), fifos).frames == 9
    else:
        for call in (lambda: video.probe(race), lambda: video.read_frames(race, [0])):
            with pytest.raises(video.UnsafeVideoError, match="not a regular file"):
                finishes(call, fifos)
    assert fds_open() == before


def test_the_descriptor_lives_as_long_as_the_container(inside_and_out) -> None:
    race, secret, reference = inside_and_out
    inside = race.parent / "inside.mp4"
    before = fds_open()
    with video.open_local(race) as container:
        # The file checked stays open while FFmpeg may seek in it, even once its names are gone.
        os.remove(race)
        os.replace(secret, inside)
        pinned = [name for name in os.listdir("/proc/self/fd") if "inside.mp4" in readlink_or_empty(name)]
        assert pinned, "the checked descriptor is not open during the block"
        assert same_frames(frames_of(container), reference)
        container.seek(0)
        assert same_frames(frames_of(container), reference)
    assert fds_open() == before
    assert not [name for name in os.listdir("/proc/self/fd") if "inside.mp4" in readlink_or_empty(name)]


def readlink_or_empty(name: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{name}")
    except OSError:
        return ""


def test_no_descriptor_is_left_open(tmp_path: Path, long_video, listener) -> None:
    path, _ = long_video
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01 not a video " * 64)
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    (tmp_path / "folder.mp4").mkdir()
    tone = write_tone(tmp_path / "tone.wav")
    video.read_frames(path, [0])  # PyAV's first use may open what it keeps for good
    before = fds_open()
    for _ in range(3):
        video.probe(path)
        video.probe_with_clock(path)
        video.read_frames(path, [0, 100, 239, 10_000])
        for bad in (junk, fifo, tmp_path / "folder.mp4", tmp_path / "absent.mp4", tone, "pipe:0", "/dev/null"):
            with pytest.raises((av.error.FFmpegError, ValueError, OSError)):
                finishes(lambda bad=bad: video.read_frames(bad, [0]), [fifo])
        with pytest.raises(ValueError, match="negative"):
            video.read_frames(path, [-1])
        with video.open_local(path) as container:
            next(container.decode(video=0))
    assert fds_open() == before


def test_errors_name_the_video_not_the_descriptor(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01 not a video " * 64)
    with pytest.raises(av.error.FFmpegError) as caught:
        video.probe(junk)
    assert caught.value.filename == str(junk) and "/proc/self/fd" not in str(caught.value)


def test_a_path_swapped_back_and_forth_is_scored_from_the_file_or_refused(tmp_path: Path) -> None:
    """The security review's race: a writer swaps the name between a video and a FIFO as fast as it can.

    Every read either gives the video's frames or is refused; none waits on the FIFO, and none
    reads anything else.
    """
    ok = write_video(tmp_path / "ok.mp4", frames=6, seed=3)
    reference = decode_all(ok)
    fifo = tmp_path / "fifo.mp4"
    os.mkfifo(fifo)
    race = tmp_path / "race.mp4"
    os.symlink("ok.mp4", race)
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            for target in ("ok.mp4", "fifo.mp4"):
                spare = tmp_path / ".t"
                with contextlib.suppress(FileNotFoundError):
                    os.remove(spare)
                os.symlink(target, spare)
                os.replace(spare, race)

    def reads() -> tuple[int, int]:
        scored = refused = 0
        for _ in range(300):
            try:
                images = video.read_frames(race, [0, 5])
            except video.UnsafeVideoError:
                refused += 1
                continue
            assert same_frames([np.asarray(image) for image in images], [reference[0], reference[5]])
            scored += 1
        return scored, refused

    swapper = threading.Thread(target=swap, daemon=True)
    before = fds_open()
    swapper.start()
    try:
        scored, refused = finishes(reads, [fifo])
    finally:
        stop.set()
        swapper.join()
    assert scored + refused == 300
    assert fds_open() == before


@pytest.mark.parametrize(
    ("name", "codec", "muxer"),
    [
        ("v.ts", "libx264", "mpegts"),
        ("v.mpg", "mpeg2video", "mpeg"),
        ("v.h264", "libx264", "h264"),
        ("v.m2v", "mpeg2video", "mpeg2video"),
        ("v.y4m", "rawvideo", "yuv4mpegpipe"),
        ("v.ivf", "libvpx", "ivf"),
        ("v.nut", "mpeg4", "nut"),
        ("v.flv", "flv", "flv"),
    ],
)
def test_formats_are_told_apart_without_the_file_name(tmp_path: Path, name: str, codec: str, muxer: str) -> None:
    """FFmpeg reads /proc/self/fd/N, a name without an extension: it picks the same demuxer and frames as by name."""
    path = tmp_path / name
    with av.open(str(path), mode="w", format=muxer) as container:
        stream = container.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for index in range(8):
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture(index, 96, 64), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)

    def seen(container: av.container.InputContainer) -> tuple[Any, ...]:
        stream = container.streams.video[0]
        return container.format.name, container.duration, stream.frames, stream.duration, stream.average_rate

    with av.open(str(path), container_options={"format_whitelist": video.DEMUXERS}) as by_name:
        expected = seen(by_name), frames_of(by_name)
    with video.open_local(path) as container:
        assert seen(container) == expected[0]
        assert same_frames(frames_of(container), expected[1])


def test_a_pinned_video_is_read_whatever_its_name_names_later(tmp_path: Path) -> None:
    first = write_video(tmp_path / "a.mp4", frames=6, seed=1)
    other = write_video(tmp_path / "b.mp4", frames=9, seed=2)
    expected = [np.asarray(image) for image in video.read_frames(first, [0, 5])]
    with video.pinned(first) as source:
        os.replace(other, first)
        assert video.probe(source).frames == 6
        got = [np.asarray(image) for image in video.read_frames(source, [0, 5])]
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    assert video.probe(first).frames == 9
