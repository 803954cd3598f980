"""Whole videos decoded on the GPU by NVDEC (PyNvVideoCodec): the sampled frames only, seeked to, not all decoded.

Where it runs: CUDA cannot be used in forked DataLoader workers, so on the device decode paths the
workers only probe a video with PyAV and pick its frame indices (``video_request``: exactly the
indices the PyAV path picks), and hand the path and indices over; the scoring process decodes them
in DeviceDecoder's thread (``device_videos.place_videos``), on its CUDA stream, and resizes them as
it resizes JPEGs. ``videos_on_device`` makes that choice once per run, and logs it: without
PyNvVideoCodec, a CUDA device or a working NVDEC (``nvdec_error``), the workers decode with PyAV as
they always did.

Frame numbers: PyNvVideoCodec's SimpleDecoder counts frames in presentation order from the keyframe
it seeks to, which is the PyAV path's numbering (presentation timestamps at the average rate,
video.FrameClock) for constant-rate video. Each frame NVDEC returns carries its timestamp, which is
checked against that numbering; a video where they disagree (variable rate, odd edit lists), or that
NVDEC cannot decode at all (codec, damage, a container without a frame count), is decoded with PyAV
instead, and logged. A video nothing can read is ``unreadable_video``, as on the PyAV path.

Colours: NVDEC's RGB conversion (limited range, the stream's BT.601/709 matrix, BT.601 when untagged,
nearest chroma) and swscale's behind PyAV's ``to_image`` round differently and upsample chroma
differently: a few levels per full-size pixel at colour edges, well under one on average once
resized to the model's size.

This module hands over, chooses and reads; nvdec_reader.py holds the decoder itself, and
nvdec_source.py the checked opening of the only files it may read.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import numpy as np
import torch

from video_aesthetics import video
from video_aesthetics.frames import select_evenly
from video_aesthetics.nvdec_reader import (
    Reader,
    check_frame_number,
    first_line,
    frame_pts,
    planar,
    thread_reader,
    thread_stream,
)
from video_aesthetics.nvdec_source import NvdecError, pinned_mp4

log = logging.getLogger(__name__)

PACKAGE = "PyNvVideoCodec"
INSTALL_HINT = "pip install 'video-aesthetics[gpu]'"
# Off: whole videos are decoded by PyAV in the workers even where NVDEC could (benchmarks compare both in one run).
ENABLED = True
# Encoders tried for the self-test video, NVDEC's most common codec first.
_TEST_CODECS = ("libx264", "h264", "mpeg4")
# The self-test's largest mean difference (levels) from PyAV's pixels of the same frames.
_TEST_TOLERANCE = 6.0


@dataclass(frozen=True)
class VideoRequest:
    """What a worker hands over for a video decoded on the device: its path, the frame indices, its FrameClock."""

    path: str
    indices: tuple[int, ...]
    clock: video.FrameClock | None = None

    def to_batch(self) -> dict[str, Any]:
        """Plain lists and numbers: what passes through DataLoader's conversion and pinning unchanged."""
        clock = self.clock
        numbers = (
            []
            if clock is None
            else [
                clock.rate.numerator,
                clock.rate.denominator,
                clock.time_base.numerator,
                clock.time_base.denominator,
                clock.start,
            ]
        )
        return {"path": self.path, "indices": list(self.indices), "clock": numbers}

    @classmethod
    def from_batch(cls, item: Mapping[str, Any]) -> VideoRequest:
        numbers = [int(n) for n in item.get("clock") or []]
        clock = (
            video.FrameClock(Fraction(numbers[0], numbers[1]), Fraction(numbers[2], numbers[3]), numbers[4])
            if len(numbers) == 5
            else None
        )
        return cls(str(item["path"]), tuple(int(i) for i in item["indices"]), clock)


def video_request(path: Path | str, load_num: int) -> VideoRequest | None:
    """A worker's share: the video probed with PyAV and ``load_num`` frames picked as the PyAV path picks them.

    None when the video has no frame; raises as video.probe does for a file that is no video.
    """
    info, clock = video.probe_with_clock(path)
    if not info.frames:
        return None
    return VideoRequest(os.path.abspath(os.fspath(path)), tuple(select_evenly(info.frames, load_num)), clock)


def sampled_indices(path: Path | str, load_num: int) -> list[int]:
    """The frame indices whole-video mode scores for ``path`` (PyAV's frame count, evenly spread)."""
    request = video_request(path, load_num)
    return [] if request is None else list(request.indices)


# ---------------------------------------------------------------------------------------------------
# Availability and selection


