from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.media import clip_record, write_jsonl
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import InputError
from video_aesthetics.records import (
    BadLine,
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
    output_key_conflict,
    parse_line,
    raw_line,
    record_check,
    samples_of,
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


# --- hostile lines: everything that cannot be written back exactly is a malformed line ----------------

DEEP = 100_000


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b'{"a": Infinity}', "Infinity is not a JSON number"),
        (b'{"a": [-Infinity]}', "-Infinity is not a JSON number"),
        (b'{"a": 1e400}', "too large for a 64-bit float"),
        (b'{"a": -2.5E+999}', "too large for a 64-bit float"),
        (b'{"a": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"k\\udc00": 1}', "lone UTF-16 surrogate"),
        (b'{"a": ["x", {"b": "\\udfff\\ud800"}]}', "lone UTF-16 surrogate"),
        (b'{"a": ' + b"[" * DEEP + b"]" * DEEP + b"}", "nested deeper than"),
        (b'{"a": ' + b"[" * 150 + b"]" * 150 + b"}", "nested deeper than 100 levels"),
        (b'{"a": ' + b'{"b": ' * 120 + b"1" + b"}" * 120 + b"}", "nested deeper than 100 levels"),
        (b'{"a": ' + b"7" * 5000 + b"}", "an integer of more than"),
        (b'{"a": "caf\xe9"}', "not valid UTF-8 (byte 0xe9"),
        (b'{"a": "\xc0\xaf"}', "not valid UTF-8"),
        (b'{"a": "\xed\xa0\x80"}', "not valid UTF-8"),  # a surrogate encoded as UTF-8
        (b'\xff\xfe{"a": 1}', "not valid UTF-8"),  # a UTF-16 BOM
        (b'{"a": 1, "a": 2}', "key 'a' appears twice"),
        (b'{"a": {"b": 1, "b": 1}}', "key 'b' appears twice"),
        (b'{"\\udc00": 1, "\\udc00": 2}', "appears twice"),  # the reason itself must be writable
        (b'{"a": 1}\x00', "malformed JSON"),
        (b"\x0c", "malformed JSON"),  # form feed: blank to Python, not JSON whitespace
        (b'{"a": "line\nbreak"}'.replace(b"\n", b"\r"), "malformed JSON"),  # a raw control character
    ],
)
def test_lines_that_cannot_be_written_back_exactly_are_malformed(raw: bytes, reason: str) -> None:
    bad = parse_line(raw, "in.jsonl", 2)
    assert isinstance(bad, BadLine), bad
    assert reason in bad.reason
    assert raw_line(json.loads(dumps(bad.as_reject()).encode("utf-8"))) == raw


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'\xef\xbb\xbf{"a": 1}', {"a": 1}),  # a BOM on the first line
        (b'{"e": "\\ud83d\\ude00"}', {"e": "\U0001f600"}),  # a surrogate pair is one character
        (b'{"a": ' + b"[" * 99 + b"]" * 99 + b"}", None),  # 100 levels: the limit itself
        (b'{"n": ' + b"9" * 4000 + b"}", None),
        (b'{"f": 1.7976931348623157e308, "z": -0.0, "t": "\\u0000"}', None),
        (b'{"a": 1}\r', {"a": 1}),  # CRLF files
    ],
)
def test_lines_that_can_be_written_back_are_records(raw: bytes, expected: dict | None) -> None:
    record = parse_line(raw, "in.jsonl", 1)
    assert isinstance(record, dict), record
    if expected is not None:
        assert record == expected
    assert json.loads(dumps(record)) == record


def test_a_bom_is_accepted_only_on_the_first_line() -> None:
    assert isinstance(parse_line(b'\xef\xbb\xbf{"a": 1}', "f", 1), dict)
    assert isinstance(parse_line(b'\xef\xbb\xbf{"a": 1}', "f", 2), BadLine)


def test_rejects_keep_the_exact_bytes_of_every_bad_line(tmp_path: Path) -> None:
    lines = [
        b'\xef\xbb\xbf{"ok": 0}',
        b'{"a": NaN}',
        b'{"b": "\xff\xfe"}',
        b"   ",
        b'{"ok": 1}\r',
        b'{"c": "\\ud800"}',
        b"\xe2\x80\xa8",  # U+2028 alone: text, not JSON
        b"[1]",
        b'{"ok": 2}',
    ]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines))  # the last line has no newline
    source = JsonlSource(path, skip_bad_records=True)
    assert list(source) == [{"ok": 0}, {"ok": 1}, {"ok": 2}]
    bad = list(source.bad_lines())
    assert [b.line for b in bad] == [2, 3, 6, 7, 8]
    rejects = [json.loads(dumps(b.as_reject())) for b in bad]
    assert [raw_line(r) for r in rejects] == [lines[i - 1] for i in (2, 3, 6, 7, 8)]
    # Text where the bytes are UTF-8, base64 where they are not.
    assert "raw_base64" in rejects[1] and "raw" not in rejects[1]
    assert rejects[0]["raw"] == '{"a": NaN}'
    assert all(r["source"] == str(path) for r in rejects)
    with pytest.raises(InputError, match=r"in\.jsonl:2: NaN"):
        list(JsonlSource(path))


