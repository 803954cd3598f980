"""The image tower's arithmetic (``precision``): which one runs on which device, and preparing the tower for it.

``auto``  bf16 on GPUs, fp32 on the CPU: the shipped default (bench/gpu.py measures the others against it).
``fp32``  full precision anywhere; on the CPU it makes scores the same bits in every process (scoring.CPU_FORWARD_GROUP).
``bf16``  weights and activations in bf16, on GPUs.
``fp8``   opt-in, on GPUs of compute capability 8.9 or later (Ada, Hopper, Blackwell): bf16 with the
          transformer's MLP layers in FP8 (video_aesthetics.fp8). Its score deviation is stated in
          docs/performance.md.

The aesthetic head always runs in full precision, whatever the tower's.
"""

from __future__ import annotations

import torch
from torch import nn

from video_aesthetics.errors import ConfigError
from video_aesthetics.parameters import PRECISIONS

# FP8 matrix instructions arrived with Ada and Hopper (compute capability 8.9 and 9.0).
_FP8_CAPABILITY = (8, 9)
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.bfloat16}


def resolve_precision(name: str, device: torch.device) -> str:
    """The precision that runs for ``name`` on ``device``: fp32, bf16 or fp8; a ConfigError saying what to change otherwise."""
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name in ("bf16", "fp8") and device.type != "cuda":
        raise ConfigError(
            f"precision {name!r} runs on GPUs, but this run scores on {device}; use precision 'auto' or 'fp32'"
        )
    if name == "fp8" and torch.cuda.get_device_capability(device) < _FP8_CAPABILITY:
        found = ".".join(map(str, torch.cuda.get_device_capability(device)))
        raise ConfigError(
            f"precision 'fp8' needs a GPU of compute capability 8.9 or later (Ada, Hopper or newer); "
            f"{torch.cuda.get_device_name(device)} has {found}: use precision 'auto' or 'bf16'"
        )
    return name


def tower_dtype(precision: str) -> torch.dtype:
    """The dtype the tower's weights and activations are held in (fp8 keeps bf16 outside its MLP layers).

    Also takes "fp16", which only the benchmarks compare.
    """
    return _DTYPES[precision]


def prepare_tower(tower: nn.Module, precision: str) -> nn.Module:
    """``tower`` made ready for ``precision`` (already in tower_dtype(precision)): the fp8 layers put in place."""
    if precision != "fp8":
        return tower
    from video_aesthetics.fp8 import convert_mlps

    if not convert_mlps(tower):
        raise ConfigError(
            f"precision 'fp8' converts the transformer's MLP layers, and this image tower "
            f"({type(tower).__name__}) has none: use precision 'auto' or 'bf16'"
        )
    return tower
