from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.media import clip_record, write_jsonl
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import InputError
from video_aesthetics.jsonl import JsonlSource
from video_aesthetics.records import (
    SampleResult,
    clip_id,
    count_records,
    is_safe_component,
    iter_samples,
    output_key_conflict,
    record_check,
    samples_of,
    video_stem,
)
from video_aesthetics.writeback import with_results

ROOT = Path("/frames")
CONFIG = ScoringConfig(figure_root=str(ROOT))


def test_stem_from_string_list_and_windows_path() -> None:
    assert video_stem({"video": ["./test/video1.mp4"]}, "video") == "video1"
    assert video_stem({"video": "a/b/clip.final.mov"}, "video") == "clip.final"
    assert video_stem({"video": "C:\\data\\v2.mp4"}, "video") == "v2"
    assert video_stem({"video": ["a.mp4", "b.mp4"]}, "video") is None
    assert video_stem({"video": 3}, "video") is None


def test_posix_stem_is_pathlibs_for_every_short_path() -> None:
    # video_stem reads the name without pathlib (rescore's speed): every path of up to four pieces agrees.
    import itertools
    from pathlib import PurePosixPath

    pieces = ["a", ".", "/", "..", "b.c", "x.", "", ".mp4", "//", "\x00", "é"]
    for size in range(1, 5):
        for combo in itertools.product(pieces, repeat=size):
            path = "".join(combo)
            if path:
                assert video_stem({"video": path}, "video") == PurePosixPath(path).stem, path


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


# --- hostile lines: everything that cannot be written back exactly is a malformed line ----------------


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

    from video_aesthetics.merging import merge_scored_shards
    from video_aesthetics.report import summarise_file
    from video_aesthetics.sharding import plan_shards

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
