"""Merging scored shards (merging.py): order, counts, and loud failures on lost, duplicated or moved records."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from helpers.media import clip_record
from helpers.shards import scored_plan
from video_aesthetics.config import ScoringConfig
from video_aesthetics.merging import MergeError, merge_scored_shards
from video_aesthetics.records import SCORE
from video_aesthetics.sharding import plan_shards

CONFIG = ScoringConfig(figure_root="frames")
# Two clip records, as the planner writes them.
GOOD = [json.dumps(clip_record(f"v{i}.mp4", [f"v{i}_0"], n=i)).encode() for i in range(2)]


def test_merge_concatenates_in_order_and_counts(tmp_path: Path) -> None:
    plan = scored_plan(tmp_path)
    out = io.BytesIO()
    merged = merge_scored_shards(plan, CONFIG, out)
    expected = b"".join(Path(s.output).read_bytes() for s in plan.shards)
    assert out.getvalue() == expected
    assert merged.sha256 == hashlib.sha256(expected).hexdigest()
    assert merged.bytes == len(expected)
    assert [s.sha256 for s in merged.shards] == [
        hashlib.sha256(Path(s.output).read_bytes()).hexdigest() for s in plan.shards
    ]
    rows = [json.loads(line) for line in expected.splitlines()]
    clips = [c for r in rows for c in (r.get("video_clips") or {}).get("clips", [])]
    assert merged.records == 11
    assert merged.passthrough == sum(1 for r in rows if "video" not in r)
    assert merged.clips == len(clips)
    assert merged.scored == sum(1 for c in clips if c[SCORE] is not None)
    assert merged.failed == merged.errors["no_frames"] == sum(1 for c in clips if c[SCORE] is None)
    assert [s.records for s in merged.shards] == [s.records for s in plan.shards]


def test_the_merge_hands_every_checked_record_on_in_output_order(tmp_path: Path) -> None:
    plan = scored_plan(tmp_path)
    seen: list[dict] = []
    out = io.BytesIO()
    merge_scored_shards(plan, CONFIG, out, on_record=seen.append)
    assert seen == [json.loads(line) for line in out.getvalue().splitlines()] and len(seen) == 11
    # A record that fails its check is not handed on, nor any after it.
    _rewrite(Path(plan.shards[1].output), lambda lines: [lines[1], lines[0], *lines[2:]])
    seen.clear()
    with pytest.raises(MergeError, match="reordered"):
        merge_scored_shards(plan, CONFIG, io.BytesIO(), on_record=seen.append)
    assert [r["n"] for r in seen] == [0, 1, 2, 3]


def _rewrite(path: Path, change) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(change(lines)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda lines: lines[:-1], "lost"),
        (lambda lines: lines + lines[-1:], "duplicated"),
        (lambda lines: [lines[1], lines[0], *lines[2:]], "reordered"),
    ],
    ids=["lost", "duplicated", "reordered"],
)
def test_merge_fails_loudly_when_a_record_is_lost_duplicated_or_moved(tmp_path: Path, change, message) -> None:
    plan = scored_plan(tmp_path)
    _rewrite(Path(plan.shards[1].output), change)
    with pytest.raises(MergeError, match=message):
        merge_scored_shards(plan, CONFIG, io.BytesIO())


def test_merge_fails_when_a_shard_was_never_scored(tmp_path: Path) -> None:
    plan = scored_plan(tmp_path)
    Path(plan.shards[2].output).unlink()
    with pytest.raises(MergeError, match="shard-00002.*missing"):
        merge_scored_shards(plan, CONFIG, io.BytesIO())


def test_merge_fails_when_a_clip_disappears(tmp_path: Path) -> None:
    plan = scored_plan(tmp_path)

    def drop_clip(lines: list[str]) -> list[str]:
        record = json.loads(lines[0])
        record["video_clips"]["clips"].pop()
        return [json.dumps(record) + "\n", *lines[1:]]

    _rewrite(Path(plan.shards[0].output), drop_clip)
    with pytest.raises(MergeError, match="2 clips in its input and 1"):
        merge_scored_shards(plan, CONFIG, io.BytesIO())


def test_merge_fails_when_the_plan_has_a_gap(tmp_path: Path) -> None:
    plan = scored_plan(tmp_path)
    plan.shards.pop(1)
    with pytest.raises(MergeError, match="gap or an overlap"):
        merge_scored_shards(plan, CONFIG, io.BytesIO())


@pytest.mark.parametrize("score", ["NaN", "Infinity", "-Infinity", "1e999", '"4.5"', "true"])
def test_the_merge_counts_a_score_that_is_not_a_finite_number_as_failed(tmp_path: Path, score: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(GOOD[0] + b"\n" + GOOD[1] + b"\n")
    plan = plan_shards([source], tmp_path / "staging", 10, max_shards=1)
    [shard] = plan.shards
    scored = []
    for line, value in zip(Path(shard.input).read_text().splitlines(), ["5.0", score], strict=True):
        record = json.loads(line)
        text = json.dumps(record).replace('"num_frames": 30}', f'"num_frames": 30, "aesthetic_score": {value}}}')
        scored.append(text)
    Path(shard.output).write_text("\n".join(scored) + "\n")
    merged = merge_scored_shards(plan, CONFIG, io.BytesIO())
    assert (merged.clips, merged.scored, merged.failed) == (2, 1, 1)
    expected = "non_finite_score" if score in ("NaN", "Infinity", "-Infinity", "1e999") else "invalid_score"
    assert merged.errors == {expected: 1}
