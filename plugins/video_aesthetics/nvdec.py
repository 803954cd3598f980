"""Whole videos decoded on the GPU by NVDEC (PyNvVideoCodec): the sampled frames only, seeked to, not all decoded.

Where it runs: CUDA cannot be used in forked DataLoader workers, so on the device decode paths the
workers only probe a video with PyAV and pick its frame indices (``video_request``: exactly the
indices the PyAV path picks), and hand the path and indices over; the scoring process decodes them
in DeviceDecoder's thread (``place_videos``), on its CUDA stream, and resizes them as it resizes
JPEGs. ``videos_on_device`` makes that choice once per run, and logs it: without PyNvVideoCodec, a
CUDA device or a working NVDEC (``nvdec_error``), the workers decode with PyAV as they always did.

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
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import itertools
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from video_aesthetics.records import UNREADABLE_VIDEO

log = logging.getLogger(__name__)

PACKAGE = "PyNvVideoCodec"
INSTALL_HINT = "pip install 'video-aesthetics[gpu]'"
# Off: whole videos are decoded by PyAV in the workers even where NVDEC could (benchmarks compare both in one run).
ENABLED = True
# Frame indices asked of SimpleDecoder at once: its frames stay valid only until the next call.
_CHUNK = 32
# Encoders tried for the self-test video, NVDEC's most common codec first.
_TEST_CODECS = ("libx264", "h264", "mpeg4")
# The self-test's largest mean difference (levels) from PyAV's pixels of the same frames.
_TEST_TOLERANCE = 6.0


class NvdecError(RuntimeError):
    """NVDEC could not give a video's frames: no PyNvVideoCodec, an unsupported codec, a damaged file, a misnumbered frame."""


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
        return f"{PACKAGE} cannot decode a test video on {device} ({type(err).__name__}: {_first_line(err)})"


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
        raise NvdecError(f"{PACKAGE} does not load ({type(err).__name__}: {_first_line(err)})") from err


def _first_line(err: BaseException) -> str:
    # PyNvVideoCodec appends pages of troubleshooting to its messages; the first line says what failed.
    return (str(err).strip().splitlines() or [""])[0]


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
        reader = _Reader(nvc, device, stream)
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
    work = stream if stream is not None and stream.cuda_stream != 0 else _thread_stream(target)
    reader = _thread_reader(_pynvvideocodec(), target, work)
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
        shapes = [tuple(_planar(frame, target).shape) for frame in frames]
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


# ISO base media (MP4, MOV, M4V...): a box whose type is "ftyp" starts the file.
_MP4_BRAND = b"ftyp"


def open_mp4(path: Path | str) -> int:
    """An open descriptor of ``path``'s file, checked: the only way a video reaches PyNvVideoCodec's FFmpeg.

    PyNvVideoCodec's demuxer probes every container FFmpeg knows, playlists among them (HLS, DASH,
    concat), which open further files and URLs: the PyAV path allows container demuxers only
    (video.DEMUXERS), and this one cannot be told to. So NVDEC takes only MP4/MOV files, whose first
    box no playlist can begin with, and reads them through /proc/self/fd (``fd_path``): the file
    checked here is the file decoded, even if the path is replaced meanwhile. Anything else raises
    NvdecError, and the video is decoded by PyAV under its rules. The caller closes the descriptor,
    and only once the decoder reading it has moved on (it may open the name again to seek back).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(os.fspath(path), flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NvdecError(f"{path} is not a regular file")
        if os.pread(fd, 8, 0)[4:8] != _MP4_BRAND:
            raise NvdecError(f"{path} is not an MP4/MOV file (NVDEC takes those alone); PyAV decodes it")
        if not os.path.exists(fd_path(fd)):
            raise NvdecError(f"{fd_path(fd)} does not exist: NVDEC reads files through /proc (Linux)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


@contextlib.contextmanager
def pinned_mp4(path: Path | str) -> Iterator[str]:
    """``open_mp4``'s file by its /proc name, for as long as the block runs."""
    fd = open_mp4(path)
    try:
        yield fd_path(fd)
    finally:
        os.close(fd)


_READERS = threading.local()


def _thread_reader(nvc: ModuleType, device: torch.device, stream: torch.cuda.Stream) -> _Reader:
    """This thread's reader for (device, stream): one SimpleDecoder, reconfigured from video to video."""
    readers: dict[tuple[int, int], _Reader] = _READERS.__dict__.setdefault("by_stream", {})
    key = (int(device.index or 0), int(stream.cuda_stream))
    if key not in readers:
        readers[key] = _Reader(nvc, device, stream)
    return readers[key]


