"""Sharded runs made on real files for the planning, merging and manifest tests: records, a plan, scored shards."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.media import clip_record, read_jsonl, write_jsonl
from video_aesthetics.records import ERROR, SCORE
from video_aesthetics.sharding import ShardPlan, plan_shards


def records(count: int, start: int = 0) -> list[dict]:
    """Clip records with 2 clips each, and every fifth one a record with nothing to score."""
    out = []
    for i in range(start, start + count):
        if i % 5 == 4:
            out.append({"caption": f"no video {i}"})
        else:
            out.append(clip_record(f"./videos/v{i}.mp4", [f"v{i}_0", f"v{i}_1"], n=i))
    return out


def score_like_the_scorer(shard_input: Path, shard_output: Path) -> None:
    """A scored shard as the pipeline writes it: clips gain a score, or null and an error."""
    scored = []
    for original in read_jsonl(shard_input):
        record = json.loads(json.dumps(original))
        for index, clip in enumerate((record.get("video_clips") or {}).get("clips", [])):
            if index == 1 and record["n"] % 3 == 0:
                clip[SCORE], clip[ERROR] = None, "no_frames"
            else:
                clip[SCORE] = 4.0 + record["n"] / 10
        scored.append(record)
    write_jsonl(shard_output, scored)


def scored_plan(tmp_path: Path, count: int = 11, chunk: int = 4) -> ShardPlan:
    source = write_jsonl(tmp_path / "in.jsonl", records(count))
    plan = plan_shards([source], tmp_path / "staging", chunk, max_shards=100)
    for shard in plan.shards:
        score_like_the_scorer(Path(shard.input), Path(shard.output))
    return plan
