"""The CLIP loader: every accepted clip_model form, loaded from real files, and never random weights."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import open_clip
import pytest
import torch

from helpers.clip_models import (
    OPENAI_MEAN,
    OPENAI_STD,
    build_tiny_clip,
    save_open_clip_dir,
    save_openai_state_dict,
    save_openai_torchscript,
    tiny_clip_config,
)
from video_aesthetics import clip_loader
from video_aesthetics.clip_loader import load_clip, preprocess_config
from video_aesthetics.errors import ConfigError, WeightsError
from video_aesthetics.files import sha256_file

TINY_ARCH = "tiny-test-ViT-768"


@pytest.fixture(scope="module")
def original() -> torch.nn.Module:
    return build_tiny_clip(seed=0)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def reference(original: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return original.encode_image(images)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, original: torch.nn.Module) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clip_files")
    return {
        "dir": save_open_clip_dir(original, tiny_clip_config(), root / "dir"),
        "dir_bin": save_open_clip_dir(original, tiny_clip_config(), root / "dir_bin", safetensors=False),
        "state_dict": save_openai_state_dict(original, root / "openai_state.pt"),
        "torchscript": save_openai_torchscript(original, root / "ViT-tiny.pt"),
    }


@pytest.fixture(scope="module")
def tiny_architecture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tiny config registered with open_clip under its own name, as users register custom architectures."""
    path = tmp_path_factory.mktemp("configs") / f"{TINY_ARCH}.json"
    path.write_text(json.dumps(tiny_clip_config()))
    open_clip.add_model_config(path)
    yield TINY_ARCH
    # open_clip has no public way to unregister; keep the registry as other test modules expect it.
    open_clip.factory._MODEL_CONFIG_PATHS.remove(path)
    open_clip.factory._MODEL_CONFIGS.pop(TINY_ARCH, None)


