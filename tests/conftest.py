"""Fixtures shared by the suite: tiny CLIP checkpoints on disk and heads in LAION's layout, built at run time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import torch

    from video_aesthetics.scoring import Scorer

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


@pytest.fixture(scope="session")
def scorer(model_args: dict[str, str]) -> Scorer:
    """The tiny model and head loaded once through Scorer.load, on CPU."""
    from video_aesthetics.config import ScoringConfig
    from video_aesthetics.scoring import Scorer

    return Scorer.load(ScoringConfig(**model_args, device="cpu"))


@pytest.fixture(scope="session")
def reference(tiny_clip_dir: Path) -> torch.nn.Module:
    """The tiny model built independently of the library's loaders (helpers/reference.py)."""
    from helpers.reference import load_reference_model

    return load_reference_model(tiny_clip_dir)


def pytest_configure(config: pytest.Config) -> None:
    from helpers.airflow_env import use_private_airflow_home
    from helpers.services import PROBLEMS

    for marker in PROBLEMS:
        config.addinivalue_line("markers", f"{marker}: needs a service this machine may lack (helpers/services.py)")

    # Tests run on 2 cores beside other work: keep torch from oversubscribing them.
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    # Whatever imports airflow in this process must never touch the user's ~/airflow.
    use_private_airflow_home()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test whose service is missing, naming what to install or start; fail instead when services are required.

    One place for every service test: a fresh machine passes ``make test`` with these skipped and
    named, and ``.ci/run`` (VIDEO_AESTHETICS_REQUIRE_SERVICES=1) cannot go green by skipping them.
    """
    from helpers.services import PROBLEMS, REQUIRE_ENV, services_required

    reasons = [problem() for marker, problem in PROBLEMS.items() if item.get_closest_marker(marker) is not None]
    missing = "; ".join(reason for reason in reasons if reason)
    if missing and services_required():
        pytest.fail(f"{missing} ({REQUIRE_ENV}=1: this run needs them)", pytrace=False)
    if missing:
        pytest.skip(missing)
