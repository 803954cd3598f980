"""Frame check and extraction against real videos and real JPEG frames made at test time."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.media import decode_rgb, write_frames, write_jsonl, write_video
from video_aesthetics.batches import load_sample
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError, InputError
from video_aesthetics.extraction import FrameReport, check_frames, clip_indices, extract_clip_frames, has_frames
from video_aesthetics.frames import PreprocessConfig
from video_aesthetics.records import Sample

FRAMES = 24


decode_all = decode_rgb


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def clip(cid: str, start: int, end: int | None = None, num: int | None = None) -> dict:
    out: dict = {"id": cid, "frame_start": start}
    if end is not None:
        out["frame_end"] = end
    if num is not None:
        out["num_frames"] = num
    return out


def record(video: str, *clips: dict, **extra: object) -> dict:
    return {"video": [video], "video_clips": {"clips": list(clips)}, **extra}


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A JSONL next to videos/ (relative paths), two videos, clips given by frame_end and by num_frames."""
    video_a = write_video(tmp_path / "data" / "videos" / "alpha.mp4", frames=FRAMES, seed=1)
    write_video(tmp_path / "data" / "videos" / "beta.mp4", frames=FRAMES, seed=2)
    records = [
        record("videos/alpha.mp4", clip("alpha_0", 0, 10), clip("alpha_1", 10, 24, 14), caption="a"),
        record("videos/beta.mp4", clip("beta_0", 5, num=4)),
        {"caption": "no video: passes through"},
    ]
    jsonl = write_jsonl(tmp_path / "data" / "input.jsonl", records)
    return jsonl, tmp_path / "frames", video_a


def config_for(figure_root: Path, **changes: object) -> ScoringConfig:
    return ScoringConfig(figure_root=str(figure_root), num_workers=0).replace(**changes)


@pytest.mark.parametrize("workers", [0, 2])
def test_extract_writes_first_middle_last_frames_with_the_videos_pixels(dataset, tmp_path: Path, workers: int) -> None:
    jsonl, figure_root, video_a = dataset
    report = check_frames([jsonl], config_for(figure_root, num_workers=workers), "extract")

    assert report.as_dict() == FrameReport(records=3, clips=3, extracted=3).as_dict()
    assert files_under(figure_root) == {
        "alpha/alpha_0/img/frame_000000.jpg",
        "alpha/alpha_0/img/frame_000005.jpg",
        "alpha/alpha_0/img/frame_000009.jpg",
        "alpha/alpha_1/img/frame_000000.jpg",
        "alpha/alpha_1/img/frame_000007.jpg",
        "alpha/alpha_1/img/frame_000013.jpg",
        "beta/beta_0/img/frame_000000.jpg",
        "beta/beta_0/img/frame_000002.jpg",
        "beta/beta_0/img/frame_000003.jpg",
    }
    reference = decode_all(video_a)
    for folder, start in (("alpha_0", 0), ("alpha_1", 10)):
        for jpeg in sorted((figure_root / "alpha" / folder / "img").iterdir()):
            expected = start + int(jpeg.stem.split("_")[1])
            got = pixels(jpeg)
            assert got.shape == reference[expected].shape
            distances = [float(np.abs(got - frame).mean()) for frame in reference]
            # JPEG is lossy: the written frame must be near its own video frame and far from every other one.
            assert distances[expected] < 8.0, (jpeg, sorted(distances)[:3])
            assert int(np.argmin(distances)) == expected
    beta = decode_all(tmp_path / "data" / "videos" / "beta.mp4")
    assert np.abs(pixels(figure_root / "beta" / "beta_0" / "img" / "frame_000003.jpg") - beta[8]).mean() < 8.0


def test_rerun_leaves_present_frames_alone(dataset) -> None:
    jsonl, figure_root, _ = dataset
    config = config_for(figure_root)
    check_frames([jsonl], config, "extract")
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in figure_root.rglob("*.jpg")}

    again = check_frames([jsonl], config, "extract")

    assert again.as_dict() == FrameReport(records=3, clips=3, present=3).as_dict()
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in figure_root.rglob("*.jpg")} == before


def test_clips_with_upstream_frames_are_not_touched(dataset) -> None:
    jsonl, figure_root, _ = dataset
    upstream = write_frames(figure_root, "alpha", "alpha_0", 4, seed=7)
    before = {p: p.read_bytes() for p in upstream}

    report = check_frames([jsonl], config_for(figure_root), "extract")

    assert (report.present, report.extracted, report.missing) == (1, 2, 0)
    assert sorted((figure_root / "alpha" / "alpha_0" / "img").iterdir()) == sorted(upstream)
    assert {p: p.read_bytes() for p in upstream} == before


