"""Provider metadata Airflow reads through the ``apache_airflow_provider`` entry point (no imports of our code)."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "video-aesthetics",
        "name": "Video Aesthetics",
        "description": "Aesthetic scoring of video clips with CLIP ViT-L/14 and LAION's aesthetic head.",
        "versions": ["0.1.0"],
        "operators": [
            {
                "integration-name": "Video Aesthetics",
                "python-modules": ["video_aesthetics.operators"],
            }
        ],
        "extra-links": ["video_aesthetics.links.ScoredOutputLink"],
    }
