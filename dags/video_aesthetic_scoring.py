"""video_aesthetic_scoring: score the aesthetics of every clip of a JSONL input, sharded over Airflow workers.

check_frames -> plan_shards -> score_shard (mapped, one task per shard) -> merge

Each run publishes a new version of ``<output_root>/<partition>/``: ``v-<time>-<id>/scored.jsonl``
(and ``rejects.jsonl``), then ``_manifest.json``, which names them and is replaced last, so a result
appears whole or not at all. The partition is the ``partition`` param when given, else the logical
date (YYYY-MM-DD) for scheduled runs and backfills, else the run id made safe as a file name:
manual, API and asset-triggered runs each keep their own result. Input: ``input_path`` (a JSONL
file, a folder of them or a glob) when given, else the logical date's partition of ``input_root``,
``<input_root>/<YYYY-MM-DD>/*.jsonl``. A scheduled run or backfill with no input skips.

Defaults come from the provider's settings (``video_aesthetics.settings``): the environment
variables VIDEO_AESTHETICS_<NAME> or the ``[video_aesthetics]`` section of airflow.cfg, for
input_root, input_path, output_root, work_root, figure_root, video_root, the connections
input_conn_id, output_conn_id and frames_conn_id (for object store URLs), clip_model,
mlp_checkpoint, chunk_size, num_workers, device, schedule (default @daily; "none" for manual runs
only), pool and queue (where score_shard runs: a "gpu" pool or Celery queue bounds GPU use).

Every scoring parameter is a param: the seed's ten (record field names input_video_key and
video_clips_key, output_key, init_distributed...) and ours (frame_scores, decode, the filter). An
empty video_clips_key scores whole videos: check_frames has nothing to check, the scoring tasks
decode the videos (relative paths against video_root, else the input file's folder, as frame
extraction takes them), merge and report work as for clips. Every scoring param is generated
from its one declaration, video_aesthetics.parameters. The trigger form groups them in sections;
the input ones sit in the section the form opens.

A run's conf is user input: every task refuses a location param outside the deployment's
``allowed_roots`` setting (when set), a work_root among output_root's partitions, and the publish
never writes through a link below output_root (see SECURITY.md).

Nothing here imports torch: the model is loaded inside the scoring tasks.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Asset, Param, dag, get_current_context, task
from airflow.sdk import conf as airflow_conf

from video_aesthetics.airflow import frame_check, shard_plan
from video_aesthetics.airflow.conf import int_setting, setting
from video_aesthetics.airflow.object_store import location_uri
from video_aesthetics.airflow.operators import MergeScoresOperator, VideoAestheticScoringOperator
from video_aesthetics.airflow.params import form
from video_aesthetics.airflow.payloads import FrameCheck, RescoreCheck
from video_aesthetics.parameters import CONNECTIONS, EMBEDDING_DTYPES, OUTPUT

OUTPUT_ROOT = str(setting("output_root"))
SCHEDULE = str(setting("schedule"))
# Downstream DAGs schedule on this asset; each event's extra names the partition, its files and counts.
SCORED = Asset(name="video_aesthetic_scores", uri=location_uri(OUTPUT_ROOT))
_SHARD_PLACEMENT = {key: value for key, value in (("pool", setting("pool")), ("queue", setting("queue"))) if value}


# The form's params that are not scoring parameters: locations, the output's partition, connections
# and run control. Every scoring parameter's Param is generated from its one declaration
# (video_aesthetics.parameters) by ``form``, which also orders the form's sections.


def _optional_text(default: str | None, description: str, section: str | None = None) -> Param:
    return Param(default, type=["null", "string"], description=description, **_section(section))


def _section(section: str | None) -> dict[str, Any]:
    return {"section": section} if section else {}


PARAMS = form(
    {
        # --- input: Airflow's default section, open in the form -------------------------------------
        "input_path": _optional_text(
            setting("input_path"),
            "Required for manual runs unless input_root is set and the run has a logical date: a JSONL file, "
            "a folder of *.jsonl files or a glob. Empty: read <input_root>/<logical date>/ (scheduled runs, backfills).",
        ),
        "input_root": _optional_text(
            setting("input_root"),
            "Folder of daily partitions <YYYY-MM-DD>/*.jsonl, read by scheduled runs and backfills.",
        ),
        "on_missing_frames": Param(
            "extract",
            type="string",
            enum=["extract", "skip", "fail"],
            description="extract: decode missing frames from the videos; skip: score the rest, those clips get null; "
            "fail: fail the run listing the first missing clips.",
        ),
        # --- output ---------------------------------------------------------------------------------
        "output_root": Param(
            OUTPUT_ROOT,
            type="string",
            minLength=1,
            description="Output store: a local folder or a URL (s3://, gs://, ...).",
            section=OUTPUT,
        ),
        "partition": _optional_text(
            None,
            "Output partition to write. Empty: the logical date for scheduled runs and backfills, the run id otherwise.",
            OUTPUT,
        ),
        "embeddings": Param(
            "off",
            type="string",
            enum=["off", *EMBEDDING_DTYPES],
            description="Also publish every scored frame's CLIP embedding, one Parquet file per shard in the version's "
            "embeddings/ folder (for search, deduplication, rescoring): off, float16 (half the size) or float32.",
            section=OUTPUT,
        ),
        "rescore_from": _optional_text(
            None,
            "Rescore instead of score: a published partition's folder or _manifest.json, published with embeddings. "
            "No frame is read and no shard scored: its records are rescored from their embeddings with this run's "
            "mlp_checkpoint, reduction and thresholds, and published as a new version of this run's partition.",
            OUTPUT,
        ),
        "work_root": _optional_text(
            setting("work_root"),
            "Staging for shard files, reached by all workers: a shared folder or a URL (s3://...: no shared disk). "
            "Empty: <output_root>/_staging (local stores). Never output_root itself nor inside one of its partitions.",
            OUTPUT,
        ),
        # --- connections: last, collapsed like every section but the input ---------------------------
        "input_conn_id": _optional_text(
            setting("input_conn_id"),
            "Airflow connection of a remote input_path or input_root. Empty: the store's defaults.",
            CONNECTIONS,
        ),
        "output_conn_id": _optional_text(
            setting("output_conn_id"),
            "Airflow connection of a remote output_root and work_root. Empty: the store's defaults.",
            CONNECTIONS,
        ),
        "frames_conn_id": _optional_text(
            setting("frames_conn_id"),
            "Airflow connection of a remote figure_root. Empty: the store's defaults.",
            CONNECTIONS,
        ),
    }
)


@task(multiple_outputs=False)
def check_frames() -> FrameCheck | RescoreCheck:
    context = get_current_context()
    return frame_check.check_frames(context["params"], context)


@task(multiple_outputs=False)
def plan_shards() -> list[dict[str, Any]]:
    context = get_current_context()
    return shard_plan.plan_shards(context["params"], context, airflow_conf.getint("core", "max_map_length"))


@dag(
    dag_id="video_aesthetic_scoring",
    description="Aesthetic scores for video clips (CLIP ViT-L/14 + LAION head), sharded over workers",
    schedule=None if SCHEDULE.lower() in ("none", "null", "") else SCHEDULE,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    params=PARAMS,
    default_args={
        "retries": int_setting("retries"),
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(hours=12),
    },
    tags=["video", "aesthetics"],
    doc_md=__doc__,
)
def video_aesthetic_scoring() -> None:
    frames = check_frames()
    planned = plan_shards()
    frames >> planned
    # Each shard's kwargs carry the run's scoring parameters, typed, from plan_shards: no templates
    # render them, so a path like "1_0" stays the string it was.
    scored = VideoAestheticScoringOperator.partial(
        task_id="score_shard",
        map_index_template="{{ task.input_path.split('/')[-1].split('.')[0] }}",
        **_SHARD_PLACEMENT,
    ).expand_kwargs(planned)
    # Runs when no shard was planned (an empty input still publishes an empty result), but not when
    # check_frames skipped the run for want of input.
    MergeScoresOperator(
        task_id="merge",
        shard_results=scored.output,
        frames=frames,
        outlets=[SCORED],
        trigger_rule="none_failed_min_one_success",
    )


video_aesthetic_scoring()
