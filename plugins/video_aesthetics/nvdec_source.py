"""What PyNvVideoCodec's own FFmpeg may open: MP4/MOV files alone, checked, and read through /proc/self/fd.

The file is opened as every video is (``video.open_regular``: once, without blocking, checked on the
descriptor); only the MP4 restriction is NVDEC's own. NvdecError lives here, in the lowest of the
NVDEC modules (this one, nvdec_reader, nvdec, device_videos), so that each of them can raise it;
imports point from these modules to video.py, never back.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from video_aesthetics import video
from video_aesthetics.video import UnsafeVideoError, open_regular

# ISO base media (MP4, MOV, M4V...): a box whose type is "ftyp" starts the file.
_MP4_BRAND = b"ftyp"


class NvdecError(RuntimeError):
    """NVDEC could not give a video's frames: no PyNvVideoCodec, an unsupported codec, a damaged file, a misnumbered frame."""


def open_mp4(path: Path | str) -> int:
    """An open descriptor of ``path``'s file, checked: the only way a video reaches PyNvVideoCodec's FFmpeg.

    PyNvVideoCodec's demuxer probes every container FFmpeg knows, playlists among them (HLS, DASH,
    concat), which open further files and URLs: the PyAV path allows container demuxers only
    (video.DEMUXERS), and this one cannot be told to. So NVDEC takes only MP4/MOV files, whose first
    box no playlist can begin with, and reads them through /proc/self/fd (``fd_path``): the file
    checked here (``video.open_regular``: a regular file, opened once without blocking) is the file
    decoded, even if the path is replaced meanwhile. Anything else (a FIFO, device, socket or folder
    too) raises NvdecError, and the video is decoded by PyAV under its rules. The caller closes the descriptor,
    and only once the decoder reading it has moved on (it may open the name again to seek back).
    """
    try:
        fd = open_regular(path)  # the PyAV path's own opening: without blocking, fstat, /proc/self/fd
    except UnsafeVideoError as err:
        raise NvdecError(str(err)) from err
    try:
        if os.pread(fd, 8, 0)[4:8] != _MP4_BRAND:
            raise NvdecError(f"{path} is not an MP4/MOV file (NVDEC takes those alone); PyAV decodes it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def pinned_mp4(path: Path | str) -> contextlib.AbstractContextManager[str]:
    """``open_mp4``'s file by its /proc name, for as long as the block runs."""
    return video.pinned(path, open_mp4)
