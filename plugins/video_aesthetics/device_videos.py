"""The scoring process's half of whole videos on the device paths: DeviceDecoder's hook.

Each video a worker handed over (nvdec.VideoRequest) is decoded here, by NVDEC where it can
(PyAV where it cannot), resized as DeviceDecoder resizes JPEGs, and placed among the batch's
frames in sample order.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch

from video_aesthetics.nvdec import VideoRequest, nvdec_error, read_frames_nvdec, read_frames_pyav
from video_aesthetics.nvdec_reader import thread_stream
from video_aesthetics.records import UNREADABLE_VIDEO

log = logging.getLogger(__name__)

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
                request.path, request.indices, device, stream or thread_stream(device), request.clock
            )
        except Exception as err:  # noqa: BLE001 - any NVDEC failure leaves the video to PyAV
            log.warning("NVDEC cannot read %s (%s); decoding it with PyAV", request.path, err)
    try:
        frames = read_frames_pyav(request.path, request.indices)
    except Exception as err:  # noqa: BLE001 - PyAV raises its own error tree for broken files
        log.warning("cannot read video %s: %s", request.path, err)
        return None
    return frames if len(frames) else None
