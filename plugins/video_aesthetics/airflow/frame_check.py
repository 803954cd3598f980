"""The body of the DAG's first task, check_frames: the run's checks, then its frames checked (or extracted).

The first task refuses what would fail the run later (unknown conf keys, locations outside the
allowed roots, a bad report_top, a missing pool) before any work, and skips a scheduled run or
backfill that has no input.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowSkipException

from video_aesthetics.airflow import credentials, dag_embeddings, object_store, preflight
from video_aesthetics.airflow.layout import NoInput, run_layout, run_type_of
from video_aesthetics.airflow.payloads import FrameCheck, RescoreCheck
from video_aesthetics.airflow.publishing import DATED_RUN_TYPES
from video_aesthetics.airflow.run_params import (
    check_input_files,
    check_locations,
    frames_conn_id,
    input_conn_id,
    report_top,
    scoring_config,
)
from video_aesthetics.airflow.task_errors import failing_fast
from video_aesthetics.config import optional_text
from video_aesthetics.errors import ConfigError
from video_aesthetics.files import is_remote_url

log = logging.getLogger(__name__)


def check_frames(params: Mapping[str, Any], context: Mapping[str, Any]) -> FrameCheck | RescoreCheck:
    """Check (and by policy extract) the frames of every clip of the run's input; the counts.

    The run's first task, so it also refuses conf keys the DAG does not declare, and skips (with the
    rest of the run) a scheduled run or backfill that has no input.
    """
    from video_aesthetics.extraction import check_frames as check

    with failing_fast():
        _refuse_unknown_conf(context)
        check_locations(params)  # before anything is opened: the conf is user input
        report_top(params)
        preflight.check_run(context)  # a missing pool would leave score_shard scheduled forever
        try:
            layout = run_layout(params, context)
        except NoInput as err:
            if run_type_of(context) not in DATED_RUN_TYPES:
                raise
            log.warning("skipping this %s run: %s", run_type_of(context), err)
            raise AirflowSkipException(str(err)) from None
        config = scoring_config(params)
        if dag_embeddings.rescore_source(params):
            # A rescore run reads no frame: merge rescores the published partition from its embeddings.
            dag_embeddings.read_source_manifest(layout.input_spec)
            return RescoreCheck(rescore_from=layout.input_spec, partition=layout.partition)
        inputs = object_store.resolve_inputs(layout.input_spec, input_conn_id(params))
        check_input_files(inputs)
        video_root = optional_text(params.get("video_root"))
        log.info(
            "checking frames of %d input file(s) from %s under %s", len(inputs), layout.input_spec, config.figure_root
        )
        policy = str(params.get("on_missing_frames", "extract"))
        with object_store.local_inputs(inputs) as local_inputs:
            if is_remote_url(config.figure_root):
                from video_aesthetics.extraction import check_remote_frames

                frames_conn = frames_conn_id(params)
                options = object_store.storage_options(config.figure_root, frames_conn)
                # A store refusing reads fails check_frames for a retry, naming the connection.
                with credentials.naming_connection(frames_conn, "frames_conn_id"):
                    report = check_remote_frames(local_inputs, config.replace(frames_storage_options=options), policy)
            else:
                report = check(local_inputs, config, policy, Path(video_root).expanduser() if video_root else None)
    return FrameCheck(
        records=report.records,
        clips=report.clips,
        present=report.present,
        extracted=report.extracted,
        missing=report.missing,
        unreadable_videos=report.unreadable_videos,
        first_missing=list(report.first_missing),
        partition=layout.partition,
        inputs=len(inputs),
    )


def _refuse_unknown_conf(context: Mapping[str, Any]) -> None:
    """A typo in a trigger's conf (figure_rot) would silently fall back to a default: refuse it."""
    dag, dag_run = context.get("dag"), context.get("dag_run")
    conf = getattr(dag_run, "conf", None) or {}
    if dag is None or not conf:
        return
    known = set(dag.params.keys())
    unknown = sorted(set(conf) - known)
    if unknown:
        raise ConfigError(
            f"unknown param(s) {unknown} in the run's conf; the DAG's params are: {', '.join(sorted(known))}"
        )
