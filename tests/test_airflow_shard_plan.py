"""The plan_shards task (airflow/shard_plan.py): a malformed line fails the plan, and every scoring and
process param reaches the shards' arguments typed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers.airflow_env import use_private_airflow_home
from helpers.dag_runs import RUN, params, write_input
from helpers.media import write_jsonl

use_private_airflow_home()

from airflow.sdk.exceptions import AirflowFailException

from video_aesthetics.airflow.frame_check import check_frames
from video_aesthetics.airflow.run_params import scoring_config
from video_aesthetics.airflow.shard_plan import plan_shards


def test_a_malformed_line_fails_the_plan_at_once(tmp_path: Path) -> None:
    source = write_input(tmp_path)
    source.write_text(source.read_text() + "{broken\n")
    with pytest.raises(AirflowFailException, match=r"part\.jsonl:6"):
        plan_shards(params(tmp_path), RUN, max_shards=1024)


def test_every_scoring_and_process_param_reaches_the_shards_typed(tmp_path: Path) -> None:
    records = [{"clip_path": f"v{i}.mp4", "segments": {"clips": [{"id": f"v{i}_0"}]}, "n": i} for i in range(3)]
    write_jsonl(tmp_path / "in" / "2024-01-02" / "part.jsonl", records)
    p = params(
        tmp_path,
        input_video_key="clip_path",
        video_clips_key="segments",
        output_key="scored_segments",
        frame_scores=True,
        init_distributed=None,  # the form's switch left alone
        nproc=2,
    )
    [kwargs, *_] = plan_shards(p, RUN, max_shards=1024)
    assert {k: kwargs[k] for k in ("input_video_key", "video_clips_key", "output_key", "frame_scores")} == {
        "input_video_key": "clip_path",
        "video_clips_key": "segments",
        "output_key": "scored_segments",
        "frame_scores": True,
    }
    assert (kwargs["init_distributed"], kwargs["nproc"]) == (False, 2)
    from video_aesthetics.airflow.operators import VideoAestheticScoringOperator

    operator = VideoAestheticScoringOperator(task_id="t", **kwargs)
    assert operator.scoring_config() == scoring_config(p)


@pytest.mark.parametrize("clips_key", [None, ""])
def test_an_empty_clips_key_plans_whole_videos(tmp_path: Path, clips_key: str | None) -> None:
    write_jsonl(tmp_path / "in" / "2024-01-02" / "part.jsonl", [{"video": f"/v/{i}.mp4", "n": i} for i in range(3)])
    p = params(tmp_path, video_clips_key=clips_key)
    assert scoring_config(p).whole_video
    report = check_frames(p, RUN)
    assert (report["records"], report["clips"], report["extracted"]) == (3, 0, 0)
    [kwargs, *_] = plan_shards(p, RUN, max_shards=1024)
    assert kwargs["video_clips_key"] == "" and kwargs["output_key"] == "video_clips"


@pytest.mark.parametrize(("name", "value"), [("init_distributed", "yes"), ("nproc", 0), ("nproc", True)])
def test_bad_process_params_are_refused_by_name(tmp_path: Path, name: str, value: Any) -> None:
    write_input(tmp_path)
    with pytest.raises(AirflowFailException, match=name):
        plan_shards(params(tmp_path, **{name: value}), RUN, max_shards=1024)
