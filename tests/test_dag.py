"""The video_aesthetic_scoring DAG end to end with dag.test() on SQLite, a tiny real model, real videos and frames.

dag.test() runs in one child process for all runs of a scenario (see helpers.airflow_env): the
runs share its start-up (Airflow's in-process API, importing torch), which dominates small runs.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from helpers.airflow_env import airflow_env, dag_test, new_home, parse_dag_folder, partition_files, published
from helpers.cli import score_args
from helpers.media import clip_record, read_jsonl, write_frames, write_jsonl, write_video
from video_aesthetics import __version__
from video_aesthetics.sharding import safe_name

pytestmark = pytest.mark.slow

DAG_ID = "video_aesthetic_scoring"
LOGICAL_DATE = "2024-03-01"
VIDEOS = 4
WITH_FRAMES = {"video0", "video1"}  # the clips of the other videos have no frames until the DAG extracts them


def _ti(result: dict[str, Any], task_id: str, map_index: int = -1) -> dict[str, Any]:
    return next(t for t in result["tasks"] if t["task_id"] == task_id and t["map_index"] == map_index)


def _shards(result: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted((t for t in result["tasks"] if t["task_id"] == "score_shard"), key=lambda t: t["map_index"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, model_args: dict[str, str]) -> dict[str, Any]:
    """Videos, a JSONL input, a figure root with frames for half of the clips, and the runs' params."""
    root = tmp_path_factory.mktemp("dag_world")
    records = []
    for v in range(VIDEOS):
        stem = f"video{v}"
        write_video(root / "input" / "videos" / f"{stem}.mp4", frames=24, seed=v)
        ids = [f"{stem}_{c}" for c in range(2)]
        if stem in WITH_FRAMES:
            for c, cid in enumerate(ids):
                # "1_0" is the same frames under a name that looks like a number to a template.
                for folder in ("frames", "1_0"):
                    write_frames(root / folder, stem, cid, 4, seed=v * 10 + c)
        record = clip_record(f"videos/{stem}.mp4", ids, caption=f"video {v}")
        for c, clip in enumerate(record["video_clips"]["clips"]):
            clip.update(frame_start=12 * c, frame_end=12 * c + 12, num_frames=12)
        records.append(record)
        if v == 1:
            records.append({"caption": "a record without a video passes through", "n": v})
    source = write_jsonl(root / "input" / "clips.jsonl", records)
    other = write_jsonl(root / "input" / "other.jsonl", records[:2])
    # The same records under other field names, and whole videos (records with only a video, paths relative
    # to the input file's folder, as frame extraction takes them: the scoring shards must too).
    renamed = [
        {("clip_path" if k == "video" else "segments" if k == "video_clips" else k): v for k, v in r.items()}
        for r in records
    ]
    custom = write_jsonl(root / "input" / "custom.jsonl", renamed)
    videos = write_jsonl(
        root / "input" / "videos.jsonl",
        [{"video": f"videos/video{v}.mp4", "n": v} for v in range(VIDEOS)]
        + [{"video": "videos/missing.mp4", "n": VIDEOS}, {"caption": "no video"}],
    )
    non_utf8 = root / "input" / "latin1.jsonl"
    non_utf8.write_bytes(source.read_bytes() + b'{"caption": "caf\xe9"}\n')
    conf = {
        "input_path": str(source),
        "output_root": str(root / "out"),
        "figure_root": str(root / "frames"),
        "chunk_size": 2,
        "num_workers": 0,
        "device": "cpu",
        "batch_size": 1,
        # dag.test() in one process keeps a run's conf in the DAG's params for the next run: every
        # run states the params others change.
        "partition": None,
        "aes_min": None,
        "aes_max": None,
        "load_num": 3,
        "input_video_key": "video",
        "video_clips_key": "video_clips",
        "output_key": None,
        "frame_scores": False,
        **model_args,
    }
    return {
        "root": root,
        "source": source,
        "other": other,
        "custom": custom,
        "videos": videos,
        "non_utf8": non_utf8,
        "records": len(records),
        "conf": conf,
    }


