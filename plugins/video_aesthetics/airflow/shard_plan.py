"""The body of the DAG's plan_shards task, and the arguments it hands each score_shard task.

The run's input is cut into shard files in its staging folder; each score_shard task gets a small
dict for XCom (its shard's files, processes, connections and the run's typed scoring parameters),
never records.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import ObjectStoragePath

from video_aesthetics import parameters, sharding
from video_aesthetics.airflow import dag_embeddings, object_store, staging
from video_aesthetics.airflow.layout import PLAN_NAME, run_layout
from video_aesthetics.airflow.payloads import ProcessArgs, ShardConnections, ShardTask
from video_aesthetics.airflow.run_params import (
    SCORING_PARAMS,
    check_input_files,
    check_locations,
    frames_conn_id,
    input_conn_id,
    scoring_config,
)
from video_aesthetics.airflow.task_errors import failing_fast
from video_aesthetics.config import ScoringConfig
from video_aesthetics.files import atomic_writer, is_remote_url

log = logging.getLogger(__name__)


def plan_shards(params: Mapping[str, Any], context: Mapping[str, Any], max_shards: int) -> list[dict[str, Any]]:
    """Cut the run's input into shard files in its staging folder; one score_shard kwargs dict per shard.

    Each is a ``payloads.ShardTask`` (the shard's files, processes and connections) and the run's
    scoring parameters (``score_kwargs``).
    """
    with failing_fast():
        check_locations(params)  # again: a cleared task may run with another conf than check_frames saw
        layout = run_layout(params, context)
        config = scoring_config(params)
        if dag_embeddings.rescore_source(params):
            return []  # no shard to score: merge rescores from the embeddings
        scoring, process = score_kwargs(config), process_kwargs(params)
        connections: ShardConnections = {}
        inputs = object_store.resolve_inputs(layout.input_spec, input_conn_id(params))
        check_input_files(inputs)
        scoring["video_root"] = shard_video_root(config, inputs)
        chunk_size = params.get("chunk_size")
        chunk_size = parameters.DEFAULTS.chunk_size if chunk_size is None else chunk_size
        parameters.check("chunk_size", chunk_size)
        staging.stamp_and_prune(layout.staging, context)  # failed runs' staging: kept for a while, then pruned
        # Remote inputs and staging: cut locally, then upload (staging.publish_staging).
        with (
            object_store.local_inputs(inputs) as local_inputs,
            staging.staging_folder(layout.staging) as cut_folder,
        ):
            # With the config, a record that scoring would refuse (an output_key that is not clips) is
            # found here, with its own file and line, not by one shard's scoring.
            plan = sharding.plan_shards(
                local_inputs,
                cut_folder,
                chunk_size,
                max_shards,
                skip_bad_records=config.skip_bad_records,
                config=config,
            )
            if object_store.is_remote_input(inputs):
                plan.inputs = [str(path) for path in inputs]
            if layout.remote_staging:
                plan = staging.publish_staging(plan, cut_folder, layout.staging, PLAN_NAME)
                # score_shard reaches its shard through the connection of work_root.
                connections.update({"input_conn_id": layout.conn_id, "output_conn_id": layout.conn_id})
        if is_remote_url(config.figure_root):
            connections["frames_conn_id"] = frames_conn_id(params)
    if not layout.remote_staging:
        with atomic_writer(layout.plan_file) as handle:
            json.dump(plan.as_dict(), handle, indent=1)
    if plan.chunk_size != chunk_size:
        log.warning(
            "chunk_size raised from %d to %d to stay within %d mapped tasks (core.max_map_length)",
            chunk_size,
            plan.chunk_size,
            max_shards,
        )
    shard_tasks: list[ShardTask] = [
        {
            "input_path": shard.input,
            "output_path": shard.output,
            **process,
            **connections,
            **dag_embeddings.shard_kwargs(params, shard.output),
        }
        for shard in plan.shards
    ]
    return [{**scoring, **shard_task} for shard_task in shard_tasks]


def score_kwargs(config: ScoringConfig) -> dict[str, Any]:
    """The operator arguments that make score_shard score with ``config``: typed values, no templates.

    Not skip_bad_records: plan_shards already sent bad lines to the rejects, so shards hold none.
    """
    return {name: getattr(config, name) for name in SCORING_PARAMS if name != "skip_bad_records"}


def shard_video_root(config: ScoringConfig, inputs: Sequence[Path | ObjectStoragePath]) -> str | None:
    """The folder score_shard takes relative video paths against, as check_frames does for extraction.

    video_root when set, else (whole videos) the input files' folder: a shard is a copy in staging,
    and a worker's current folder is no place the records know. Absolute, for workers elsewhere.
    """
    if config.video_root:
        return os.path.abspath(os.path.expanduser(config.video_root))
    if not config.whole_video or object_store.is_remote_input(list(inputs)):
        return None  # clips read frames, not videos; remote inputs name no local folder
    folders = sorted({os.path.dirname(os.path.abspath(str(path))) for path in inputs})
    if len(folders) > 1:
        log.warning(
            "the inputs lie in %d folders (%s, ...): relative video paths are left as they are; "
            "set video_root to the folder they are relative to",
            len(folders),
            folders[0],
        )
        return None
    return folders[0] if folders else None


def process_kwargs(params: Mapping[str, Any]) -> ProcessArgs:
    """The operator's own arguments that are not scoring parameters: how many processes score a shard.

    The form's switch may send null for "off"; the operator wants a real bool.
    """
    distributed = params.get("init_distributed")
    if distributed is not None:
        parameters.check("init_distributed", distributed)
    nproc = params.get("nproc")
    parameters.check("nproc", nproc)
    return {"init_distributed": bool(distributed), "nproc": nproc}
