"""The DAG's task bodies in-process: where a run reads and writes, and the merge into local and remote stores."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from helpers.airflow_env import partition_files, published, use_private_airflow_home
from helpers.media import clip_record, read_jsonl, write_jsonl

use_private_airflow_home()

from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.sdk.io import attach
from fsspec.implementations.memory import MemoryFileSystem

from video_aesthetics.airflow import dag_tasks as tasks
from video_aesthetics.errors import ConfigError, VideoAestheticsError
from video_aesthetics.records import SCORE
from video_aesthetics.sharding import safe_name

RUN = {
    "dag_id": "video_aesthetic_scoring",
    "run_id": "scheduled__2024-01-02T00:00:00+00:00",
    "ds": "2024-01-02",
    "dag_run": SimpleNamespace(run_type="scheduled", conf={}),
}
MANUAL = {
    "dag_id": "video_aesthetic_scoring",
    "run_id": "manual__2024-05-05T10:00:00+00:00",
    "dag_run": SimpleNamespace(run_type="manual", conf={}),
}
# What the UI does: a manual trigger with a logical date.
UI = {**MANUAL, "run_id": "manual__2024-01-02T10:00:00+00:00", "ds": "2024-01-02"}


def params(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    base = {
        "input_path": None,
        "input_root": str(tmp_path / "in"),
        "output_root": str(tmp_path / "out"),
        "work_root": None,
        "figure_root": str(tmp_path / "frames"),
        "chunk_size": 2,
        "clip_model": "ViT-L/14",
        "mlp_checkpoint": None,
        "load_num": 3,
        "batch_size": 8,
        "num_workers": 0,
        "device": "cpu",
        "reduction": "mean",
        "on_missing_frames": "extract",
        "skip_bad_records": False,
    }
    return {**base, **changes}


def test_scheduled_runs_read_and_write_their_date(tmp_path: Path) -> None:
    (tmp_path / "in" / "2024-01-02").mkdir(parents=True)
    layout = tasks.run_layout(params(tmp_path), RUN)
    assert layout.partition == "2024-01-02"
    assert layout.input_spec == str(tmp_path / "in" / "2024-01-02")
    assert layout.output == ObjectStoragePath(str(tmp_path / "out" / "2024-01-02"))
    assert layout.manifest.name == "_manifest.json"
    assert Path(layout.work_dir) == tmp_path / "out" / "_staging" / "video_aesthetic_scoring" / safe_name(RUN["run_id"])


def test_an_input_path_wins_and_runs_without_a_date_use_their_run_id(tmp_path: Path) -> None:
    layout = tasks.run_layout(params(tmp_path, input_path="/data/*.jsonl", work_root=str(tmp_path / "work")), MANUAL)
    assert layout.input_spec == "/data/*.jsonl"
    assert layout.partition == safe_name(MANUAL["run_id"]) and layout.logical_date is None
    assert Path(layout.work_dir).parent.parent == tmp_path / "work"


@pytest.mark.parametrize(
    ("changes", "context", "message"),
    [
        ({}, MANUAL, "no logical date"),
        ({"input_root": None}, RUN, "neither input_path nor input_root"),
        ({"output_root": "s3://bucket/scores"}, RUN, "set work_root"),
        ({"output_root": " "}, RUN, "output_root"),
    ],
    ids=["no_date", "no_input", "remote_without_work_root", "empty_output"],
)
def test_layout_errors_say_what_to_set(tmp_path: Path, changes, context, message) -> None:
    (tmp_path / "in" / "2024-01-02").mkdir(parents=True)
    with pytest.raises(VideoAestheticsError, match=message):
        tasks.run_layout(params(tmp_path, **changes), context)


def test_the_scoring_config_follows_the_params(tmp_path: Path) -> None:
    config = tasks.scoring_config(params(tmp_path, load_num=5, reduction="max"))
    assert (config.load_num, config.reduction, config.num_workers, config.mlp_checkpoint) == (5, "max", 0, None)
    with pytest.raises(ConfigError, match="batch_size"):
        tasks.scoring_config(params(tmp_path, batch_size=0))


def _input(tmp_path: Path, count: int = 5) -> Path:
    records = [clip_record(f"videos/v{i}.mp4", [f"v{i}_0"], n=i) for i in range(count)]
    return write_jsonl(tmp_path / "in" / "2024-01-02" / "part.jsonl", records)


def _score_shards(shard_kwargs: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Scored shards as score_shard writes them, with the XCom it returns (records, clips, sha256, model)."""
    results = []
    for kwargs in shard_kwargs:
        rows = read_jsonl(Path(kwargs["input_path"]))
        for row in rows:
            row["video_clips"]["clips"][0][SCORE] = 5.0 + row["n"]
        write_jsonl(Path(kwargs["output_path"]), rows)
        digest = hashlib.sha256(Path(kwargs["output_path"]).read_bytes()).hexdigest()
        results.append(
            {
                "input": kwargs["input_path"],
                "output": kwargs["output_path"],
                "records": len(rows),
                "clips": len(rows),
                "scored": len(rows),
                "failed": 0,
                "sha256": digest,
                "model": {"head": {"sha256": "ab" * 32}},
            }
        )
    return results


