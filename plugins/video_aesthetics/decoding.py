"""Decode paths: how a frame file becomes the model's uint8 pixels, on the CPU or on the scoring GPU.

``exact``  PIL decodes and resizes (``frames.load_frame``): the reference every other path is measured against.
``fast``   libjpeg-turbo through torchvision (the same decoded pixels as PIL) and torch's uint8
           antialiased resize instead of PIL's much slower one: at most 1 level from ``exact``.
           Anything but a plain RGB or greyscale JPEG, and any JPEG torchvision refuses, takes the exact path.
``gpu``    workers only read and check bytes; the scoring process decodes each batch's JPEGs on the GPU's
           SMs with nvJPEG (``torchvision.io.decode_jpeg(device="cuda")``) and resizes and crops them
           there (resize.py: Pillow's resize, bit for bit), in a thread that prepares the next batch on a
           CUDA stream of its own while the model scores the current one. Other formats are decoded by
           the workers (exact); a JPEG the GPU refuses is decoded on the CPU; a frame nothing can decode
           is skipped, like any corrupt frame.
``hardware`` the gpu path with the JPEGs decoded by the GPU's hardware JPEG engines (nvImageCodec, the
           optional extra ``gpu``; A100, H100, H200 and some other data-centre GPUs have the engines),
           leaving the SMs to the model and the resize. A JPEG the engines refuse (progressive, an
           unusual subsampling, damage) takes the gpu path's nvJPEG, then the CPU.
``auto``   on CUDA: ``hardware`` when a probe JPEG decodes on the engines, else ``gpu`` (when torchvision
           can decode JPEGs there), else ``CPU_DEFAULT``; elsewhere ``CPU_DEFAULT``.

bench/scoring.py measures the CPU paths side by side, bench/gpu.py all three on a GPU.

This module chooses the path and holds the workers' share of each; device_decoder.py the device half
of the gpu and hardware paths (DeviceDecoder).
"""

from __future__ import annotations

import functools
import io
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from video_aesthetics.config import DECODES
from video_aesthetics.errors import ConfigError
from video_aesthetics.frames import (
    FRAME_FORMATS,
    FetchedFrame,
    PreprocessConfig,
    check_frame_size,
    load_frame,
    open_inside,
    resized_size,
    to_pixels,
)
from video_aesthetics.jpeg_hardware import hardware_decode_error

log = logging.getLogger(__name__)

# What "auto" means without CUDA (bench/scoring.py measured it; see the README's decode paths).
CPU_DEFAULT = "fast"
# A frame file larger than this is not read into memory at once: the exact path streams it through PIL.
MAX_FRAME_BYTES = 64 << 20
# The PIL modes of a JPEG that libjpeg-turbo and nvJPEG turn into the RGB that PIL makes of it.
_PLAIN_JPEG_MODES = frozenset({"RGB", "L"})
# The decode paths whose JPEGs are decoded by the scoring process on its device (workers ship bytes).
DEVICE_DECODES = ("gpu", "hardware")
# torchvision 0.29 deprecates its image codecs in favour of TorchCodec (not a dependency here),
# warning on every call of the decoders this module is built on: that one message is silenced.
warnings.filterwarnings("ignore", message=r".*TorchCodec.*", category=DeprecationWarning, module=r"torchvision\.io")


def resolve_decode(name: str, device: torch.device) -> str:
    """The decode path that runs for ``name`` when scoring on ``device``: exact, fast, gpu or hardware.

    ``gpu`` needs a CUDA device whose JPEGs torchvision can decode (it is built with nvJPEG),
    ``hardware`` one with JPEG engines and nvImageCodec installed; asking for either elsewhere is a
    configuration error, while ``auto`` takes the best path this machine has and logs why.
    """
    if name not in DECODES:
        raise ConfigError(f"decode must be one of {', '.join(DECODES)}, got {name!r}")
    if name == "auto":
        return _auto_decode(device)
    if name in DEVICE_DECODES:
        what, error_of, instead = _DEVICE_PATHS[name]
        if device.type != "cuda":
            raise ConfigError(
                f"decode {name!r} {what}, but this run scores on {device} "
                "(no CUDA device, or device 'cpu'); use decode 'auto', 'fast' or 'exact', or a CUDA device"
            )
        error = error_of(device)
        if error is not None:
            raise ConfigError(f"decode {name!r} cannot run: {error}; {instead}")
    return name


