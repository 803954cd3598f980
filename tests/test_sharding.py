"""Shard planning on real files (sharding.py): input resolution, shard limits, staged shards and bad lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.media import read_jsonl, write_jsonl
from helpers.shards import records
from video_aesthetics import sharding
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError, InputError
from video_aesthetics.sharding import ShardPlan, effective_chunk_size, plan_shards, resolve_inputs, safe_name

CONFIG = ScoringConfig(figure_root="frames")


def test_resolve_a_file_a_folder_and_a_glob(tmp_path: Path) -> None:
    for name in ("b.jsonl", "a.jsonl", "c.jsonl"):
        write_jsonl(tmp_path / "day" / name, records(1))
    (tmp_path / "day" / "notes.txt").write_text("not input")
    (tmp_path / "day" / "nested").mkdir()
    expected = [tmp_path / "day" / n for n in ("a.jsonl", "b.jsonl", "c.jsonl")]
    assert resolve_inputs(tmp_path / "day") == expected
    assert resolve_inputs(str(tmp_path / "day" / "*.jsonl")) == expected
    assert resolve_inputs(str(tmp_path / "*" / "[ab].jsonl")) == expected[:2]
    assert resolve_inputs(str(expected[1])) == [expected[1]]


def test_resolve_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no \\*.jsonl"):
        resolve_inputs(tmp_path / "empty")
    with pytest.raises(InputError, match="no file matches"):
        resolve_inputs(str(tmp_path / "*.jsonl"))
    with pytest.raises(InputError, match="neither a file"):
        resolve_inputs(tmp_path / "absent.jsonl")
    with pytest.raises(ConfigError):
        resolve_inputs("  ")


def test_chunk_size_grows_only_past_the_shard_limit() -> None:
    assert effective_chunk_size(10, 3, max_shards=4) == 3
    assert effective_chunk_size(100, 3, max_shards=4) == 25
    assert effective_chunk_size(101, 3, max_shards=4) == 26
    assert effective_chunk_size(0, 3, max_shards=4) == 3
    with pytest.raises(ConfigError, match="chunk_size"):
        effective_chunk_size(10, 0, max_shards=4)


def test_plan_cuts_inputs_into_ordered_shards_across_files(tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", records(5))
    # Blank lines are not records, in the shards as in the scorer.
    second = write_jsonl(tmp_path / "b.jsonl", ["", *map(json.dumps, records(4, start=5)), "  "])
    plan = plan_shards([first, second], tmp_path / "staging", chunk_size=4, max_shards=100)
    assert [s.records for s in plan.shards] == [4, 4, 1]
    assert [s.first_record for s in plan.shards] == [0, 4, 8]
    assert plan.records == 9 and plan.rejected == 0 and plan.rejects is None
    assert plan.inputs == [str(first), str(second)]
    joined = [r for s in plan.shards for r in read_jsonl(Path(s.input))]
    assert joined == read_jsonl(first) + read_jsonl(second)
    assert len({s.output for s in plan.shards}) == 3
    assert ShardPlan.from_dict(json.loads(json.dumps(plan.as_dict()))) == plan


def test_plan_never_exceeds_the_shard_limit(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", records(23))
    plan = plan_shards([source], tmp_path / "staging", chunk_size=1, max_shards=5)
    assert len(plan.shards) == 5
    assert plan.chunk_size == 5
    assert sum(s.records for s in plan.shards) == 23


def test_a_plan_past_the_shard_limit_reads_its_input_once_and_recuts_the_staged_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", records(40))
    second = write_jsonl(tmp_path / "b.jsonl", [*map(json.dumps, records(23, start=40)), "{not json"])
    reads: list[str] = []
    real_read_lines = sharding.read_lines

    def counting(path: Path, label: str | None = None):
        reads.append(Path(path).name)
        return real_read_lines(path, label)

    monkeypatch.setattr(sharding, "read_lines", counting)
    plan = plan_shards([first, second], tmp_path / "staging", chunk_size=2, max_shards=5, skip_bad_records=True)
    assert reads == ["a.jsonl", "b.jsonl"]
    # 64 lines (the bad one included, as count_lines counts) in at most 5 shards: 13 each.
    assert plan.chunk_size == effective_chunk_size(64, 2, max_shards=5) == 13
    assert [s.records for s in plan.shards] == [13, 13, 13, 13, 11]
    assert [s.first_record for s in plan.shards] == [0, 13, 26, 39, 52]
    assert (plan.records, plan.rejected) == (63, 1)
    joined = [r for s in plan.shards for r in read_jsonl(Path(s.input))]
    assert joined == records(63)
    staging = tmp_path / "staging"
    assert sorted(p.name for p in staging.iterdir()) == ["rejects.jsonl", "scored", "shards"]
    assert sorted(str(p) for p in (staging / "shards").iterdir()) == sorted(s.input for s in plan.shards)


def test_a_plan_far_past_the_shard_limit_stages_few_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", records(1000))
    staged: list[int] = []
    real_recut = sharding._recut

    def counting(shards, *args):
        staged.append(len(shards))
        return real_recut(shards, *args)

    monkeypatch.setattr(sharding, "_recut", counting)
    plan = plan_shards([source], tmp_path / "staging", chunk_size=1, max_shards=3)
    # Not 1,000 one-record files: past the limit each staged file doubles the records staged so far.
    assert staged == [3 + 9]
    assert [s.records for s in plan.shards] == [334, 334, 332] and plan.chunk_size == 334
    assert [r for s in plan.shards for r in read_jsonl(Path(s.input))] == records(1000)


def test_a_replanned_run_leaves_no_stale_shard(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", records(9))
    plan_shards([source], tmp_path / "staging", chunk_size=1, max_shards=100)
    plan = plan_shards([source], tmp_path / "staging", chunk_size=5, max_shards=100)
    assert sorted(p.name for p in (tmp_path / "staging" / "shards").iterdir()) == [
        "shard-00000.jsonl",
        "shard-00001.jsonl",
    ]
    assert len(plan.shards) == 2


def test_a_bad_line_is_reported_with_its_own_file_and_line(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [*map(json.dumps, records(3)), "{not json", "[1, 2]"])
    with pytest.raises(InputError, match=r"in\.jsonl:4: malformed JSON"):
        plan_shards([source], tmp_path / "staging", chunk_size=2, max_shards=100)
    plan = plan_shards([source], tmp_path / "staging", chunk_size=2, max_shards=100, skip_bad_records=True)
    assert plan.records == 3 and plan.rejected == 2
    rejects = read_jsonl(Path(plan.rejects))
    assert [(r["line"], r["raw"]) for r in rejects] == [(4, "{not json"), (5, "[1, 2]")]
    assert sum(s.records for s in plan.shards) == 3


def test_safe_names_are_file_names_and_keep_runs_apart() -> None:
    assert safe_name("2024-01-01") == "2024-01-01"
    name = safe_name("manual__2024-01-01T00:00:00+00:00")
    assert name.startswith("manual__2024-01-01T00_00_00_00_00-") and "/" not in name and ":" not in name
    assert safe_name("a:b") != safe_name("a/b")
    assert safe_name("../..") not in ("..", ".", "")