class _Reader:
    """One SimpleDecoder on one device and stream; creating one costs far more than reconfiguring it."""

    def __init__(self, nvc: ModuleType, device: torch.device, stream: torch.cuda.Stream) -> None:
        self.nvc = nvc
        self.device = device
        self.stream = stream
        self.decoder: Any = None
        # The descriptor the decoder reads its video through (open_mp4), open until the next video's.
        self.fd: int | None = None
        # The timestamps of the frames of the last read, by the order of its distinct indices.
        self.last_timestamps: list[int | None] = []

    def close(self) -> None:
        self.decoder = None
        self._hold(None)

    def _hold(self, fd: int | None) -> None:
        """Keep ``fd`` open while the decoder reads it (it may reopen its /proc name to seek back); close the last."""
        previous, self.fd = self.fd, fd
        if previous is not None:
            os.close(previous)

    def read(self, path: str, indices: Sequence[int], clock: video.FrameClock | None) -> torch.Tensor:
        wanted = [int(i) for i in indices]
        if not wanted:
            return torch.zeros((0, 3, 0, 0), dtype=torch.uint8, device=self.device)
        if min(wanted) < 0:
            raise NvdecError(f"frame index {min(wanted)} is negative")
        fd = open_mp4(path)
        try:
            decoder = self._open(fd_path(fd))
        except Exception as err:  # PyNvVideoCodec raises its own exception types and RuntimeError
            os.close(fd)
            self.close()
            raise NvdecError(f"{path}: {type(err).__name__}: {_first_line(err)}") from err
        self._hold(fd)  # the decoder has let go of the last video's descriptor
        try:
            total = len(decoder)
            if total <= 0:
                raise NvdecError(f"{path}: NVDEC finds no frame count")
            # Past the end: the last frame, as the PyAV path gives.
            targets = {index: min(index, total - 1) for index in wanted}
            frames = self._frames(decoder, sorted(set(targets.values())), path, clock)
        except NvdecError:
            raise  # ours (no frame count, a misnumbered frame, an odd layout): the decoder itself is sound
        except Exception as err:  # PyNvVideoCodec raises its own exception types and RuntimeError
            # A failed call may leave the decoder mid-seek: the next video gets a fresh one.
            self.close()
            raise NvdecError(f"{path}: {type(err).__name__}: {_first_line(err)}") from err
        return torch.stack([frames[targets[index]] for index in wanted])

    def _open(self, path: str) -> Any:
        if self.decoder is not None:
            try:
                self.decoder.reconfigure_decoder(path)
                return self.decoder
            except Exception as err:  # noqa: BLE001 - a source it cannot reconfigure to gets a new decoder
                log.debug("NVDEC decoder not reconfigured for %s (%s); making a new one", path, err)
                self.decoder = None
        self.decoder = self.nvc.SimpleDecoder(
            path,
            gpu_id=int(self.device.index or 0),
            cuda_stream=int(self.stream.cuda_stream),
            use_device_memory=True,
            output_color_type=self.nvc.OutputColorType.RGBP,
        )
        return self.decoder

    def _frames(
        self, decoder: Any, targets: list[int], path: str, clock: video.FrameClock | None
    ) -> dict[int, torch.Tensor]:
        found: dict[int, torch.Tensor] = {}
        self.last_timestamps = []
        for start in range(0, len(targets), _CHUNK):
            chunk = targets[start : start + _CHUNK]
            decoded = list(decoder.get_batch_frames_by_index(chunk))
            if len(decoded) != len(chunk):
                raise NvdecError(f"{path}: NVDEC returned {len(decoded)} of the frames {chunk}")
            for index, frame in zip(chunk, decoded, strict=True):
                pts = frame_pts(frame)
                self.last_timestamps.append(pts)
                check_frame_number(pts, index, clock, path)
            # One copy out of the decoder's buffers, which its next call reuses.
            stacked = torch.stack([_planar(frame, self.device) for frame in decoded])
            found.update(zip(chunk, stacked, strict=True))
        return found


def frame_pts(frame: Any) -> int | None:
    """A decoded frame's presentation timestamp, in its stream's time base; None when it has none to give."""
    value = getattr(frame, "timestamp", None)
    if value is None and callable(getattr(frame, "getPTS", None)):
        value = frame.getPTS()
    if callable(value):
        value = value()
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def check_frame_number(pts: int | None, index: int, clock: video.FrameClock | None, path: str) -> None:
    """Raise NvdecError unless the frame presented at ``pts`` is frame ``index`` by the PyAV path's numbering.

    NVDEC's timestamp is the packet's, in the stream's time base, with or without the stream's start
    subtracted (PyNvVideoCodec releases differ); either reading that gives ``index`` is accepted.
    """
    if pts is None or clock is None:
        return
    readings = {clock.number(pts), clock.number(pts + clock.start)}
    if index not in readings:
        raise NvdecError(
            f"{path}: NVDEC gave the frame at timestamp {pts} (frame {clock.number(pts)} by PyAV's numbering) for frame {index}"
        )