def _auto_decode(device: torch.device) -> str:
    if device.type != "cuda":
        return CPU_DEFAULT
    hardware = hardware_decode_error(device)
    if hardware is None:
        log.info("decode auto: JPEGs are decoded on %s's hardware JPEG engines (hardware)", device)
        return "hardware"
    gpu = gpu_decode_error(device)
    if gpu is None:
        log.info("decode auto: %s; JPEGs are decoded with nvJPEG on %s (gpu)", hardware, device)
        return "gpu"
    log.warning("decode auto: %s, and %s; decoding on the CPU (%s)", hardware, gpu, CPU_DEFAULT)
    return CPU_DEFAULT


def decodes_on_device(decode: str) -> bool:
    """Whether the resolved ``decode`` path decodes JPEGs in the scoring process (workers ship bytes)."""
    return decode in DEVICE_DECODES


def jpeg_engine(decode: str) -> str:
    """DeviceDecoder's engine for a resolved device decode path (``gpu`` or ``hardware``)."""
    if not decodes_on_device(decode):
        raise ValueError(f"decode {decode!r} does not decode on the device; expected one of {DEVICE_DECODES}")
    return "hardware" if decode == "hardware" else "nvjpeg"


@functools.cache
def gpu_decode_error(device: torch.device) -> str | None:
    """None when torchvision decodes a JPEG on ``device``; else why not (no nvJPEG in this build, say)."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 90)).save(buffer, "JPEG")
    try:
        if device.type == "cuda":
            # nvJPEG's hardware route writes when called, not in stream order: nothing may be in flight.
            torch.cuda.synchronize(device)
        decoded = decode_jpeg(_as_tensor(buffer.getvalue()), mode=ImageReadMode.RGB, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as err:  # noqa: BLE001 - whatever the build lacks, the answer is "not here"
        return f"torchvision cannot decode JPEGs on {device} ({type(err).__name__}: {err})"
    return (
        None if tuple(decoded.shape) == (3, 16, 16) else f"torchvision decoded a 16x16 JPEG as {tuple(decoded.shape)}"
    )


# Each device path: what it does, why it cannot run on a CUDA device (None: it can), what to use instead.
_DEVICE_PATHS: dict[str, tuple[str, Callable[[torch.device], str | None], str]] = {
    "gpu": ("decodes JPEGs on the scoring GPU", gpu_decode_error, "use decode 'fast' or 'auto'"),
    "hardware": (
        "decodes JPEGs on a GPU's hardware JPEG engines",
        hardware_decode_error,
        "use decode 'gpu' or 'auto'",
    ),
}


# ---------------------------------------------------------------------------------------------------
# Reading and checking bytes (every path but exact; the gpu path's workers do only this)


def read_frame(path: Path | FetchedFrame, limit: int = MAX_FRAME_BYTES, real_root: str | None = None) -> bytes | None:
    """The bytes of a regular file, or None when it holds more than ``limit`` (stream it instead).

    Opened without blocking and checked after opening (frames.open_inside): a FIFO or device
    swapped in for a frame after it was listed must not hang a worker or feed it endlessly, and
    with ``real_root`` (figure_root, resolved) the file opened must lie inside it (else
    OutsideRootError); the bytes come from that descriptor. A frame fetched from a remote
    figure_root (FetchedFrame) is already in memory.
    """
    if isinstance(path, FetchedFrame):
        data = path.content()
        return data if len(data) <= limit else None
    with os.fdopen(open_inside(path, real_root), "rb") as handle:
        if os.fstat(handle.fileno()).st_size > limit:
            return None
        data = handle.read(limit + 1)
    return data if len(data) <= limit else None


def is_plain_jpeg(data: bytes) -> bool:
    """Whether ``data`` is a JPEG whose pixels libjpeg-turbo and nvJPEG decode as PIL does (RGB or greyscale).

    Only the header is parsed, with the exact path's checks (frames.open_frame): what it refuses
    unread (no picture, a decompression bomb, a size outside a video frame's bounds) raises here too.
    """
    with Image.open(io.BytesIO(data), formats=FRAME_FORMATS) as image:
        check_frame_size(*image.size)
        return image.format == "JPEG" and image.mode in _PLAIN_JPEG_MODES


def is_complete_jpeg(data: bytes) -> bool:
    """Whether the last image data is followed by an end-of-image marker: a cut-off file is not.

    libjpeg refuses truncated files (PIL and the fast path skip them); nvJPEG is not relied on to.
    In entropy-coded data 0xFF is always followed by 0x00 or a restart marker, so the last
    0xFFD9 after the last start-of-scan (0xFFDA) is the main image's end.
    """
    return data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda") >= 0


def _as_tensor(data: bytes | bytearray) -> torch.Tensor:
    # torch.frombuffer needs a writable buffer; one copy of a frame's bytes is cheap next to decoding it.
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


# ---------------------------------------------------------------------------------------------------
# Resizing, on any device


def resize_crop(images: torch.Tensor, pp: PreprocessConfig) -> torch.Tensor:
    """uint8 images (N, 3, H, W) on the CPU as the model's pixels (N, size, size, 3): the fast path's resize.

    The resize and the centre crop or pad are the exact path's (frames.to_pixels), the resize by
    torch's uint8 antialiased kernel (CPU only): within 1 level of Pillow's and about 4 times faster
    on a CPU than resize.resize_crop_exact, which the device paths use (docs/performance.md).
    """
    height, width = images.shape[-2:]
    target_width, target_height = resized_size(width, height, pp)
    if (target_width, target_height) != (width, height):
        images = _resize_uint8(images, (target_height, target_width), pp.interpolation)
    return _crop_or_pad(images, pp.size, pp.fill_color).permute(0, 2, 3, 1).contiguous()


def _resize_uint8(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    # Channels-last uint8 is the layout of torch's vectorised antialiased kernels.
    images = images.contiguous(memory_format=torch.channels_last)
    return F.interpolate(images, size=size, mode=mode, antialias=True, align_corners=False)


def _crop_or_pad(images: torch.Tensor, size: int, fill: int) -> torch.Tensor:
    """frames._center_crop_or_pad on (N, C, H, W) tensors: the same placement and rounding."""
    height, width = images.shape[-2:]
    if height < size or width < size:
        canvas = images.new_full((*images.shape[:-2], max(size, height), max(size, width)), fill)
        top, left = (canvas.shape[-2] - height) // 2, (canvas.shape[-1] - width) // 2
        canvas[..., top : top + height, left : left + width] = images
        images, height, width = canvas, canvas.shape[-2], canvas.shape[-1]
    top = round((height - size) / 2.0)
    left = round((width - size) / 2.0)
    return images[..., top : top + size, left : left + size]


# ---------------------------------------------------------------------------------------------------
# The fast CPU path


def load_frame_fast(path: Path | FetchedFrame, pp: PreprocessConfig, real_root: str | None = None) -> np.ndarray:
    """``frames.load_frame``'s pixels, at most 1 level away, a few times faster for JPEGs.

    Raises as the exact path does for a frame that cannot be read. The file is opened once (with
    ``real_root``, checked inside it) and every decoder reads the bytes read then.
    """
    data = read_frame(path, real_root=real_root)
    if data is None:
        return load_frame(path, pp, real_root)
    if not is_plain_jpeg(data):
        return load_frame(_as_read(path, data), pp)
    try:
        decoded = decode_jpeg(_as_tensor(data), mode=ImageReadMode.RGB)
    except RuntimeError as err:
        # libjpeg is stricter than PIL on some damage: the reference decides whether the frame is readable.
        log.debug("torchvision refused %s (%s); decoding it with PIL", path, err)
        return load_frame(_as_read(path, data), pp)
    return resize_crop(decoded.unsqueeze(0), pp)[0].numpy()


def _as_read(path: Path | FetchedFrame, data: bytes) -> FetchedFrame:
    """Bytes already read from ``path`` (through a checked descriptor), for frames.load_frame: no second open."""
    return path if isinstance(path, FetchedFrame) else FetchedFrame(str(path), data)


def image_pixels(image: Image.Image, pp: PreprocessConfig, decode: str) -> np.ndarray:
    """A decoded picture (a video frame) as model pixels: PIL's resize on the exact path, torch's otherwise."""
    if decode == "exact":
        return to_pixels(image, pp)
    check_frame_size(*image.size)
    rgb = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).unsqueeze(0)
    return resize_crop(rgb, pp)[0].numpy()


def frame_loader(decode: str) -> Callable[..., Any]:
    """What a decoding worker does with one frame file on the resolved ``decode`` path.

    Each takes ``(path, pp, real_root=None)``: with ``real_root`` a frame whose opened file lies
    outside it raises frames.OutsideRootError.
    """
    return {"exact": load_frame, "fast": load_frame_fast, "gpu": frame_for_device, "hardware": frame_for_device}[decode]


# ---------------------------------------------------------------------------------------------------
# The gpu and hardware paths: bytes in the workers (pixels on the device: device_decoder.py)


def frame_for_device(
    path: Path | FetchedFrame, pp: PreprocessConfig, real_root: str | None = None
) -> bytes | np.ndarray:
    """A worker's share of the gpu and hardware paths: a plain, complete JPEG's bytes, or any other frame decoded here.

    Raises, as the exact path does, for a frame that cannot be read (a truncated JPEG among them).
    The file is opened once (with ``real_root``, checked inside it): what is shipped or decoded
    is what was read then.
    """
    data = read_frame(path, real_root=real_root)
    if data is None:
        return load_frame(path, pp, real_root)
    if is_plain_jpeg(data) and is_complete_jpeg(data):
        return data
    return load_frame(_as_read(path, data), pp)


def pack_for_device(frames: list[bytes | np.ndarray], pp: PreprocessConfig) -> dict[str, Any]:
    """A batch's frames, in order, as few tensors as possible (each tensor costs a shared-memory hand-over).

    ``jpegs`` holds every JPEG's bytes back to back, ``jpeg_ends`` where each ends; ``pixels`` the
    frames decoded on the CPU; ``slots`` says where frame i is: ``s >= 0`` is pixels[s], ``s < 0``
    is JPEG number ``-s - 1``.
    """
    encoded = [frame for frame in frames if isinstance(frame, bytes)]
    decoded = [frame for frame in frames if not isinstance(frame, bytes)]
    slots, next_jpeg, next_pixels = [], 0, 0
    for frame in frames:
        if isinstance(frame, bytes):
            next_jpeg += 1
            slots.append(-next_jpeg)
        else:
            slots.append(next_pixels)
            next_pixels += 1
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, dtype=np.uint8)
    pixels = np.stack(decoded) if decoded else np.zeros((0, pp.size, pp.size, 3), dtype=np.uint8)
    return {
        "jpegs": torch.from_numpy(blob.copy()),
        "jpeg_ends": np.cumsum([len(data) for data in encoded]).tolist(),
        "pixels": torch.from_numpy(pixels),
        "slots": slots,
    }