def test_plan_and_merge_into_a_local_store(tmp_path: Path) -> None:
    _input(tmp_path)
    p = params(tmp_path)
    shard_kwargs = tasks.plan_shards(p, RUN, max_shards=1024)
    assert [Path(k["input_path"]).name for k in shard_kwargs] == [
        "shard-00000.jsonl",
        "shard-00001.jsonl",
        "shard-00002.jsonl",
    ]
    # Each shard's kwargs are small XCom metadata: paths and the scoring parameters, never records.
    assert all(len(json.dumps(kwargs)) < 1024 for kwargs in shard_kwargs)
    summary = tasks.merge(p, RUN, _score_shards(shard_kwargs), frames={"clips": 5})
    out = tmp_path / "out" / "2024-01-02"
    assert sorted(x.name for x in out.iterdir()) == ["_manifest.json", summary["version"]]
    manifest, scored = published(out)
    assert scored == out / summary["version"] / "scored.jsonl" == Path(summary["output"])
    assert [r["n"] for r in read_jsonl(scored)] == [0, 1, 2, 3, 4]
    assert summary["sha256"] == hashlib.sha256(scored.read_bytes()).hexdigest()
    assert manifest["frames"] == {"clips": 5} and manifest["model"] == {"head": {"sha256": "ab" * 32}}
    assert not (tmp_path / "out" / "_staging").exists()


def test_merge_into_a_remote_store(tmp_path: Path) -> None:
    attach("memory", fs=MemoryFileSystem())
    root = f"memory://scores-{uuid.uuid4().hex[:8]}/daily"
    _input(tmp_path)
    p = params(tmp_path, output_root=root, work_root=str(tmp_path / "work"))
    summary = tasks.merge(p, RUN, _score_shards(tasks.plan_shards(p, RUN, max_shards=1024)))
    partition = ObjectStoragePath(f"{root}/2024-01-02")
    manifest = json.loads((partition / "_manifest.json").read_text())
    scored = ObjectStoragePath(manifest["output"]["path"])
    assert summary["output"] == str(scored) == f"{root}/2024-01-02/{summary['version']}/scored.jsonl"
    assert [json.loads(line)["n"] for line in scored.read_text().splitlines()] == [0, 1, 2, 3, 4]
    assert manifest["output"]["sha256"] == hashlib.sha256(scored.read_bytes()).hexdigest()
    assert sorted(x.name for x in partition.iterdir()) == ["_manifest.json", summary["version"]]


