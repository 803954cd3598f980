"""No shared disk: input, staging (work_root), frames and output in a real S3-compatible store (moto's server).

The library reads frames through fsspec with plain storage options; the Airflow wing reaches the
store through a connection (conn_id), as Airflow's own transfer operators do. The DAG's result
must be the CLI's, byte for byte, on the same input scored from local files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers.airflow_env import airflow_env, dag_test, new_home, use_private_airflow_home
from helpers.cli import score_args
from helpers.media import clip_record, write_frames, write_jsonl
from helpers.s3 import S3Server, s3_server  # noqa: F401 - the fixture

use_private_airflow_home()

from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError
from video_aesthetics.frame_store import RemoteFrames, remote_frames
from video_aesthetics.frames import PreprocessConfig, load_frame

DAG_ID = "video_aesthetic_scoring"
BUCKET = "va-test"
DS = "2024-05-01"


def _corrupt(path: Path) -> None:
    """A truncated JPEG: its header reads, its pixels do not."""
    path.write_bytes(path.read_bytes()[:300])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> dict[str, Any]:  # noqa: F811
    """Frames and a JSONL input on local disk, and the same bytes in the bucket.

    video0's clips have all their frames; video1_0 has one corrupt frame, video1_1 none at all.
    """
    root = tmp_path_factory.mktemp("s3_world")
    frames = root / "frames"
    records = []
    for v in range(3):
        stem = f"video{v}"
        ids = [f"{stem}_{c}" for c in range(2)]
        for c, cid in enumerate(ids):
            if (stem, c) != ("video1", 1):
                write_frames(frames, stem, cid, 4, seed=v * 10 + c)
        records.append(clip_record(f"videos/{stem}.mp4", ids, caption=f"video {v}"))
        if v == 0:
            records.append({"caption": "a record without a video passes through"})
    _corrupt(frames / "video1" / "video1_0" / "img" / "frame_000025.jpg")
    source = write_jsonl(root / "input" / DS / "clips.jsonl", records)
    s3_server.create_bucket(BUCKET)
    s3_server.upload_tree(frames, f"s3://{BUCKET}/frames")
    s3_server.upload_tree(root / "input", f"s3://{BUCKET}/input")
    return {"root": root, "frames": frames, "source": source, "records": len(records)}


def _config(model_args: dict[str, str], figure_root: str, **changes: Any) -> ScoringConfig:
    return ScoringConfig(**{**model_args, "figure_root": figure_root, "device": "cpu", "batch_size": 2, **changes})


# --- the library: frames through fsspec -------------------------------------------------------------


def test_remote_frames_list_and_fetch_as_local_ones(world: dict, s3_server: S3Server) -> None:  # noqa: F811
    store = RemoteFrames(f"s3://{BUCKET}/frames", s3_server.storage_options)
    folder = Path(f"s3://{BUCKET}/frames") / "video0" / "video0_1" / "img"
    listed = store.list(folder)
    local = sorted((world["frames"] / "video0" / "video0_1" / "img").iterdir())
    assert [p.name for p in listed] == [p.name for p in local]
    fetched = store.fetch(listed)
    assert [f.content() for f in fetched] == [p.read_bytes() for p in local]
    assert store.list(Path(f"s3://{BUCKET}/frames") / "video1" / "video1_1" / "img") == []
    # A frame gone between listing and fetching is unreadable, like a local file deleted under the scorer.
    gone = store.fetch([f"{BUCKET}/frames/video0/video0_1/img/frame_999999.jpg", listed[0]])
    assert gone[0].data is None and gone[1].data == local[0].read_bytes()
    with pytest.raises(OSError, match="cannot fetch frame"):
        load_frame(gone[0], PreprocessConfig())


def test_an_unreachable_frame_store_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="fsspec cannot open"):
        RemoteFrames("nosuchprotocol://bucket/frames")


def test_scoring_from_s3_frames_equals_scoring_from_local_frames(
    world: dict,
    s3_server: S3Server,  # noqa: F811
    model_args: dict[str, str],
    tmp_path: Path,
) -> None:
    """Through a decoding worker process: a corrupt frame skipped, a clip without frames no_frames, as locally."""
    from video_aesthetics.runner import score_file

    local_out, remote_out = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
    score_file(world["source"], local_out, _config(model_args, str(world["frames"]), num_workers=1))
    remote = _config(
        model_args, f"s3://{BUCKET}/frames", num_workers=1, frames_storage_options=s3_server.storage_options
    )
    assert remote_frames(remote) is not None
    stats = score_file(world["source"], remote_out, remote)
    assert remote_out.read_bytes() == local_out.read_bytes()
    assert stats.errors == {"no_frames": 1}
    clips = [json.loads(line) for line in remote_out.read_text().splitlines()][2]["video_clips"]["clips"]
    assert clips[0]["aesthetic_score"] is not None and clips[1]["aesthetic_error"] == "no_frames"
    # The options (credentials) never reach a manifest.
    assert "frames_storage_options" not in remote.as_dict()


# --- the Airflow wing: connections, inputs ------------------------------------------------------------


def test_inputs_resolve_in_the_store_as_on_disk(world: dict, s3_server: S3Server) -> None:  # noqa: F811
    from video_aesthetics.airflow import object_store as store

    conn = store.connection_id(s3_server.conn_id, "input_conn_id")
    one = f"s3://{BUCKET}/input/{DS}/clips.jsonl"
    for spec in (one, f"s3://{BUCKET}/input/{DS}", f"s3://{BUCKET}/input/*/*.jsonl"):
        found = store.resolve_inputs(spec, conn)
        assert [p.path for p in found] == [f"{BUCKET}/input/{DS}/clips.jsonl"], spec
    with store.local_inputs(store.resolve_inputs(one, conn)) as local:
        assert local[0].read_bytes() == world["source"].read_bytes()
    with pytest.raises(Exception, match="neither a file, a folder nor a glob"):
        store.resolve_inputs(f"s3://{BUCKET}/input/absent.jsonl", conn)


def test_a_bad_conn_id_names_the_param_and_how_to_fix_it() -> None:
    from video_aesthetics.airflow import object_store as store

    with pytest.raises(
        ConfigError, match=r"input_conn_id 'no_such_conn' names no Airflow connection.*AIRFLOW_CONN_NO_SUCH_CONN"
    ):
        store.connection_id("no_such_conn", "input_conn_id")
    assert store.connection_id("", "input_conn_id") is None


def test_storage_options_from_a_connection_reach_the_store(s3_server: S3Server) -> None:  # noqa: F811
    import fsspec

    from video_aesthetics.airflow import object_store as store

    options = store.storage_options(f"s3://{BUCKET}/frames", s3_server.conn_id)
    # The Amazon provider's own session and endpoint (tests/test_airflow_credentials.py checks the rest).
    assert options["endpoint_url"] == s3_server.endpoint and options["session"] is not None
    assert options["skip_instance_cache"] is True
    fs, _ = fsspec.core.url_to_fs(f"s3://{BUCKET}", **options)
    assert fs.exists(f"{BUCKET}/frames")


# --- the DAG end to end -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, world: dict, s3_server: S3Server, model_args: dict) -> dict:  # noqa: F811
    env = airflow_env(new_home(tmp_path_factory, "s3_dag_home"), **s3_server.connection_env)
    conn = s3_server.conn_id
    conf = {
        "input_path": None,
        "input_root": f"s3://{BUCKET}/input",
        "output_root": f"s3://{BUCKET}/out",
        "work_root": f"s3://{BUCKET}/work",
        "figure_root": f"s3://{BUCKET}/frames",
        "input_conn_id": conn,
        "output_conn_id": conn,
        "frames_conn_id": conn,
        "partition": None,
        "on_missing_frames": "skip",
        "chunk_size": 2,
        "num_workers": 1,
        "device": "cpu",
        "batch_size": 1,
        **model_args,
    }
    plan = [
        ("s3", {"conf": {**conf, "partition": DS}, "logical_date": DS}),
        ("bad_conn", {"conf": {**conf, "input_conn_id": "no_such_conn", "partition": "bad"}, "logical_date": DS}),
        ("extract", {"conf": {**conf, "on_missing_frames": "extract", "partition": "ex"}, "logical_date": DS}),
    ]
    results = dag_test(env, DAG_ID, [spec for _, spec in plan], timeout=900, cwd=world["root"])
    return dict(zip([name for name, _ in plan], results, strict=False))


def _task(result: dict, task_id: str) -> dict:
    return next(t for t in result["tasks"] if t["task_id"] == task_id and t["map_index"] == -1)


def test_a_run_on_s3_publishes_what_the_cli_writes_from_local_files(
    runs: dict,
    world: dict,
    s3_server: S3Server,  # noqa: F811
    model_args: dict,
    tmp_path: Path,
) -> None:
    result = runs["s3"]
    assert result.get("state") == "success", result.get("log", "")[-6000:]
    shards = [t for t in result["tasks"] if t["task_id"] == "score_shard"]
    assert len(shards) == 2 and all(t["state"] == "success" for t in shards)
    # The shards went through the store, not a local folder.
    staged = [result["xcom"][f"score_shard[{i}].return_value"] for i in range(2)]
    work = f"s3://{s3_server.conn_id}@{BUCKET}/work/"
    assert all(x["input"].startswith(work) and x["output"].startswith(work) for x in staged)
    frames = result["xcom"]["check_frames[-1].return_value"]
    assert (frames["clips"], frames["present"], frames["missing"]) == (6, 5, 1)
    out = tmp_path / "cli.jsonl"
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "video_aesthetics",
            *score_args(world["source"], out, model_args, figure_root=world["frames"], num_workers=0, batch_size=3),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    fs = s3_server.fs()
    manifest = json.loads(fs.cat_file(f"{BUCKET}/out/{DS}/_manifest.json"))
    assert manifest["output"]["path"].startswith(f"s3://{s3_server.conn_id}@{BUCKET}/out/{DS}/v-")
    assert manifest["input"]["paths"] == [f"s3://{s3_server.conn_id}@{BUCKET}/input/{DS}/clips.jsonl"]
    scored = fs.cat_file(manifest["output"]["path"].split("@", 1)[1])
    assert scored == out.read_bytes()
    # Nothing staged or half-written is left: no shard, no plan, no temporary object.
    assert s3_server.keys(f"{BUCKET}/work") == []
    assert not [key for key in s3_server.keys(BUCKET) if key.endswith(".tmp")]
    assert not [p for p in Path(world["root"]).rglob("*") if "s3:" in p.name]


def test_a_bad_conn_id_fails_the_run_at_once_with_a_clear_error(runs: dict) -> None:
    result = runs["bad_conn"]
    assert result.get("state") == "failed"
    check = _task(result, "check_frames")
    assert check["state"] == "failed" and check["try_number"] == 1
    assert "input_conn_id 'no_such_conn' names no Airflow connection" in result["log"]


def test_frames_missing_from_a_remote_figure_root_cannot_be_extracted(runs: dict) -> None:
    result = runs["extract"]
    assert result.get("state") == "failed"
    assert "cannot be extracted into a remote figure_root" in result["log"]
    assert "video1/video1_1" in result["log"]
