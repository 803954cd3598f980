"""FP8 linear layers for the image tower: the opt-in ``precision`` "fp8".

Each weight row and each activation row (token) is scaled to float8 e4m3's range and rounded to
it; ``torch._scaled_mm`` multiplies the two in FP8 on the GPU's matrix units (compute capability
8.9 and later), accumulates in fp32 and applies both scales. The weights are converted once, when
the model loads; the activations' scales are computed per call (dynamic), so no calibration data
is needed.

Only the transformer's MLP layers are converted (two thirds of ViT-L/14's matrix work): the
attention's projections are read by ``nn.MultiheadAttention`` as raw weights, not through their
modules, and stay in bf16. torch's own kernel is used rather than torchao's, whose float8 path
refuses any device but a recent GPU: this one runs on the CPU too, so the tests and the
deviation measured in docs/performance.md exercise the same arithmetic.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

FLOAT8 = torch.float8_e4m3fn
_FLOAT8_MAX = torch.finfo(FLOAT8).max
# A row of zeros gets this scale instead of 0, so that dividing by it stays finite.
_SMALLEST_SCALE = 1e-12
# torch._scaled_mm needs the inner dimension (and the weight's rows) in multiples of 16.
_ALIGNMENT = 16


def row_scales(matrix: torch.Tensor) -> torch.Tensor:
    """Per-row float32 scales (rows, 1) that map each row's largest magnitude onto float8's largest value."""
    return (matrix.abs().amax(dim=-1, keepdim=True).float() / _FLOAT8_MAX).clamp(min=_SMALLEST_SCALE)


def to_float8(matrix: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return (matrix.float() / scales).clamp(-_FLOAT8_MAX, _FLOAT8_MAX).to(FLOAT8)


class Float8Linear(nn.Module):
    """``nn.Linear`` with its weight in float8 (per-row scales) and its input rounded to float8 per call.

    The output has the input's dtype; the bias is added in that dtype, after the product.
    """

    weight_float8: torch.Tensor
    weight_scales: torch.Tensor

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        scales = row_scales(weight)
        self.register_buffer("weight_float8", to_float8(weight, scales))
        # (1, out): the layout torch._scaled_mm takes for the second operand's row-wise scales.
        self.register_buffer("weight_scales", scales.t().contiguous())
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1])
        scales = row_scales(rows)
        # torch._scaled_mm is the kernel torchao calls too, the same across torch 2.4 to 2.14; the newer
        # public F.scaled_mm takes enums that torch itself still keeps private.
        product = torch._scaled_mm(  # noqa: SLF001
            to_float8(rows, scales),
            self.weight_float8.t(),  # column-major, as torch._scaled_mm requires of its second operand
            scale_a=scales,
            scale_b=self.weight_scales,
            out_dtype=torch.bfloat16 if x.dtype == torch.bfloat16 else torch.float32,
        ).to(x.dtype)
        if self.bias is not None:
            product = product + self.bias.to(x.dtype)
        return product.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def convert_mlps(tower: nn.Module) -> int:
    """Replace the ``nn.Linear`` layers of ``tower``'s transformer MLPs by Float8Linear, in place; returns how many.

    Layers whose sizes torch._scaled_mm cannot take stay as they are (logged).
    """
    converted = 0
    for name, module in list(tower.named_modules()):
        if not name.endswith("mlp"):
            continue
        for child_name, child in list(module.named_children()):
            if type(child) is not nn.Linear:
                continue
            if child.in_features % _ALIGNMENT or child.out_features % _ALIGNMENT:
                log.info("fp8: %s.%s (%s) kept: sizes not multiples of 16", name, child_name, child)
                continue
            setattr(module, child_name, Float8Linear(child))
            converted += 1
    return converted
