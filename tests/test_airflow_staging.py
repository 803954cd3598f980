"""Staging folders of failed runs: kept while their runs may be cleared, pruned by a later run's plan once old.

The pruning is run on real folders and on a remote (fsspec memory) store, then inside the DAG
with dag.test(): a later run's plan_shards removes an old folder of a run that no longer exists
and keeps a young one. Staging never deletes what it did not create: folders without the
project's own stamp for their place (foreign folders, published versions, links, damaged or
hostile stamps) survive any retention, and a work_root among output_root's partitions is refused.
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
        staging.stamp(folder, DAG, name, now=planned_at)
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

    states = {"old_failed": "failed", "old_but_running": "running", "young_failed": "failed"}
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


def test_a_folder_without_our_stamp_is_never_removed_whatever_its_age(tmp_path: Path) -> None:
    dag_dir = object_store.store_path(tmp_path / "work") / DAG
    now = time.time()
    current = _run_folder(dag_dir, "current", now)
    stale = _run_folder(dag_dir, "not_ours", None)
    for path in [Path(object_store.local_path(stale)), *Path(object_store.local_path(stale)).rglob("*")]:
        os.utime(path, (now - 52 * WEEK, now - 52 * WEEK))
    assert staging.prune(current, 1.0, run_state=lambda run_id: None, now=now) == []
    assert _names(dag_dir) == {"current", "not_ours"}
    assert (stale / "shards" / "shard_00000.jsonl").exists()


def _stamp_text(folder: ObjectStoragePath, text: str) -> None:
    object_store.write_atomic(folder / staging.STAMP_NAME, lambda out: out.write(text.encode()))


@pytest.mark.parametrize(
    "damage",
    [
        "other_run",
        "other_dag",
        "not_json",
        "no_time",
        "huge",
        "fifo",
        "link_to_device",
        "link_to_a_real_stamp",
        "folder",
    ],
)
def test_a_stamp_that_is_not_this_folders_own_keeps_the_folder(tmp_path: Path, damage: str) -> None:
    work = tmp_path / "work"
    dag_dir = object_store.store_path(work) / DAG
    now = time.time()
    current = _run_folder(dag_dir, "current", now)
    victim = _run_folder(dag_dir, "victim", None)
    marker = work / DAG / "victim" / staging.STAMP_NAME
    old = now - 52 * WEEK
    if damage == "other_run":  # a stamp copied from another run's folder
        staging.stamp(victim, DAG, "someone_else", now=old)
    elif damage == "other_dag":
        staging.stamp(victim, "another_dag", "victim", now=old)
    elif damage == "not_json":
        _stamp_text(victim, "{not json")
    elif damage == "no_time":
        _stamp_text(victim, json.dumps({"dag_id": DAG, "run_id": "victim"}))
    elif damage == "huge":
        _stamp_text(victim, json.dumps({"dag_id": DAG, "run_id": "victim", "planned_at": old, "pad": "x" * 10**6}))
    elif damage == "fifo":  # reading it would block the plan forever
        os.mkfifo(marker)
    elif damage == "link_to_device":  # reading it would never end
        marker.symlink_to("/dev/zero")
    elif damage == "link_to_a_real_stamp":
        real = _run_folder(object_store.store_path(tmp_path / "elsewhere") / DAG, "victim", old)
        marker.symlink_to(object_store.local_path(real / staging.STAMP_NAME))
    else:
        marker.mkdir()
    assert staging.prune(current, 1.0, run_state=lambda run_id: None, now=now) == []
    assert (victim / "shards" / "shard_00000.jsonl").exists()


def test_a_linked_folder_is_never_followed_even_with_a_valid_stamp(tmp_path: Path) -> None:
    dag_dir = object_store.store_path(tmp_path / "work") / DAG
    now = time.time()
    current = _run_folder(dag_dir, "current", now)
    # Someone else's data, stamped as if it were a run of ours, reached through a link in the staging folder.
    target = _run_folder(object_store.store_path(tmp_path / "precious") / DAG, "linked", now - 52 * WEEK)
    (tmp_path / "work" / DAG / "linked").symlink_to(object_store.local_path(target))
    assert staging.prune(current, 1.0, run_state=lambda run_id: None, now=now) == []
    assert (target / "shards" / "shard_00000.jsonl").exists()


def test_published_versions_in_a_partition_named_like_the_dag_survive_pruning(tmp_path: Path) -> None:
    """The issue's example at the pruning level: staging's DAG folder is a published partition."""
    out = tmp_path / "out"
    partition = out / DAG
    version = partition / "v-20240101T000000Z-abcd0123"
    version.mkdir(parents=True)
    (version / "scored.jsonl").write_text("{}\n")
    (partition / "_manifest.json").write_text(json.dumps({"output": {"path": str(version / "scored.jsonl")}}))
    for path in (version, version / "scored.jsonl"):
        os.utime(path, (1.0, 1.0))
    current = object_store.store_path(partition) / "manual__now"
    staging.stamp(current, DAG, "manual__now")
    assert staging.prune(current, 1.0, run_state=lambda run_id: None) == []
    assert (version / "scored.jsonl").read_text() == "{}\n"


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


@pytest.mark.slow
def test_the_issues_example_published_versions_survive_and_conf_outside_the_roots_is_refused(
    tmp_path_factory: pytest.TempPathFactory, model_args: dict[str, str]
) -> None:
    """work_root == output_root, a partition named like the DAG id, staging_retention 1s: the later run is
    refused before any work and the published versions stay byte for byte; with allowed_roots set, a
    run whose conf points outside them is refused in its first task, naming the param and the setting."""
    from helpers.airflow_env import partition_files

    root = tmp_path_factory.mktemp("staging_example")
    write_frames(root / "frames", "video0", "video0_0", 2, seed=3)
    source = write_jsonl(root / "clips.jsonl", [clip_record("videos/video0.mp4", ["video0_0"])])
    out = root / "out"
    conf: dict[str, Any] = {
        "input_path": str(source),
        "output_root": str(out),
        "work_root": None,
        "figure_root": str(root / "frames"),
        "partition": DAG,
        "on_missing_frames": "fail",
        "num_workers": 0,
        "device": "cpu",
        **model_args,
    }
    env = airflow_env(
        new_home(tmp_path_factory, "staging_example_home"),
        VIDEO_AESTHETICS_STAGING_RETENTION="1s",
        VIDEO_AESTHETICS_ALLOWED_ROOTS=str(root),
        VIDEO_AESTHETICS_RETRIES="0",
    )
    first, *later = dag_test(
        env,
        DAG,
        [
            {"conf": conf},
            {"conf": {**conf, "work_root": str(out), "partition": "later"}},
            {"conf": {**conf, "work_root": None, "partition": "later", "figure_root": "/etc"}},
        ],
    )
    assert first.get("state") == "success", first.get("message") or first["log"][-5000:]
    before = partition_files(out / DAG)
    assert any(name.startswith("v-") for name in before)
    same_root, outside = later
    for run in later:
        assert run.get("state") == "failed"
        check = next(t for t in run["tasks"] if t["task_id"] == "check_frames")
        assert check["state"] == "failed" and check["try_number"] == 1
    assert "work_root" in same_root["log"] and "output_root" in same_root["log"]
    assert "figure_root='/etc'" in outside["log"] and "VIDEO_AESTHETICS_ALLOWED_ROOTS" in outside["log"]
    assert partition_files(out / DAG) == before
    assert not (out / "later").exists()


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


# --- a run's staging in an object store: shards up, scored shards back down for the merge -------------


def test_a_plan_staged_in_a_store_comes_back_for_the_merge(tmp_path: Path) -> None:
    from video_aesthetics import merging, sharding

    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'{{"n": {i}}}\n' for i in range(5)))
    cut = tmp_path / "cut"
    plan = sharding.plan_shards([source], cut, 2, 10)
    folder = _remote_root() / "dag" / "run"
    (folder / "shards" / "stale.jsonl").write_bytes(b"old\n")
    published = staging.publish_staging(plan, cut, folder, "plan.json")
    assert [s.input for s in published.shards] == [str(folder / "shards" / f"shard-{i:05d}.jsonl") for i in range(3)]
    assert not (folder / "shards" / "stale.jsonl").exists()
    # score_shard: each scored shard is uploaded beside the plan (here: the input, unchanged).
    for shard in published.shards:
        object_store.store_path(shard.output).write_bytes(object_store.store_path(shard.input).read_bytes())
    results = [{"output": shard.output, "records": shard.records} for shard in published.shards]
    fetched, local_results = staging.fetch_staging(folder, "plan.json", results, tmp_path / "scratch")
    assert [r["output"] for r in local_results] == [s.output for s in fetched.shards]
    assert all(Path(s.output).read_bytes() == Path(s.input).read_bytes() for s in fetched.shards)
    assert b"".join(Path(s.input).read_bytes() for s in fetched.shards) == source.read_bytes()
    object_store.remove_tree(folder)
    assert not folder.exists()
    with pytest.raises(merging.MergeError, match="the shard plan .* is missing"):
        staging.fetch_staging(folder, "plan.json", results, tmp_path / "scratch2")


def test_a_plan_is_cut_in_the_staging_folder_when_local_else_in_a_temporary_one(tmp_path: Path) -> None:
    local = object_store.store_path(tmp_path / "work")
    with staging.staging_folder(local) as folder:
        assert folder == tmp_path / "work"
    with staging.staging_folder(_remote_root()) as folder:
        assert folder.is_dir() and not folder.is_relative_to(tmp_path)
        (folder / "shard.jsonl").write_text("{}\n")
    assert not folder.exists()
    with staging.scratch_folder() as scratch:
        (scratch / "x").write_text("x")
    assert not scratch.exists()
