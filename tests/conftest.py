"""Fixtures shared by the suite: tiny CLIP checkpoints on disk and heads in LAION's layout, built at run time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_HEAD = Path(__file__).resolve().parents[1].parent / "shared" / "weights" / "sac+logos+ava1-l14-linearMSE.pth"


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test may reach a model hub: downloads are refused and the cache is an empty temporary folder."""
    monkeypatch.setenv("VIDEO_AESTHETICS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VIDEO_AESTHETICS_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An open_clip checkpoint directory (open_clip_config.json + weights) of a tiny 768-wide CLIP."""
    from helpers.clip_models import build_tiny_clip, save_open_clip_dir, tiny_clip_config

    folder = tmp_path_factory.mktemp("tiny_clip")
    save_open_clip_dir(build_tiny_clip(seed=0), tiny_clip_config(), folder)
    return folder


@pytest.fixture(scope="session")
def head_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A head in LAION's layout, 768 wide, seeded, saved as .pth."""
    from helpers.clip_models import build_head, save_head

    return save_head(build_head(768, seed=1), tmp_path_factory.mktemp("head") / "head.pth")


@pytest.fixture(scope="session")
def model_args(tiny_clip_dir: Path, head_file: Path) -> dict[str, str]:
    """clip_model / mlp_checkpoint values that load the tiny model and head through the real loaders."""
    return {"clip_model": str(tiny_clip_dir), "mlp_checkpoint": str(head_file)}


def pytest_configure(config: pytest.Config) -> None:
    # Tests run on 2 cores beside other work: keep torch from oversubscribing them.
    os.environ.setdefault("OMP_NUM_THREADS", "2")
