"""Settings as an Airflow deployment reads them: environment first, then airflow.cfg's section, then the default."""

from __future__ import annotations

import pytest

from video_aesthetics.airflow.conf import int_setting, setting
from video_aesthetics.errors import ConfigError
from video_aesthetics.settings import SETTINGS


def test_the_environment_wins_over_the_airflow_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__VIDEO_AESTHETICS__QUEUE", "from-airflow-cfg")
    monkeypatch.delenv("VIDEO_AESTHETICS_QUEUE", raising=False)
    assert setting("queue") == "from-airflow-cfg"
    monkeypatch.setenv("VIDEO_AESTHETICS_QUEUE", "from-env")
    assert setting("queue") == "from-env"


def test_unset_settings_take_their_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDEO_AESTHETICS_CHUNK_SIZE", raising=False)
    monkeypatch.delenv("AIRFLOW__VIDEO_AESTHETICS__CHUNK_SIZE", raising=False)
    assert int_setting("chunk_size") == int(str(SETTINGS["chunk_size"].default))


def test_a_bad_integer_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEO_AESTHETICS_CHUNK_SIZE", "lots")
    with pytest.raises(ConfigError, match="VIDEO_AESTHETICS_CHUNK_SIZE"):
        int_setting("chunk_size")
