"""NVDEC's reads: one SimpleDecoder per thread and CUDA stream, reconfigured from video to video, and
the frames it returns checked against PyAV's numbering and laid out as planar RGB.

nvdec.py decides whether NVDEC runs and reads through these; a video reaches the decoder only as
nvdec_source.open_mp4's checked descriptor.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch

from video_aesthetics import video
from video_aesthetics.nvdec_source import NvdecError, open_mp4
from video_aesthetics.video import fd_path

log = logging.getLogger(__name__)

# Frame indices asked of SimpleDecoder at once: its frames stay valid only until the next call.
_CHUNK = 32


def first_line(err: BaseException) -> str:
    # PyNvVideoCodec appends pages of troubleshooting to its messages; the first line says what failed.
    return (str(err).strip().splitlines() or [""])[0]


_READERS = threading.local()


def thread_reader(nvc: ModuleType, device: torch.device, stream: torch.cuda.Stream) -> Reader:
    """This thread's reader for (device, stream): one SimpleDecoder, reconfigured from video to video."""
    readers: dict[tuple[int, int], Reader] = _READERS.__dict__.setdefault("by_stream", {})
    key = (int(device.index or 0), int(stream.cuda_stream))
    if key not in readers:
        readers[key] = Reader(nvc, device, stream)
    return readers[key]


def thread_stream(device: torch.device) -> torch.cuda.Stream:
    """This thread's own CUDA stream on ``device``: NVDEC's work never runs on another thread's."""
    streams: dict[torch.device, torch.cuda.Stream] = _READERS.__dict__.setdefault("streams", {})
    if device not in streams:
        streams[device] = torch.cuda.Stream(device)
    return streams[device]


class Reader:
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
            raise NvdecError(f"{path}: {type(err).__name__}: {first_line(err)}") from err
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
            raise NvdecError(f"{path}: {type(err).__name__}: {first_line(err)}") from err
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
            stacked = torch.stack([planar(frame, self.device) for frame in decoded])
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


def planar(frame: Any, device: torch.device) -> torch.Tensor:
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
