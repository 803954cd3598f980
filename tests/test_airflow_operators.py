"""VideoAestheticScoringOperator with a real tiny CLIP model, real frames and Airflow's own templating."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psutil
import pytest

from helpers.airflow_env import use_private_airflow_home
from helpers.media import frame_dataset, read_jsonl

use_private_airflow_home()

from airflow.sdk import DAG, ObjectStoragePath, Param
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.io import attach
from fsspec.implementations.memory import MemoryFileSystem

from video_aesthetics.airflow.operators import VideoAestheticScoringOperator
from video_aesthetics.config import ScoringConfig
from video_aesthetics.runner import score_file

SEED_PARAMS = (
    "figure_root",
    "input_video_key",
    "video_clips_key",
    "clip_model",
    "mlp_checkpoint",
    "load_num",
    "batch_size",
    "num_workers",
    "init_distributed",
    "output_key",
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return frame_dataset(tmp_path_factory.mktemp("operator_data"), videos=3, clips_per_video=2, frames_per_clip=3)


@pytest.fixture(scope="module")
def reference(dataset: tuple[Path, Path], model_args: dict, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The library's own output for the dataset: what the operator must write, byte for byte."""
    source, figure_root = dataset
    out = tmp_path_factory.mktemp("reference") / "out.jsonl"
    config = ScoringConfig(figure_root=str(figure_root), num_workers=0, device="cpu", **model_args)
    score_file(source, out, config)
    return out.read_bytes()


def operator(dataset: tuple[Path, Path], model_args: dict, output: str, **kwargs) -> VideoAestheticScoringOperator:
    source, figure_root = dataset
    args = dict(
        task_id=f"score_{uuid.uuid4().hex[:6]}",
        input_path=str(source),
        output_path=output,
        figure_root=str(figure_root),
        num_workers=0,
        device="cpu",
        **model_args,
    )
    args.update(kwargs)
    return VideoAestheticScoringOperator(**args)


def test_execute_writes_what_the_library_writes(tmp_path: Path, dataset, model_args, reference) -> None:
    out = tmp_path / "scored.jsonl"
    summary = operator(dataset, model_args, str(out)).execute(context={})
    assert out.read_bytes() == reference
    assert summary["records"] == 3 and summary["clips"] == 6 and summary["scored"] == 6 and summary["failed"] == 0
    assert summary["output"] == str(out) and summary["input"] == str(dataset[0])
    assert summary["sha256"] == __import__("hashlib").sha256(reference).hexdigest()
    assert summary["model"]["head"]["sha256"] and summary["model"]["clip"]["files"]
    # XCom stays small whatever the input: no records, only paths and counts.
    assert len(json.dumps(summary)) < 4096
    assert "video_clips" not in json.dumps(summary)


def test_a_rerun_gives_the_same_bytes(tmp_path: Path, dataset, model_args, reference) -> None:
    out = tmp_path / "scored.jsonl"
    first = operator(dataset, model_args, str(out)).execute(context={})
    second = operator(dataset, model_args, str(out)).execute(context={})
    assert first["sha256"] == second["sha256"] and out.read_bytes() == reference


def test_remote_input_and_output_go_through_object_storage(dataset, model_args, reference) -> None:
    attach("memory", fs=MemoryFileSystem())
    bucket = f"memory://bucket-{uuid.uuid4().hex[:8]}"
    remote_in, remote_out = ObjectStoragePath(f"{bucket}/in.jsonl"), ObjectStoragePath(f"{bucket}/out/scored.jsonl")
    remote_in.write_bytes(dataset[0].read_bytes())
    summary = operator(dataset, model_args, str(remote_out), input_path=str(remote_in)).execute(context={})
    assert remote_out.read_bytes() == reference
    assert summary["output"] == str(remote_out)


def test_bad_records_go_to_a_rejects_file_beside_a_remote_output(dataset, model_args) -> None:
    attach("memory", fs=MemoryFileSystem())
    bucket = f"memory://bucket-{uuid.uuid4().hex[:8]}"
    remote_in = ObjectStoragePath(f"{bucket}/in.jsonl")
    remote_in.write_bytes(dataset[0].read_bytes() + b"{broken\n")
    summary = operator(
        dataset, model_args, f"{bucket}/out/scored.jsonl", input_path=str(remote_in), skip_bad_records=True
    ).execute(context={})
    rejects = ObjectStoragePath(f"{bucket}/out/scored.rejects.jsonl")
    assert summary["rejected"] == 1 and summary["rejects"] == str(rejects)
    assert json.loads(rejects.read_text())["raw"] == "{broken"
    assert summary["records"] == 3