def _planar(frame: Any, device: torch.device) -> torch.Tensor:
    """A decoded RGB frame as a (3, H, W) uint8 view on ``device``, whatever layout the release exports."""
    try:
        tensor = torch.from_dlpack(frame)
    except Exception as err:  # noqa: BLE001 - DLPack export varies by release: the CUDA array interface is the fallback
        try:
            tensor = torch.as_tensor(frame, device=device)
        except Exception:  # noqa: BLE001
            raise NvdecError(f"NVDEC's frame is neither DLPack nor a CUDA array ({type(err).__name__}: {err})") from err
    if tensor.dtype != torch.uint8:
        raise NvdecError(f"NVDEC gave {tensor.dtype} pixels, not uint8")
    if tensor.dim() == 3 and tensor.shape[0] == 3:
        planar = tensor
    elif tensor.dim() == 3 and tensor.shape[-1] == 3:
        planar = tensor.permute(2, 0, 1)
    elif tensor.dim() == 2 and tensor.shape[0] % 3 == 0:
        planar = tensor.reshape(3, tensor.shape[0] // 3, tensor.shape[1])
    else:
        raise NvdecError(f"NVDEC gave a frame of shape {tuple(tensor.shape)}, not planar RGB")
    return planar if planar.device == device else planar.to(device)


# ---------------------------------------------------------------------------------------------------
# The scoring process's half: DeviceDecoder's hook


Resize = Callable[[list[torch.Tensor | None]], list[torch.Tensor | None]]


def place_videos(
    batch: dict[str, Any], ready: list[Any], device: torch.device, stream: torch.cuda.Stream | None, resize: Resize
) -> tuple[dict[str, Any], list[Any]]:
    """A batch's frames in order, the handed-over videos' decoded here, and its counts and errors to match.

    ``batch["videos"]`` has one entry per sample: None for a sample whose frames came packed
    (``ready`` holds them, in order), else a VideoRequest's ``to_batch()``. A video is decoded by
    NVDEC on a CUDA ``device`` (PyAV when NVDEC cannot), by PyAV on the CPU; ``resize`` makes model
    pixels of full frames, on ``stream``. A video nothing can read gets no frames and ``unreadable_video``.
    """
    requests = {
        sample: VideoRequest.from_batch(item) for sample, item in enumerate(batch["videos"]) if item is not None
    }
    decoded = {sample: _full_frames(request, device, stream) for sample, request in requests.items()}
    rest: Iterator[Any] = iter(ready)
    frames: list[Any] = []
    counts, errors = list(batch["counts"]), list(batch["errors"])
    names = list(batch.get("names") or [None] * len(counts))
    for sample, count in enumerate(batch["counts"]):
        if sample not in requests:
            frames.extend(itertools.islice(rest, count))
            continue
        full = decoded[sample]
        if full is None:
            counts[sample], errors[sample], names[sample] = 0, UNREADABLE_VIDEO, []
            continue
        full = full.to(device)
        if stream is not None:
            # Made on a decoding thread's stream, read on this one: the allocator must wait for both.
            full.record_stream(stream)
        pixels = resize(list(full))
        frames.extend(pixels)
        counts[sample] = len(pixels)
    return {**batch, "counts": counts, "errors": errors, "names": names}, frames


def _full_frames(request: VideoRequest, device: torch.device, stream: torch.cuda.Stream | None) -> torch.Tensor | None:
    """A video's asked frames, uint8 (k, 3, H, W): by NVDEC on CUDA (on the device), else by PyAV (on the CPU)."""
    if device.type == "cuda" and nvdec_error(device) is None:
        try:
            return read_frames_nvdec(
                request.path, request.indices, device, stream or _thread_stream(device), request.clock
            )
        except Exception as err:  # noqa: BLE001 - any NVDEC failure leaves the video to PyAV
            log.warning("NVDEC cannot read %s (%s); decoding it with PyAV", request.path, err)
    try:
        frames = read_frames_pyav(request.path, request.indices)
    except Exception as err:  # noqa: BLE001 - PyAV raises its own error tree for broken files
        log.warning("cannot read video %s: %s", request.path, err)
        return None
    return frames if len(frames) else None


def _thread_stream(device: torch.device) -> torch.cuda.Stream:
    streams: dict[torch.device, torch.cuda.Stream] = _READERS.__dict__.setdefault("streams", {})
    if device not in streams:
        streams[device] = torch.cuda.Stream(device)
    return streams[device]