def nvdec_error(device: torch.device | str) -> str | None:
    """None when PyNvVideoCodec imports and decodes a test video on ``device``; else why not. Cached per device."""
    return _nvdec_error(_cuda(device))


@functools.cache
def _nvdec_error(device: torch.device) -> str | None:
    if device.type != "cuda":
        return f"NVDEC decodes on CUDA devices, and {device} is not one"
    if not torch.cuda.is_available():
        return "no CUDA device is available"
    try:
        nvc = _pynvvideocodec()
    except NvdecError as err:
        return str(err)
    try:
        return _self_test(nvc, device)
    except Exception as err:  # noqa: BLE001 - whatever the driver or build lacks, the answer is "not here"
        return f"{PACKAGE} cannot decode a test video on {device} ({type(err).__name__}: {first_line(err)})"


def videos_on_device(device: torch.device | str | None = None) -> bool:
    """Whether whole videos are decoded by NVDEC in the scoring process (else by PyAV in the workers); logged.

    ``device`` is the scoring device; by default the current CUDA device, when there is one.
    """
    if not ENABLED:
        log.info("whole videos: decoded by PyAV in the decoding workers (nvdec.ENABLED is off)")
        return False
    if device is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    error = "no CUDA device is available" if device is None else nvdec_error(device)
    if error is None:
        log.info("whole videos: the sampled frames are decoded by NVDEC (%s) on %s", PACKAGE, device)
        return True
    log.info("whole videos: decoded by PyAV in the decoding workers, not by NVDEC: %s", error)
    return False


def _pynvvideocodec() -> ModuleType:
    try:
        return importlib.import_module(PACKAGE)
    except ImportError as err:
        raise NvdecError(f"{PACKAGE} is not installed ({INSTALL_HINT})") from err
    except Exception as err:  # its import checks the driver and raises RuntimeError when it is unfit
        raise NvdecError(f"{PACKAGE} does not load ({type(err).__name__}: {first_line(err)})") from err


def _self_test(nvc: ModuleType, device: torch.device) -> str | None:
    """Decode two frames of a small video made here and compare them with PyAV's.

    The frames are compared by their pixels (the test video's frames differ widely), so that a
    release whose timestamps mean something else still passes; whether they can check frame numbers
    is recorded apart (``_TIMESTAMPS_CHECKED``).
    """
    stream = torch.cuda.Stream(device)
    wanted = [1, 4]
    with tempfile.TemporaryDirectory(prefix="nvdec-check-") as folder:
        path = make_test_video(Path(folder) / "check.mp4", frames=6, width=160, height=96)
        clock = video.probe_with_clock(path)[1]
        reader = Reader(nvc, device, stream)
        try:
            with torch.cuda.device(device), torch.cuda.stream(stream):
                got = reader.read(str(path), wanted, None)
            stream.synchronize()
            got = got.cpu()
        finally:
            reader.close()
        expected = read_frames_pyav(path, wanted)
    if tuple(got.shape) != tuple(expected.shape):
        return f"{PACKAGE} decoded a {tuple(expected.shape)} test video as {tuple(got.shape)}"
    error = float((got.float() - expected.float()).abs().mean())
    if error > _TEST_TOLERANCE:
        return f"{PACKAGE} decoded a test video {error:.1f} levels away from PyAV on average"
    stamps = reader.last_timestamps
    try:
        for index, pts in zip(wanted, stamps, strict=True):
            check_frame_number(pts, index, clock, "the test video")
        _TIMESTAMPS_CHECKED[device] = None not in stamps
    except (NvdecError, ValueError) as err:
        _TIMESTAMPS_CHECKED[device] = False
        log.warning("NVDEC's frame timestamps do not follow PyAV's numbering (%s): frame numbers go unchecked", err)
    return None


# Per device: whether NVDEC's frame timestamps carried the test video's frame numbers (then each video's are checked).
_TIMESTAMPS_CHECKED: dict[torch.device, bool] = {}


def checks_frame_numbers(device: torch.device) -> bool:
    """Whether the frames NVDEC returns on ``device`` are checked against PyAV's numbering (nvdec_error runs first)."""
    return nvdec_error(device) is None and _TIMESTAMPS_CHECKED.get(_cuda(device), False)


def _cuda(device: torch.device | str) -> torch.device:
    target = torch.device(device)
    if target.type == "cuda" and target.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return target