def test_locations_are_templated_and_other_parameters_keep_their_types(dataset, model_args) -> None:
    assert set(VideoAestheticScoringOperator.template_fields) == {
        "input_path",
        "output_path",
        "rejects_path",
        "embeddings",
        "figure_root",
        "clip_model",
        "mlp_checkpoint",
        "video_root",
    }
    with DAG("templating", schedule=None, params={"frames": Param("/default", type="string")}) as dag:
        op = VideoAestheticScoringOperator(
            task_id="score",
            input_path="{{ params.frames }}/in.jsonl",
            output_path="/out/{{ ds }}.jsonl",
            figure_root="{{ params.frames }}",
            load_num=5,
            batch_size=8,
            mlp_checkpoint="{{ params.get('head') }}",
            clip_model=model_args["clip_model"],
        )
    # What a triggered run's conf does: its params replace the defaults before templates render.
    op.render_template_fields({"params": {"frames": "1_0"}, "ds": "2024-01-02"}, jinja_env=dag.get_template_env())
    config = op.scoring_config()
    assert (op.input_path, op.output_path) == ("1_0/in.jsonl", "/out/2024-01-02.jsonl")
    # A path that looks like a number stays the text it was.
    assert (config.figure_root, config.load_num, config.batch_size) == ("1_0", 5, 8)
    assert config.mlp_checkpoint is None and not config.whole_video


def test_empty_clips_key_scores_whole_videos_and_output_key_follows_the_clips_key(dataset, model_args) -> None:
    assert operator(dataset, model_args, "/out.jsonl", video_clips_key="").scoring_config().whole_video
    assert operator(dataset, model_args, "/out.jsonl", video_clips_key=None).scoring_config().whole_video
    config = operator(dataset, model_args, "/out.jsonl", video_clips_key="clips").scoring_config()
    assert config.output_key == "clips"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"load_num": 0}, "load_num"),
        ({"batch_size": "16"}, "batch_size"),
        ({"reduction": "median"}, "reduction"),
        ({"init_distributed": "yes"}, "init_distributed"),
        ({"input_path": "/nowhere/in.jsonl"}, "/nowhere/in.jsonl"),
    ],
    ids=["load_num", "batch_size_text", "reduction", "init_distributed_text", "missing_input"],
)
def test_bad_values_fail_at_once_without_retries(tmp_path: Path, dataset, model_args, kwargs, message) -> None:
    op = operator(dataset, model_args, str(tmp_path / "out.jsonl"), **kwargs)
    with pytest.raises(AirflowFailException, match=message):
        op.execute(context={})
    assert not (tmp_path / "out.jsonl").exists()


def test_retry_and_timeout_defaults_yield_to_explicit_values(dataset, model_args) -> None:
    op = operator(dataset, model_args, "/out.jsonl")
    assert op.retries == 2 and op.retry_exponential_backoff == 2.0
    assert op.execution_timeout == timedelta(hours=12) and op.max_retry_delay == timedelta(minutes=30)
    with DAG("defaults", schedule=None, default_args={"retries": 5}):
        from_dag = operator(dataset, model_args, "/out.jsonl")
    assert from_dag.retries == 5
    assert operator(dataset, model_args, "/out.jsonl", retries=0, execution_timeout=None).retries == 0


def test_on_kill_stops_real_decoding_workers(tmp_path: Path, model_args) -> None:
    source, figure_root = frame_dataset(tmp_path, videos=30, clips_per_video=2, frames_per_clip=3)
    out = tmp_path / "scored.jsonl"
    op = VideoAestheticScoringOperator(
        task_id="score",
        input_path=str(source),
        output_path=str(out),
        figure_root=str(figure_root),
        num_workers=2,
        batch_size=1,
        device="cpu",
        **model_args,
    )
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(summary=op.execute(context={})))
    thread.start()
    workers: list[psutil.Process] = []
    deadline = time.monotonic() + 120
    while thread.is_alive() and not workers and time.monotonic() < deadline:
        workers = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        time.sleep(0.01)
    assert workers, "the operator started no decoding worker"
    op.on_kill()
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    thread.join(timeout=300)
    # The scorer decodes the rest itself when its workers die; the task process is ended by Airflow anyway.
    assert outcome["summary"]["records"] == 30 and len(read_jsonl(out)) == 30


def test_init_distributed_spawns_ranks_and_writes_the_same_bytes(tmp_path: Path, dataset, model_args) -> None:
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    # The same batches in both runs: batch composition changes float rounding, not the rank count.
    operator(dataset, model_args, str(one), batch_size=2).execute(context={})
    summary = operator(dataset, model_args, str(two), init_distributed=True, nproc=2, batch_size=2).execute(context={})
    assert two.read_bytes() == one.read_bytes()
    assert summary["clips"] == 6 and summary["scored"] == 6
