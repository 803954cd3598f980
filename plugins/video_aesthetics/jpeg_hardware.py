"""The hardware JPEG engines (A100, H100, H200...) through nvImageCodec: the ``hardware`` decode path's decoder.

nvImageCodec is an optional extra (``pip install 'video-aesthetics[gpu]'``), imported only when the
hardware path is asked for or ``auto`` looks for it on CUDA. ``hardware_decode_error`` decides,
once per device, whether the path can run: nvImageCodec imports, and a probe JPEG decodes on the
engines to pixels close to PIL's. device_decoder.DeviceDecoder uses HardwareJpegDecoder and decodes what
the engines refuse with nvJPEG, then on the CPU.
"""

from __future__ import annotations

import functools
import io
import logging
from typing import Any

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

# What to install for the hardware path (pyproject's extra ``gpu``; nvImageCodec's wheel must match CUDA's major).
HARDWARE_INSTALL = "pip install 'video-aesthetics[gpu]' (nvidia-nvimgcodec-cu13[nvjpeg]; -cu12 for CUDA 12)"
# Levels by which the hardware probe's pixels may differ from PIL's and still count as a decode (IDCT, upsampling).
_PROBE_TOLERANCE = 48


def _probe_jpeg() -> bytes:
    """A small frame-like JPEG (baseline, 4:2:0, as video frames are saved) that any JPEG engine decodes."""
    ramp = np.linspace(0, 255, 256, dtype=np.uint8)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:144, None], ramp[None, ::-1]), axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels[:144])).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def nvimgcodec_error() -> str | None:
    """None when nvImageCodec imports; else why not and what to install."""
    try:
        _import_nvimgcodec()
    except ImportError as err:
        return f"nvImageCodec is not installed ({err}); {HARDWARE_INSTALL}"
    return None


def _import_nvimgcodec() -> Any:
    # Imported only when the hardware path is asked for: an optional extra, never needed by tests or CPUs.
    from nvidia import nvimgcodec  # type: ignore[attr-defined,import-not-found,import-untyped,unused-ignore]

    return nvimgcodec


@functools.cache
def hardware_decode_error(device: torch.device) -> str | None:
    """None when a probe JPEG decodes on ``device``'s hardware JPEG engines through nvImageCodec; else why not."""
    if device.type != "cuda":
        return f"the hardware JPEG engines are a CUDA GPU's, and this run scores on {device}"
    if not torch.cuda.is_available():
        return "CUDA is not available (no GPU, or torch built without CUDA)"
    missing = nvimgcodec_error()
    if missing is not None:
        return missing
    probe = _probe_jpeg()
    try:
        name = torch.cuda.get_device_name(device)
        # A stream of its own, as DeviceDecoder's: the legacy default stream (0) is no valid CUDA array stream.
        stream = torch.cuda.Stream(device)
        with torch.cuda.device(device), torch.cuda.stream(stream):
            decoded = HardwareJpegDecoder(device).decode(
                [torch.frombuffer(bytearray(probe), dtype=torch.uint8)], stream.cuda_stream
            )[0]
        stream.synchronize()
    except Exception as err:  # noqa: BLE001 - whatever the library or driver lacks, the answer is "not here"
        return f"nvImageCodec's hardware JPEG decoder failed on {device} ({type(err).__name__}: {err})"
    if decoded is None:
        return (
            f"nvImageCodec decodes no JPEG on {name}'s ({device}) hardware JPEG engines: the GPU has none "
            "(A100, H100, H200 and some other data-centre GPUs have them), or nvImageCodec lacks its nvJPEG "
            "library (the [nvjpeg] extra of its wheel)"
        )
    reference = torch.from_numpy(np.array(Image.open(io.BytesIO(probe)).convert("RGB"))).permute(2, 0, 1)
    if tuple(decoded.shape) != tuple(reference.shape):
        return f"the hardware JPEG decoder made a {tuple(decoded.shape)} picture of a {tuple(reference.shape)} probe"
    delta = int((decoded.cpu().int() - reference.int()).abs().max())
    if delta > _PROBE_TOLERANCE:
        return f"the hardware JPEG decoder's probe pixels are {delta} levels from PIL's (at most {_PROBE_TOLERANCE})"
    return None


class HardwareJpegDecoder:
    """nvImageCodec's decoder limited to ``device``'s hardware JPEG engines: JPEG bytes in, (3, H, W) uint8 out.

    A JPEG the engines refuse comes back as None (nvImageCodec's own answer for any frame it
    cannot decode), for the caller to decode another way. Output is RGB without EXIF rotation,
    as PIL and torchvision decode frames.
    """

    def __init__(self, device: torch.device) -> None:
        nvimgcodec = _import_nvimgcodec()
        self.device = device
        self._codestream = nvimgcodec.CodeStream
        index = device.index if device.index is not None else torch.cuda.current_device()
        # fancy_upsampling: libjpeg-turbo's (PIL's) chroma upsampling wherever a decoder offers it.
        self._decoder = nvimgcodec.Decoder(
            device_id=index,
            backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.HW_GPU_ONLY)],
            options=":fancy_upsampling=1",
        )
        # nvImageCodec 0.6 and later call sRGB SRGB, earlier releases RGB.
        rgb = getattr(nvimgcodec.ColorSpec, "SRGB", None)
        self._params = nvimgcodec.DecodeParams(
            apply_exif_orientation=False,
            color_spec=rgb if rgb is not None else nvimgcodec.ColorSpec.RGB,
            allow_any_depth=False,
        )

    def decode(self, jpegs: list[torch.Tensor], cuda_stream: int) -> list[torch.Tensor | None]:
        """Each JPEG's pixels on the device, ready in stream order on ``cuda_stream``; None where refused.

        The returned tensors keep nvImageCodec's images (their memory) alive.
        """
        sources = [self._codestream(jpeg.numpy()) for jpeg in jpegs]
        images = self._decoder.decode(sources, params=self._params, cuda_stream=cuda_stream)
        if len(images) != len(jpegs):
            raise RuntimeError(f"nvImageCodec decoded {len(images)} pictures of {len(jpegs)} JPEGs")
        return [self._pixels(image) for image in images]

    def _pixels(self, image: Any) -> torch.Tensor | None:
        if image is None:
            return None
        # Zero-copy through __cuda_array_interface__ (HWC, rows possibly padded).
        pixels = torch.as_tensor(image, device=self.device)
        if pixels.dtype != torch.uint8 or pixels.dim() != 3 or pixels.shape[-1] not in (1, 3):
            log.warning(
                "nvImageCodec decoded a JPEG as %s %s; decoding it another way", pixels.dtype, tuple(pixels.shape)
            )
            return None
        return pixels.permute(2, 0, 1).expand(3, -1, -1)
