"""The DAG's CLIP embeddings: each score_shard writes its shard's Parquet file beside its scored shard in
staging, and merge publishes them, in shard order, as ``embeddings/part-NNNNN.parquet`` in the version
folder, named in the manifest with their SHA-256s, row counts and first lines in ``scored.jsonl``.

The ``embeddings`` param says whether and how: "off" (the default), "float16" or "float32" (true
means float16). A published version's ``embeddings/`` folder is one dataset for ``rescore``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import ObjectStoragePath

from video_aesthetics import merging, sharding
from video_aesthetics.airflow import object_store
from video_aesthetics.airflow.payloads import ShardEmbeddings, ShardOutcome
from video_aesthetics.errors import ConfigError
from video_aesthetics.parameters import EMBEDDING_DTYPES as DTYPES

log = logging.getLogger(__name__)

EMBEDDINGS_DIR = "embeddings"
OFF = "off"
CHOICES = [OFF, *DTYPES]


def _suffix() -> str:
    # Imported when a run uses embeddings, not when the DAG is parsed: the module brings numpy along.
    from video_aesthetics.embeddings import PART_SUFFIX

    return PART_SUFFIX


def part_name(index: int) -> str:
    """The file name of a version's embeddings part ``index``."""
    return f"part-{index:05d}{_suffix()}"


def embeddings_dtype(params: Mapping[str, Any]) -> str | None:
    """The storage type the run's ``embeddings`` param asks for, or None when off."""
    value = params.get("embeddings")
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", OFF, "none")):
        return None
    if value is True:
        return DTYPES[0]
    if isinstance(value, str) and value.strip().lower() in DTYPES:
        return value.strip().lower()
    raise ConfigError(f"embeddings must be one of {', '.join(CHOICES)} (or true for float16), got {value!r}")


def shard_kwargs(params: Mapping[str, Any], scored_output: str) -> ShardEmbeddings:
    """The score_shard arguments that write a shard's embeddings beside its scored shard; {} when off."""
    dtype = embeddings_dtype(params)
    if dtype is None:
        return {}
    stem = scored_output[: -len(".jsonl")] if scored_output.endswith(".jsonl") else scored_output
    return {"embeddings": f"{stem}.embeddings{_suffix()}", "embeddings_dtype": dtype}


def publish(
    params: Mapping[str, Any],
    plan: sharding.ShardPlan,
    results: Sequence[ShardOutcome],
    version: ObjectStoragePath,
    root: ObjectStoragePath | None = None,
) -> dict[str, Any] | None:
    """Copy each shard's embeddings (checked against its score_shard's SHA-256) into ``version``; the manifest entry.

    ``results`` are the score_shard results in plan order (merge._check_shard_results).
    """
    dtype = embeddings_dtype(params)
    if dtype is None:
        return None
    parts = []
    first_line = 0
    for index, (shard, result) in enumerate(zip(plan.shards, results, strict=True)):
        embedded = result["embeddings"]
        if embedded is None or not embedded.get("path"):
            raise merging.MergeError(
                f"{shard.name}: score_shard wrote no embeddings, though the run asked for them: "
                "clear its score_shard task to score it again"
            )
        target = version / EMBEDDINGS_DIR / part_name(index)
        digest = _copy(object_store.store_path(str(embedded["path"])), target, root)
        if digest != embedded.get("sha256"):
            raise merging.MergeError(
                f"{shard.name}: its embeddings {embedded['path']} changed after score_shard wrote them "
                "(SHA-256 differs); rerun its score_shard task"
            )
        parts.append(
            {
                "path": str(target),
                "sha256": digest,
                "rows": int(embedded.get("rows") or 0),
                "clips": int(embedded.get("clips") or 0),
                "records": shard.records,
                "first_line": first_line,
            }
        )
        first_line += shard.records
    log.info("published the embeddings of %d shard(s) in %s", len(parts), version / EMBEDDINGS_DIR)
    return {
        "path": str(version / EMBEDDINGS_DIR),
        "dtype": dtype,
        "rows": sum(p["rows"] for p in parts),
        "parts": parts,
    }


def _copy(source: ObjectStoragePath, target: ObjectStoragePath, root: ObjectStoragePath | None) -> str:
    """Copy ``source`` to ``target`` atomically; the SHA-256 of the bytes copied."""
    digest = hashlib.sha256()
    try:
        handle = source.open("rb")
    except FileNotFoundError:
        raise merging.MergeError(f"the shard embeddings {source} are missing; rerun its score_shard task") from None

    def fill(sink: Any) -> None:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            sink.write(chunk)

    with handle:
        object_store.write_atomic(target, fill, root=root)
    return digest.hexdigest()


# --- rescore runs ------------------------------------------------------------------------------
#
# A run with ``rescore_from`` (a published partition's _manifest.json, or its folder) checks no frame
# and scores no shard: merge rescores that partition's scored.jsonl from its embeddings with the run's
# head, reduction and thresholds (video_aesthetics.rescore) and publishes the result, with the same
# embeddings, as a new version of the run's partition: a new head over a year of partitions is a
# backfill of minutes.


