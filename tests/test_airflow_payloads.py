"""The DAG's XCom payloads (airflow/payloads.py): each task's real result, run on real frames with a real
tiny model, has exactly the keys and value types its TypedDict declares, and survives XCom's JSON."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from helpers.airflow_env import use_private_airflow_home
from helpers.media import frame_dataset
from helpers.typed import payload_problems

use_private_airflow_home()

from video_aesthetics.airflow import frame_check, merge, shard_plan
from video_aesthetics.airflow.operators import VideoAestheticScoringOperator
from video_aesthetics.airflow.payloads import (
    FrameCheck,
    FrameCounts,
    KeptFile,
    MergeSummary,
    RescoreCheck,
    ShardResult,
    ShardTask,
)
from video_aesthetics.airflow.run_params import scoring_config
from video_aesthetics.extraction import FrameReport

RUN = {
    "dag_id": "video_aesthetic_scoring",
    "run_id": "manual__2024-01-02T10:00:00+00:00",
    "ds": "2024-01-02",
    "dag_run": SimpleNamespace(run_type="manual", conf={}),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return frame_dataset(tmp_path_factory.mktemp("payload_data"), videos=3, clips_per_video=2, frames_per_clip=3)


def run_params(
    tmp_path: Path, dataset: tuple[Path, Path], model_args: dict[str, str], **changes: Any
) -> dict[str, Any]:
    source, figure_root = dataset
    base = {
        "input_path": str(source),
        "output_root": str(tmp_path / "out"),
        "figure_root": str(figure_root),
        "chunk_size": 2,
        "load_num": 3,
        "batch_size": 8,
        "num_workers": 0,
        "device": "cpu",
        "on_missing_frames": "fail",
        "embeddings": "float16",
        "aes_min": 0.0,
        **model_args,
    }
    return {**base, **changes}


def assert_payload(value: Any, kind: Any) -> None:
    assert payload_problems(value, kind) == []
    # XCom stores JSON: the payload comes back from it equal, keys and types alike.
    assert json.loads(json.dumps(value)) == value


def test_the_check_finds_missing_unknown_and_mistyped_keys() -> None:
    good: KeptFile = {"path": "/out/kept.jsonl", "records": 3}
    assert payload_problems(good, KeptFile) == []
    assert payload_problems({"path": "/out/kept.jsonl"}, KeptFile) == ["value: 'records' is missing (KeptFile)"]
    assert payload_problems({**good, "extra": 1}, KeptFile) == ["value: 'extra' is not a key of KeptFile"]
    assert payload_problems({**good, "records": "3"}, KeptFile) == ["value['records']: '3' is not int"]
    # JSON tells a bool from a number, and so does the check.
    assert payload_problems({**good, "records": True}, KeptFile) == ["value['records']: True is not int"]
    assert payload_problems([good], KeptFile) != []
    nested = {"input_path": "a", "output_path": "b", "init_distributed": False, "nproc": None, "embeddings": 1}
    assert payload_problems(nested, ShardTask) == ["value['embeddings']: 1 is not str"]


def test_frame_counts_name_every_field_of_the_frame_report() -> None:
    # check_frames copies FrameReport field by field: a field added there must be added to the payload.
    assert set(FrameCounts.__required_keys__) == {f.name for f in dataclasses.fields(FrameReport)}
    assert FrameCheck.__required_keys__ == FrameCounts.__required_keys__ | {"partition", "inputs"}


def test_every_task_of_a_real_run_returns_its_declared_payload(
    tmp_path: Path, dataset: tuple[Path, Path], model_args: dict[str, str]
) -> None:
    params = run_params(tmp_path, dataset, model_args)
    frames = frame_check.check_frames(params, RUN)
    assert_payload(frames, FrameCheck)
    assert "inputs" in frames  # a FrameCheck, not a RescoreCheck: for mypy too
    assert frames["clips"] == 6 and frames["present"] == 6 and frames["inputs"] == 1

    shard_kwargs = shard_plan.plan_shards(params, RUN, max_shards=1024)
    assert len(shard_kwargs) == 2  # 3 records in shards of 2
    scoring = shard_plan.score_kwargs(scoring_config(params))
    own_keys = ShardTask.__required_keys__ | ShardTask.__optional_keys__
    results = []
    for index, kwargs in enumerate(shard_kwargs):
        # The shard's own arguments are a ShardTask; every other key is one of the run's scoring parameters.
        assert_payload({k: v for k, v in kwargs.items() if k in own_keys}, ShardTask)
        assert {k: v for k, v in kwargs.items() if k not in own_keys} == scoring
        assert kwargs["embeddings_dtype"] == "float16"
        results.append(VideoAestheticScoringOperator(task_id=f"score_{index}", **kwargs).execute(context={}))
    for result in results:
        assert_payload(result, ShardResult)
        assert result["embeddings"] is not None and result["embeddings"]["sha256"]
    assert sum(result["clips"] for result in results) == 6

    summary = merge.merge(params, RUN, results, frames)
    assert_payload(summary, MergeSummary)
    assert summary["kept"] is not None and summary["embeddings"] is not None
    assert summary["summary"]["clips"] == summary["clips"] == 6

    # A rescore run of what was published: its first task reads no frame.
    rescore = run_params(tmp_path, dataset, model_args, input_path=None, rescore_from=summary["manifest"])
    assert_payload(frame_check.check_frames(rescore, {**RUN, "run_id": "manual__rescore"}), RescoreCheck)


def test_a_run_without_filter_or_embeddings_leaves_those_payload_fields_empty(
    tmp_path: Path, dataset: tuple[Path, Path], model_args: dict[str, str]
) -> None:
    params = run_params(tmp_path, dataset, model_args, embeddings=None, aes_min=None, chunk_size=10)
    [kwargs] = shard_plan.plan_shards(params, RUN, max_shards=1024)
    assert "embeddings" not in kwargs and "input_conn_id" not in kwargs
    result = VideoAestheticScoringOperator(task_id="score", **kwargs).execute(context={})
    assert_payload(result, ShardResult)
    assert result["embeddings"] is None
    summary = merge.merge(params, RUN, [result], None)
    assert_payload(summary, MergeSummary)
    assert summary["kept"] is None and summary["embeddings"] is None
