"""The hardware JPEG engines through nvImageCodec (video_aesthetics.jpeg_hardware): where they run, and why not.

Decoding on the engines needs a GPU that has them: tests/test_device_decoder.py runs DeviceDecoder's
hardware engine there when one is present; here, what every machine can check.
"""

from __future__ import annotations

import pytest
import torch

from video_aesthetics.jpeg_hardware import HardwareJpegDecoder, hardware_decode_error, nvimgcodec_error


def test_hardware_decode_error_says_why_off_a_gpu() -> None:
    assert "this run scores on cpu" in str(hardware_decode_error(torch.device("cpu")))
    if not torch.cuda.is_available():
        assert "CUDA is not available" in str(hardware_decode_error(torch.device("cuda")))


def test_a_missing_nvimgcodec_is_named_with_what_to_install() -> None:
    try:
        from nvidia import nvimgcodec  # type: ignore[attr-defined,import-not-found,import-untyped,unused-ignore]  # noqa: F401
    except ImportError:
        error = nvimgcodec_error()
        assert error is not None and "nvImageCodec is not installed" in error and "video-aesthetics[gpu]" in error
    else:
        assert nvimgcodec_error() is None


def test_the_decoder_cannot_be_made_without_nvimgcodec() -> None:
    if nvimgcodec_error() is None:
        pytest.skip("nvImageCodec is installed")
    with pytest.raises(ImportError):
        HardwareJpegDecoder(torch.device("cuda", 0))