@pytest.mark.parametrize("damage", ["shard_missing", "count", "changed_file", "two_models"])
def test_merge_refuses_inconsistent_shard_results(tmp_path: Path, damage: str) -> None:
    _input(tmp_path)
    p = params(tmp_path)
    results = _score_shards(tasks.plan_shards(p, RUN, max_shards=1024))
    if damage == "shard_missing":
        results.pop()
    elif damage == "count":
        results[0]["records"] += 1
    elif damage == "changed_file":
        Path(results[1]["output"]).write_text(Path(results[1]["output"]).read_text() + "\n\n")
    else:
        results[2]["model"] = {"head": {"sha256": "cd" * 32}}
    with pytest.raises(AirflowFailException):
        tasks.merge(p, RUN, results)
    assert not (tmp_path / "out" / "2024-01-02").exists() or not any((tmp_path / "out" / "2024-01-02").iterdir())


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("clips", "1"),
        ("clips", None),
        ("scored", True),
        ("failed", -1),
        ("failed", 1.0),
        ("model", "ViT-L/14"),
        ("model", ["head"]),
    ],
)
def test_merge_refuses_a_shard_result_of_the_wrong_type_naming_shard_and_field(
    tmp_path: Path, key: str, value: Any
) -> None:
    # XCom is anyone's to write: a result whose counts or model are not what score_shard returns
    # fails the merge with the shard and the field named, before anything is published.
    _input(tmp_path)
    p = params(tmp_path)
    results = _score_shards(tasks.plan_shards(p, RUN, max_shards=1024))
    results[1][key] = value
    with pytest.raises(AirflowFailException, match=rf"shard-00001: .*{key}.*rerun its score_shard task"):
        tasks.merge(p, RUN, results)
    assert not (tmp_path / "out" / "2024-01-02").exists() or not any((tmp_path / "out" / "2024-01-02").iterdir())


def test_merge_refuses_an_absurd_count_in_a_shard_result(tmp_path: Path) -> None:
    _input(tmp_path)
    p = params(tmp_path)
    results = _score_shards(tasks.plan_shards(p, RUN, max_shards=1024))
    results[1]["scored"] = 10**30  # a count, but not the shard's: the merged output says otherwise
    with pytest.raises(AirflowFailException, match=f"holds 5 scored clips, the shards reported {10**30 + 3}$"):
        tasks.merge(p, RUN, results)
    assert not (tmp_path / "out" / "2024-01-02").exists() or not any((tmp_path / "out" / "2024-01-02").iterdir())


def test_skip_bad_records_publishes_rejects_and_a_clean_rerun_removes_them(tmp_path: Path) -> None:
    source = _input(tmp_path)
    source.write_text(source.read_text() + "{broken\n")
    p = params(tmp_path, skip_bad_records=True)
    first = tasks.merge(p, RUN, _score_shards(tasks.plan_shards(p, RUN, max_shards=1024)))
    out = tmp_path / "out" / "2024-01-02"
    manifest, _ = published(out)
    assert manifest["output"]["rejects"] == first["rejects"] == str(out / first["version"] / "rejects.jsonl")
    assert [r["raw"] for r in read_jsonl(Path(first["rejects"]))] == ["{broken"]
    assert manifest["records"]["rejected"] == 1
    source.write_text("".join(line for line in source.read_text().splitlines(keepends=True) if "broken" not in line))
    p = params(tmp_path)
    clean = tasks.merge(p, RUN, _score_shards(tasks.plan_shards(p, RUN, max_shards=1024)))
    manifest, _ = published(out)
    assert clean["rejects"] is None and manifest["output"]["rejects"] is None
    assert sorted(x.name for x in (out / clean["version"]).iterdir()) == ["report.html", "scored.jsonl"]


def test_a_malformed_line_fails_the_plan_at_once(tmp_path: Path) -> None:
    source = _input(tmp_path)
    source.write_text(source.read_text() + "{broken\n")
    with pytest.raises(AirflowFailException, match=r"part\.jsonl:6"):
        tasks.plan_shards(params(tmp_path), RUN, max_shards=1024)


# --- partitions, publishing, first-task checks -------------------------------------------------


