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
decode the videos, merge and report work as for clips. The trigger form groups them in sections;
the input ones sit in the section the form opens.

A run's conf is user input: every task refuses a location param outside the deployment's
``allowed_roots`` setting (when set), a work_root among output_root's partitions, and the publish
never writes through a link below output_root (see SECURITY.md).

Nothing here imports torch: the model is loaded inside the scoring tasks.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, dag, get_current_context, task
from airflow.sdk import conf as airflow_conf

from video_aesthetics.airflow import dag_tasks as tasks
from video_aesthetics.airflow.conf import int_setting, setting
from video_aesthetics.airflow.object_store import location_uri
from video_aesthetics.airflow.operators import MergeScoresOperator, VideoAestheticScoringOperator
from video_aesthetics.config import DECODES, DEVICES, REDUCTIONS, ScoringConfig
from video_aesthetics.report import DEFAULT_TOP, MAX_TOP

OUTPUT_ROOT = str(setting("output_root"))
SCHEDULE = str(setting("schedule"))
# Downstream DAGs schedule on this asset; each event's extra names the partition, its files and counts.
SCORED = Asset(name="video_aesthetic_scores", uri=location_uri(OUTPUT_ROOT))
_SHARD_PLACEMENT = {key: value for key, value in (("pool", setting("pool")), ("queue", setting("queue"))) if value}


_DEFAULTS = ScoringConfig()
# A closed set, so the trigger form offers a list and names the field of a bad value.
DEVICE_CHOICES = [*DEVICES, *(f"cuda:{index}" for index in range(8))]

# Trigger form sections, in the order the form shows them (a section appears where its first param
# is). The input params carry none: they land in Airflow's own "Run Parameters" section, the only one
# the form opens by default, because a manual run cannot do without input_path.
OUTPUT, MODEL, FILTER, PERFORMANCE, CONNECTIONS = (
    "Output",
    "Model",
    "Filter and report",
    "Performance",
    "Connections",
)
# Upper bounds where an absurd value costs a worker's memory or the scheduler's map length, not
# just time: a form value of 10**9 workers or frames must be refused at the trigger, by field name.
MAX_LOAD_NUM = 64
MAX_BATCH_SIZE = 4096
MAX_NUM_WORKERS = 64
MAX_NPROC = 64
MAX_CHUNK_SIZE = 10**7


def _optional_text(default: str | None, description: str, section: str | None = None) -> Param:
    return Param(default, type=["null", "string"], description=description, **_section(section))


def _switch(default: bool, description: str, section: str | None = None) -> Param:
    """A true/false param. ["boolean", "null"], not "boolean": Airflow's form stars every param whose type
    excludes null as required, and an unticked switch is a valid answer (null counts as the default)."""
    return Param(default, type=["boolean", "null"], description=description, **_section(section))


def _count(default: int, minimum: int, maximum: int, description: str, section: str | None = None) -> Param:
    return Param(
        default, type="integer", minimum=minimum, maximum=maximum, description=description, **_section(section)
    )


def _section(section: str | None) -> dict[str, str]:
    return {"section": section} if section else {}