def make_test_video(
    path: Path,
    frames: int = 24,
    width: int = 320,
    height: int = 180,
    fps: int = 24,
    codec: str | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """A small MP4 whose frames all differ (moving gradients), H.264 where PyAV's FFmpeg can encode it.

    NVDEC's self-test decodes one; benchmarks can time others (``options``: the encoder's, such as
    {"g": "250"} for a keyframe every 250 frames). ``codec`` None takes the first of libx264, h264
    and mpeg4 that PyAV has.
    """
    name = codec or next((c for c in _TEST_CODECS if _has_encoder(c)), None)
    if name is None:
        raise NvdecError(f"PyAV has none of the encoders {', '.join(_TEST_CODECS)} to make a test video with")
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(name, rate=fps, options=dict(options or {}))
        if not isinstance(stream, av.video.stream.VideoStream):
            raise NvdecError(f"PyAV's {name} encoder is not a video encoder")
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            shift = 7.0 * index
            picture = np.stack(
                [(x * 255 / width + shift) % 256, (y * 255 / height + 2 * shift) % 256, (x + y + 3 * shift) % 256],
                axis=-1,
            ).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 - PyAV raises UnknownCodecError, or ValueError on old releases
        return False
    return True


# ---------------------------------------------------------------------------------------------------
# Reading frames


def read_frames_pyav(path: Path | str, indices: Sequence[int]) -> torch.Tensor:
    """The frames at ``indices`` decoded by PyAV (video.read_frames), as uint8 (k, 3, H, W) on the CPU."""
    images = video.read_frames(path, indices)
    if not images:
        return torch.zeros((0, 3, 0, 0), dtype=torch.uint8)
    return torch.from_numpy(np.stack([np.asarray(image) for image in images])).permute(0, 3, 1, 2).contiguous()


def read_frames_nvdec(
    path: Path | str,
    indices: Sequence[int],
    device: torch.device | str,
    stream: torch.cuda.Stream | None = None,
    clock: video.FrameClock | None = None,
) -> torch.Tensor:
    """The frames at ``indices`` (any order, repeats allowed) decoded by NVDEC, as uint8 (k, 3, H, W) on ``device``.

    The work runs on ``stream`` (by default the device's current stream), which is synchronised
    before returning. An index past the last frame gives the last frame, as on the PyAV path. With a
    ``clock`` (video.probe_with_clock), each frame's timestamp must carry the index asked for.
    Raises NvdecError when NVDEC cannot give the frames.
    """
    target = torch.device(device)
    if target.type != "cuda":
        raise NvdecError(f"NVDEC decodes on CUDA devices, and {target} is not one")
    target = _cuda(target)
    caller = torch.cuda.current_stream(target)
    # A stream of our own rather than the default one: PyNvVideoCodec takes stream 0 as "make your own".
    work = stream if stream is not None and stream.cuda_stream != 0 else thread_stream(target)
    reader = thread_reader(_pynvvideocodec(), target, work)
    with torch.cuda.device(target), torch.cuda.stream(work):
        frames = reader.read(os.fspath(path), indices, clock)
    # SimpleDecoder reuses its output buffers on the next call: the copies must be done by then.
    work.synchronize()
    if work != caller:
        frames.record_stream(caller)
    return frames


def nvdec_timestamps(path: Path | str, indices: Sequence[int], device: torch.device | str) -> dict[str, Any]:
    """For benchmarks and bug reports: NVDEC's timestamp of each asked frame beside PyAV's numbering of it.

    Decodes with a SimpleDecoder of its own (nothing checked, nothing cached); raises what it raises.
    """
    target = torch.device(device)
    if target.index is None:
        target = torch.device("cuda", torch.cuda.current_device())
    nvc = _pynvvideocodec()
    info, clock = video.probe_with_clock(path)
    stream = torch.cuda.Stream(target)
    wanted = sorted(set(int(i) for i in indices))
    with pinned_mp4(path) as source, torch.cuda.device(target), torch.cuda.stream(stream):
        decoder = nvc.SimpleDecoder(
            source,
            gpu_id=int(target.index or 0),
            cuda_stream=int(stream.cuda_stream),
            use_device_memory=True,
            output_color_type=nvc.OutputColorType.RGBP,
        )
        frames = list(decoder.get_batch_frames_by_index(wanted))
        stamps = [frame_pts(frame) for frame in frames]
        shapes = [tuple(planar(frame, target).shape) for frame in frames]
        nvdec_count = len(decoder)
    stream.synchronize()
    return {
        "pyav_frames": info.frames,
        "nvdec_frames": nvdec_count,
        "clock": {"rate": str(clock.rate), "time_base": str(clock.time_base), "start": clock.start},
        "indices": wanted,
        "timestamps": stamps,
        "pyav_numbers": [None if pts is None else clock.number(pts) for pts in stamps],
        "shapes": shapes,
    }
