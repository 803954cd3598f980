"""The bodies of the video_aesthetic_scoring DAG's tasks: frame check, shard plan and merge.

The DAG file only wires these together. Each function takes the run's params and Airflow context,
works on local staging files through ``sharding`` and on the output store through ``object_store``, and
returns a small dict for XCom. Errors that a retry cannot fix (bad params, a malformed input, a
lost record) fail the task at once with a message that says what to change.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from video_aesthetics import merging, parameters, report, sharding
from video_aesthetics.airflow import credentials, dag_embeddings, object_store, preflight, publishing, roots, staging
from video_aesthetics.airflow.payloads import (
    FrameCheck,
    KeptFile,
    MergeSummary,
    ProcessArgs,
    RescoreCheck,
    ShardConnections,
    ShardOutcome,
    ShardTask,
)
from video_aesthetics.airflow.publishing import DATED_RUN_TYPES, MANIFEST_NAME
from video_aesthetics.config import PARAM_NAMES, ScoringConfig, optional_text
from video_aesthetics.errors import ConfigError, InputError, VideoAestheticsError
from video_aesthetics.files import atomic_writer, is_remote_url, sha256_file
from video_aesthetics.filtering import kept_records
from video_aesthetics.jsonl import dumps
from video_aesthetics.manifest import build_manifest, manifest_bytes

log = logging.getLogger(__name__)

SCORED_NAME = "scored.jsonl"
REJECTS_NAME = "rejects.jsonl"
REPORT_NAME = "report.html"
KEPT_NAME = "kept.jsonl"
STAGING_NAME = "_staging"
PLAN_NAME = "plan.json"


# Runs that stand for their logical date write its partition; every other run writes its own.
# Versions of a partition kept after a publish, and the age under which a version is never pruned
# (it may be a concurrent publish in progress: longer than any merge runs).
KEEP_VERSIONS = 3
PRUNE_MIN_AGE_S = 6 * 3600.0


class NoInput(InputError):
    """A run has nothing to read: no input configured, or its day's partition folder is absent."""


@dataclass(frozen=True)
class RunLayout:
    """Where one DAG run reads and writes.

    ``partition`` is the ``partition`` param when given, else the logical date (YYYY-MM-DD) for
    scheduled runs and backfills, else the run id made safe as a file name (manual, API and
    asset-triggered runs: each keeps its own result). The output goes to
    ``<output_root>/<partition>/`` (see ``object_store`` for its versions and manifest) and the
    staging files (the shards, which every worker must reach) to ``<work_root>/<dag_id>/<run id>/``.
    """

    dag_id: str
    run_id: str
    run_type: str
    partition: str
    logical_date: str | None
    input_spec: str
    output_dir: str
    work_dir: str
    # The connection of output_root and work_root (output_conn_id), when they are remote.
    conn_id: str | None = None

    @property
    def staging(self) -> ObjectStoragePath:
        return object_store.store_path_with(self.work_dir, self.conn_id)

    @property
    def remote_staging(self) -> bool:
        """Whether the shard files live in an object store (workers share no disk), not a local folder."""
        return object_store.local_path(self.staging) is None

    @property
    def output(self) -> ObjectStoragePath:
        return object_store.store_path(self.output_dir)

    @property
    def output_root(self) -> ObjectStoragePath:
        """The output store's root (output_root, links resolved when local): no publish writes outside it."""
        return self.output.parent

    @property
    def manifest(self) -> ObjectStoragePath:
        return self.output / MANIFEST_NAME

    @property
    def plan_file(self) -> Path:
        return Path(self.work_dir) / PLAN_NAME

    @property
    def dated(self) -> bool:
        return self.run_type in DATED_RUN_TYPES

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_type_of(context: Mapping[str, Any]) -> str:
    dag_run = context.get("dag_run")
    run_type = getattr(dag_run, "run_type", None) or "manual"
    return str(getattr(run_type, "value", run_type))