# Runs that take the scoring parameters the seed names besides the model's: each is compared with
# the CLI on the same input with the same options (test_every_scoring_parameter_matches_the_cli).
FIELD_RUNS = {
    "custom_fields": (
        "custom",
        {"input_video_key": "clip_path", "video_clips_key": "segments", "frame_scores": True},
    ),
    "other_output_key": ("source", {"output_key": "aesthetic_clips"}),
    "whole_video": ("videos", {"video_clips_key": None, "load_num": 2}),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, world: dict[str, Any]) -> dict[str, Any]:
    """Every dag.test() run of this module, in one process; outputs are copied between runs that overwrite them."""
    env = airflow_env(new_home(tmp_path_factory, "dag_test_home"))
    conf, root = world["conf"], world["root"]
    missing = {
        **conf,
        "figure_root": str(root / "no_frames"),
        "on_missing_frames": "fail",
        "output_root": str(root / "out_fail"),
    }
    dated = {**conf, "partition": LOGICAL_DATE}
    plan = [
        ("first", {"conf": dated, "logical_date": LOGICAL_DATE}),
        ("rerun", {"conf": dated, "logical_date": LOGICAL_DATE}),
        ("same_day_a", {"conf": conf, "logical_date": "2024-03-05"}),
        ("same_day_b", {"conf": {**conf, "input_path": str(world["other"])}, "logical_date": "2024-03-05"}),
        ("no_logical_date", {"conf": conf, "logical_date": None}),
        ("typed", {"conf": {**conf, "figure_root": "1_0", "partition": "typed"}, "logical_date": None}),
        (
            "filtered",
            {"conf": {**conf, "partition": "filtered", "aes_min": -1e3, "aes_max": 1e3}, "logical_date": None},
        ),
        *(
            (name, {"conf": {**conf, "input_path": str(world[source]), "partition": name, **changes}})
            for name, (source, changes) in FIELD_RUNS.items()
        ),
        ("tx1", {"conf": {**conf, "partition": "tx1"}, "logical_date": None}),
        ("tx2", {"conf": {**conf, "partition": "tx2"}, "logical_date": None}),
        ("unknown_key", {"conf": {**conf, "figure_rot": "/elsewhere"}, "logical_date": None}),
        ("non_utf8", {"conf": {**conf, "input_path": str(world["non_utf8"]), "partition": "nu"}, "logical_date": None}),
        ("bad_device", {"conf": {**conf, "device": "gpu"}, "logical_date": None}),
        ("bad_chunk_size", {"conf": {**conf, "chunk_size": 0}, "logical_date": "2024-03-02"}),
        ("bad_policy", {"conf": {**conf, "on_missing_frames": "sometimes"}, "logical_date": "2024-03-03"}),
        ("missing_frames_fail", {"conf": missing, "logical_date": "2024-03-04"}),
    ]
    # The rerun overwrites the first run's partition; the first run's bytes survive as its SHA-256 in XCom.
    # cwd: the "typed" run's relative figure_root "1_0" is taken against it.
    results = dag_test(env, DAG_ID, [spec for _, spec in plan], timeout=1200, cwd=root)
    return dict(zip([name for name, _ in plan], results, strict=False))


def test_the_dag_imports_without_errors(tmp_path: Path) -> None:
    code = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("video_aesthetic_scoring")
