"""Video files through PyAV: how many frames they hold, and decoding chosen frames by index.

Only local regular files are opened, each once: ``open_local`` opens the record's path itself
(without blocking), checks the open descriptor, and hands FFmpeg that very file by its
``/proc/self/fd`` name, so the file checked is the file decoded even if the path is replaced
meanwhile. FFmpeg may use the file protocol alone and only container demuxers: no URL, protocol
(``http:``, ``tcp:``, ``pipe:``, ``concat:``), playlist or list file can make it read the network or
another file, and no FIFO or device can make it wait forever.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image

from video_aesthetics.files import looks_like_url

log = logging.getLogger(__name__)

# Demuxers of video (and, so that audio-only files say so, audio) containers. Left out: those
# that open further files or URLs (hls, dash, concat, tee, image2 patterns...).
DEMUXERS = (
    "mov,matroska,webm,avi,flv,mpegts,mpeg,mpegvideo,ogg,asf,mxf,gif,h264,hevc,m4v,ivf,obu,av1,"
    "yuv4mpegpipe,dv,nut,rm,wtv,mjpeg,wav,mp3,flac,aac"
)
_OPEN_OPTIONS = {"protocol_whitelist": "file", "format_whitelist": DEMUXERS}

# swscale's exact C path for YUV to RGB: its SIMD paths round differently on different CPUs.
BITEXACT = "BITEXACT"
# Seeking costs a keyframe decode; below this gap decoding straight on is cheaper.
_SEEK_GAP_SECONDS = 2.0


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float
    width: int
    height: int


@dataclass(frozen=True)
class FrameClock:
    """How read_frames numbers a stream's frames: presentation timestamps at the average rate, from the start.

    Other decoders (nvdec_reader.py) check the frames they return against it, so that a frame index means
    the same picture on every decode path.
    """

    rate: Fraction
    time_base: Fraction
    start: int

    def number(self, pts: int) -> int:
        """The index of the frame presented at ``pts`` (in the stream's time base)."""
        return round(float((pts - self.start) * self.time_base * self.rate))


def probe(path: Path | str) -> VideoInfo:
    """Frame count, rate and size of the first video stream.

    Containers such as MKV and WebM carry no frame count: it is estimated from the duration
    (read_frames tolerates an estimate one too high), and counted by decoding only as a last resort.
    """
    return probe_with_clock(path)[0]


def probe_with_clock(path: Path | str) -> tuple[VideoInfo, FrameClock]:
    """``probe``'s answer and the stream's FrameClock, from one opening of the file."""
    with open_local(path) as container:
        stream = _video_stream(container, path)
        clock = _clock(stream)
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        frames = int(stream.frames or 0)
        if frames <= 0 and stream.duration and stream.time_base:
            frames = round(float(stream.duration * stream.time_base) * fps)
        if frames <= 0 and container.duration:
            frames = round(container.duration / av.time_base * fps)
        if frames <= 0:
            frames = sum(1 for _ in container.decode(stream))
        return VideoInfo(frames, fps, stream.codec_context.width, stream.codec_context.height), clock


def read_frames(path: Path | str, indices: Sequence[int]) -> list[Image.Image]:
    """The frames at ``indices`` (0-based, any order, repeats allowed) as RGB images, in the order asked.

    Frame numbers are derived from presentation timestamps at the stream's average rate, so they
    agree with how frame_start/frame_end are counted upstream for constant-rate video. An index past
    the end yields the last frame decoded.
    """
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return []
    if wanted[0] < 0:
        raise ValueError(f"frame index {wanted[0]} is negative")
    found: dict[int, Image.Image] = {}
    with open_local(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        clock = _clock(stream)
        rate, time_base, start = clock.rate, clock.time_base, clock.start
        gap = _SEEK_GAP_SECONDS * float(rate)
        position, latest, pending = -1, None, list(wanted)
        while pending:
            if pending[0] - position > gap:
                container.seek(int(start + pending[0] / rate / time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                position = position + 1 if frame.pts is None else clock.number(frame.pts)
                latest = frame
                if position < pending[0]:
                    continue
                image = frame.to_image(interpolation=BITEXACT)
                while pending and pending[0] <= position:
                    found[pending.pop(0)] = image
                if not pending or pending[0] - position > gap:
                    break
            else:
                # End of stream: what is still wanted lies past the last frame.
                if latest is not None:
                    image = latest.to_image(interpolation=BITEXACT)
                    found.update((index, image) for index in pending)
                break
    missing = [i for i in wanted if found.get(i) is None]
    if missing:
        raise ValueError(f"{path}: no decodable frame at index {missing[0]}")
    return [found[int(i)] for i in indices]


class UnsafeVideoError(ValueError):
    """A video named by a URL, a protocol or a file that is not a regular file."""


# O_NONBLOCK: opening a FIFO never waits for a writer (nor a device for its carrier); O_NOCTTY: a
# terminal put in a video's place never becomes the process's controlling terminal.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def fd_path(fd: int) -> str:
    """The name under which FFmpeg opens the file open at ``fd``: that file, whatever its path names now (Linux)."""
    return f"/proc/self/fd/{fd}"


def open_regular(path: Path | str) -> int:
    """An open descriptor of ``path``'s file, opened once and checked on the descriptor to be a regular file.

    The one way a video file is opened, by PyAV (``open_local``) and NVDEC (``nvdec_source.open_mp4``)
    alike: what is checked is the descriptor, not the name, and decoders read it through ``fd_path``,
    so a path replaced by a FIFO, device, socket, folder or another file after this check changes
    nothing. Opened without blocking, so a FIFO swapped in is refused at once rather than waited on.
    Raises UnsafeVideoError for anything but a regular file and where /proc/self/fd is missing, and
    OSError (FileNotFoundError...) when it cannot be opened. The caller closes the descriptor, and
    only once no decoder may open ``fd_path`` again.
    """
    try:
        fd = os.open(os.fspath(path), _OPEN_FLAGS)
    except OSError as err:
        if err.errno == errno.ENXIO:  # a Unix socket (or a device with nothing behind it)
            raise UnsafeVideoError(f"{path} is not a regular file (a socket or a device); name a video file") from err
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeVideoError(
                f"{path} is not a regular file (a FIFO, device, socket or folder); name a video file"
            )
        if not os.path.exists(fd_path(fd)):
            raise UnsafeVideoError(f"{fd_path(fd)} does not exist: videos are read through /proc (Linux)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_video_file(path: Path | str) -> int:
    """``open_regular``'s descriptor of ``path``, a local file's name: a URL or protocol name is refused unopened."""
    text = os.fspath(path)
    if looks_like_url(text) or "\x00" in text:
        raise UnsafeVideoError(f"{text!r} is a URL or protocol, not a local video file")
    return open_regular(text)


def open_container(fd: int, path: Path | str) -> av.container.InputContainer:
    """The file open at ``fd`` (``open_video_file``'s) opened by FFmpeg under the file protocol and container demuxers alone.

    FFmpeg opens ``fd_path(fd)``: the descriptor's own file, never what ``path`` names by now. Its
    errors name ``path``. ``fd`` must stay open until the container is closed.
    """
    try:
        return av.open("file:" + fd_path(fd), container_options=dict(_OPEN_OPTIONS))
    except av.error.FFmpegError as err:
        # PyAV's error names the file it was given, /proc/self/fd/N: it names the video instead.
        err.args = (*err.args[:2], os.fspath(path), *err.args[3:])
        raise


@contextlib.contextmanager
def open_local(path: Path | str) -> Iterator[av.container.InputContainer]:
    """``path`` opened by FFmpeg as a local regular file and nothing else, for as long as the block runs.

    The file is opened once (``open_video_file``) and FFmpeg reads that descriptor's file; the
    descriptor is closed with the container. Raises UnsafeVideoError for URLs, protocol names and
    non-regular files (FIFOs, devices, sockets, folders), FileNotFoundError when it does not exist,
    and PyAV's errors when it is no video container.
    """
    fd = open_video_file(path)
    try:
        with open_container(fd, path) as container:
            yield container
    finally:
        os.close(fd)


@contextlib.contextmanager
def pinned(path: Path | str, opener: Callable[[Path | str], int] | None = None) -> Iterator[str]:
    """``path`` opened and checked once (by ``opener``: ``open_video_file`` by default), named by its
    descriptor while the block runs.

    Every opening of the name yielded (probe, then read_frames) reads that one file, whatever
    ``path`` names by then.
    """
    fd = (opener or open_video_file)(path)
    try:
        yield fd_path(fd)
    finally:
        os.close(fd)


def _clock(stream: av.video.stream.VideoStream) -> FrameClock:
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    return FrameClock(Fraction(rate), Fraction(stream.time_base or Fraction(1, 1000)), int(stream.start_time or 0))


def _video_stream(container: av.container.InputContainer, path: Path | str) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise ValueError(f"{path} has no video stream")
    return container.streams.video[0]
