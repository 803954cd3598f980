"""The download cache: checksums, verified atomic downloads over file:// URLs, and the offline switch."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from video_aesthetics import settings
from video_aesthetics import weights_cache as cache
from video_aesthetics.errors import WeightsError

OFFLINE_VARIABLES = ("VIDEO_AESTHETICS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads allowed; the tests below only ever fetch file:// URLs, which never leave the machine."""
    for name in OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "weights.bin"
    path.parent.mkdir()
    path.write_bytes(os.urandom(3 * (1 << 20) + 123))  # more than one 1 MiB chunk, not a multiple of it
    return path


def test_sha256_file_matches_hashlib_across_chunks(source: Path) -> None:
    assert cache.sha256_file(source) == hashlib.sha256(source.read_bytes()).hexdigest()


def test_cache_dir_from_environment_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VIDEO_AESTHETICS_CACHE", str(tmp_path / "c"))
    assert settings.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("VIDEO_AESTHETICS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert settings.cache_dir() == tmp_path / ".cache" / "video-aesthetics"


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", " Yes ", "on"])
@pytest.mark.parametrize("name", OFFLINE_VARIABLES)
def test_offline_true_values(monkeypatch: pytest.MonkeyPatch, online: None, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    assert cache.offline()


@pytest.mark.parametrize("value", ["", "0", "false", "no", "off", "2"])
def test_offline_false_values(monkeypatch: pytest.MonkeyPatch, online: None, value: str) -> None:
    assert not cache.offline()
    for name in OFFLINE_VARIABLES:
        monkeypatch.setenv(name, value)
    assert not cache.offline()


def test_fetch_downloads_verifies_and_keeps_no_temporary(online: None, source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "sub" / "weights.bin"
    digest = cache.sha256_file(source)
    assert cache.fetch(source.as_uri(), dest, digest) == dest
    assert dest.read_bytes() == source.read_bytes()
    assert os.listdir(dest.parent) == ["weights.bin"]


def test_fetch_without_checksum(online: None, source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "weights.bin"
    cache.fetch(source.as_uri(), dest, None)
    assert dest.read_bytes() == source.read_bytes()


def test_fetch_uses_existing_file_without_downloading(online: None, source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "weights.bin"
    digest = cache.sha256_file(source)
    cache.fetch(source.as_uri(), dest, digest)
    source.unlink()  # a second download would now fail
    assert cache.fetch(source.as_uri(), dest, digest) == dest


def test_fetch_wrong_checksum_keeps_nothing(online: None, source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "weights.bin"
    wrong = "0" * 64
    with pytest.raises(WeightsError) as info:
        cache.fetch(source.as_uri(), dest, wrong)
    message = str(info.value)
    assert wrong in message and cache.sha256_file(source) in message and source.as_uri() in message
    assert os.listdir(dest.parent) == []


def test_fetch_refuses_existing_file_with_wrong_checksum(online: None, source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "weights.bin"
    dest.write_bytes(b"not the weights")
    with pytest.raises(WeightsError) as info:
        cache.fetch(source.as_uri(), dest, cache.sha256_file(source))
    message = str(info.value)
    assert str(dest) in message and cache.sha256_file(source) in message
    assert hashlib.sha256(b"not the weights").hexdigest() in message
    assert "delete it" in message


def test_fetch_offline_fails_at_once_with_instructions(source: Path, tmp_path: Path) -> None:
    # conftest turns VIDEO_AESTHETICS_OFFLINE on for every test.
    dest = tmp_path / "cache" / "weights.bin"
    with pytest.raises(WeightsError) as info:
        cache.fetch(source.as_uri(), dest, None, hint="or pass its path as mlp_checkpoint")
    message = str(info.value)
    for part in ("weights.bin", source.as_uri(), str(dest), "VIDEO_AESTHETICS_OFFLINE", "mlp_checkpoint"):
        assert part in message
    # The settings that point every face at local files (make demo, make ui, Airflow read the environment).
    for part in (
        "VIDEO_AESTHETICS_CLIP_MODEL=/path/to/ViT-L-14.pt",
        "VIDEO_AESTHETICS_MLP_CHECKPOINT=/path/to/sac+logos+ava1-l14-linearMSE.pth",
        "--clip-model",
        "--mlp-checkpoint",
    ):
        assert part in message
    assert not dest.parent.exists()


def test_fetch_failed_download_names_url_and_destination(online: None, tmp_path: Path) -> None:
    url = (tmp_path / "nowhere" / "weights.bin").as_uri()
    dest = tmp_path / "cache" / "weights.bin"
    with pytest.raises(WeightsError) as info:
        cache.fetch(url, dest, None, hint="or pass its path as mlp_checkpoint")
    message = str(info.value)
    assert url in message and str(dest) in message and "mlp_checkpoint" in message
    assert "VIDEO_AESTHETICS_MLP_CHECKPOINT=" in message and "VIDEO_AESTHETICS_CLIP_MODEL=" in message
    assert os.listdir(dest.parent) == []


def test_cache_module_imports_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, video_aesthetics.weights_cache; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
