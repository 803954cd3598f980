"""A run's params as the task bodies read them (airflow/run_params.py): the scoring config, and every
location param and resolved input checked against the allowed roots by every task."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.airflow_env import use_private_airflow_home
from helpers.dag_runs import RUN, UI, params, write_input
from helpers.media import clip_record, write_jsonl

use_private_airflow_home()

from airflow.sdk.exceptions import AirflowFailException

from video_aesthetics.airflow.frame_check import check_frames
from video_aesthetics.airflow.merge import merge
from video_aesthetics.airflow.run_params import LOCATION_PARAMS, scoring_config
from video_aesthetics.airflow.shard_plan import plan_shards
from video_aesthetics.errors import ConfigError


def test_the_scoring_config_follows_the_params(tmp_path: Path) -> None:
    config = scoring_config(params(tmp_path, load_num=5, reduction="max"))
    assert (config.load_num, config.reduction, config.num_workers, config.mlp_checkpoint) == (5, "max", 0, None)
    with pytest.raises(ConfigError, match="batch_size"):
        scoring_config(params(tmp_path, batch_size=0))


# --- allowed roots ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("param", LOCATION_PARAMS)
def test_every_location_param_outside_the_allowed_roots_fails_the_first_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, param: str
) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "in" / "2024-01-02").mkdir(parents=True)
    source = write_jsonl(allowed / "in" / "2024-01-02" / "part.jsonl", [clip_record("v.mp4", ["v_0"])])
    monkeypatch.setenv("VIDEO_AESTHETICS_ALLOWED_ROOTS", f"{allowed},s3://bucket/scores")
    inside = params(
        allowed,
        input_path=str(source),
        video_root=str(allowed / "videos"),
        work_root=str(allowed / "work"),
        on_missing_frames="skip",
    )
    assert check_frames(inside, UI)["inputs"] == 1  # inside: the run goes ahead
    outside = {**inside, param: str(tmp_path / "elsewhere" / param)}
    for task in (
        lambda: check_frames(outside, UI),
        lambda: plan_shards(outside, UI, max_shards=1024),
        lambda: merge(outside, UI, []),
    ):
        with pytest.raises(AirflowFailException, match=f"{param}=.*allowed_roots.*VIDEO_AESTHETICS_ALLOWED_ROOTS"):
            task()
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize(
    "spec",
    ["link_in_folder", "glob_through_link", "dotdot", "other_bucket"],
)
def test_inputs_that_lead_out_of_the_allowed_roots_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    allowed = tmp_path / "allowed"
    secret = write_jsonl(tmp_path / "secret" / "secret.jsonl", [{"caption": "private"}])
    folder = allowed / "in"
    folder.mkdir(parents=True)
    write_jsonl(folder / "a.jsonl", [{"caption": "ok"}])
    monkeypatch.setenv("VIDEO_AESTHETICS_ALLOWED_ROOTS", str(allowed))
    if spec == "link_in_folder":
        (folder / "b.jsonl").symlink_to(secret)
        input_path = str(folder)
    elif spec == "glob_through_link":
        (folder / "sub").symlink_to(secret.parent)
        input_path = str(folder / "*" / "*.jsonl")
    elif spec == "dotdot":
        input_path = f"{folder}/../../secret/secret.jsonl"
    else:
        input_path = "s3://bucket/other/*.jsonl"
    p = params(allowed, input_path=input_path, on_missing_frames="skip")
    with pytest.raises(AirflowFailException, match="input_path=.*allowed_roots"):
        check_frames(p, UI)


def test_without_allowed_roots_any_location_is_used_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDEO_AESTHETICS_ALLOWED_ROOTS", raising=False)
    write_input(tmp_path)
    p = params(tmp_path, on_missing_frames="skip", video_root="/anywhere")
    assert check_frames(p, RUN)["inputs"] == 1
