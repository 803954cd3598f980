from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.media import clip_record, write_jsonl
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import InputError
from video_aesthetics.records import (
    JsonlSource,
    RecordCounts,
    SampleResult,
    atomic_writer,
    clip_id,
    count_records,
    default_rejects_path,
    dumps,
    is_safe_component,
    iter_samples,
    merge_results,
    video_stem,
    with_results,
)

ROOT = Path("/frames")
CONFIG = ScoringConfig(figure_root=str(ROOT))


def test_stem_from_string_list_and_windows_path() -> None:
    assert video_stem({"video": ["./test/video1.mp4"]}, "video") == "video1"
    assert video_stem({"video": "a/b/clip.final.mov"}, "video") == "clip.final"
    assert video_stem({"video": "C:\\data\\v2.mp4"}, "video") == "v2"
    assert video_stem({"video": ["a.mp4", "b.mp4"]}, "video") is None
    assert video_stem({"video": 3}, "video") is None


def test_clip_id_falls_back_to_stem_and_index() -> None:
    assert clip_id({"id": "x_0"}, "x", 5) == "x_0"
    assert clip_id({"id": 7}, "x", 5) == "7"
    assert clip_id({"frame_start": 0}, "x", 5) == "x_5"


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "..\\x", "/abs", "x\x00y"])
def test_unsafe_components(name: str) -> None:
    assert not is_safe_component(name)


def test_samples_follow_the_frame_layout_and_refuse_escapes() -> None:
    records = [
        clip_record("./v/video1.mp4", ["video1_0", "video1_1"]),
        {"video": "../../etc/passwd.mp4", "video_clips": {"clips": [{"id": ".."}, {"id": "ok"}]}},
        {"caption": "no video"},
        {"video": "v.mp4", "video_clips": {"clips": "not a list"}},
        {"video": "w.mp4", "video_clips": [{"id": "w_a"}, "junk"]},
    ]
    samples = list(iter_samples(records, CONFIG))
    assert [(s.seq, s.record, s.clip) for s in samples] == [
        (0, 0, 0),
        (1, 0, 1),
        (2, 1, 0),
        (3, 1, 1),
        (4, 4, 0),
        (5, 4, 1),
    ]
    assert samples[0].path == ROOT / "video1" / "video1_0" / "img"
    # "passwd" is a safe stem; ".." as a clip id is not.
    assert samples[2].error == "unsafe_path" and samples[2].path is None
    assert samples[3].path == ROOT / "passwd" / "ok" / "img"
    assert samples[4].path == ROOT / "w" / "w_a" / "img"
    assert samples[5].error == "invalid_clip"


def test_whole_video_samples_one_per_record() -> None:
    config = ScoringConfig(video_clips_key="")
    samples = list(iter_samples([{"video": ["a.mp4"]}, {"x": 1}, {"video": "b.mp4"}], config))
    assert [(s.record, s.clip, s.path) for s in samples] == [(0, None, Path("a.mp4")), (2, None, Path("b.mp4"))]


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


def test_malformed_line_stops_with_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"a": 1}, "", '{"b": ', "[1, 2]"])
    with pytest.raises(InputError, match=r"in\.jsonl:3: malformed JSON.*--skip-bad-records"):
        list(JsonlSource(path))


def test_skip_bad_records_reports_bad_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"a": 1}, '{"b": ', "[1, 2]", {"c": 3}])
    source = JsonlSource(path, skip_bad_records=True)
    assert list(source) == [{"a": 1}, {"c": 3}]
    bad = list(source.bad_lines())
    assert [(b.line, b.text) for b in bad] == [(2, '{"b": '), (3, "[1, 2]")]
    assert "JSON object" in bad[1].reason


def test_missing_input_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.jsonl does not exist"):
        list(JsonlSource(tmp_path / "nope.jsonl"))


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


def test_atomic_writer_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out" / "x.jsonl"
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write("partial")
        raise RuntimeError("boom")
    assert list((tmp_path / "out").iterdir()) == []
    target.write_text("old")
    with atomic_writer(target) as handle:
        handle.write("new")
    assert target.read_text() == "new" and len(list(target.parent.iterdir())) == 1


def test_default_rejects_path() -> None:
    assert default_rejects_path("/o/out.jsonl") == Path("/o/out.rejects.jsonl")
    assert default_rejects_path("/o/out") == Path("/o/out.rejects.jsonl")


def test_atomic_writer_respects_the_umask(tmp_path: Path) -> None:
    import os

    previous = os.umask(0o022)
    try:
        with atomic_writer(tmp_path / "x.jsonl") as handle:
            handle.write("x")
    finally:
        os.umask(previous)
    assert (tmp_path / "x.jsonl").stat().st_mode & 0o777 == 0o644