def test_manual_runs_keep_their_own_partition_even_with_a_logical_date(tmp_path: Path) -> None:
    assert tasks.run_layout(params(tmp_path, input_path="/x.jsonl"), UI).partition == safe_name(UI["run_id"])
    assert tasks.run_layout(params(tmp_path, input_path="/x.jsonl", partition="redo-1"), UI).partition == "redo-1"
    backfill = {**RUN, "dag_run": SimpleNamespace(run_type="backfill", conf={})}
    assert tasks.run_layout(params(tmp_path, input_path="/x.jsonl"), backfill).partition == "2024-01-02"


@pytest.mark.parametrize("bad", ["../up", "a/b", "", "x y", "v-20240101T000000Z-1", "_staging", "x" * 201, "é"])
def test_a_named_partition_must_be_a_plain_folder_name(tmp_path: Path, bad: str) -> None:
    if not bad:  # empty means "not named"
        assert tasks.run_layout(params(tmp_path, input_path="/x", partition=bad), UI).partition == safe_name(
            UI["run_id"]
        )
        return
    with pytest.raises(ConfigError, match="partition"):
        tasks.run_layout(params(tmp_path, input_path="/x", partition=bad), UI)


def test_a_scheduled_run_without_input_skips_and_a_manual_one_fails(tmp_path: Path) -> None:
    # input_root set but the day's folder absent, and no input configured at all.
    for p in (params(tmp_path), params(tmp_path, input_root=None)):
        with pytest.raises(AirflowSkipException, match="input"):
            tasks.check_frames(p, RUN)
        with pytest.raises(AirflowFailException, match="input"):
            tasks.check_frames(p, UI)


def test_undeclared_conf_keys_fail_the_first_task_naming_the_known_params(tmp_path: Path) -> None:
    declared = params(tmp_path)
    context = {
        **UI,
        "dag": SimpleNamespace(dag_id="d", params=declared),
        "dag_run": SimpleNamespace(run_type="manual", conf={"figure_rot": "/x", "load_num": 2}),
    }
    with pytest.raises(AirflowFailException, match="figure_rot") as info:
        tasks.check_frames(declared, context)
    assert "figure_root" in str(info.value) and "load_num']" not in str(info.value)


def test_a_merge_that_fails_after_writing_leaves_the_previous_result_byte_for_byte(tmp_path: Path) -> None:
    _input(tmp_path)
    p = params(tmp_path)
    tasks.merge(p, RUN, _score_shards(tasks.plan_shards(p, RUN, max_shards=1024)))
    out = tmp_path / "out" / "2024-01-02"
    before = partition_files(out)
    results = _score_shards(tasks.plan_shards(p, RUN, max_shards=1024))
    results[0]["scored"] -= 1  # the cross-check fails once the new scored file is written
    with pytest.raises(AirflowFailException, match="scored"):
        tasks.merge(p, RUN, results)
    assert partition_files(out) == before


def test_the_report_summary_and_kept_records_are_published_with_the_scores(tmp_path: Path) -> None:
    _input(tmp_path)
    p = params(tmp_path, aes_min=7.0)
    summary = tasks.merge(p, RUN, _score_shards(tasks.plan_shards(p, RUN, max_shards=1024)))
    manifest, scored = published(tmp_path / "out" / "2024-01-02")
    version = scored.parent
    assert sorted(x.name for x in version.iterdir()) == ["kept.jsonl", "report.html", "scored.jsonl"]
    # Scores 5..9 (see _score_shards): the summary is computed from what was published.
    scores = [r["video_clips"]["clips"][0]["aesthetic_score"] for r in read_jsonl(scored)]
    assert manifest["summary"]["counts"]["clips"] == 5 and manifest["summary"]["scores"]["median"] == 7.0
    assert sorted(scores) == [5.0, 6.0, 7.0, 8.0, 9.0]
    assert summary["summary"]["kept"] == 3 and summary["summary"]["median"] == 7.0
    kept = read_jsonl(version / "kept.jsonl")
    assert [r["n"] for r in kept] == [2, 3, 4] and manifest["output"]["kept"] == {
        "path": str(version / "kept.jsonl"),
        "records": 3,
    }
    page = (version / "report.html").read_text()
    assert "<svg" in page and "2024-01-02" in page and manifest["output"]["report"] == str(version / "report.html")