PARAMS = {
    # --- input: Airflow's default section, open in the form -------------------------------------
    "input_path": _optional_text(
        setting("input_path"),
        "Required for manual runs unless input_root is set and the run has a logical date: a JSONL file, "
        "a folder of *.jsonl files or a glob. Empty: read <input_root>/<logical date>/ (scheduled runs, backfills).",
    ),
    "input_root": _optional_text(
        setting("input_root"), "Folder of daily partitions <YYYY-MM-DD>/*.jsonl, read by scheduled runs and backfills."
    ),
    "figure_root": Param(
        setting("figure_root"),
        type="string",
        minLength=1,
        description="Extracted frames: <figure_root>/<video stem>/<clip id>/img/*.jpg; a folder or a URL (s3://...). "
        "Unused when video_clips_key is empty (whole videos).",
    ),
    "video_root": _optional_text(
        setting("video_root"),
        "Folder relative video paths are taken against when frames are extracted. Empty: the input file's folder.",
    ),
    "input_video_key": Param(
        _DEFAULTS.input_video_key,
        type="string",
        minLength=1,
        description="The record field holding the video path.",
    ),
    "video_clips_key": _optional_text(
        _DEFAULTS.video_clips_key,
        "The record field holding the clips. Empty: score each record's whole video instead (frames decoded "
        "from the video by the scoring tasks; give absolute video paths).",
    ),
    "on_missing_frames": Param(
        "extract",
        type="string",
        enum=["extract", "skip", "fail"],
        description="extract: decode missing frames from the videos; skip: score the rest, those clips get null; "
        "fail: fail the run listing the first missing clips.",
    ),
    "skip_bad_records": _switch(
        _DEFAULTS.skip_bad_records, "Send malformed input lines to rejects.jsonl instead of failing."
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
    "output_key": _optional_text(
        None, "The record field the scored clips go to. Empty: the same as video_clips_key.", OUTPUT
    ),
    "frame_scores": _switch(
        _DEFAULTS.frame_scores, "Also write each clip's per-frame scores (aesthetic_frame_scores).", OUTPUT
    ),
    "embeddings": Param(
        "off",
        type="string",
        enum=["off", "float16", "float32"],
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
    # --- model ----------------------------------------------------------------------------------
    "clip_model": Param(
        setting("clip_model"),
        type="string",
        minLength=1,
        description="CLIP model: a name (ViT-L/14), NAME:tag, hf-hub:org/repo, a file or a folder.",
        section=MODEL,
    ),
    "mlp_checkpoint": _optional_text(
        setting("mlp_checkpoint"),
        "Aesthetic head weights (.pth or .safetensors). Empty: LAION's official sac+logos+ava1-l14-linearMSE.pth.",
        MODEL,
    ),
    "load_num": _count(_DEFAULTS.load_num, 1, MAX_LOAD_NUM, "Frames read per clip.", MODEL),
    "reduction": Param(
        _DEFAULTS.reduction,
        type="string",
        enum=list(REDUCTIONS),
        description="How a clip's frame scores make its score.",
        section=MODEL,
    ),
    # --- filter and report ----------------------------------------------------------------------
    "aes_min": Param(
        _DEFAULTS.aes_min,
        type=["null", "number"],
        description="Aesthetic filter: clips scoring at least this get filtered: true (DataFlow-MM's aes_min); "
        "with a threshold the run also publishes kept.jsonl. Empty: no filter.",
        section=FILTER,
    ),
    "aes_max": Param(
        _DEFAULTS.aes_max,
        type=["null", "number"],
        description="Aesthetic filter's upper bound.",
        section=FILTER,
    ),
    "report_top": _count(DEFAULT_TOP, 1, MAX_TOP, "Best and worst clips shown in the report.", FILTER),
    # --- performance ----------------------------------------------------------------------------
    "chunk_size": _count(
        int_setting("chunk_size"),
        1,
        MAX_CHUNK_SIZE,
        "Records per shard (grown when needed to stay within core.max_map_length).",
        PERFORMANCE,
    ),
    "batch_size": _count(_DEFAULTS.batch_size, 1, MAX_BATCH_SIZE, "Clips per forward batch.", PERFORMANCE),
    "num_workers": _count(
        int_setting("num_workers"),
        0,
        MAX_NUM_WORKERS,
        "Decoding worker processes per shard (0: decode in the task process).",
        PERFORMANCE,
    ),
    "device": Param(
        setting("device"),
        type="string",
        enum=DEVICE_CHOICES,
        description="auto (CUDA when present), cpu, cuda or cuda:N.",
        section=PERFORMANCE,
    ),
    "decode": Param(
        _DEFAULTS.decode,
        type="string",
        enum=list(DECODES),
        description="How frames become pixels: auto (gpu on CUDA, else fast), exact (PIL, the reference), "
        "fast (libjpeg-turbo and torch's resize on the CPU), gpu (nvJPEG in batches).",
        section=PERFORMANCE,
    ),
    "init_distributed": _switch(
        False,
        "Score each shard with several processes: one per GPU, or nproc CPU processes.",
        PERFORMANCE,
    ),
    "nproc": Param(
        None,
        type=["null", "integer"],
        minimum=1,
        maximum=MAX_NPROC,
        description="Scoring processes per shard with init_distributed. Empty: one per GPU.",
        section=PERFORMANCE,
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


@task(multiple_outputs=False)
def check_frames() -> dict:
    context = get_current_context()
    return tasks.check_frames(context["params"], context)


@task(multiple_outputs=False)
def plan_shards() -> list[dict[str, str]]:
    context = get_current_context()
    return tasks.plan_shards(context["params"], context, airflow_conf.getint("core", "max_map_length"))


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