def _encode(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_image(images)


def _assert_ready(loaded: clip_loader.LoadedClip) -> None:
    assert loaded.embed_dim == 768
    assert not loaded.model.training
    params = list(loaded.model.parameters())
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" and not p.requires_grad for p in params)


# --- parse_clip_spec ----------------------------------------------------------------------------


# --- loading real files -------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["dir", "dir_bin"])
def test_load_directory(files: dict[str, Path], reference: torch.Tensor, images: torch.Tensor, layout: str) -> None:
    loaded = load_clip(str(files[layout]))
    _assert_ready(loaded)
    torch.testing.assert_close(_encode(loaded.model, images), reference, rtol=0, atol=1e-5)
    weights = next(p for p in files[layout].iterdir() if p.name.startswith("open_clip_") and p.suffix != ".json")
    assert loaded.identity["files"][str(weights)] == sha256_file(weights)
    assert loaded.identity["source"] == "directory" and loaded.identity["spec"] == str(files[layout])


def test_load_local_dir_schema(files: dict[str, Path], reference: torch.Tensor, images: torch.Tensor) -> None:
    loaded = load_clip(f"local-dir:{files['dir']}")
    torch.testing.assert_close(_encode(loaded.model, images), reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("layout", ["state_dict", "torchscript"])
def test_load_openai_formats(
    files: dict[str, Path], reference: torch.Tensor, images: torch.Tensor, layout: str
) -> None:
    loaded = load_clip(str(files[layout]))
    _assert_ready(loaded)
    torch.testing.assert_close(_encode(loaded.model, images), reference, rtol=0, atol=1e-5)
    path = files[layout]
    assert loaded.identity == {
        "spec": str(path),
        "architecture": "custom",
        "source": "file",
        "files": {str(path): sha256_file(path)},
    }


def test_openai_preprocessing(files: dict[str, Path]) -> None:
    pp = load_clip(str(files["torchscript"])).preprocess
    assert (pp.size, pp.interpolation, pp.resize_mode, pp.fill_color) == (224, "bicubic", "shortest", 0)
    assert pp.mean == pytest.approx(OPENAI_MEAN) and pp.std == pytest.approx(OPENAI_STD)


def test_directory_preprocessing_comes_from_its_config(tmp_path: Path, original: torch.nn.Module) -> None:
    folder = save_open_clip_dir(
        original,
        tiny_clip_config(),
        tmp_path / "m",
        preprocess_cfg={
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "interpolation": "bilinear",
            "resize_mode": "squash",
        },
    )
    pp = load_clip(str(folder)).preprocess
    assert (pp.size, pp.mean, pp.std, pp.interpolation, pp.resize_mode) == (
        224,
        (0.5,) * 3,
        (0.5,) * 3,
        "bilinear",
        "squash",
    )


def test_preprocess_config_refuses_unsupported_interpolation() -> None:
    model = build_tiny_clip(seed=0)
    open_clip.set_model_preprocess_cfg(
        model, {"size": 224, "mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "nearest"}
    )
    with pytest.raises(ConfigError, match="nearest"):
        preprocess_config(model)


def test_named_architecture_with_open_clip_weights(
    tiny_architecture: str, files: dict[str, Path], reference: torch.Tensor, images: torch.Tensor
) -> None:
    weights = files["dir"] / "open_clip_model.safetensors"
    loaded = load_clip(f"{tiny_architecture}:{weights}")
    _assert_ready(loaded)
    torch.testing.assert_close(_encode(loaded.model, images), reference, rtol=0, atol=1e-5)
    assert loaded.identity["architecture"] == tiny_architecture and loaded.identity["source"] == "file"
    # The directory form names the architecture its config matches.
    assert load_clip(str(files["dir"])).identity["architecture"] == tiny_architecture


def test_named_architecture_refuses_weights_of_another_shape(tiny_architecture: str, tmp_path: Path) -> None:
    other = save_open_clip_dir(build_tiny_clip(embed_dim=512), tiny_clip_config(512), tmp_path / "other")
    with pytest.raises(WeightsError, match=f"open_clip weights for {tiny_architecture}"):
        load_clip(f"{tiny_architecture}:{other / 'open_clip_model.safetensors'}")


# --- refusals: never random weights, always say what to do -------------------------------------


def test_named_model_offline_without_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEO_AESTHETICS_OFFLINE", "1")
    monkeypatch.setenv("VIDEO_AESTHETICS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    attempts: list[object] = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: attempts.append(address))
    with pytest.raises(WeightsError) as info:
        load_clip("ViT-L/14")
    assert attempts == []  # offline means no connection is even tried
    message = str(info.value)
    for part in (
        "ViT-L/14",
        "ViT-L-14.pt",
        "https://openaipublic",
        "pass its path as clip_model",
        str(tmp_path / "cache"),
        "VIDEO_AESTHETICS_CACHE",
        "VIDEO_AESTHETICS_OFFLINE=1",
        "VIDEO_AESTHETICS_CLIP_MODEL=/path/to/ViT-L-14.pt",
        "VIDEO_AESTHETICS_MLP_CHECKPOINT=",
    ):
        assert part in message
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_hub_model_offline_without_cache(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="org/repo.*not in the cache"):
        load_clip("hf-hub:org/repo")


def test_hub_model_offline_from_the_hub_cache(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    original: torch.nn.Module,
    reference: torch.Tensor,
    images: torch.Tensor,
) -> None:
    # The layout huggingface_hub downloads into: models--org--repo/{refs/main, snapshots/<commit>/...}.
    monkeypatch.setenv("VIDEO_AESTHETICS_CACHE", str(tmp_path))
    repo = tmp_path / "models--someorg--tiny-clip"
    commit = "0123456789abcdef0123456789abcdef01234567"
    save_open_clip_dir(original, tiny_clip_config(), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    loaded = load_clip("hf-hub:someorg/tiny-clip")
    torch.testing.assert_close(_encode(loaded.model, images), reference, rtol=0, atol=1e-5)
    assert loaded.identity["source"] == "hf-hub"
    assert str(repo / "snapshots" / commit / "open_clip_model.safetensors") in loaded.identity["files"]


@pytest.mark.parametrize("where", ["cache", "openai-clip"])
def test_cached_openai_file_with_wrong_checksum_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, Path], where: str
) -> None:
    monkeypatch.setenv("VIDEO_AESTHETICS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = tmp_path / "cache" if where == "cache" else tmp_path / "home" / ".cache" / "clip"
    folder.mkdir(parents=True)
    impostor = folder / "ViT-B-32.pt"
    impostor.write_bytes(files["torchscript"].read_bytes())
    expected = open_clip.get_pretrained_url("ViT-B-32", "openai").split("/")[-2]
    with pytest.raises(WeightsError) as info:
        load_clip("ViT-B/32")
    message = str(info.value)
    assert str(impostor) in message and expected in message and sha256_file(impostor) in message


def test_missing_paths_are_named(tmp_path: Path, tiny_architecture: str) -> None:
    missing = tmp_path / "ViT-L-14.pt"
    with pytest.raises(WeightsError, match=f"{missing}.* does not exist"):
        load_clip(str(missing))
    with pytest.raises(WeightsError, match="w.safetensors does not exist"):
        load_clip(f"{tiny_architecture}:{tmp_path / 'w.safetensors'}")
    with pytest.raises(WeightsError, match="write ViT-H-14 or ViT-H-14:TAG"):
        load_clip("ViT-H/14")


def test_directory_without_weights_is_refused(tmp_path: Path, files: dict[str, Path]) -> None:
    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "open_clip_config.json").write_bytes((files["dir"] / "open_clip_config.json").read_bytes())
    with pytest.raises(WeightsError, match="missing: weights"):
        load_clip(str(folder))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="missing: open_clip_config.json, weights"):
        load_clip(str(empty))


def test_directory_with_weights_that_do_not_fit_is_refused(tmp_path: Path, files: dict[str, Path]) -> None:
    folder = save_open_clip_dir(build_tiny_clip(embed_dim=512), tiny_clip_config(768), tmp_path / "mismatch")
    with pytest.raises(WeightsError, match="do not fit"):
        load_clip(str(folder))


def test_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pt"):
        load_clip(str(junk))
    partial = tmp_path / "partial.pt"
    torch.save({"visual.proj": torch.zeros(2, 2)}, partial)
    with pytest.raises(WeightsError, match="not an OpenAI CLIP checkpoint.*ARCHITECTURE:/path"):
        load_clip(str(partial))


def test_loading_logs_architecture_source_and_digest(files: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="video_aesthetics.clip_loader"):
        loaded = load_clip(str(files["state_dict"]))
    digest = loaded.identity["files"][str(files["state_dict"])]
    assert any(
        "architecture custom" in r.message and "source file" in r.message and digest in r.message
        for r in caplog.records
    )


def test_named_model_offline_finds_the_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, Path]
) -> None:
    # The weights open_clip would download for ViT-B-32:openai, pre-placed in the cache: they are
    # used without network; being the tiny model's, they do not fit ViT-B-32 and are refused.
    monkeypatch.setenv("VIDEO_AESTHETICS_CACHE", str(tmp_path))
    repo = tmp_path / "models--timm--vit_base_patch32_clip_224.openai"
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes((files["dir"] / "open_clip_model.safetensors").read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    with pytest.raises(WeightsError) as info:
        load_clip("ViT-B/32")
    message = str(info.value)
    assert f"cannot load {snapshot / 'open_clip_model.safetensors'} as open_clip weights for ViT-B-32" in message
    # It got as far as fitting the tensors to ViT-B-32 (open_clip's checks raise these two types).
    assert "(AssertionError: " in message or "(RuntimeError: " in message


def test_tag_settings_reach_open_clip(tiny_architecture: str, files: dict[str, Path]) -> None:
    # What _load_pretrained passes for a tag's file: its QuickGELU flag and its preprocessing.
    model = clip_loader._create_model(
        tiny_architecture,
        files["dir"] / "open_clip_model.safetensors",
        force_quick_gelu=True,
        force_preprocess_cfg={"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "interpolation": "bilinear"},
    )
    pp = preprocess_config(model)
    assert (pp.mean, pp.std, pp.interpolation, pp.resize_mode) == ((0.5,) * 3, (0.25,) * 3, "bilinear", "shortest")
    tower = model.visual.transformer.resblocks[0].mlp.gelu
    assert type(tower).__name__ == "QuickGELU"


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("visual.proj", float("nan")),
        ("visual.conv1.weight", float("inf")),
        ("token_embedding.weight", float("-inf")),  # the text tower too: the file is damaged
    ],
)
@pytest.mark.parametrize("layout", ["dir", "state_dict"])
def test_non_finite_weights_are_refused_at_load(tmp_path: Path, where: str, value: float, layout: str) -> None:
    model = build_tiny_clip(seed=3)
    with torch.no_grad():
        dict(model.named_parameters())[where].view(-1)[7] = value
    if layout == "dir":
        spec = save_open_clip_dir(model, tiny_clip_config(), tmp_path / "damaged")
    else:
        spec = save_openai_state_dict(model, tmp_path / "damaged.pt")
    with pytest.raises(WeightsError, match=rf"NaN or infinite values \(in {where}\).*damaged; replace it"):
        load_clip(str(spec))


def test_buffers_that_hold_infinity_by_design_are_not_refused(files: dict[str, Path]) -> None:
    loaded = load_clip(str(files["dir"]))
    # open_clip's causal text mask is -inf above the diagonal: a buffer, not a weight.
    assert any(not bool(torch.isfinite(b).all()) for b in loaded.model.buffers())
