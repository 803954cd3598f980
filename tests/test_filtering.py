"""The aesthetic filter with DataFlow-MM VideoAestheticFilter's semantics, case by case and through every face.

Each sample gets ``filtered: true`` when aes_min <= score <= aes_max, ``false`` when outside, when it
has no score, or when an earlier filter already marked it false. Scores and every other field stay.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from helpers.media import clip_record, read_jsonl, write_frames, write_jsonl, write_video
from video_aesthetics import JsonlStorage, VideoAestheticEvaluator, cli
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError
from video_aesthetics.filtering import kept_records, passes_filter
from video_aesthetics.records import SampleResult
from video_aesthetics.runner import score_file
from video_aesthetics.writeback import with_results


@pytest.mark.parametrize(
    ("clip", "aes_min", "aes_max", "passes"),
    [
        pytest.param({"aesthetic_score": 5.0}, 4.0, None, True, id="pass"),
        pytest.param({"aesthetic_score": 3.9}, 4.0, None, False, id="fail"),
        pytest.param({"aesthetic_score": None, "aesthetic_error": "no_frames"}, 4.0, None, False, id="null"),
        pytest.param({}, 4.0, None, False, id="no-score-field"),
        pytest.param({"aesthetic_score": 9.0, "filtered": False}, 4.0, None, False, id="already-false"),
        pytest.param({"aesthetic_score": 3.0, "filtered": True}, 4.0, None, False, id="true-before-but-fails-now"),
        pytest.param({"aesthetic_score": 4.0}, 4.0, None, True, id="equal-to-min"),
        pytest.param({"aesthetic_score": 6.0}, 4.0, 6.0, True, id="equal-to-max"),
        pytest.param({"aesthetic_score": 6.0000001}, 4.0, 6.0, False, id="above-max"),
        pytest.param({"aesthetic_score": 1.0}, None, 6.0, True, id="max-only"),
        pytest.param({"aesthetic_score": 5}, 4.0, None, True, id="integer-score"),
        pytest.param({"aesthetic_score": True}, 0.0, None, False, id="bool-is-not-a-score"),
        pytest.param({"aesthetic_score": "7"}, 4.0, None, False, id="text-is-not-a-score"),
        pytest.param({"aesthetic_score": math.nan}, None, None, False, id="nan"),
        pytest.param({"aesthetic_score": math.inf}, 4.0, None, False, id="infinite"),
        pytest.param("not a clip", 4.0, None, False, id="not-a-dict"),
    ],
)
def test_the_rule_case_by_case(clip: Any, aes_min: float | None, aes_max: float | None, passes: bool) -> None:
    assert passes_filter(clip, aes_min, aes_max) is passes


def _config(**changes: Any) -> ScoringConfig:
    return ScoringConfig(**{"figure_root": "frames", **changes})


def test_written_with_the_results_and_nothing_else_changes() -> None:
    record = clip_record("v.mp4", ["a", "b", "c", "d", "e"], caption="kept as is")
    clips = record["video_clips"]["clips"]
    clips[3]["filtered"] = False  # an earlier filter's mark
    clips[4]["filtered"] = True
    results = [
        SampleResult(0, 5.5),
        SampleResult(1, 4.0),  # equal to the threshold: passes
        SampleResult(2, None, "no_frames"),
        SampleResult(3, 9.0),
        SampleResult(4, 2.0),
    ]
    plain = with_results(record, results, _config())
    filtered = with_results(record, results, _config(aes_min=4.0))
    assert [c.get("filtered") for c in plain["video_clips"]["clips"]] == [None, None, None, False, True]
    assert [c["filtered"] for c in filtered["video_clips"]["clips"]] == [True, True, False, False, False]
    # Without the mark, the filtered record is the plain one: same scores, same everything.
    for before, after in zip(plain["video_clips"]["clips"], filtered["video_clips"]["clips"], strict=True):
        assert {k: v for k, v in after.items() if k != "filtered"} == {
            k: v for k, v in before.items() if k != "filtered"
        }
    assert filtered["caption"] == "kept as is" and record["video_clips"]["clips"][0] == {
        "id": "a",
        "frame_start": 0,
        "frame_end": 30,
        "num_frames": 30,
    }


def test_whole_video_marks_the_record() -> None:
    config = _config(video_clips_key="", aes_min=5.0, aes_max=7.0)
    assert with_results({"video": "a.mp4"}, [SampleResult(0, 7.0)], config)["filtered"] is True
    assert with_results({"video": "a.mp4"}, [SampleResult(0, 7.5)], config)["filtered"] is False
    assert with_results({"video": "a.mp4", "filtered": False}, [SampleResult(0, 6.0)], config)["filtered"] is False
    assert "filtered" not in with_results({"video": "a.mp4"}, [SampleResult(0, 6.0)], _config(video_clips_key=""))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"aes_min": math.nan}, "aes_min must be a finite number"),
        ({"aes_max": math.inf}, "aes_max must be a finite number"),
        ({"aes_min": True}, "aes_min must be a finite number"),
        ({"aes_min": "high"}, "aes_min must be a number"),
        ({"aes_min": "nan"}, "aes_min must be a finite number"),
        ({"aes_min": 6, "aes_max": 5}, "aes_min (6) is above aes_max (5)"),
    ],
)
def test_bad_thresholds_are_refused(params: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ScoringConfig.from_params(params)
    assert message in str(caught.value)


def test_thresholds_from_forms_and_templates() -> None:
    config = ScoringConfig.from_params({"aes_min": " 4.5 ", "aes_max": "None"})
    assert (config.aes_min, config.aes_max, config.filtering) == (4.5, None, True)
    assert not ScoringConfig.from_params({"aes_min": "", "aes_max": None}).filtering
    assert ScoringConfig.from_params({"aes_min": 5, "aes_max": 5}).filtering  # one score exactly passes


def test_kept_records_hold_only_passing_clips() -> None:
    config = _config(aes_min=5.0)
    records = [
        {"video": "a.mp4", "video_clips": {"clips": [{"id": "a0", "aesthetic_score": 6.0}], "source": "x"}, "n": 1},
        {"video": "b.mp4", "video_clips": {"clips": [{"id": "b0", "aesthetic_score": 4.0}]}},
        {"caption": "passthrough"},
        {
            "video": "c.mp4",
            "video_clips": [
                {"id": "c0", "aesthetic_score": 5.0},
                {"id": "c1", "aesthetic_score": 9.0, "filtered": False},
                {"id": "c2", "aesthetic_score": None, "aesthetic_error": "no_frames"},
                "junk",
            ],
        },
    ]
    kept = list(kept_records(records, config))
    assert kept == [records[0], {"video": "c.mp4", "video_clips": [{"id": "c0", "aesthetic_score": 5.0}]}]
    assert records[3]["video_clips"][1]["id"] == "c1"  # the input is not changed
    whole = _config(video_clips_key="", aes_max=5.0)
    videos = [{"video": "a.mp4", "aesthetic_score": 4.0}, {"video": "b.mp4", "aesthetic_score": 6.0}, {"n": 1}]
    assert list(kept_records(videos, whole)) == [videos[0]]
    with pytest.raises(ConfigError, match="set aes_min and/or aes_max"):
        list(kept_records(records, _config()))


def _dataset(root: Path) -> tuple[Path, Path]:
    figure_root = root / "frames"
    for index in range(6):
        write_frames(figure_root, "v", f"v_{index}", 3, seed=index)
    record = clip_record("v.mp4", [f"v_{i}" for i in range(6)] + ["v_missing"], caption="c")
    record["video_clips"]["clips"][5]["filtered"] = False  # marked by an earlier filter
    return write_jsonl(root / "in.jsonl", [record, {"caption": "no clips"}]), figure_root


def test_through_the_cli(tmp_path: Path, model_args: dict, capsys: pytest.CaptureFixture[str]) -> None:
    source, figure_root = _dataset(tmp_path)
    base = ["score", "--input", str(source), "--figure-root", str(figure_root), "--device", "cpu"]
    base += ["--clip-model", model_args["clip_model"], "--mlp-checkpoint", model_args["mlp_checkpoint"]]
    base += ["--num-workers", "0"]
    assert cli.main([*base, "--output", str(tmp_path / "plain.jsonl")]) == 0
    plain = read_jsonl(tmp_path / "plain.jsonl")
    scores = [c["aesthetic_score"] for c in plain[0]["video_clips"]["clips"]]
    ranked = sorted(s for s in scores[:5])
    aes_min = ranked[2]  # a score that is there: equal passes
    assert cli.main([*base, "--output", str(tmp_path / "f.jsonl"), "--aes-min", repr(aes_min)]) == 0
    filtered = read_jsonl(tmp_path / "f.jsonl")
    marks = [c["filtered"] for c in filtered[0]["video_clips"]["clips"]]
    expected = [s >= aes_min for s in scores[:5]] + [False, False]  # already false; no frames
    assert marks == expected and marks.count(True) == 3
    assert filtered[1] == plain[1] == {"caption": "no clips"}
    for before, after in zip(plain[0]["video_clips"]["clips"], filtered[0]["video_clips"]["clips"], strict=True):
        assert {k: v for k, v in after.items() if k != "filtered"} == {
            k: v for k, v in before.items() if k != "filtered"
        }
    assert {k: v for k, v in filtered[0].items() if k != "video_clips"} == {
        k: v for k, v in plain[0].items() if k != "video_clips"
    }
    # An upper bound too; both equal to one score keeps exactly that clip.
    target = scores[1]
    args = ["--aes-min", repr(target), "--aes-max", repr(target), "--output", str(tmp_path / "one.jsonl")]
    assert cli.main([*base, *args]) == 0
    one = [c["filtered"] for c in read_jsonl(tmp_path / "one.jsonl")[0]["video_clips"]["clips"]]
    assert one == [s == target for s in scores[:5]] + [False, False]
    capsys.readouterr()
    assert cli.main([*base, "--output", str(tmp_path / "bad.jsonl"), "--aes-min", "inf"]) == 2
    assert "--aes-min must be a finite number" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        cli.main([*base, "--output", str(tmp_path / "bad.jsonl"), "--aes-min", "high"])
    assert exited.value.code == 2 and "invalid float value: 'high'" in capsys.readouterr().err
    assert not (tmp_path / "bad.jsonl").exists()


def test_through_the_evaluator(tmp_path: Path, model_args: dict) -> None:
    source, figure_root = _dataset(tmp_path)
    config = ScoringConfig(**model_args, figure_root=str(figure_root), num_workers=0, device="cpu")
    score_file(source, tmp_path / "plain.jsonl", config)
    scores = [c["aesthetic_score"] for c in read_jsonl(tmp_path / "plain.jsonl")[0]["video_clips"]["clips"][:5]]
    aes_min = sorted(scores)[2]
    expected_path = tmp_path / "expected.jsonl"
    score_file(source, expected_path, config.replace(aes_min=aes_min))
    evaluator = VideoAestheticEvaluator(figure_root=str(figure_root), **model_args, num_workers=0, aes_min=aes_min)
    storage = JsonlStorage(str(source), cache_path=str(tmp_path / "cache"))
    assert evaluator.run(storage.step()) == ["video_clips"]
    got = read_jsonl(tmp_path / "cache" / "dataflow_cache_step1.jsonl")
    assert got == read_jsonl(expected_path)
    assert [c["filtered"] for c in got[0]["video_clips"]["clips"]] == [s >= aes_min for s in scores] + [False, False]
    first = [c["filtered"] for c in got[0]["video_clips"]["clips"]]
    # run() overrides the constructor for one call. Chained after the first run, its false marks stay false.
    evaluator.run(storage.step(), aes_min=-100.0, aes_max=100.0)
    chained = read_jsonl(tmp_path / "cache" / "dataflow_cache_step2.jsonl")
    assert [c["filtered"] for c in chained[0]["video_clips"]["clips"]] == first
    fresh = JsonlStorage(str(source), cache_path=str(tmp_path / "fresh"))
    evaluator.run(fresh.step(), aes_min=-100.0, aes_max=100.0)
    marks = [
        c["filtered"] for c in read_jsonl(tmp_path / "fresh" / "dataflow_cache_step1.jsonl")[0]["video_clips"]["clips"]
    ]
    assert marks == [True] * 5 + [False, False]


def test_whole_video_through_the_evaluator_keeps_other_columns(tmp_path: Path, model_args: dict) -> None:
    frame = pd.DataFrame(
        [
            {"video": str(write_video(tmp_path / "a.mp4", frames=6, seed=1)), "filtered": True, "n": 1},
            {"video": str(write_video(tmp_path / "b.mp4", frames=6, seed=2)), "filtered": False, "n": 2},
            {"video": str(tmp_path / "gone.mp4"), "filtered": True, "n": 3},
        ]
    )

    class Storage:
        def __init__(self) -> None:
            self.written: list[pd.DataFrame] = []

        def read(self, output_type: str) -> pd.DataFrame:
            return frame

        def write(self, out: pd.DataFrame) -> None:
            self.written.append(out)

    storage = Storage()
    evaluator = VideoAestheticEvaluator(**model_args, video_clips_key="", num_workers=0, aes_min=-1e9)
    assert evaluator.run(storage) == ["aesthetic_score", "filtered"]
    out = storage.written[0]
    assert out["filtered"].tolist() == [True, False, False]  # passes; already false; unreadable
    assert out["n"].tolist() == [1, 2, 3] and out["video"].tolist() == frame["video"].tolist()
    # Without a threshold the column an earlier step wrote is left as it was.
    VideoAestheticEvaluator(**model_args, video_clips_key="", num_workers=0).run(storage)
    assert storage.written[1]["filtered"].tolist() == [True, False, True]
