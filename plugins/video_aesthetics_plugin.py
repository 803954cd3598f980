"""Registers the video-aesthetics operator link with Airflow's plugin manager.

Airflow imports every .py file of the plugins folder as a top-level module; plugins/.airflowignore
keeps it out of the video_aesthetics package, which is imported as a package instead. Nothing here
imports torch.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from video_aesthetics.links import ScoredOutputLink


class VideoAestheticsPlugin(AirflowPlugin):
    name = "video_aesthetics"
    operator_extra_links = [ScoredOutputLink()]
