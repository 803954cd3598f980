"""The library's settings (``video_aesthetics.settings``) as an Airflow deployment sees them.

A setting is looked up in the environment (``VIDEO_AESTHETICS_<NAME>``), then in airflow.cfg's
``[video_aesthetics]`` section (or ``AIRFLOW__VIDEO_AESTHETICS__<NAME>``), then its default.
"""

from __future__ import annotations

from airflow.sdk import conf as airflow_conf

from video_aesthetics import settings
from video_aesthetics.errors import ConfigError


def airflow_config(key: str) -> str | None:
    """The provider's config section: the lookup the library's settings fall back to under Airflow."""
    return airflow_conf.get(settings.SECTION, key, fallback=None)


def setting(name: str) -> str | None:
    """A deployment setting: VIDEO_AESTHETICS_<NAME>, else the provider's [video_aesthetics] section, else its default."""
    return settings.get(name, airflow_config)


def int_setting(name: str) -> int:
    try:
        return settings.get_int(name, airflow_config)
    except ValueError as err:
        raise ConfigError(str(err)) from None
