"""Provider metadata Airflow reads through the ``apache_airflow_provider`` entry point.

Imports nothing of ours but the version and the settings table: Airflow reads this in every process.
"""

from __future__ import annotations

from typing import Any

from video_aesthetics import __version__, settings


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "video-aesthetics",
        "name": "Video Aesthetics",
        "description": "Aesthetic scoring of video clips with CLIP ViT-L/14 and LAION's aesthetic head.",
        "versions": [__version__],
        "operators": [
            {
                "integration-name": "Video Aesthetics",
                "python-modules": ["video_aesthetics.airflow.operators"],
            }
        ],
        # The one registration of the link: the API server resolves serialized links through it.
        "extra-links": ["video_aesthetics.airflow.links.ScoredOutputLink"],
        "config": settings.provider_config(),
    }