score = dag.get_task("score_shard") if dag else None
merge = dag.get_task("merge") if dag else None
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "tasks": sorted(dag.task_ids),
    "upstream": {t: sorted(dag.get_task(t).upstream_task_ids) for t in dag.task_ids},
    "mapped": type(score).__name__,
    "pool": score.partial_kwargs.get("pool"), "queue": score.partial_kwargs.get("queue"),
    "schedule": dag.timetable.expression, "catchup": dag.catchup,
    "params": {k: dag.params.get_param(k).schema for k in dag.params},
    "clip_model": dag.params["clip_model"],
    "outlets": [a.name for a in merge.outlets],
}))
"""
    env = airflow_env(
        tmp_path,
        VIDEO_AESTHETICS_POOL="gpu",
        VIDEO_AESTHETICS_QUEUE="gpu",
        VIDEO_AESTHETICS_SCHEDULE="@hourly",
        VIDEO_AESTHETICS_CLIP_MODEL="ViT-B/32",
    )
    bag = parse_dag_folder(code, env)
    assert bag["errors"] == {}
    assert bag["tasks"] == ["check_frames", "merge", "plan_shards", "score_shard"]
    assert bag["upstream"] == {
        "check_frames": [],
        "plan_shards": ["check_frames"],
        "score_shard": ["plan_shards"],
        "merge": ["check_frames", "score_shard"],
    }
    assert bag["mapped"] == "MappedOperator"
    assert (bag["pool"], bag["queue"]) == ("gpu", "gpu")
    assert bag["schedule"] == "0 * * * *" and bag["catchup"] is False
    assert bag["clip_model"] == "ViT-B/32"
    assert {
        "input_path",
        "output_root",
        "figure_root",
        "chunk_size",
        "clip_model",
        "mlp_checkpoint",
        "load_num",
        "batch_size",
        "num_workers",
        "on_missing_frames",
    } <= set(bag["params"])
    assert bag["params"]["on_missing_frames"]["enum"] == ["extract", "skip", "fail"]
    assert bag["params"]["chunk_size"]["minimum"] == 1
    assert bag["outlets"] == ["video_aesthetic_scores"]


def test_the_trigger_form_has_sections_bounds_and_says_what_a_manual_run_needs(dag_params: dict) -> None:
    from video_aesthetics.airflow.run_params import LOCATION_PARAMS, SCORING_PARAMS

    # Every scoring parameter (the seed's ten: the model's, the field names, init_distributed, output_key)
    # and every location is a param of the DAG.
    seed = {"figure_root", "input_video_key", "video_clips_key", "clip_model", "mlp_checkpoint", "load_num"}
    seed |= {"batch_size", "num_workers", "init_distributed", "output_key"}
    assert seed | set(SCORING_PARAMS) | set(LOCATION_PARAMS) <= set(dag_params)
    # The form groups params by "section", in order of first appearance; no section is Airflow's
    # "Run Parameters", the one section the form opens: the input.
    sections = list(dict.fromkeys(schema.get("section", "Run Parameters") for schema in dag_params.values()))
    assert sections == ["Run Parameters", "Output", "Model", "Filter and report", "Performance", "Connections"]
    assert {name for name, s in dag_params.items() if s.get("section") == "Connections"} == {
        "input_conn_id",
        "output_conn_id",
        "frames_conn_id",
    }
    assert "section" not in dag_params["input_path"]
    assert dag_params["input_path"]["description"].startswith("Required for manual runs unless input_root")

    # Airflow's form stars a param as required when its type excludes null (ui: `type` has no "null").
    def starred(schema: dict) -> bool:
        kind = schema.get("type")
        return bool(kind) and (not isinstance(kind, list) or "null" not in kind)

    for switch in ("skip_bad_records", "frame_scores", "init_distributed"):
        assert not starred(dag_params[switch]) and "boolean" in dag_params[switch]["type"], switch
    # Bounded both sides where an absurd value hurts; the report's count as the report allows.
    from video_aesthetics.report import MAX_TOP

    bounds = {name: (s.get("minimum"), s.get("maximum")) for name, s in dag_params.items() if "maximum" in s}
    assert bounds == {
        "load_num": (1, 64),
        "report_top": (1, MAX_TOP),
        "chunk_size": (1, 10**7),
        "batch_size": (1, 4096),
        "num_workers": (0, 64),
        "nproc": (1, 64),
    }


@pytest.fixture(scope="module")
def dag_params(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The DAG's params' JSON schemas (and descriptions), in the order the trigger form shows them, as a DagBag parses them."""
    code = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).dags["video_aesthetic_scoring"]