def test_two_runs_publishing_one_partition_at_once_end_with_one_whole_result(tmp_path: Path) -> None:
    # A clear during a backfill: two runs merge into the same partition at the same moment.
    runs = []
    for n, count in ((1, 5), (2, 3)):
        source = write_jsonl(
            tmp_path / f"in{n}" / "part.jsonl", [clip_record(f"v{i}.mp4", [f"v{i}_0"], n=i) for i in range(count)]
        )
        context = {**UI, "run_id": f"manual__run{n}"}
        p = params(tmp_path, input_path=str(source), partition="shared")
        runs.append((p, context, _score_shards(tasks.plan_shards(p, context, max_shards=1024))))
    barrier = threading.Barrier(len(runs))
    outcomes: list[Any] = [None] * len(runs)

    def publish(index: int) -> None:
        p, context, results = runs[index]
        barrier.wait()
        outcomes[index] = tasks.merge(p, context, results)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(len(runs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    manifest, scored = published(tmp_path / "out" / "shared")
    winner = next(o for o in outcomes if o["version"] == manifest["run"]["version"])
    assert manifest["output"]["sha256"] == hashlib.sha256(scored.read_bytes()).hexdigest() == winner["sha256"]
    assert len(read_jsonl(scored)) == winner["records"] == manifest["records"]["out"]
    assert manifest["run"]["run_id"] in ("manual__run1", "manual__run2")


# --- trust boundaries: links in the output store, staging apart from partitions, allowed roots ------------


def test_a_manifest_linked_out_of_output_root_is_replaced_never_followed(tmp_path: Path) -> None:
    _input(tmp_path)
    p = params(tmp_path)
    outside = tmp_path / "airflow.cfg"
    outside.write_text("[core]\nfernet_key = secret\n")
    partition = tmp_path / "out" / "2024-01-02"
    partition.mkdir(parents=True)
    (partition / "_manifest.json").symlink_to(outside)
    summary = tasks.merge(p, RUN, _score_shards(tasks.plan_shards(p, RUN, max_shards=1024)))
    assert outside.read_text() == "[core]\nfernet_key = secret\n"
    assert not (partition / "_manifest.json").is_symlink()
    manifest, scored = published(partition)
    assert manifest["run"]["version"] == summary["version"] and len(read_jsonl(scored)) == 5


def test_a_partition_linked_out_of_output_root_fails_the_merge_and_writes_nothing_there(tmp_path: Path) -> None:
    _input(tmp_path)
    p = params(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "_manifest.json").write_text("theirs")
    results = _score_shards(tasks.plan_shards(p, RUN, max_shards=1024))
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / "2024-01-02").symlink_to(outside)
    with pytest.raises(AirflowFailException, match="symbolic link"):
        tasks.merge(p, RUN, results)
    assert sorted(x.name for x in outside.iterdir()) == ["_manifest.json"]
    assert (outside / "_manifest.json").read_text() == "theirs"


@pytest.mark.parametrize(
    ("work", "refused"),
    [
        ("out", True),  # the example: work_root == output_root
        ("out/video_aesthetic_scoring", True),  # inside a partition (named like the DAG)
        ("out/2024-01-02/v-x", True),
        ("out/_staging", False),  # the default, stated
        ("work", False),
        (".", False),  # <tmp>/video_aesthetic_scoring beside <tmp>/out: apart
    ],
)
def test_work_root_among_the_published_partitions_is_refused_naming_both_params(
    tmp_path: Path, work: str, refused: bool
) -> None:
    p = params(tmp_path, input_path="/x.jsonl", work_root=str(tmp_path / work))
    if not refused:
        assert tasks.run_layout(p, MANUAL).work_dir.startswith(str(tmp_path / work))
        return
    with pytest.raises(ConfigError, match="work_root") as info:
        tasks.run_layout(p, MANUAL)
    assert "output_root" in str(info.value)


def test_output_root_inside_the_staging_of_the_dag_is_refused(tmp_path: Path) -> None:
    p = params(
        tmp_path,
        input_path="/x.jsonl",
        work_root=str(tmp_path / "work"),
        output_root=str(tmp_path / "work" / "video_aesthetic_scoring" / "out"),
    )
    with pytest.raises(ConfigError, match="output_root .* inside work_root"):
        tasks.run_layout(p, MANUAL)


def test_a_linked_work_root_is_judged_where_it_leads(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "work_link").symlink_to(tmp_path / "out")
    with pytest.raises(ConfigError, match="work_root"):
        tasks.run_layout(params(tmp_path, input_path="/x.jsonl", work_root=str(tmp_path / "work_link")), MANUAL)


@pytest.mark.parametrize("param", tasks.LOCATION_PARAMS)
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
    assert tasks.check_frames(inside, UI)["inputs"] == 1  # inside: the run goes ahead
    outside = {**inside, param: str(tmp_path / "elsewhere" / param)}
    for task in (
        lambda: tasks.check_frames(outside, UI),
        lambda: tasks.plan_shards(outside, UI, max_shards=1024),
        lambda: tasks.merge(outside, UI, []),
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
        tasks.check_frames(p, UI)


def test_without_allowed_roots_any_location_is_used_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDEO_AESTHETICS_ALLOWED_ROOTS", raising=False)
    _input(tmp_path)
    p = params(tmp_path, on_missing_frames="skip", video_root="/anywhere")
    assert tasks.check_frames(p, RUN)["inputs"] == 1


@pytest.mark.parametrize("top", [0, -1, 501, True, "12", 1.5])
def test_a_bad_report_top_fails_the_first_task_before_any_scoring(tmp_path: Path, top: Any) -> None:
    _input(tmp_path)
    with pytest.raises(AirflowFailException, match="report_top"):
        tasks.check_frames(params(tmp_path, report_top=top, on_missing_frames="skip"), RUN)
    assert not (tmp_path / "out").exists()


# --- every scoring parameter reaches score_shard ------------------------------------------------------------


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
    [kwargs, *_] = tasks.plan_shards(p, RUN, max_shards=1024)
    assert {k: kwargs[k] for k in ("input_video_key", "video_clips_key", "output_key", "frame_scores")} == {
        "input_video_key": "clip_path",
        "video_clips_key": "segments",
        "output_key": "scored_segments",
        "frame_scores": True,
    }
    assert (kwargs["init_distributed"], kwargs["nproc"]) == (False, 2)
    from video_aesthetics.airflow.operators import VideoAestheticScoringOperator

    operator = VideoAestheticScoringOperator(task_id="t", **kwargs)
    assert operator.scoring_config() == tasks.scoring_config(p)


@pytest.mark.parametrize("clips_key", [None, ""])
def test_an_empty_clips_key_plans_whole_videos(tmp_path: Path, clips_key: str | None) -> None:
    write_jsonl(tmp_path / "in" / "2024-01-02" / "part.jsonl", [{"video": f"/v/{i}.mp4", "n": i} for i in range(3)])
    p = params(tmp_path, video_clips_key=clips_key)
    assert tasks.scoring_config(p).whole_video
    report = tasks.check_frames(p, RUN)
    assert (report["records"], report["clips"], report["extracted"]) == (3, 0, 0)
    [kwargs, *_] = tasks.plan_shards(p, RUN, max_shards=1024)
    assert kwargs["video_clips_key"] == "" and kwargs["output_key"] == "video_clips"


@pytest.mark.parametrize(("name", "value"), [("init_distributed", "yes"), ("nproc", 0), ("nproc", True)])
def test_bad_process_params_are_refused_by_name(tmp_path: Path, name: str, value: Any) -> None:
    _input(tmp_path)
    with pytest.raises(AirflowFailException, match=name):
        tasks.plan_shards(params(tmp_path, **{name: value}), RUN, max_shards=1024)
