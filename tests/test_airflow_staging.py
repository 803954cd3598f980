"""Staging folders of failed runs: kept while their runs may be cleared, pruned by a later run's plan once old.

The pruning is run on real folders and on a remote (fsspec memory) store, then inside the DAG
with dag.test(): a later run's plan_shards removes an old folder of a run that no longer exists
and keeps a young one.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath
from airflow.sdk.io import attach
from fsspec.implementations.memory import MemoryFileSystem

from helpers.airflow_env import airflow_env, dag_test, new_home
from helpers.media import clip_record, write_frames, write_jsonl
from video_aesthetics.airflow import object_store, staging
from video_aesthetics.errors import ConfigError

DAY = 86400.0
WEEK = 7 * DAY
DAG = "video_aesthetic_scoring"


def _remote_root() -> ObjectStoragePath:
    attach("memory", fs=MemoryFileSystem())
    return ObjectStoragePath(f"memory://staging-{uuid.uuid4().hex[:8]}/work")


def _run_folder(dag_dir: ObjectStoragePath, name: str, planned_at: float | None) -> ObjectStoragePath:
    """A run's staging folder with a shard file, stamped as planned at ``planned_at`` (None: no stamp)."""
    folder = dag_dir / name
    shard = folder / "shards" / "shard_00000.jsonl"
    if object_store.local_path(shard) is not None:
        Path(object_store.local_path(shard)).parent.mkdir(parents=True, exist_ok=True)
    object_store.write_atomic(shard, lambda out: out.write(b'{"caption": "x"}\n'))
    if planned_at is not None:
        staging.stamp(folder, DAG, f"run-{name}", now=planned_at)
    return folder


def _names(dag_dir: ObjectStoragePath) -> set[str]:
    return {p.name for p in dag_dir.iterdir()}


@pytest.mark.parametrize("where", ["local", "remote"])
def test_old_staging_of_other_runs_is_removed_and_the_rest_kept(tmp_path: Path, where: str) -> None:
    root = object_store.store_path(tmp_path / "work") if where == "local" else _remote_root()
    dag_dir = root / DAG
    now = time.time()
    current = _run_folder(dag_dir, "current", now - 30 * DAY)  # the planning run itself, however old
    _run_folder(dag_dir, "old_failed", now - WEEK - 60)
    _run_folder(dag_dir, "young_failed", now - WEEK + 60)
    _run_folder(dag_dir, "old_but_running", now - 30 * DAY)

    states = {"run-old_failed": "failed", "run-old_but_running": "running", "run-young_failed": "failed"}
    removed = staging.prune(current, WEEK, run_state=states.get, now=now)

    assert removed == ["old_failed"]
    assert _names(dag_dir) == {"current", "young_failed", "old_but_running"}
    assert (current / "shards" / "shard_00000.jsonl").exists()


def test_a_run_that_is_gone_loses_its_old_staging_and_never_means_keep_everything(tmp_path: Path) -> None:
    dag_dir = object_store.store_path(tmp_path / "work") / DAG
    now = time.time()
    current = _run_folder(dag_dir, "current", now)
    _run_folder(dag_dir, "deleted_run", now - 2 * WEEK)
    assert staging.prune(current, None, run_state=lambda run_id: None, now=now) == []
    assert staging.prune(current, WEEK, run_state=lambda run_id: None, now=now) == ["deleted_run"]
    assert _names(dag_dir) == {"current"}


def test_an_unstamped_folder_is_aged_by_its_newest_file(tmp_path: Path) -> None:
    dag_dir = object_store.store_path(tmp_path / "work") / DAG
    now = time.time()
    current = _run_folder(dag_dir, "current", now)
    stale = _run_folder(dag_dir, "plan_failed_long_ago", None)
    fresh = _run_folder(dag_dir, "plan_failed_today", None)
    for path in Path(object_store.local_path(stale)).rglob("*"):
        os.utime(path, (now - 2 * WEEK, now - 2 * WEEK))
    # One file touched today keeps the whole folder.
    old_file = Path(object_store.local_path(fresh)) / "shards" / "old.jsonl"
    old_file.write_text("{}\n")
    os.utime(old_file, (now - 2 * WEEK, now - 2 * WEEK))

    assert staging.prune(current, WEEK, now=now) == ["plan_failed_long_ago"]
    assert _names(dag_dir) == {"current", "plan_failed_today"}


