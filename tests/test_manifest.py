"""A sharded run's manifest (manifest.py): stable bytes, complete counts and checksums."""

from __future__ import annotations

import io
import json
from pathlib import Path

from helpers.shards import scored_plan
from video_aesthetics.config import ScoringConfig
from video_aesthetics.manifest import build_manifest, manifest_bytes
from video_aesthetics.merging import merge_scored_shards

CONFIG = ScoringConfig(figure_root="frames")


def test_the_manifest_is_deterministic_and_complete(tmp_path: Path) -> None:
    plan = scored_plan(tmp_path)
    merged = merge_scored_shards(plan, CONFIG, io.BytesIO())
    model = {"clip": {"files": {"w": "ab" * 32}}, "head": {"sha256": "cd" * 32}}
    args = dict(
        plan=plan,
        merged=merged,
        config=CONFIG,
        output="/out/2024-01-01/scored.jsonl",
        model=model,
        run={"run_id": "r1", "partition": "2024-01-01"},
    )
    first, second = manifest_bytes(build_manifest(**args)), manifest_bytes(build_manifest(**args))
    assert first == second
    manifest = json.loads(first)
    assert manifest["records"] == {"in": 11, "out": 11, "passthrough": merged.passthrough, "rejected": 0}
    assert manifest["clips"]["in"] == manifest["clips"]["out"] == merged.clips
    assert manifest["output"]["sha256"] == merged.sha256
    assert [s["sha256"] for s in manifest["shards"]] == [s.sha256 for s in merged.shards]
    assert manifest["model"] == model
    assert manifest["package"]["name"] == "video-aesthetics" and manifest["package"]["version"]