def test_skip_only_counts(dataset) -> None:
    jsonl, figure_root, _ = dataset
    write_frames(figure_root, "beta", "beta_0", 3, seed=3)

    report = check_frames([jsonl], config_for(figure_root), "skip")

    assert (
        report.as_dict()
        == FrameReport(
            records=3, clips=3, present=1, missing=2, first_missing=["alpha/alpha_0", "alpha/alpha_1"]
        ).as_dict()
    )
    assert files_under(figure_root) == {f"beta/beta_0/img/frame_{i * 25:06d}.jpg" for i in range(3)}


def test_fail_names_missing_clips_and_what_to_change(dataset) -> None:
    jsonl, figure_root, _ = dataset
    write_frames(figure_root, "alpha", "alpha_1", 3, seed=3)

    with pytest.raises(InputError) as caught:
        check_frames([jsonl], config_for(figure_root), "fail")

    message = str(caught.value)
    assert "2 of 3 clips" in message
    assert "alpha/alpha_0" in message and "beta/beta_0" in message and "alpha/alpha_1" not in message
    assert "on_missing_frames" in message and '"extract"' in message and '"skip"' in message
    assert not (figure_root / "alpha" / "alpha_0").exists()


def test_fail_passes_when_every_clip_has_frames(dataset) -> None:
    jsonl, figure_root, _ = dataset
    check_frames([jsonl], config_for(figure_root), "extract")
    assert check_frames([jsonl], config_for(figure_root), "fail").present == 3


def test_first_missing_is_capped(tmp_path: Path) -> None:
    clips = [clip(f"c{i}", i, i + 2) for i in range(25)]
    jsonl = write_jsonl(tmp_path / "in.jsonl", [record("absent.mp4", *clips)])
    report = check_frames([jsonl], config_for(tmp_path / "frames"), "skip")
    assert report.missing == 25
    assert report.first_missing == [f"absent/c{i}" for i in range(20)]
    with pytest.raises(InputError, match="and 5 more"):
        check_frames([jsonl], config_for(tmp_path / "frames"), "fail")


def test_unreadable_and_absent_videos_are_counted_not_fatal(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "garbage.mp4").write_bytes(b"this is not a video" * 100)
    good = write_video(videos / "good.mp4", frames=12, seed=4)
    jsonl = write_jsonl(
        tmp_path / "in.jsonl",
        [
            record(str(videos / "garbage.mp4"), clip("g0", 0, 5), clip("g1", 5, 10)),
            record(str(videos / "absent.mp4"), clip("x0", 0, 5)),
            record(str(good), clip("ok", 0, 12)),
        ],
    )
    figure_root = tmp_path / "frames"

    report = check_frames([jsonl], config_for(figure_root), "extract")

    assert (
        report.as_dict()
        == FrameReport(
            records=3,
            clips=4,
            extracted=1,
            missing=3,
            unreadable_videos=2,
            first_missing=["garbage/g0", "garbage/g1", "absent/x0"],
        ).as_dict()
    )
    assert files_under(figure_root) == {f"good/ok/img/frame_{i:06d}.jpg" for i in (0, 6, 11)}


def test_unsafe_ids_are_missing_and_nothing_is_written_outside_figure_root(tmp_path: Path) -> None:
    write_video(tmp_path / "v.mp4", frames=12, seed=5)
    write_video(tmp_path / "..mp4", frames=12, seed=5)
    jsonl = write_jsonl(
        tmp_path / "in.jsonl",
        [
            record("v.mp4", clip("../../escaped", 0, 6), clip("a/b", 0, 6), clip("fine", 6, 12)),
            record("..mp4", clip("x", 0, 6)),
        ],
    )
    figure_root = tmp_path / "deep" / "frames"
    before = files_under(tmp_path)

    report = check_frames([jsonl], config_for(figure_root), "extract")

    assert (report.clips, report.extracted, report.missing) == (4, 1, 3)
    assert report.first_missing == ["v/../../escaped", "v/a/b", "./x"]
    assert files_under(tmp_path) - before == {f"deep/frames/v/fine/img/frame_{i:06d}.jpg" for i in (0, 3, 5)}


def test_corrupt_frames_are_reextracted(dataset) -> None:
    jsonl, figure_root, _ = dataset
    [frame] = write_frames(figure_root, "beta", "beta_0", 1, seed=3)
    frame.write_bytes(frame.read_bytes()[:200])

    assert check_frames([jsonl], config_for(figure_root), "skip").missing == 3
    report = check_frames([jsonl], config_for(figure_root), "extract")

    assert (report.present, report.extracted, report.missing) == (0, 3, 0)
    assert sorted(p.name for p in frame.parent.iterdir()) == [
        "frame_000000.jpg",
        "frame_000002.jpg",
        "frame_000003.jpg",
    ]