params = [(k, dag.params.get_param(k)) for k in dag.params]
print(json.dumps([[k, {**p.schema, "description": p.description}] for k, p in params]))
"""
    env = airflow_env(tmp_path_factory.mktemp("form_home"))
    return dict(parse_dag_folder(code, env))


def test_a_run_scores_every_record_over_several_shards(runs: dict, world: dict) -> None:
    first = runs["first"]
    assert first.get("state") == "success", first.get("message") or first["log"][-5000:]
    shards = _shards(first)
    assert len(shards) == 3 == -(-world["records"] // 2)
    assert all(t["state"] == "success" for t in first["tasks"])
    assert [t["rendered_map_index"] for t in shards] == ["shard-00000", "shard-00001", "shard-00002"]
    out = Path(world["conf"]["output_root"]) / LOGICAL_DATE
    _, path = published(out)
    scored = read_jsonl(path)
    assert len(scored) == world["records"]
    assert [r.get("caption") for r in scored] == [r.get("caption") for r in read_jsonl(world["source"])]
    clips = [c for r in scored for c in r.get("video_clips", {}).get("clips", [])]
    assert len(clips) == 2 * VIDEOS and all(isinstance(c["aesthetic_score"], float) for c in clips)
    # The staging shards are gone once merged.
    assert not (Path(world["conf"]["output_root"]) / "_staging").exists()


def test_frames_are_extracted_for_clips_that_had_none(runs: dict, world: dict) -> None:
    report = runs["first"]["xcom"]["check_frames[-1].return_value"]
    expected = 2 * (VIDEOS - len(WITH_FRAMES))
    assert (report["clips"], report["present"], report["extracted"], report["missing"]) == (2 * VIDEOS, 4, expected, 0)
    frames = Path(world["conf"]["figure_root"])
    for v in range(VIDEOS):
        if f"video{v}" in WITH_FRAMES:
            continue
        for c in range(2):
            # VideoFrameFilter's layout: the clip's first, middle and last frame, by index within the clip.
            names = sorted(p.name for p in (frames / f"video{v}" / f"video{v}_{c}" / "img").iterdir())
            assert names == ["frame_000000.jpg", "frame_000006.jpg", "frame_000011.jpg"]


def test_the_merged_output_equals_the_cli_output(runs: dict, world: dict, model_args: dict, tmp_path: Path) -> None:
    assert runs["first"].get("state") == "success"
    out = tmp_path / "cli.jsonl"
    # Another batch size than the DAG's (1) and no shards: scores do not depend on which clips share a batch.
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "video_aesthetics",
            *score_args(
                world["source"], out, model_args, figure_root=world["conf"]["figure_root"], num_workers=0, batch_size=3
            ),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    _, merged = published(Path(world["conf"]["output_root"]) / LOGICAL_DATE)
    assert merged.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("name", list(FIELD_RUNS))
def test_every_scoring_parameter_matches_the_cli(
    runs: dict, world: dict, model_args: dict, tmp_path: Path, name: str
) -> None:
    run = runs[name]
    assert run.get("state") == "success", run.get("message") or run["log"][-5000:]
    source, changes = FIELD_RUNS[name]
    out = tmp_path / "cli.jsonl"
    options = {k: ("" if v is None else v) for k, v in changes.items()}
    if name == "whole_video":  # the CLI takes relative paths as they are; the DAG against the input's folder
        options["video_root"] = str(world["videos"].parent)
    command = score_args(
        world[source], out, model_args, figure_root=world["conf"]["figure_root"], num_workers=0, **options
    )
    done = subprocess.run(
        [sys.executable, "-m", "video_aesthetics", *command], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    manifest, merged = published(Path(world["conf"]["output_root"]) / name)
    assert merged.read_bytes() == out.read_bytes()
    records = read_jsonl(merged)
    if name == "whole_video":
        # One score per video, decoded by the scoring shards; the missing video gets null and a reason.
        assert [isinstance(r.get("aesthetic_score"), float) for r in records] == [True] * VIDEOS + [False, False]
        assert records[VIDEOS]["aesthetic_error"] == "unreadable_video" and "aesthetic_score" not in records[-1]
        assert run["xcom"]["check_frames[-1].return_value"]["clips"] == 0  # nothing to check
        assert manifest["clips"]["scored"] == VIDEOS and manifest["clips"]["failed"] == 1
        assert manifest["summary"]["counts"]["clips"] == VIDEOS + 1
    else:
        key = "segments" if name == "custom_fields" else "aesthetic_clips"
        clips = [c for r in records for c in r.get(key, {}).get("clips", [])]
        assert len(clips) == 2 * VIDEOS and all(isinstance(c["aesthetic_score"], float) for c in clips)
        if name == "custom_fields":
            assert all(len(c["aesthetic_frame_scores"]) == 3 for c in clips)
            assert all("video" not in r and "video_clips" not in r for r in records)
        else:  # the input clips stay as they were beside the scored ones
            assert all("aesthetic_score" not in c for r in records for c in r.get("video_clips", {}).get("clips", []))
    assert manifest["config"][next(iter(changes))] == ("" if name == "whole_video" else next(iter(changes.values())))


def test_a_rerun_publishes_a_new_version_with_the_same_bytes_and_keeps_the_first(runs: dict, world: dict) -> None:
    first, rerun = runs["first"], runs["rerun"]
    assert rerun.get("state") == "success"
    before, after = first["xcom"]["merge[-1].return_value"], rerun["xcom"]["merge[-1].return_value"]
    assert before["sha256"] == after["sha256"] and before["version"] != after["version"]
    out = Path(world["conf"]["output_root"]) / LOGICAL_DATE
    manifest, path = published(out)
    assert manifest["run"]["version"] == after["version"] and path == Path(after["output"])
    # The first run's asset event still describes files that are there, as they were.
    assert hashlib.sha256(Path(before["output"]).read_bytes()).hexdigest() == before["sha256"]
    assert sorted(p.name for p in out.iterdir()) == sorted(["_manifest.json", before["version"], after["version"]])
    assert rerun["xcom"]["check_frames[-1].return_value"]["extracted"] == 0


def test_the_manifest_describes_the_run(runs: dict, world: dict, model_args: dict) -> None:
    rerun = runs["rerun"]
    out = Path(world["conf"]["output_root"]) / LOGICAL_DATE
    manifest, path = published(out)
    assert manifest["run"] == {
        "dag_id": DAG_ID,
        "run_id": rerun["run_id"],
        "run_type": "manual",
        "partition": LOGICAL_DATE,
        "version": rerun["xcom"]["merge[-1].return_value"]["version"],
        "logical_date": LOGICAL_DATE,
    }
    assert manifest["records"] == {"in": world["records"], "out": world["records"], "passthrough": 1, "rejected": 0}
    assert manifest["clips"] == {"in": 2 * VIDEOS, "out": 2 * VIDEOS, "scored": 2 * VIDEOS, "failed": 0, "errors": {}}
    assert manifest["output"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    shard_xcoms = [rerun["xcom"][f"score_shard[{i}].return_value"] for i in range(3)]
    assert [s["sha256"] for s in manifest["shards"]] == [x["sha256"] for x in shard_xcoms]
    assert [s["records"] for s in manifest["shards"]] == [2, 2, 1]
    head_sha = hashlib.sha256(Path(model_args["mlp_checkpoint"]).read_bytes()).hexdigest()
    assert manifest["model"]["head"]["sha256"] == head_sha
    assert all(len(d) == 64 for d in manifest["model"]["clip"]["files"].values())
    assert manifest["package"] == {"name": "video-aesthetics", "version": __version__}
    assert manifest["frames"]["clips"] == 2 * VIDEOS


def test_xcom_holds_metadata_only_and_the_asset_is_updated(runs: dict, world: dict) -> None:
    first = runs["first"]
    for key, value in first["xcom"].items():
        text = json.dumps(value)
        assert len(text) < 8192, key
        # No record reaches XCom: neither a record's text nor a clip's fields (field names may: they are params).
        assert "caption" not in text and "frame_start" not in text, key
    # Both links open the run's "Aesthetic scores" tab inside the UI, not a staging file.
    view = f"/dags/{DAG_ID}/runs/{quote(first['run_id'], safe='')}/plugin/aesthetic-scores"
    for task in ("score_shard[0]", "merge[-1]"):
        link = first["xcom"][f"{task}._link_ScoredOutputLink"]
        assert link.startswith("http") and link.endswith(view), link
    [event] = first["asset_events"]
    assert event["name"] == "video_aesthetic_scores"
    assert event["extra"]["partition"] == LOGICAL_DATE and event["extra"]["records"] == world["records"]


def _published_bytes(world: dict, partition: str) -> bytes:
    return published(Path(world["conf"]["output_root"]) / partition)[1].read_bytes()


def test_a_run_without_logical_date_writes_to_its_run_id(runs: dict, world: dict) -> None:
    run = runs["no_logical_date"]
    assert run.get("state") == "success" and run["logical_date"] == "None"
    partition = safe_name(run["run_id"])
    assert _published_bytes(world, partition) == _published_bytes(world, LOGICAL_DATE)
    manifest, _ = published(Path(world["conf"]["output_root"]) / partition)
    assert manifest["run"]["logical_date"] is None


def test_manual_runs_of_one_day_each_keep_their_own_result(runs: dict, world: dict) -> None:
    # What the UI does: every trigger gets a logical date, but only scheduled runs and backfills own it.
    a, b = runs["same_day_a"], runs["same_day_b"]
    assert a.get("state") == b.get("state") == "success"
    assert a["run_id"] != b["run_id"] and a["logical_date"][:10] == b["logical_date"][:10] == "2024-03-05"
    assert not (Path(world["conf"]["output_root"]) / "2024-03-05").exists()
    assert (
        len(read_jsonl(published(Path(world["conf"]["output_root"]) / safe_name(a["run_id"]))[1])) == world["records"]
    )
    assert len(read_jsonl(published(Path(world["conf"]["output_root"]) / safe_name(b["run_id"]))[1])) == 2
    for run in (a, b):
        [event] = run["asset_events"]
        assert event["extra"]["partition"] == safe_name(run["run_id"])


def test_a_path_param_that_looks_like_a_number_stays_text(runs: dict, world: dict) -> None:
    typed = runs["typed"]
    assert typed.get("state") == "success", typed.get("message") or typed["log"][-5000:]
    # Read from ./1_0 (the same frames as figure_root), never from ./10: the same scores.
    assert _published_bytes(world, "typed") == _published_bytes(world, LOGICAL_DATE)
    assert not (world["root"] / "10").exists()
    shard = typed["xcom"]["score_shard[0].return_value"]
    assert shard["scored"] > 0


@pytest.mark.parametrize(
    ("name", "says"),
    [("unknown_key", "figure_rot"), ("non_utf8", "latin1.jsonl")],
)
def test_errors_no_retry_can_fix_fail_the_first_task_once(runs: dict, name: str, says: str) -> None:
    failed = runs[name]
    assert failed.get("state") == "failed"
    check = _ti(failed, "check_frames")
    assert check["state"] == "failed" and check["try_number"] == 1
    assert says in failed["log"]
    if name == "unknown_key":
        assert "figure_root" in failed["log"]  # the message lists the params the DAG knows


@pytest.mark.parametrize(
    ("name", "param"),
    [("bad_chunk_size", "chunk_size"), ("bad_policy", "on_missing_frames"), ("bad_device", "device")],
)
def test_a_bad_param_is_refused_before_any_task_runs(runs: dict, world: dict, name: str, param: str) -> None:
    refused = runs[name]
    assert refused.get("error") == "ParamValidationError"
    assert param in refused["message"]
    assert "tasks" not in refused
    assert {p.name for p in Path(world["conf"]["output_root"]).iterdir()}.isdisjoint({"2024-03-02", "2024-03-03"})


def test_missing_frames_fail_the_run_when_asked_and_name_the_clips(runs: dict, world: dict) -> None:
    failed = runs["missing_frames_fail"]
    assert failed.get("state") == "failed"
    assert _ti(failed, "check_frames")["state"] == "failed"
    assert {_ti(failed, t)["state"] for t in ("plan_shards", "score_shard", "merge")} == {"upstream_failed"}
    assert "video0/video0_0" in failed["log"] and "on_missing_frames" in failed["log"]
    out_fail = Path(world["root"]) / "out_fail"
    assert not out_fail.exists() or [p.name for p in out_fail.iterdir()] == ["_staging"]


def _immutable(path: Path, on: bool) -> bool:
    """chattr +i: not even root may change ``path`` (a folder: nothing may be added to or removed from it)."""
    run = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True, text=True)
    return run.returncode == 0


def test_a_rerun_that_fails_in_merge_leaves_the_previous_result_as_it_was(
    runs: dict, world: dict, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert runs["tx1"].get("state") == runs["tx2"].get("state") == "success"
    output = Path(world["conf"]["output_root"])
    # tx1: the new version is written, then replacing the manifest fails. tx2: nothing can be written at all.
    locked = [output / "tx1" / "_manifest.json", output / "tx2"]
    before = {name: partition_files(output / name) for name in ("tx1", "tx2")}
    if not all(_immutable(path, True) for path in locked):
        for path in locked:
            _immutable(path, False)
        pytest.skip("chattr +i is not available here (needs root and an ext4/xfs file system)")
    try:
        env = airflow_env(new_home(tmp_path_factory, "dag_fail_home"), VIDEO_AESTHETICS_RETRIES="0")
        conf = {**world["conf"], "input_path": str(world["other"])}
        reruns = dag_test(env, DAG_ID, [{"conf": {**conf, "partition": p}} for p in ("tx1", "tx2")], cwd=world["root"])
    finally:
        for path in locked:
            _immutable(path, False)
    for rerun in reruns:
        assert rerun.get("state") == "failed", rerun.get("message") or rerun["log"][-3000:]
        assert _ti(rerun, "merge")["state"] == "failed"
        assert all(_ti(rerun, "score_shard", i)["state"] == "success" for i in range(1))
    after = {name: partition_files(output / name) for name in ("tx1", "tx2")}
    assert after == before  # byte for byte, and no half-written version left behind


def test_the_report_and_the_filter_reach_the_published_partition(runs: dict, world: dict) -> None:
    run = runs["filtered"]
    assert run.get("state") == "success", run.get("message") or run["log"][-5000:]
    manifest, scored = published(Path(world["conf"]["output_root"]) / "filtered")
    records = read_jsonl(scored)
    clips = [c for r in records for c in r.get("video_clips", {}).get("clips", [])]
    assert len(clips) == 2 * VIDEOS and all(c["filtered"] is True for c in clips)
    kept = read_jsonl(Path(manifest["output"]["kept"]["path"]))
    assert len(kept) == manifest["output"]["kept"]["records"] == VIDEOS  # the passthrough record has no clips
    page = Path(manifest["output"]["report"]).read_text()
    assert "<svg" in page and "filtered" in page
    assert manifest["summary"]["counts"]["clips"] == 2 * VIDEOS
    headline = run["xcom"]["merge[-1].return_value"]["summary"]
    assert headline["kept"] == 2 * VIDEOS and headline["clips"] == 2 * VIDEOS
    # Without a threshold nothing is marked and no kept file is published.
    plain, plain_scored = published(Path(world["conf"]["output_root"]) / LOGICAL_DATE)
    assert plain["output"]["kept"] is None
    assert all("filtered" not in c for r in read_jsonl(plain_scored) for c in r.get("video_clips", {}).get("clips", []))
