"""The Airflow plugin: the results view in the API server, a tab on every run's page, a "Browse" entry
and the pool lookup of the DAG's preflight.

Registered through the ``airflow.plugins`` entry point of the installed package, so it needs no
file in the plugins folder. Importing it builds the FastAPI app (routes only; nothing is read
until a request comes) and imports no torch.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from video_aesthetics.airflow import preflight
from video_aesthetics.airflow.links import PARTITIONS_ROUTE, TAB_ROUTE
from video_aesthetics.airflow.views import PREFIX, create_app


class VideoAestheticsPlugin(AirflowPlugin):
    name = "video_aesthetics"
    # Not ClassVar: AirflowPlugin declares these as (mutable) instance attributes, which Airflow edits.
    fastapi_apps: list[dict[str, Any]] = [  # noqa: RUF012
        {"app": create_app(), "url_prefix": PREFIX, "name": "Video aesthetics"},
        # check_frames asks it whether the DAG's pools exist (a task cannot look pools up itself).
        preflight.fastapi_app(),
    ]
    external_views: list[dict[str, Any]] = [  # noqa: RUF012
        {
            "name": "Aesthetic scores",
            "href": PREFIX + "/runs/{DAG_ID}/{RUN_ID}",
            "destination": "dag_run",
            "url_route": TAB_ROUTE,
        },
        {
            "name": "Aesthetic partitions",
            "href": PREFIX + "/partitions",
            "destination": "nav",
            "category": "browse",
            "url_route": PARTITIONS_ROUTE,
        },
    ]