def test_video_root_resolves_relative_paths(tmp_path: Path) -> None:
    write_video(tmp_path / "media" / "clipvid.mp4", frames=12, seed=6)
    jsonl = write_jsonl(tmp_path / "lists" / "in.jsonl", [record("clipvid.mp4", clip("c", 0, 12))])
    figure_root = tmp_path / "frames"

    beside_input = check_frames([jsonl], config_for(figure_root), "extract")
    assert (beside_input.unreadable_videos, beside_input.missing) == (1, 1)

    with_root = check_frames([jsonl], config_for(figure_root), "extract", video_root=tmp_path / "media")
    assert (with_root.extracted, with_root.missing) == (1, 0)


def test_several_inputs_and_custom_keys(tmp_path: Path) -> None:
    write_video(tmp_path / "one.mp4", frames=12, seed=8)
    first = write_jsonl(tmp_path / "a.jsonl", [{"path": "one.mp4", "segments": [clip("s0", 0, 4)]}])
    second = write_jsonl(tmp_path / "b.jsonl", [{"path": "one.mp4", "segments": [clip("s1", 4, 12)]}])
    config = config_for(tmp_path / "frames", input_video_key="path", video_clips_key="segments")

    report = check_frames([first, second], config, "extract")

    assert (report.records, report.clips, report.extracted) == (2, 2, 2)
    assert (tmp_path / "frames" / "one" / "s1" / "img" / "frame_000007.jpg").is_file()


def test_bad_lines_follow_skip_bad_records(tmp_path: Path) -> None:
    jsonl = write_jsonl(tmp_path / "in.jsonl", ['{"broken', record("v.mp4", clip("c", 0, 3))])
    with pytest.raises(InputError, match="in.jsonl:1"):
        check_frames([jsonl], config_for(tmp_path / "frames"), "skip")
    report = check_frames([jsonl], config_for(tmp_path / "frames", skip_bad_records=True), "skip")
    assert (report.records, report.clips, report.missing) == (1, 1, 1)


def test_whole_video_mode_has_no_frames_to_check(tmp_path: Path) -> None:
    jsonl = write_jsonl(tmp_path / "in.jsonl", [{"video": "a.mp4"}, {"video": "b.mp4"}])
    config = ScoringConfig(figure_root=str(tmp_path / "frames"), video_clips_key="")
    assert check_frames([jsonl], config, "fail").as_dict() == FrameReport(records=2).as_dict()


def test_unknown_policy_is_a_config_error(dataset) -> None:
    jsonl, figure_root, _ = dataset
    with pytest.raises(ConfigError, match="extract, skip, fail"):
        check_frames([jsonl], config_for(figure_root), "retry")


def test_clip_without_a_frame_range_is_missing(tmp_path: Path) -> None:
    write_video(tmp_path / "v.mp4", frames=12, seed=9)
    jsonl = write_jsonl(tmp_path / "in.jsonl", [record("v.mp4", {"id": "norange"}, clip("empty", 4, 4), "not a clip")])
    report = check_frames([jsonl], config_for(tmp_path / "frames"), "extract")
    assert (report.clips, report.missing, report.extracted, report.unreadable_videos) == (3, 3, 0, 0)
    assert not (tmp_path / "frames").exists()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (clip("a", 0, 10), {0: 0, 5: 5, 9: 9}),
        (clip("b", 30, 60, 30), {0: 30, 15: 45, 29: 59}),
        (clip("c", 7, num=2), {0: 7, 1: 8}),
        (clip("d", 3, 4), {0: 3}),
        (clip("e", 5, 2), {}),
        ({"id": "f", "frame_start": "0", "frame_end": 9}, {}),
        # Without frame_start the clip could be anywhere in the video.
        ({"id": "g", "num_frames": 5}, {}),
    ],
)
def test_clip_indices(given: dict, expected: dict) -> None:
    assert clip_indices(given) == expected


def test_extract_clip_frames(tmp_path: Path) -> None:
    source = write_video(tmp_path / "v.mp4", frames=FRAMES, seed=10)
    paths = extract_clip_frames(source, clip("c", 20, 24), tmp_path / "out")
    assert [p.name for p in paths] == ["frame_000000.jpg", "frame_000002.jpg", "frame_000003.jpg"]
    reference = decode_all(source)
    assert np.abs(pixels(paths[2]) - reference[23]).mean() < 8.0
    with pytest.raises(InputError, match="frame range"):
        extract_clip_frames(source, {"id": "c"}, tmp_path / "out")


