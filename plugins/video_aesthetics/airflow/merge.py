"""The body of the DAG's last task, merge: the scored shards checked and published as a new version.

score_shard's results come from XCom, which anyone who may edit the DAG's runs can write: each is
checked against the plan and its file before any is used. The version's files (scored records,
kept records, rejects, report, embeddings) are written below output_root, the partition's
manifest last.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import ObjectStoragePath

from video_aesthetics import merging, report, sharding
from video_aesthetics.airflow import dag_embeddings, object_store, publishing, staging
from video_aesthetics.airflow.layout import PLAN_NAME, STAGING_NAME, RunLayout, run_layout
from video_aesthetics.airflow.payloads import KeptFile, MergeSummary, ShardOutcome
from video_aesthetics.airflow.run_params import check_locations, report_top, scoring_config
from video_aesthetics.airflow.task_errors import failing_fast
from video_aesthetics.config import ScoringConfig
from video_aesthetics.files import sha256_file
from video_aesthetics.filtering import kept_records
from video_aesthetics.jsonl import dumps
from video_aesthetics.manifest import build_manifest, manifest_bytes

log = logging.getLogger(__name__)

SCORED_NAME = "scored.jsonl"
REJECTS_NAME = "rejects.jsonl"
REPORT_NAME = "report.html"
KEPT_NAME = "kept.jsonl"

# Versions of a partition kept after a publish, and the age under which a version is never pruned
# (it may be a concurrent publish in progress: longer than any merge runs).
KEEP_VERSIONS = 3
PRUNE_MIN_AGE_S = 6 * 3600.0


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
    with failing_fast(), staging.scratch_folder() as scratch:
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
    page = report.encode_page(report.render_html(summary, title=f"Aesthetic scores: {run['partition']}"))
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