def run_layout(params: Mapping[str, Any], context: Mapping[str, Any]) -> RunLayout:
    """The layout of the current run, from its params, its type and its logical date."""
    dag_id = context["dag"].dag_id if context.get("dag") is not None else str(context.get("dag_id", "dag"))
    run_id = str(context["run_id"])
    run_type = run_type_of(context)
    ds = context.get("ds")
    partition = _partition(params, run_type, ds, run_id)
    spec = _input_spec(params, ds, run_id)
    output_root = optional_text(params.get("output_root"))
    if not output_root:
        raise ConfigError("output_root is empty: give a local folder or a URL such as s3://bucket/prefix")
    output_conn = object_store.connection_id(params.get("output_conn_id"), "output_conn_id")
    output = object_store.store_path_with(output_root, output_conn) / partition
    work_root = optional_text(params.get("work_root"))
    work_base: Path | ObjectStoragePath
    if work_root and not object_store.is_local(work_root):
        # An object store: workers on other hosts reach the shard files through it.
        work_base = object_store.store_path_with(work_root, output_conn)
    elif work_root:
        work_base = Path(work_root).expanduser().resolve()
    else:
        local_root = object_store.local_path(object_store.store_path(output_root))
        if local_root is None:
            raise ConfigError(
                f"output_root {output_root} is a remote store: set work_root (or VIDEO_AESTHETICS_WORK_ROOT) "
                "to a folder every worker can read and write, or an object store URL, for the shard files"
            )
        work_base = local_root / STAGING_NAME
    dag_folder = work_base / sharding.safe_name(dag_id)
    _check_staging_apart(object_store.store_path_with(output_root, output_conn), dag_folder, work_root)
    work_dir = dag_folder / sharding.safe_name(run_id)
    return RunLayout(dag_id, run_id, run_type, partition, ds, spec, str(output), str(work_dir), output_conn)


def _check_staging_apart(
    output_root: ObjectStoragePath, dag_folder: Path | ObjectStoragePath, work_root: str | None
) -> None:
    """Refuse a work_root whose staging could hold or prune a published result.

    The staging of a DAG, ``<work_root>/<dag_id>/``, is where plans prune other runs' folders and
    merges remove their own: it must not be output_root, nor lie among its partitions (only below
    ``<output_root>/_staging``, the default), and output_root must not lie inside it.
    """
    outputs, staged = _place(output_root), _place(dag_folder)
    if _inside(staged, outputs) and not _inside(staged, f"{outputs}/{STAGING_NAME}"):
        raise ConfigError(
            f"work_root {work_root!r} puts this DAG's staging at {staged}, inside output_root {outputs} where "
            f"published partitions live (a partition may be named like the DAG): set work_root to a folder outside "
            f"output_root, or leave work_root empty for <output_root>/{STAGING_NAME}"
        )
    if _inside(outputs, staged):
        raise ConfigError(
            f"output_root {outputs} lies inside work_root {work_root!r}'s staging folder {staged}, which runs "
            "prune: give output_root and work_root folders apart from each other"
        )


def _place(location: Path | ObjectStoragePath) -> str:
    """A location as comparable text: a local path with links resolved, else scheme://bucket/key."""
    if isinstance(location, Path):
        return os.path.realpath(location)
    local = object_store.local_path(location)
    if local is not None:
        return os.path.realpath(local)
    return f"{location.protocol}://{str(location.path).strip('/')}"


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _partition(params: Mapping[str, Any], run_type: str, ds: str | None, run_id: str) -> str:
    return publishing.partition_name(optional_text(params.get("partition")), run_type, ds, run_id)


