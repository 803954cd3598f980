"""Scores written back into copies of records, and records zipped with their results (writeback.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.media import clip_record
from video_aesthetics.config import ScoringConfig
from video_aesthetics.jsonl import dumps
from video_aesthetics.records import (
    RecordCounts,
    SampleResult,
    count_records,
)
from video_aesthetics.writeback import merge_results, with_results

ROOT = Path("/frames")
CONFIG = ScoringConfig(figure_root=str(ROOT))


def test_with_results_writes_scores_and_errors_into_a_copy() -> None:
    record = clip_record("v.mp4", ["v_0", "v_1"], caption="c")
    record["video_clips"]["clips"][1]["aesthetic_error"] = "stale"
    before = json.dumps(record)
    scored = with_results(
        record, [SampleResult(0, 5.5, None, [5.0, 6.0]), SampleResult(1, None, "no_frames")], ScoringConfig()
    )
    assert json.dumps(record) == before
    clips = scored["video_clips"]["clips"]
    assert clips[0]["aesthetic_score"] == 5.5 and "aesthetic_error" not in clips[0]
    assert "aesthetic_frame_scores" not in clips[0]
    assert clips[1]["aesthetic_score"] is None and clips[1]["aesthetic_error"] == "no_frames"
    assert scored["caption"] == "c" and clips[0]["frame_end"] == 30


def test_output_key_leaves_the_input_column_alone() -> None:
    record = clip_record("v.mp4", ["v_0"])
    config = ScoringConfig(output_key="scored_clips", frame_scores=True)
    scored = with_results(record, [SampleResult(0, 4.0, None, [4.0])], config)
    assert "aesthetic_score" not in scored["video_clips"]["clips"][0]
    assert scored["scored_clips"]["clips"][0] == {
        **record["video_clips"]["clips"][0],
        "aesthetic_score": 4.0,
        "aesthetic_frame_scores": [4.0],
    }


def test_non_finite_scores_become_errors() -> None:
    scored = with_results({"video": "v.mp4", "video_clips": [{}]}, [SampleResult(0, float("nan"))], ScoringConfig())
    assert scored["video_clips"][0] == {"aesthetic_score": None, "aesthetic_error": "non_finite_score"}
    with pytest.raises(ValueError):
        dumps({"x": float("nan")})


def test_merge_results_keeps_order_and_counts() -> None:
    records = [clip_record("a.mp4", ["a_0", "a_1"]), {"meta": 1}, clip_record("b.mp4", ["b_0"])]
    results = [SampleResult(0, 1.0), SampleResult(1, None, "no_frames"), SampleResult(2, 3.0)]
    counts = RecordCounts()
    out = list(merge_results(records, results, CONFIG, counts))
    assert out[1] == {"meta": 1}
    assert [c["aesthetic_score"] for c in out[0]["video_clips"]["clips"]] == [1.0, None]
    assert (counts.records, counts.clips, counts.scored, counts.failed, counts.passthrough) == (3, 3, 2, 1, 1)
    assert counts.errors == {"no_frames": 1}
    totals = count_records(records, CONFIG)
    assert (totals.records, totals.clips, totals.passthrough) == (3, 3, 1)


def test_merge_results_refuses_a_missing_result() -> None:
    with pytest.raises(RuntimeError, match="sample 1"):
        list(merge_results([clip_record("a.mp4", ["a_0", "a_1"])], [SampleResult(0, 1.0)], CONFIG, RecordCounts()))


def test_non_finite_scores_are_failures_in_every_count_and_frame_scores_are_null() -> None:
    config = ScoringConfig(figure_root=str(ROOT), frame_scores=True)
    records = [clip_record("a.mp4", ["a_0", "a_1", "a_2"])]
    results = [
        SampleResult(0, float("inf"), None, [float("inf"), 1.0]),
        SampleResult(1, float("nan"), None, [float("nan")]),
        SampleResult(2, 2.0, None, [2.0]),
    ]
    counts = RecordCounts()
    [scored] = list(merge_results(records, results, config, counts))
    clips = scored["video_clips"]["clips"]
    assert [c["aesthetic_score"] for c in clips] == [None, None, 2.0]
    assert [c.get("aesthetic_error") for c in clips] == ["non_finite_score", "non_finite_score", None]
    assert [c["aesthetic_frame_scores"] for c in clips] == [[None, 1.0], [None], [2.0]]
    assert (counts.scored, counts.failed, counts.errors) == (1, 2, {"non_finite_score": 2})
    json.loads(dumps(scored))  # writable
