"""clip_model strings parsed (clip_spec.py): every accepted form, and clear refusals of what would load random weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from video_aesthetics import clip_loader
from video_aesthetics.clip_spec import ClipSpec, parse_clip_spec
from video_aesthetics.errors import ConfigError


@pytest.mark.parametrize(
    ("spec", "architecture", "tag"),
    [
        ("ViT-B/32", "ViT-B-32", "openai"),
        ("ViT-B/16", "ViT-B-16", "openai"),
        ("ViT-L/14", "ViT-L-14", "openai"),
        ("ViT-L/14@336px", "ViT-L-14-336", "openai"),
        ("RN50", "RN50", "openai"),
        ("RN50x64", "RN50x64", "openai"),
        ("ViT-L-14", "ViT-L-14", "openai"),
        ("ViT-L-14:openai", "ViT-L-14", "openai"),
        ("ViT-H-14:laion2b_s32b_b79k", "ViT-H-14", "laion2b_s32b_b79k"),
        ("ViT-B-32:laion2b-s34b-b79k", "ViT-B-32", "laion2b_s34b_b79k"),
    ],
)
def test_parse_named(spec: str, architecture: str, tag: str) -> None:
    parsed = parse_clip_spec(spec)
    assert (parsed.kind, parsed.architecture, parsed.tag) == ("pretrained", architecture, tag)
    assert parsed.source == tag


def test_parse_default_is_openai_vit_l14() -> None:
    assert parse_clip_spec(clip_loader.DEFAULT_CLIP_MODEL) == ClipSpec("ViT-L/14", "pretrained", "ViT-L-14", "openai")


def test_parse_hub_and_directories(tmp_path: Path) -> None:
    assert (
        parse_clip_spec("hf-hub:laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K").hub_id
        == "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K"
    )
    assert parse_clip_spec("hf-hub:org/repo").source == "hf-hub"
    parsed = parse_clip_spec(str(tmp_path))
    assert (parsed.kind, parsed.path, parsed.source) == ("directory", str(tmp_path), "directory")
    assert parse_clip_spec("local-dir:/somewhere/else") == ClipSpec(
        "local-dir:/somewhere/else", "directory", path="/somewhere/else"
    )


@pytest.mark.parametrize(
    ("spec", "kind", "architecture", "path"),
    [
        ("/models/ViT-L-14.pt", "openai-file", None, "/models/ViT-L-14.pt"),
        ("ViT-L-14.pt", "openai-file", None, "ViT-L-14.pt"),
        ("~/models/clip.bin", "openai-file", None, "~/models/clip.bin"),
        (
            "ViT-L-14:/models/open_clip_model.safetensors",
            "open_clip-file",
            "ViT-L-14",
            "/models/open_clip_model.safetensors",
        ),
        ("ViT-B-32:weights.bin", "open_clip-file", "ViT-B-32", "weights.bin"),
        ("ViT-B-32:models/epoch_3", "open_clip-file", "ViT-B-32", "models/epoch_3"),
        ("/data/runs:v2/clip.pt", "openai-file", None, "/data/runs:v2/clip.pt"),
        ("C:\\models\\ViT-L-14.pt", "openai-file", None, "C:\\models\\ViT-L-14.pt"),
    ],
)
def test_parse_paths(spec: str, kind: str, architecture: str | None, path: str) -> None:
    parsed = parse_clip_spec(spec)
    assert (parsed.kind, parsed.architecture, parsed.path, parsed.source) == (kind, architecture, path, "file")


def test_parse_existing_file_without_suffix_is_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("checkpoint").write_bytes(b"x")
    assert parse_clip_spec("checkpoint").kind == "openai-file"
    assert parse_clip_spec("ViT-L-14:checkpoint") == ClipSpec(
        "ViT-L-14:checkpoint", "open_clip-file", "ViT-L-14", path="checkpoint"
    )


def test_parse_refuses_a_bare_name_without_openai_weights() -> None:
    with pytest.raises(ConfigError) as info:
        parse_clip_spec("ViT-H-14")
    assert "laion2b_s32b_b79k" in str(info.value) and "ViT-H-14:TAG" in str(info.value)


def test_parse_refuses_unknown_architecture_with_close_matches() -> None:
    with pytest.raises(ConfigError, match="close matches: .*ViT-L-14"):
        parse_clip_spec("ViT-L-41")
    with pytest.raises(ConfigError, match="unknown open_clip architecture 'ViT-Q-99'"):
        parse_clip_spec("ViT-Q-99:openai")


def test_parse_refuses_unknown_tag_listing_tags() -> None:
    with pytest.raises(ConfigError) as info:
        parse_clip_spec("ViT-L-14:datacomp_xl_s13b_b91k")
    message = str(info.value)
    assert "close matches: datacomp_xl_s13b_b90k" in message and "openai" in message


@pytest.mark.parametrize("spec", ["", "   ", "hf-hub:", "hf-hub:no-org", "ViT-L-14:", "local-dir:"])
def test_parse_refuses_malformed(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_clip_spec(spec)
