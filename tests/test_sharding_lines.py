"""Shard planning reads input lines as score_file does, and the merge counts what RunStats counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.media import clip_record, read_jsonl
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import InputError
from video_aesthetics.jsonl import raw_line
from video_aesthetics.sharding import count_lines, plan_shards

CONFIG = ScoringConfig(figure_root="frames")
GOOD = [json.dumps(clip_record(f"v{i}.mp4", [f"v{i}_0"], n=i)).encode() for i in range(4)]
BAD = [b'{"a": NaN}', b'{"b": "\xff"}', b'{"c": "\\udc00"}', b'{"d": 1e999}', b'{"e": 1, "e": 1}', b"\xef\xbb\xbf{}"]


def _input(tmp_path: Path) -> tuple[Path, list[bytes]]:
    lines = [b"\xef\xbb\xbf" + GOOD[0], BAD[0], GOOD[1] + b"\r", BAD[1], BAD[2], b"", GOOD[2], BAD[3], BAD[4], BAD[5]]
    lines.append(GOOD[3])
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines))  # no newline after the last line
    return path, lines


def test_a_plan_reads_lines_as_score_file_does(tmp_path: Path) -> None:
    path, lines = _input(tmp_path)
    plan = plan_shards([path], tmp_path / "staging", 3, max_shards=10, skip_bad_records=True)
    assert (plan.records, plan.rejected) == (4, 6)
    assert count_lines([path]) == plan.records + plan.rejected == sum(1 for line in lines if line.strip())
    rejects = read_jsonl(Path(plan.rejects))
    assert [raw_line(r) for r in rejects] == BAD
    assert [r["line"] for r in rejects] == [2, 4, 5, 8, 9, 10]
    shard_lines = b"".join(Path(s.input).read_bytes() for s in plan.shards).splitlines()
    # The BOM and the CR go; every shard line is a record score_file accepts unchanged.
    assert shard_lines == GOOD


def test_a_plan_without_skip_names_the_first_bad_line(tmp_path: Path) -> None:
    path, _ = _input(tmp_path)
    with pytest.raises(InputError, match=r"in\.jsonl:2: NaN"):
        plan_shards([path], tmp_path / "staging", 3, max_shards=10)


def test_a_plan_with_the_config_rejects_records_whose_output_key_scoring_would_clobber(tmp_path: Path) -> None:
    config = ScoringConfig(figure_root="frames", output_key="caption")
    records = [clip_record("v.mp4", ["v_0"], caption="text"), clip_record("w.mp4", ["w_0"])]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    plan = plan_shards([path], tmp_path / "staging", 3, max_shards=10, skip_bad_records=True, config=config)
    assert (plan.records, plan.rejected) == (1, 1)
    with pytest.raises(InputError, match=r"in\.jsonl:1: field 'caption'"):
        plan_shards([path], tmp_path / "staging", 3, max_shards=10, config=config)