def rescore_source(params: Mapping[str, Any]) -> str | None:
    """The published partition a rescore run reads (``rescore_from``), or None for a scoring run."""
    from video_aesthetics.config import optional_text

    return optional_text(params.get("rescore_from"))


def read_source_manifest(location: str) -> tuple[dict[str, Any], ObjectStoragePath]:
    """The manifest ``rescore_from`` names (the file, or the partition folder holding it) and its path."""
    import json

    path = object_store.store_path(location)
    if not path.name.endswith(".json"):
        path = path / "_manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"rescore_from {location!r}: {path} does not exist; give a published partition's folder or its _manifest.json"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"rescore_from {location!r}: {path} is not a readable manifest ({err})") from None
    output = manifest.get("output") if isinstance(manifest, dict) else None
    if not isinstance(output, dict) or not isinstance(output.get("path"), str):
        raise ConfigError(f"rescore_from {location!r}: {path} is not a video-aesthetics manifest (no output.path)")
    embedded = output.get("embeddings")
    if not isinstance(embedded, dict) or not isinstance(embedded.get("parts"), list):
        raise ConfigError(
            f"rescore_from {location!r}: that partition was published without embeddings; score it again with "
            "the embeddings param set to float16 or float32, then rescore"
        )
    return manifest, path


def rescore_plan(
    params: Mapping[str, Any], config: Any, scratch: Any
) -> tuple[sharding.ShardPlan, list[ShardOutcome], dict[str, Any]]:
    """Rescore the partition ``rescore_from`` names into ``scratch``: a one-shard plan and its result, as
    merge checks and publishes scored shards, and the embeddings to publish again beside it."""
    from pathlib import Path

    from video_aesthetics.files import sha256_file
    from video_aesthetics.rescore import rescore_file

    location = str(rescore_source(params))
    manifest, manifest_path = read_source_manifest(location)
    output = manifest["output"]
    scratch = Path(scratch)
    source = scratch / "rescore" / "scored.jsonl"
    source.parent.mkdir(parents=True, exist_ok=True)
    _download_checked(output["path"], source, output.get("sha256"))
    parts_dir = scratch / "rescore" / EMBEDDINGS_DIR
    parts_dir.mkdir()
    parts = []
    for index, part in enumerate(output["embeddings"]["parts"]):
        local = parts_dir / part_name(index)
        _download_checked(str(part.get("path")), local, part.get("sha256"))
        parts.append({**part, "local": str(local)})
    rescored = scratch / "rescore" / "rescored.jsonl"
    stats = rescore_file(
        source, parts_dir, rescored, config.replace(skip_bad_records=False), clip_model=config.clip_model
    )
    shard = sharding.FileShard(0, str(source), str(rescored), stats.records, 0)
    plan = sharding.ShardPlan(inputs=[str(output["path"])], records=stats.records, chunk_size=max(1, stats.records))
    plan.shards = [shard]
    result = ShardOutcome(
        output=str(rescored),
        records=stats.records,
        clips=stats.clips,
        scored=stats.scored,
        failed=stats.failed,
        sha256=sha256_file(rescored),
        model=stats.model,
        embeddings=None,  # carried over from the source partition instead
    )
    carried = {
        "dtype": output["embeddings"].get("dtype"),
        "parts": parts,
        "rescored_from": str(manifest_path),
    }
    log.info("rescored %d clips of %s from its embeddings", stats.clips, manifest_path)
    return plan, [result], carried


def publish_carried(
    carried: dict[str, Any], version: ObjectStoragePath, root: ObjectStoragePath | None
) -> dict[str, Any]:
    """A rescore run's embeddings, the source partition's, published again in the new version."""
    parts = []
    for index, part in enumerate(carried["parts"]):
        target = version / EMBEDDINGS_DIR / part_name(index)
        local = part["local"]
        digest = _copy(object_store.store_path(local), target, root)
        parts.append({**{k: v for k, v in part.items() if k != "local"}, "path": str(target), "sha256": digest})
    return {
        "path": str(version / EMBEDDINGS_DIR),
        "dtype": carried["dtype"],
        "rows": sum(int(p.get("rows") or 0) for p in parts),
        "parts": parts,
        "rescored_from": carried["rescored_from"],
    }


def _download_checked(location: str, target: Any, expected: Any) -> None:
    from pathlib import Path

    source = object_store.store_path(location)
    digest = hashlib.sha256()
    try:
        with source.open("rb") as handle, Path(target).open("wb") as sink:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                sink.write(chunk)
    except FileNotFoundError:
        raise ConfigError(f"rescore_from: {location} is missing; the partition was pruned or moved") from None
    if expected is not None and digest.hexdigest() != expected:
        raise ConfigError(
            f"rescore_from: {location} does not match the SHA-256 its manifest records: it changed after "
            "publishing; rescore another partition or score it again"
        )
