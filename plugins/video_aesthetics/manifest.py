"""A sharded run's manifest: what went in, what came out, per-shard checksums and the model, as stable bytes."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from video_aesthetics import __version__
from video_aesthetics.config import ScoringConfig
from video_aesthetics.merging import MergeResult
from video_aesthetics.sharding import ShardPlan


def build_manifest(
    *,
    plan: ShardPlan,
    merged: MergeResult,
    config: ScoringConfig,
    output: str,
    model: dict[str, Any],
    frames: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
    rejects: str | None = None,
) -> dict[str, Any]:
    """The run's manifest: what went in, what came out, per-shard checksums, and the model that scored it.

    Holds no wall-clock time, so that a rerun of the same run writes the same bytes.
    """
    shard_summaries = [asdict(s) for s in merged.shards]
    return {
        "package": {"name": "video-aesthetics", "version": __version__},
        "run": run or {},
        "input": {"paths": plan.inputs, "records": plan.records + plan.rejected, "rejected": plan.rejected},
        "output": {
            "path": output,
            "records": merged.records,
            "sha256": merged.sha256,
            "bytes": merged.bytes,
            "rejects": rejects,
        },
        "records": {
            "in": plan.records + plan.rejected,
            "out": merged.records,
            "passthrough": merged.passthrough,
            "rejected": plan.rejected,
        },
        "clips": {
            "in": merged.clips,
            "out": merged.clips,
            "scored": merged.scored,
            "failed": merged.failed,
            "errors": merged.errors,
        },
        "frames": frames or {},
        "chunk_size": plan.chunk_size,
        "shards": shard_summaries,
        "model": model,
        "config": config.as_dict(),
    }


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
