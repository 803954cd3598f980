"""Which precision runs where (video_aesthetics.precision), and the errors that say what to change."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError
from video_aesthetics.precision import prepare_tower, resolve_precision, tower_dtype
from video_aesthetics.scoring import Scorer

CPU = torch.device("cpu")


def test_auto_is_fp32_on_the_cpu() -> None:
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("fp32", CPU) == "fp32"
    assert tower_dtype("fp32") == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_is_bf16_on_a_gpu() -> None:
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"


@pytest.mark.parametrize("name", ["bf16", "fp8"])
def test_gpu_precisions_on_the_cpu_say_what_to_choose(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"precision '{name}' runs on GPUs.*use precision 'auto' or 'fp32'"):
        resolve_precision(name, CPU)


@pytest.mark.parametrize("name", ["fp16", "FP8", "", "int8"])
def test_unknown_precisions_are_refused_with_the_choices(name: str) -> None:
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16, fp8"):
        resolve_precision(name, CPU)
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16, fp8"):
        ScoringConfig(precision=name)


def test_fp8_keeps_bf16_outside_its_layers() -> None:
    assert tower_dtype("fp8") == tower_dtype("bf16") == torch.bfloat16


def test_fp8_on_a_tower_without_mlp_layers_is_refused() -> None:
    conv = nn.Sequential(nn.Conv2d(3, 8, 3))
    with pytest.raises(ConfigError, match=r"precision 'fp8'.*\(Sequential\) has none: use precision 'auto' or 'bf16'"):
        prepare_tower(conv, "fp8")
    assert prepare_tower(conv, "bf16") is conv


def test_a_cpu_run_asking_for_fp8_fails_before_any_weights_load(model_args: dict[str, str]) -> None:
    config = ScoringConfig(
        device="cpu", precision="fp8", clip_model="/nonexistent/model", mlp_checkpoint="/nonexistent/head"
    )
    with pytest.raises(ConfigError, match="precision 'fp8' runs on GPUs"):
        Scorer.load(config)
