"""Settings read from the environment, then a caller's lookup (Airflow's config), then their defaults."""

from __future__ import annotations

import os

import pytest

from video_aesthetics import settings
from video_aesthetics.errors import ConfigError


@pytest.fixture
def no_thread_settings(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("VIDEO_AESTHETICS_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return monkeypatch


def test_threads_auto_is_the_cpus_this_process_may_run_on(no_thread_settings: pytest.MonkeyPatch) -> None:
    allowed = os.sched_getaffinity(0)
    assert settings.cpu_threads() == len(allowed)
    try:
        os.sched_setaffinity(0, {min(allowed)})  # as taskset or a container's cpuset would
        assert settings.cpu_threads() == 1
    finally:
        os.sched_setaffinity(0, allowed)


def test_threads_auto_follows_omp_num_threads_and_a_number_wins(no_thread_settings: pytest.MonkeyPatch) -> None:
    no_thread_settings.setenv("OMP_NUM_THREADS", "3")
    assert settings.cpu_threads() == 3
    assert settings.cpu_threads(lambda name: "5" if name == "threads" else None) == 5  # airflow.cfg's section
    no_thread_settings.setenv("VIDEO_AESTHETICS_THREADS", " 2 ")
    assert settings.cpu_threads(lambda name: "5") == 2  # the environment first
    no_thread_settings.setenv("VIDEO_AESTHETICS_THREADS", "AUTO")
    assert settings.cpu_threads() == 3


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("VIDEO_AESTHETICS_THREADS", "0", r"VIDEO_AESTHETICS_THREADS\) must be auto or a whole number .* got '0'"),
        ("VIDEO_AESTHETICS_THREADS", "-2", "got '-2'"),
        ("VIDEO_AESTHETICS_THREADS", "1.5", "got '1.5'"),
        ("VIDEO_AESTHETICS_THREADS", "all", "got 'all'"),
        ("OMP_NUM_THREADS", "many", "OMP_NUM_THREADS must be unset or a whole number of threads >= 1, got 'many'"),
    ],
)
def test_bad_thread_counts_name_the_variable(
    no_thread_settings: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    no_thread_settings.setenv(variable, value)
    with pytest.raises(ConfigError, match=message):
        settings.cpu_threads()


def test_threads_is_in_the_provider_config_section() -> None:
    option = settings.provider_config()[settings.SECTION]["options"]["threads"]
    assert option["default"] == "auto" and "VIDEO_AESTHETICS_THREADS" in option["description"]