def test_a_non_utf8_line_stops_the_run_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": "\x80"}\n')
    with pytest.raises(InputError, match=r"in\.jsonl:2: not valid UTF-8 \(byte 0x80 at byte 8\)"):
        list(JsonlSource(path))


def test_only_newline_ends_a_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes('{"a": "x\u2028y", "b": "\u0085"}\n'.encode())
    assert list(JsonlSource(path)) == [{"a": "x\u2028y", "b": "\u0085"}]


@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_an_input_that_is_not_a_file_is_refused_with_what_to_change(tmp_path: Path, kind: str) -> None:
    import os

    path = tmp_path / "in.jsonl"
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path = Path("/dev/null")
    with pytest.raises(InputError, match="folder|pipe|device"):
        list(JsonlSource(path))


def test_an_input_that_fails_mid_read_is_an_input_error() -> None:
    # /proc/self/mem is a regular file whose first page cannot be read (EIO).
    with pytest.raises(InputError, match=r"cannot read input /proc/self/mem"):
        list(JsonlSource(Path("/proc/self/mem")))


# --- fields are never clobbered ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a caption", 3, {"not": "clips"}, True, {"clips": "x"}])
def test_an_output_key_holding_another_field_is_refused(tmp_path: Path, value: object) -> None:
    config = ScoringConfig(figure_root=str(ROOT), output_key="caption")
    record = clip_record("v.mp4", ["v_0"], caption=value)
    problem = output_key_conflict(record, config)
    assert problem is not None and "'caption' (output_key)" in problem
    with pytest.raises(InputError, match="record 2: field 'caption'"):
        count_records([clip_record("v.mp4", ["v_0"]), record], config)
    path = write_jsonl(tmp_path / "in.jsonl", [record])
    with pytest.raises(InputError, match=r"in\.jsonl:1: field 'caption'"):
        list(JsonlSource(path, check=record_check(config)))
    skipping = JsonlSource(path, skip_bad_records=True, check=record_check(config))
    assert list(skipping) == [] and len(list(skipping.bad_lines())) == 1


@pytest.mark.parametrize("value", [None, {"clips": []}, [{"id": "old"}]])
def test_an_output_key_holding_clips_or_nothing_may_be_replaced(value: object) -> None:
    config = ScoringConfig(figure_root=str(ROOT), output_key="scored")
    assert output_key_conflict({**clip_record("v.mp4", ["v_0"]), "scored": value}, config) is None


def test_an_output_key_on_a_record_without_clips_is_left_alone() -> None:
    config = ScoringConfig(figure_root=str(ROOT), output_key="caption")
    assert output_key_conflict({"caption": "text", "video": "v.mp4"}, config) is None
    assert record_check(ScoringConfig(figure_root=str(ROOT))) is None


# --- the record's own shape: marked, never silently passed through --------------------------------------


@pytest.mark.parametrize("video", [["a.mp4", "b.mp4"], 7, {"path": "a.mp4"}, [3], [""], True])
def test_a_video_field_that_names_no_one_file_marks_the_clips(video: object) -> None:
    record = {"video": video, "video_clips": {"clips": [{"id": "x"}, "junk"]}}
    samples = samples_of(record, 0, CONFIG, 0)
    assert [s.error for s in samples] == ["invalid_video", "invalid_clip"]
    scored = with_results(
        record, [SampleResult(0, None, "invalid_video"), SampleResult(1, None, "invalid_clip")], CONFIG
    )
    assert scored["video_clips"]["clips"][0]["aesthetic_error"] == "invalid_video"
    whole = ScoringConfig(video_clips_key="")
    assert [s.error for s in samples_of({"video": video}, 0, whole, 0)] == ["invalid_video"]


@pytest.mark.parametrize("video", [None, "", []])
def test_a_record_without_a_video_passes_through(video: object) -> None:
    assert samples_of({"video": video, "video_clips": [{"id": "x"}]}, 0, CONFIG, 0) == []
    assert samples_of({"video": video}, 0, ScoringConfig(video_clips_key=""), 0) == []


@pytest.mark.parametrize(
    "video",
    ["http://127.0.0.1:8765/x.mp4", "https://example.com/a.mp4", "pipe:0", "tcp://h:1", "file:/etc/x.mp4", "a\x00.mp4"],
)
def test_whole_video_urls_and_protocols_are_unsafe(video: str) -> None:
    [sample] = samples_of({"video": [video]}, 0, ScoringConfig(video_clips_key=""), 0)
    assert (sample.path, sample.error) == (None, "unsafe_path")


