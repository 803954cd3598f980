"""OpenAI-format CLIP checkpoints (openai_clip.py): TorchScript and state dicts, loaded in fp32, refused clearly."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch

from helpers.clip_models import build_tiny_clip, openai_state_dict, save_openai_state_dict, save_openai_torchscript
from video_aesthetics.errors import WeightsError
from video_aesthetics.openai_clip import load_openai_file


@pytest.fixture(scope="module")
def original() -> torch.nn.Module:
    return build_tiny_clip(seed=3)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(8))


def _same_tower(model: torch.nn.Module, original: torch.nn.Module, images: torch.Tensor) -> None:
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), original.encode_image(images), rtol=0, atol=1e-5)
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("layout", ["state_dict", "torchscript"])
def test_both_openai_layouts_load_the_same_fp32_weights(
    tmp_path: Path, original: torch.nn.Module, images: torch.Tensor, layout: str
) -> None:
    save = save_openai_state_dict if layout == "state_dict" else save_openai_torchscript
    model, architecture = load_openai_file(save(original, tmp_path / "clip.pt"))
    _same_tower(model, original, images)
    assert architecture == "custom"  # the tiny test shapes are none of OpenAI's models
    pp = open_clip.get_model_preprocess_cfg(model)
    assert pp["mean"] == open_clip.OPENAI_DATASET_MEAN and pp["std"] == open_clip.OPENAI_DATASET_STD


def test_a_wrapped_or_data_parallel_state_dict_loads_too(
    tmp_path: Path, original: torch.nn.Module, images: torch.Tensor
) -> None:
    state = {f"module.{key}": value for key, value in openai_state_dict(original).items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "wrapped.pt")
    model, _ = load_openai_file(tmp_path / "wrapped.pt")
    _same_tower(model, original, images)


def test_what_is_no_checkpoint_is_refused_naming_the_file_and_what_to_pass(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint\xff")
    with pytest.raises(WeightsError, match=r"(?s)cannot read .*junk\.pt.*TorchScript"):
        load_openai_file(junk)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], listed)
    with pytest.raises(WeightsError, match=r"list\.pt holds a list, not a CLIP state dict"):
        load_openai_file(listed)
    partial = tmp_path / "partial.pt"
    torch.save({"visual.proj": torch.zeros(2, 2)}, partial)
    with pytest.raises(WeightsError, match=r"partial\.pt is not an OpenAI CLIP checkpoint.*ARCHITECTURE:/path"):
        load_openai_file(partial)


def test_a_pickle_that_runs_code_is_never_unpickled(tmp_path: Path) -> None:
    """State dicts are read with weights_only: a checkpoint that would run code on load is refused."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (marker.touch, ())  # type: ignore[return-value]

    path = tmp_path / "evil.pt"
    torch.save({"visual.proj": Payload()}, path)
    with pytest.raises(WeightsError, match=r"evil\.pt"):
        load_openai_file(path)
    assert not marker.exists()
