"""A run's params as the DAG's tasks read them: the scoring config, the locations, the connections.

The run's conf is user input: each reader here checks what it returns (types, bounds, allowed
roots, connections that exist) and refuses a bad value naming the param and what to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk import ObjectStoragePath

from video_aesthetics import parameters
from video_aesthetics.airflow import object_store, roots
from video_aesthetics.config import PARAM_NAMES, ScoringConfig, optional_text

# The DAG's params that are scoring parameters (ScoringConfig's fields, as declared in
# video_aesthetics.parameters); score_shard receives them, typed, from plan_shards.
SCORING_PARAMS = tuple(name for name in PARAM_NAMES if parameters.BY_NAME[name].on("dag"))


# The run's params that name a place the run reads or writes: user input, checked against the
# deployment's allowed_roots (roots.py) by every task before it does any work.
LOCATION_PARAMS = (
    "input_path",
    "input_root",
    "output_root",
    "work_root",
    "figure_root",
    "video_root",
    "rescore_from",
)


def check_locations(params: Mapping[str, Any]) -> None:
    """Refuse (ConfigError naming the param and the setting) a location param outside the allowed roots.

    Unset allowed_roots: every location passes, as before the setting existed.
    """
    for name in LOCATION_PARAMS:
        value = optional_text(params.get(name))
        if value:
            roots.check_location(value, name)


def check_input_files(inputs: list[Path | ObjectStoragePath], param: str = "input_path") -> None:
    """Each resolved input file inside the allowed roots too: a glob's match or a folder's file may be a link out."""
    for path in inputs:
        roots.check_location(str(path), param)


def report_top(params: Mapping[str, Any]) -> int:
    """The report's best/worst count, checked here so that a bad one fails before any shard is scored."""
    value = params.get("report_top")
    if value is None:
        return int(parameters.DEFAULTS.report_top)
    parameters.check("report_top", value)
    return int(value)


def input_conn_id(params: Mapping[str, Any]) -> str | None:
    """The Airflow connection of a remote input_path or input_root (input_conn_id), checked to exist."""
    return object_store.connection_id(params.get("input_conn_id"), "input_conn_id")


def frames_conn_id(params: Mapping[str, Any]) -> str | None:
    """The Airflow connection of a remote figure_root (frames_conn_id), checked to exist."""
    return object_store.connection_id(params.get("frames_conn_id"), "frames_conn_id")


def scoring_config(params: Mapping[str, Any]) -> ScoringConfig:
    """The ScoringConfig the run's params describe."""
    return ScoringConfig.from_params({name: params[name] for name in SCORING_PARAMS if name in params})