def _input_spec(params: Mapping[str, Any], ds: str | None, run_id: str) -> str:
    rescored = dag_embeddings.rescore_source(params)
    if rescored:
        return rescored  # a rescore run reads a published partition, not input_path
    input_path = optional_text(params.get("input_path"))
    if input_path:
        return input_path
    input_root = optional_text(params.get("input_root"))
    if not input_root:
        raise NoInput(
            "neither input_path nor input_root is set: pass input_path (a JSONL file, folder or glob), "
            "or set input_root (VIDEO_AESTHETICS_INPUT_ROOT) to a folder of <YYYY-MM-DD>/ partitions"
        )
    if not ds:
        raise ConfigError(
            f"run {run_id} has no logical date, so it has no partition of input_root to read: "
            "pass input_path (a JSONL file, folder or glob) in the run's params, or trigger it with a logical date"
        )
    if not object_store.is_local(input_root):
        remote = object_store.store_path_with(input_root, input_conn_id(params)) / ds
        if not remote.exists():
            raise NoInput(f"no input for {ds}: {remote} does not exist")
        return str(remote)
    folder = Path(input_root).expanduser() / ds
    if not folder.exists():
        raise NoInput(f"no input for {ds}: {folder} does not exist")
    return str(folder)


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


def check_frames(params: Mapping[str, Any], context: Mapping[str, Any]) -> FrameCheck | RescoreCheck:
    """Check (and by policy extract) the frames of every clip of the run's input; the counts.

    The run's first task, so it also refuses conf keys the DAG does not declare, and skips (with the
    rest of the run) a scheduled run or backfill that has no input.
    """
    from video_aesthetics.extraction import check_frames as check

    with _failing_fast():
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


def plan_shards(params: Mapping[str, Any], context: Mapping[str, Any], max_shards: int) -> list[dict[str, Any]]:
    """Cut the run's input into shard files in its staging folder; one score_shard kwargs dict per shard.

    Each is a ``payloads.ShardTask`` (the shard's files, processes and connections) and the run's
    scoring parameters (``score_kwargs``).
    """
    with _failing_fast():
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


def merge(
    params: Mapping[str, Any],
    context: Mapping[str, Any],
    shard_results: Sequence[Mapping[str, Any]] | None,
    frames: Mapping[str, Any] | None = None,
) -> MergeSummary:
    """Publish the scored shards, in input order, as a new version of the run's partition.

    ``shard_results`` (score_shard's ``payloads.ShardResult``s) and ``frames`` (check_frames') come
    from XCom, which anyone who may edit the DAG's runs can write: they are read as plain mappings
    and the shard results checked against the plan and their files before any is used.

    The version's files are written first and the partition's manifest, which names them, last:
    readers that find a manifest find the files it describes, and a merge that fails (or is
    killed) leaves the partition's previous result as it was.
    """
    with _failing_fast(), staging.scratch_folder() as scratch:
        check_locations(params)
        layout = run_layout(params, context)
        config = scoring_config(params)
        carried = None
        if dag_embeddings.rescore_source(params):
            # A rescore run: its one "shard" is the published partition, rescored here from its embeddings.
            plan, shard_results, carried = dag_embeddings.rescore_plan(params, config, scratch)
        elif layout.remote_staging:
            # Workers share no disk: the shards come down from the store into a scratch folder.
            plan, shard_results = staging.fetch_staging(layout.staging, PLAN_NAME, list(shard_results or []), scratch)
        else:
            plan = _read_plan(layout)
        results = _check_shard_results(plan, list(shard_results or []))
        model = _one_model(results)
        version = publishing.new_version(layout.output)
        # Every file of the publish is written below output_root, never through a link (object_store.write_atomic).
        root = layout.output_root
        try:
            scored = version / SCORED_NAME
            builder = report.ReportBuilder(config, top=report_top(params))
            merged, kept = _publish_merged(plan, config, version, builder, root)
            _cross_check(merged, results)
            rejects = _publish_rejects(plan, version, root)
            embedded = (
                dag_embeddings.publish_carried(carried, version, root)
                if carried is not None
                else dag_embeddings.publish(params, plan, results, version, root)
            )
            run_info = {
                "dag_id": layout.dag_id,
                "run_id": layout.run_id,
                "run_type": layout.run_type,
                "partition": layout.partition,
                "version": version.name,
                "logical_date": layout.logical_date,
            }
            summary = _publish_report(builder, plan, version, model, run_info, str(scored), root)
            manifest = build_manifest(
                plan=plan,
                merged=merged,
                config=config,
                output=str(scored),
                model=model,
                frames=dict(frames or {}),
                rejects=rejects,
                run=run_info,
            )
            # What people see in the report, machines read here.
            manifest["output"]["report"] = str(version / REPORT_NAME)
            manifest["output"]["kept"] = kept
            manifest["output"]["embeddings"] = embedded
            manifest["summary"] = summary
            data = manifest_bytes(manifest)
            object_store.write_atomic(layout.manifest, lambda out: out.write(data), root=root)
        except BaseException:
            object_store.remove_tree(version)
            raise
    pruned = publishing.prune_versions(layout.output, version.name, KEEP_VERSIONS, PRUNE_MIN_AGE_S)
    if pruned:
        log.info("removed %d old version(s) of %s: %s", len(pruned), layout.output, ", ".join(pruned))
    if layout.remote_staging:
        object_store.remove_tree(layout.staging)
    else:
        _remove_staging(Path(layout.work_dir))
    log.info(
        "published %d records (%d clips: %d scored, %d failed) as %s",
        merged.records,
        merged.clips,
        merged.scored,
        merged.failed,
        scored,
    )
    return MergeSummary(
        partition=layout.partition,
        version=version.name,
        output=str(scored),
        manifest=str(layout.manifest),
        rejects=rejects,
        report=str(version / REPORT_NAME),
        kept=kept,
        embeddings=str(embedded["path"]) if embedded else None,
        summary=report.headline(summary),
        records=merged.records,
        clips=merged.clips,
        scored=merged.scored,
        failed=merged.failed,
        sha256=merged.sha256,
    )