def test_whole_video_fifos_and_devices_are_unsafe_and_never_opened(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "fifo.mp4")
    config = ScoringConfig(video_clips_key="")
    records = [{"video": str(tmp_path / "fifo.mp4")}, {"video": "/dev/zero"}, {"video": str(tmp_path / "absent.mp4")}]
    samples = list(iter_samples(records, config))
    assert [s.error for s in samples] == ["unsafe_path", "unsafe_path", None]


def _frames_tree(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "frames", tmp_path / "outside"
    (outside / "c" / "img").mkdir(parents=True)
    (root / "v" / "v_0" / "img").mkdir(parents=True)
    return root, outside


@pytest.mark.parametrize(
    ("link", "target", "safe"),
    [
        ("w", "outside", False),  # a stem folder linked out of figure_root
        ("v/v_1", "outside/c", False),  # a clip folder
        ("v/v_2/img", "outside/c/img", False),  # the img folder
        ("w", "frames/v", True),  # a link that stays inside figure_root
        ("v/v_3", "frames/v/v_0", True),
        ("w", "frames/../outside", False),
    ],
)
def test_samples_that_lead_outside_figure_root_are_unsafe(tmp_path: Path, link: str, target: str, safe: bool) -> None:
    root, _ = _frames_tree(tmp_path)
    path = root / link
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(tmp_path / target, target_is_directory=True)
    stem, _, rest = link.partition("/")
    cid = rest.split("/")[0] if rest else "c"
    config = ScoringConfig(figure_root=str(root))
    [sample] = list(iter_samples([{"video": f"{stem}.mp4", "video_clips": [{"id": cid}]}], config))
    assert (sample.error is None) is safe
    assert sample.error in (None, "unsafe_path")


def test_a_figure_root_that_is_itself_a_link_is_fine(tmp_path: Path) -> None:
    root, _ = _frames_tree(tmp_path)
    (tmp_path / "alias").symlink_to(root, target_is_directory=True)
    config = ScoringConfig(figure_root=str(tmp_path / "alias"))
    [sample] = list(iter_samples([clip_record("v.mp4", ["v_0"])], config))
    assert sample.error is None and sample.path == tmp_path / "alias" / "v" / "v_0" / "img"


# --- non-finite scores -----------------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ({"aesthetic_score": 5.5}, (5.5, None)),
        ({"aesthetic_score": 5}, (5.0, None)),
        ({"aesthetic_score": None, "aesthetic_error": "no_frames"}, (None, "no_frames")),
        ({"aesthetic_score": 5.5, "aesthetic_error": "corrupt_frames"}, (None, "corrupt_frames")),
        ({}, (None, "unscored")),
        ({"aesthetic_score": "4.5"}, (None, "invalid_score")),
        ({"aesthetic_score": True}, (None, "invalid_score")),
        ({"aesthetic_score": float("nan")}, (None, "non_finite_score")),
        ({"aesthetic_score": 10**400}, (None, "non_finite_score")),
        ("not a clip", (None, "invalid_clip")),
    ],
)
def test_one_vocabulary_classifies_every_written_clip(target: object, expected: tuple) -> None:
    from video_aesthetics.records import clip_outcome

    assert clip_outcome(target) == expected


def test_the_merge_and_the_report_count_outcomes_under_the_same_keys(tmp_path: Path) -> None:
    """The manifest's error counts (the merge) and the report's failure reasons are one vocabulary."""
    import io

    from video_aesthetics.report import summarise_file
    from video_aesthetics.sharding import merge_scored_shards, plan_shards

    clips = [
        {"id": "a_0", "aesthetic_score": 5.0},
        {"id": "a_1"},
        {"id": "a_2", "aesthetic_score": "x"},
        {"id": "a_3", "aesthetic_score": None, "aesthetic_error": "no_frames"},
    ]
    source = tmp_path / "in.jsonl"
    source.write_text(
        json.dumps({"video": ["a.mp4"], "video_clips": {"clips": [{"id": c["id"]} for c in clips]}}) + "\n"
    )
    plan = plan_shards([source], tmp_path / "staging", 10, max_shards=1)
    [shard] = plan.shards
    Path(shard.output).write_text(json.dumps({"video": ["a.mp4"], "video_clips": {"clips": clips}}) + "\n")
    config = ScoringConfig(figure_root=str(tmp_path / "frames"))
    merged = merge_scored_shards(plan, config, io.BytesIO())
    report = summarise_file(shard.output, config)
    assert merged.errors == report["counts"]["errors"] == {"unscored": 1, "invalid_score": 1, "no_frames": 1}
