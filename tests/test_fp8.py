"""FP8 linear layers (video_aesthetics.fp8): the arithmetic they promise, checked on the CPU with torch's own kernel."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from helpers.media import clip_record, write_frames
from video_aesthetics.clip_loader import load_clip
from video_aesthetics.config import ScoringConfig
from video_aesthetics.fp8 import FLOAT8, Float8Linear, convert_mlps, row_scales, to_float8
from video_aesthetics.head import load_head
from video_aesthetics.scoring import Scorer, iter_results


def _linear(inputs: int, outputs: int, seed: int, bias: bool = True) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(inputs, outputs, bias=bias)


@pytest.mark.parametrize(
    ("rows", "inputs", "outputs", "bias"), [(5, 32, 48, True), (257, 64, 256, False), (1, 16, 16, True)]
)
def test_float8_linear_is_the_product_of_its_rounded_operands(rows: int, inputs: int, outputs: int, bias: bool) -> None:
    linear = _linear(inputs, outputs, seed=rows, bias=bias)
    x = torch.randn(2, rows, inputs, generator=torch.Generator().manual_seed(7))
    layer = Float8Linear(linear)
    got = layer(x)
    assert got.shape == (2, rows, outputs) and got.dtype == torch.float32
    # The promise: each operand rounded to float8 with per-row scales, multiplied and scaled exactly (fp32 accumulation).
    flat = x.reshape(-1, inputs)
    x_scales, w_scales = row_scales(flat), row_scales(linear.weight.detach())
    rounded_x = to_float8(flat, x_scales).double() * x_scales.double()
    rounded_w = to_float8(linear.weight.detach(), w_scales).double() * w_scales.double()
    expected = rounded_x @ rounded_w.T + (linear.bias.detach().double() if bias else 0)
    assert torch.allclose(got.reshape(-1, outputs).double(), expected, rtol=1e-5, atol=1e-5)
    # ... and FP8 really ran: the layer differs from the full-precision one, by float8's 3-bit mantissa at most.
    full = linear(x).detach()
    error = (got - full).norm() / full.norm()
    assert 0 < error < 0.1


def test_float8_weights_and_scales_are_stored_as_torch_scaled_mm_takes_them() -> None:
    layer = Float8Linear(_linear(32, 48, seed=1))
    assert layer.weight_float8.dtype == FLOAT8 and layer.weight_float8.shape == (48, 32)
    assert layer.weight_scales.dtype == torch.float32 and layer.weight_scales.shape == (1, 48)
    assert "in_features=32, out_features=48, bias=True" in repr(layer)


def test_a_row_of_zeros_gives_the_bias_not_nan() -> None:
    linear = _linear(16, 16, seed=2)
    linear.weight.data[3] = 0
    out = Float8Linear(linear)(torch.zeros(4, 16))
    assert torch.isfinite(out).all()
    assert torch.allclose(out, linear.bias.detach().expand(4, 16))


def test_bf16_inputs_give_bf16_outputs() -> None:
    layer = Float8Linear(_linear(32, 32, seed=3).to(torch.bfloat16))
    out = layer(torch.randn(8, 32, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_only_the_mlp_layers_are_converted(model_args: dict[str, str]) -> None:
    tower = load_clip(model_args["clip_model"]).model.visual
    attention = [module for module in tower.modules() if isinstance(module, nn.MultiheadAttention)]
    assert convert_mlps(tower) == 2 * len(tower.transformer.resblocks)
    for block in tower.transformer.resblocks:
        assert isinstance(block.mlp.c_fc, Float8Linear) and isinstance(block.mlp.c_proj, Float8Linear)
    # The attention's projections are read as raw weights by nn.MultiheadAttention: they stay as they were.
    assert attention and all(type(m.out_proj) is not Float8Linear for m in attention)


def test_layers_of_sizes_the_kernel_cannot_take_are_kept() -> None:
    odd = nn.Sequential()
    odd.add_module("mlp", nn.Sequential(nn.Linear(30, 64), nn.Linear(64, 32)))
    assert convert_mlps(odd) == 1
    assert type(odd.mlp[0]) is nn.Linear and isinstance(odd.mlp[1], Float8Linear)


def test_an_fp8_tower_scores_close_to_fp32(tmp_path: Path, model_args: dict[str, str]) -> None:
    """What an fp8 GPU run computes, run here through the same Scorer code with torch's CPU kernel."""
    clip, head = load_clip(model_args["clip_model"]), load_head(model_args["mlp_checkpoint"])
    full = Scorer(clip.model, head.module, clip.preprocess, "cpu")
    clip = load_clip(model_args["clip_model"])
    low = Scorer(clip.model, head.module, clip.preprocess, "cpu", precision="fp8")
    assert full.precision == "fp32" and low.precision == "fp8" and low.dtype == torch.bfloat16
    assert any(isinstance(module, Float8Linear) for module in low.tower.modules())
    write_frames(tmp_path, "v", "v_0", count=6, seed=3, width=320, height=240)
    config = ScoringConfig(figure_root=str(tmp_path), num_workers=0, load_num=6, **model_args)
    records = [clip_record("v.mp4", ["v_0"])]
    [reference] = list(iter_results(records, config, full))
    [reduced] = list(iter_results(records, config, low))
    assert reduced.error is None and reduced.frame_scores != reference.frame_scores
    assert reduced.frame_scores == pytest.approx(reference.frame_scores, abs=2e-2)