def _read_plan(layout: RunLayout) -> sharding.ShardPlan:
    try:
        return sharding.ShardPlan.from_dict(json.loads(layout.plan_file.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise merging.MergeError(
            f"the shard plan {layout.plan_file} is missing: clear plan_shards "
            "and its downstream tasks to plan this run again"
        ) from None


def _check_shard_results(plan: sharding.ShardPlan, results: Sequence[Mapping[str, Any]]) -> list[ShardOutcome]:
    """Every planned shard was scored once, from its own input into its own output, with every record.

    Returns what merge reads of each result, in plan order, each field checked: XCom is anyone's to write.
    """
    if len(results) != len(plan.shards):
        raise merging.MergeError(f"{len(plan.shards)} shards were planned but {len(results)} were scored")
    by_output = {str(r.get("output")): r for r in results if isinstance(r, Mapping)}
    ordered = []
    for shard in plan.shards:
        result = by_output.get(shard.output)
        if result is None:
            raise merging.MergeError(f"{shard.name} has no score_shard result for {shard.output}")
        if result.get("records") != shard.records:
            raise merging.MergeError(
                f"{shard.name}: score_shard wrote {result.get('records')} records, the shard holds {shard.records}"
            )
        digest = sha256_file(shard.output)
        if result.get("sha256") != digest:
            raise merging.MergeError(
                f"{shard.name}: {shard.output} changed after score_shard wrote it "
                "(SHA-256 differs); rerun its score_shard task"
            )
        ordered.append(_outcome(shard, result, digest))
    return ordered


def _outcome(shard: sharding.FileShard, result: Mapping[str, Any], digest: str) -> ShardOutcome:
    """The fields merge reads of ``shard``'s result (records and SHA-256 already checked against the shard)."""
    model, embeddings = result.get("model") or {}, result.get("embeddings")
    if not isinstance(model, Mapping):
        raise merging.MergeError(
            f"{shard.name}: its score_shard result names no model ({model!r}); rerun its score_shard task"
        )
    return ShardOutcome(
        output=shard.output,
        records=shard.records,
        clips=_count(shard, result, "clips"),
        scored=_count(shard, result, "scored"),
        failed=_count(shard, result, "failed"),
        sha256=digest,
        model=dict(model),
        embeddings=dict(embeddings) if isinstance(embeddings, Mapping) else None,
    )


def _count(shard: sharding.FileShard, result: Mapping[str, Any], key: str) -> int:
    value = result.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise merging.MergeError(
            f"{shard.name}: its score_shard result gives {key} as {value!r}, not a count of clips; "
            "rerun its score_shard task"
        )
    return value


def _one_model(results: list[ShardOutcome]) -> dict[str, Any]:
    models = {json.dumps(r["model"], sort_keys=True) for r in results}
    if len(models) > 1:
        raise merging.MergeError(
            "the shards were scored with different models or weights "
            "(their SHA-256s differ): rerun the run with one clip_model and mlp_checkpoint"
        )
    return json.loads(models.pop()) if models else {}


def _cross_check(merged: merging.MergeResult, results: list[ShardOutcome]) -> None:
    for key in ("clips", "scored", "failed"):
        reported = sum(r[key] for r in results)
        if reported != getattr(merged, key):
            raise merging.MergeError(
                f"the merged output holds {getattr(merged, key)} {key} clips, the shards reported {reported}"
            )


def _publish_report(
    builder: report.ReportBuilder,
    plan: sharding.ShardPlan,
    version: ObjectStoragePath,
    model: dict[str, Any],
    run: dict[str, Any],
    source: str,
    root: ObjectStoragePath,
) -> dict[str, Any]:
    """The run's score report beside its records; returns the summary the report shows."""
    summary = builder.summary(model=model, run=run, rejected=plan.rejected, source=source)
    page = report.render_html(summary, title=f"Aesthetic scores: {run['partition']}").encode("utf-8")
    object_store.write_atomic(version / REPORT_NAME, lambda out: out.write(page), root=root)
    return summary


def _publish_merged(
    plan: sharding.ShardPlan,
    config: ScoringConfig,
    version: ObjectStoragePath,
    builder: report.ReportBuilder,
    root: ObjectStoragePath,
) -> tuple[merging.MergeResult, KeptFile | None]:
    """One checked pass over the scored shards (the local staging files): it writes scored.jsonl, feeds
    ``builder`` and, with aes_min/aes_max, writes kept.jsonl, the records with only their passing clips
    (records left with none dropped)."""
    scored = version / SCORED_NAME
    if not config.filtering:
        merged = object_store.write_atomic(
            scored, lambda out: merging.merge_scored_shards(plan, config, out, on_record=builder.add), root=root
        )
        return merged, None
    target = version / KEPT_NAME

    def fill(kept_out: Any) -> tuple[merging.MergeResult, int]:
        count = 0

        def keep(record: dict[str, Any]) -> None:
            nonlocal count
            builder.add(record)
            for kept in kept_records([record], config):
                kept_out.write((dumps(kept) + "\n").encode("utf-8"))
                count += 1

        merged = object_store.write_atomic(
            scored, lambda out: merging.merge_scored_shards(plan, config, out, on_record=keep), root=root
        )
        return merged, count

    merged, records = object_store.write_atomic(target, fill, root=root)
    return merged, KeptFile(path=str(target), records=records)


def _publish_rejects(plan: sharding.ShardPlan, version: ObjectStoragePath, root: ObjectStoragePath) -> str | None:
    """Copy the plan's rejected lines into the version, beside its scored records."""
    if plan.rejects is None:
        return None
    target = version / REJECTS_NAME
    with Path(plan.rejects).open("rb") as source:
        object_store.write_atomic(target, lambda out: shutil.copyfileobj(source, out, 1 << 20), root=root)
    return str(target)


def _remove_staging(work_dir: Path) -> None:
    """Delete this run's staging files, and the folders above them that this leaves empty."""
    shutil.rmtree(work_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        work_dir.parent.rmdir()  # <work_root>/<dag_id>: fails while another run is staged there
        if work_dir.parent.parent.name == STAGING_NAME:
            work_dir.parent.parent.rmdir()


@contextlib.contextmanager
def _failing_fast() -> Iterator[None]:
    """Turn the library's own errors into AirflowFailException: retrying cannot fix them."""
    try:
        yield
    except VideoAestheticsError as err:
        raise AirflowFailException(str(err)) from err
