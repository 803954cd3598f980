"""The device half of the gpu and hardware decode paths: a batch the workers packed (decoding.pack_for_device)
turned into model pixels on the scoring device, the next batch decoded in a thread while this one is scored.

Which path runs, and the workers' half (bytes read and checked), are decoding.py's.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from video_aesthetics.errors import ConfigError
from video_aesthetics.frames import PreprocessConfig
from video_aesthetics.jpeg_hardware import HardwareJpegDecoder, hardware_decode_error
from video_aesthetics.records import CORRUPT_FRAMES
from video_aesthetics.resize import resize_crop_exact

log = logging.getLogger(__name__)

# DeviceDecoder's JPEG engines: nvJPEG on the SMs (torchvision) or the hardware JPEG engines (nvImageCodec).
ENGINES = ("nvjpeg", "hardware")
# torchvision 0.29 deprecates its image codecs in favour of TorchCodec (not a dependency here),
# warning on every call of the decoders this module is built on: that one message is silenced,
# here as in decoding.py, since either may be imported without the other.
warnings.filterwarnings("ignore", message=r".*TorchCodec.*", category=DeprecationWarning, module=r"torchvision\.io")


class DeviceDecoder:
    """Turns a packed batch (``decoding.pack_for_device``) into model pixels on ``device``.

    ``engine`` decodes the JPEGs: ``nvjpeg`` (the gpu path: torchvision's nvJPEG on the SMs,
    batched; on the CPU, where tests run this same code, torchvision decodes them one by one) or
    ``hardware`` (the hardware path: nvImageCodec on the GPU's JPEG engines, CUDA only). A JPEG
    the engines refuse takes nvJPEG; when nvJPEG's batch call fails each JPEG is retried alone,
    then on the CPU; a frame that fails everywhere is dropped and its sample's count lowered
    (``corrupt_frames`` when none is left). Every frame is then resized and cropped on the device
    by resize.py, bit for bit as the exact path's Pillow resize would from the same decoded pixels.
    On CUDA the work runs on a stream of its own, so that it can overlap the model's.
    """

    def __init__(self, pp: PreprocessConfig, device: torch.device | str, engine: str = "nvjpeg") -> None:
        if engine not in ENGINES:
            raise ConfigError(f"DeviceDecoder engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.pp = pp
        self.device = torch.device(device)
        self.engine = engine
        self.hardware: HardwareJpegDecoder | None = None
        if engine == "hardware":
            error = hardware_decode_error(self.device)
            if error is not None:
                raise ConfigError(f"cannot decode JPEGs on the hardware engines: {error}")
            self.hardware = HardwareJpegDecoder(self.device)
        # nvImageCodec's pictures of the batch in flight: kept until the stream has finished reading them.
        self._held: list[torch.Tensor | None] = []
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    @torch.inference_mode()
    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.stream is None:
            return self._decode(batch)
        # This thread's current device is cuda:0 whatever the scorer's is (ranks score on cuda:LOCAL_RANK).
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            done = self._decode(batch)
        # Block this (decoding) thread, not the device: the model's stream may use the pixels at once.
        # Load-bearing beyond that: nvJPEG's batched hardware decode (torchvision on A100/H100/H200)
        # writes its output when called, not in stream order, so memory that queued kernels still
        # read must never be handed to it; draining this stream before the next batch ensures that.
        self.stream.synchronize()
        self._held.clear()
        return done

    def _decode(self, batch: dict[str, Any]) -> dict[str, Any]:
        ends = batch["jpeg_ends"]
        starts = [0, *ends][:-1]
        jpegs = [batch["jpegs"][start:end] for start, end in zip(starts, ends, strict=True)]
        frames = self._decoded_jpegs(jpegs)
        # One copy for all the frames the workers decoded (pinned by the DataLoader on CUDA: asynchronous).
        decoded = batch["pixels"].to(self.device, non_blocking=True)
        ready = [decoded[slot] if slot >= 0 else frames[-slot - 1] for slot in batch["slots"]]
        if batch.get("videos"):
            # Whole videos the workers handed over (a path and frame indices each, nvdec.VideoRequest):
            # decoded here by NVDEC (PyAV where it cannot), resized as the JPEGs are.
            from video_aesthetics.device_videos import place_videos

            batch, ready = place_videos(batch, ready, self.device, self.stream, self._resized)
        counts, errors, names, offset = [], [], [], 0
        given_names = batch.get("names") or [None] * len(batch["counts"])
        for count, error, sample_names in zip(batch["counts"], batch["errors"], given_names, strict=True):
            sample = ready[offset : offset + count]
            kept = sum(frame is not None for frame in sample)
            if count and not kept:
                log.warning("no frame of batch %s's sample could be decoded on %s", batch["batch"], self.device)
            counts.append(kept)
            errors.append(CORRUPT_FRAMES if count and not kept else error)
            # The names of the frames kept, so that embeddings name the frames they came from.
            kept_names = sample_names
            if sample_names is not None:
                kept_names = [name for name, frame in zip(sample_names, sample, strict=True) if frame is not None]
            names.append(kept_names)
            offset += count
        kept_frames = [frame for frame in ready if frame is not None]
        shape = (0, self.pp.size, self.pp.size, 3)
        pixels = torch.stack(kept_frames) if kept_frames else torch.zeros(shape, dtype=torch.uint8, device=self.device)
        return {
            "batch": batch["batch"],
            "seqs": batch["seqs"],
            "counts": counts,
            "errors": errors,
            "names": names,
            "pixels": pixels,
        }

    def _decoded_jpegs(self, jpegs: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """Model pixels (size, size, 3) on the device for each JPEG, None for one nothing decodes."""
        full: list[torch.Tensor | None] = [None] * len(jpegs)
        if self.hardware is not None:
            full = self._on_hardware(jpegs)
        refused = [index for index, image in enumerate(full) if image is None]
        for index, image in zip(refused, self._with_nvjpeg([jpegs[i] for i in refused]), strict=True):
            full[index] = image
        return self._resized(full)

    def _on_hardware(self, jpegs: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """The hardware engines' pixels, None for each JPEG they refuse (all of them when the call fails)."""
        assert self.hardware is not None
        if not jpegs:
            return []
        stream = torch.cuda.current_stream(self.device).cuda_stream
        try:
            full = self.hardware.decode(jpegs, stream)
        except Exception as err:  # noqa: BLE001 - nvImageCodec raises its own errors; nvJPEG takes over
            log.warning("the hardware JPEG decoder failed on %d JPEGs (%s); decoding them with nvJPEG", len(jpegs), err)
            return [None] * len(jpegs)
        self._held.extend(full)
        refused = sum(image is None for image in full)
        if refused:
            log.info(
                "%d of %d JPEGs refused by the hardware JPEG engines; decoding them with nvJPEG", refused, len(jpegs)
            )
        return full

    def _with_nvjpeg(self, jpegs: list[torch.Tensor]) -> list[torch.Tensor | None]:
        if not jpegs:
            return []
        try:
            return list(decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError as err:
            log.warning("decoding %d JPEGs on %s failed (%s); decoding them one by one", len(jpegs), self.device, err)
            return [self._decode_one(jpeg) for jpeg in jpegs]

    def _decode_one(self, jpeg: torch.Tensor) -> torch.Tensor | None:
        try:
            return decode_jpeg(jpeg, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError as err:
            log.info("JPEG of %d bytes refused on %s (%s); decoding it on the CPU", jpeg.numel(), self.device, err)
        try:
            return decode_jpeg(jpeg, mode=ImageReadMode.RGB).to(self.device)
        except RuntimeError as err:
            log.warning("skipping a JPEG of %d bytes that does not decode: %s", jpeg.numel(), err)
            return None

    def _resized(self, full: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        # Frames of one video share a size: resize each size's frames in one call.
        by_shape: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
        for index, image in enumerate(full):
            if image is not None:
                by_shape.setdefault(tuple(image.shape), []).append((index, image))
        out: list[torch.Tensor | None] = [None] * len(full)
        for group in by_shape.values():
            # The exact resize everywhere: on the CPU (tests) this computes what the GPU computes.
            resized = resize_crop_exact(torch.stack([image for _, image in group]), self.pp)
            for (index, _), pixels in zip(group, resized, strict=True):
                out[index] = pixels
        return out


def decoded_ahead(batches: Iterable[dict[str, Any]], decoder: DeviceDecoder) -> Iterator[dict[str, Any]]:
    """``decoder(batch)`` for each batch, the next one decoding in a thread while the caller scores this one.

    The batches are pulled in the caller's thread, so that a failing DataLoader raises there.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="device-decode") as pool:
        pending: Future[dict[str, Any]] | None = None
        for batch in batches:
            submitted = pool.submit(decoder, batch)
            if pending is not None:
                yield _on_current_stream(pending.result())
            pending = submitted
        if pending is not None:
            yield _on_current_stream(pending.result())


def _on_current_stream(batch: dict[str, Any]) -> dict[str, Any]:
    pixels = batch["pixels"]
    if pixels.is_cuda:
        # Made on the decoder's stream: the allocator must not reuse it before the model's stream is done.
        pixels.record_stream(torch.cuda.current_stream(pixels.device))
    return batch