def test_many_clips_of_one_video_are_decoded_in_bounded_passes(tmp_path: Path) -> None:
    source = write_video(tmp_path / "long.mp4", frames=60, seed=11)
    clips = [clip(f"c{i:02d}", 3 * i, 3 * i + 3) for i in range(20)]  # 60 frames to write, more than one pass
    jsonl = write_jsonl(tmp_path / "in.jsonl", [record("long.mp4", *clips)])
    figure_root = tmp_path / "frames"

    report = check_frames([jsonl], config_for(figure_root), "extract")

    assert (report.clips, report.extracted) == (20, 20)
    reference = decode_all(source)
    for cid, start in (("c00", 0), ("c19", 57)):
        for local in (0, 1, 2):
            got = pixels(figure_root / "long" / cid / "img" / f"frame_{local:06d}.jpg")
            distances = [float(np.abs(got - frame).mean()) for frame in reference]
            assert int(np.argmin(distances)) == start + local


def test_write_errors_fail_the_check_instead_of_blaming_the_video(dataset) -> None:
    jsonl, figure_root, _ = dataset
    figure_root.mkdir()
    (figure_root / "alpha").write_text("a file where a folder must go")
    with pytest.raises(OSError):
        check_frames([jsonl], config_for(figure_root), "extract")


@pytest.mark.parametrize("linked", ["stem", "clip", "img"])
def test_extraction_never_writes_through_a_symlink_out_of_figure_root(tmp_path: Path, linked: str) -> None:
    write_video(tmp_path / "v.mp4", frames=12, seed=5)
    jsonl = write_jsonl(tmp_path / "in.jsonl", [record("v.mp4", clip("c", 0, 6), clip("d", 6, 12))])
    figure_root, outside = tmp_path / "frames", tmp_path / "outside"
    outside.mkdir()
    folder = {"stem": figure_root / "v", "clip": figure_root / "v" / "c", "img": figure_root / "v" / "c" / "img"}[
        linked
    ]
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.symlink_to(outside, target_is_directory=True)

    report = check_frames([jsonl], config_for(figure_root), "extract")

    assert list(outside.rglob("*")) == []
    assert report.missing == (2 if linked == "stem" else 1)
    assert report.extracted == (0 if linked == "stem" else 1)


def test_frames_already_outside_figure_root_do_not_count_as_present(tmp_path: Path) -> None:
    write_video(tmp_path / "v.mp4", frames=12, seed=5)
    jsonl = write_jsonl(tmp_path / "in.jsonl", [record("v.mp4", clip("c", 0, 6))])
    figure_root = tmp_path / "frames"
    write_frames(tmp_path / "elsewhere", "v", "c", 3, seed=1)
    figure_root.mkdir()
    (figure_root / "v").symlink_to(tmp_path / "elsewhere" / "v", target_is_directory=True)
    assert check_frames([jsonl], config_for(figure_root), "skip").missing == 1
    assert check_frames([jsonl], config_for(figure_root), "extract").missing == 1


def test_a_link_that_stays_inside_figure_root_is_read_but_never_written_through(tmp_path: Path) -> None:
    write_video(tmp_path / "v.mp4", frames=12, seed=5)
    figure_root = tmp_path / "frames"
    write_frames(figure_root, "v", "c", 3, seed=1)
    (figure_root / "v" / "alias").symlink_to(figure_root / "v" / "c", target_is_directory=True)
    (figure_root / "w").symlink_to(figure_root / "v", target_is_directory=True)
    jsonl = write_jsonl(
        tmp_path / "in.jsonl", [record("v.mp4", clip("alias", 0, 6)), record("w.mp4", clip("new", 0, 6))]
    )
    before = files_under(figure_root)

    report = check_frames([jsonl], config_for(figure_root), "extract")

    assert (report.present, report.extracted, report.missing) == (1, 0, 1)
    assert files_under(figure_root) == before


def test_has_frames_and_the_scorer_apply_one_rule_to_frame_links(tmp_path: Path) -> None:
    """A frame linked to another inside figure_root counts for both; one linked outside, for neither."""
    root = tmp_path / "frames"
    source = write_frames(root, "v", "c0", 3, seed=1)
    secret = write_frames(tmp_path / "outside", "v", "c0", 3, seed=2)
    config = ScoringConfig(figure_root=str(root), load_num=3, num_workers=0)
    pp = PreprocessConfig(size=32)
    for clip, targets in (("dedup", source), ("leak", secret)):
        folder = root / "v" / clip / "img"
        folder.mkdir(parents=True)
        for target in targets:
            (folder / target.name).symlink_to(os.path.relpath(target, folder))
    dedup, leak = root / "v" / "dedup" / "img", root / "v" / "leak" / "img"
    assert has_frames(dedup, 3, root) and load_sample(Sample(0, 0, 0, dedup), config, pp)[2] is None
    assert not has_frames(leak, 3, root) and load_sample(Sample(1, 0, 1, leak), config, pp)[2] == "no_frames"