def test_the_stamp_names_the_run_and_its_plan_time(tmp_path: Path) -> None:
    folder = tmp_path / "work" / DAG / "manual__x"
    staging.stamp(folder, DAG, "manual__x", now=1234.5)
    assert json.loads((folder / staging.STAMP_NAME).read_text()) == {
        "dag_id": DAG,
        "run_id": "manual__x",
        "planned_at": 1234.5,
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", WEEK), ("36h", 36 * 3600.0), ("90m", 5400.0), ("3600", 3600.0), ("1.5d", 1.5 * DAY), ("never", None)],
)
def test_retention_is_an_age_with_a_unit(text: str, seconds: float | None) -> None:
    assert staging.retention_seconds(text) == seconds


def test_the_default_retention_is_a_week(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDEO_AESTHETICS_STAGING_RETENTION", raising=False)
    assert staging.retention_seconds() == WEEK
    monkeypatch.setenv("VIDEO_AESTHETICS_STAGING_RETENTION", "2h")
    assert staging.retention_seconds() == 7200.0


@pytest.mark.parametrize("text", ["7 days", "-1d", "a week", "7w", ""])
def test_a_bad_retention_names_the_setting(text: str) -> None:
    with pytest.raises(ConfigError, match=r"staging_retention \(VIDEO_AESTHETICS_STAGING_RETENTION\) must be an age"):
        staging.retention_seconds(text)


@pytest.mark.slow
def test_a_later_runs_plan_prunes_old_staging_in_the_dag(
    tmp_path_factory: pytest.TempPathFactory, model_args: dict[str, str]
) -> None:
    root = tmp_path_factory.mktemp("staging_dag")
    write_frames(root / "frames", "video0", "video0_0", 2, seed=3)
    source = write_jsonl(root / "clips.jsonl", [clip_record("videos/video0.mp4", ["video0_0"])])
    work = root / "work"
    dag_dir = object_store.store_path(work) / DAG
    now = time.time()
    # A failed run's folder from long ago (its run was deleted since) and one from yesterday.
    _run_folder(dag_dir, "manual__long_ago", now - 2 * WEEK)
    _run_folder(dag_dir, "manual__yesterday", now - DAY)
    conf: dict[str, Any] = {
        "input_path": str(source),
        "output_root": str(root / "out"),
        "work_root": str(work),
        "figure_root": str(root / "frames"),
        "on_missing_frames": "fail",
        "num_workers": 0,
        "device": "cpu",
        **model_args,
    }
    env = airflow_env(new_home(tmp_path_factory, "staging_home"))
    [run] = dag_test(env, DAG, [{"conf": conf}])
    assert run.get("state") == "success", run.get("message") or run["log"][-5000:]
    # The old folder went with the plan; yesterday's stays; the run's own went with its merge.
    assert _names(dag_dir) == {"manual__yesterday"}, [line for line in run["log"].splitlines() if "staging" in line]
    assert "removed 1 staging folder(s) older than 7 day(s): manual__long_ago" in run["log"]


@pytest.mark.parametrize(("status", "state"), [(404, None), (500, "running"), (None, "running")])
def test_a_supervised_tasks_lookup_error_means_gone_only_for_a_404(status: int | None, state: str | None) -> None:
    from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse

    # What a task under the Task SDK's supervisor gets when the Execution API answers an error.
    error = AirflowRuntimeError(ErrorResponse(error=ErrorType.API_SERVER_ERROR, detail={"status_code": status}))

    def lookup(dag_id: str, run_id: str) -> str:
        raise error

    # Gone: prunable. Anything else is treated as a live run, whose shards are kept.
    assert staging._run_state(lookup, DAG, "manual__x") == state
    assert staging._run_state(lambda dag_id, run_id: "failed", DAG, "manual__x") == "failed"
