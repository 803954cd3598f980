"""Where a run reads and writes (airflow/layout.py): its partition, input, output and staging, and the
work_roots refused because their staging could hold or prune a published result."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers.airflow_env import use_private_airflow_home
from helpers.dag_runs import MANUAL, RUN, UI, params

use_private_airflow_home()

from airflow.sdk import ObjectStoragePath

from video_aesthetics.airflow.layout import run_layout
from video_aesthetics.errors import ConfigError, VideoAestheticsError
from video_aesthetics.sharding import safe_name


def test_scheduled_runs_read_and_write_their_date(tmp_path: Path) -> None:
    (tmp_path / "in" / "2024-01-02").mkdir(parents=True)
    layout = run_layout(params(tmp_path), RUN)
    assert layout.partition == "2024-01-02"
    assert layout.input_spec == str(tmp_path / "in" / "2024-01-02")
    assert layout.output == ObjectStoragePath(str(tmp_path / "out" / "2024-01-02"))
    assert layout.manifest.name == "_manifest.json"
    assert Path(layout.work_dir) == tmp_path / "out" / "_staging" / "video_aesthetic_scoring" / safe_name(RUN["run_id"])


def test_an_input_path_wins_and_runs_without_a_date_use_their_run_id(tmp_path: Path) -> None:
    layout = run_layout(params(tmp_path, input_path="/data/*.jsonl", work_root=str(tmp_path / "work")), MANUAL)
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
        run_layout(params(tmp_path, **changes), context)


def test_manual_runs_keep_their_own_partition_even_with_a_logical_date(tmp_path: Path) -> None:
    assert run_layout(params(tmp_path, input_path="/x.jsonl"), UI).partition == safe_name(UI["run_id"])
    assert run_layout(params(tmp_path, input_path="/x.jsonl", partition="redo-1"), UI).partition == "redo-1"
    backfill = {**RUN, "dag_run": SimpleNamespace(run_type="backfill", conf={})}
    assert run_layout(params(tmp_path, input_path="/x.jsonl"), backfill).partition == "2024-01-02"


@pytest.mark.parametrize("bad", ["../up", "a/b", "", "x y", "v-20240101T000000Z-1", "_staging", "x" * 201, "é"])
def test_a_named_partition_must_be_a_plain_folder_name(tmp_path: Path, bad: str) -> None:
    if not bad:  # empty means "not named"
        assert run_layout(params(tmp_path, input_path="/x", partition=bad), UI).partition == safe_name(UI["run_id"])
        return
    with pytest.raises(ConfigError, match="partition"):
        run_layout(params(tmp_path, input_path="/x", partition=bad), UI)


# --- staging apart from the published partitions ------------------------------------------------------


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
        assert run_layout(p, MANUAL).work_dir.startswith(str(tmp_path / work))
        return
    with pytest.raises(ConfigError, match="work_root") as info:
        run_layout(p, MANUAL)
    assert "output_root" in str(info.value)


def test_output_root_inside_the_staging_of_the_dag_is_refused(tmp_path: Path) -> None:
    p = params(
        tmp_path,
        input_path="/x.jsonl",
        work_root=str(tmp_path / "work"),
        output_root=str(tmp_path / "work" / "video_aesthetic_scoring" / "out"),
    )
    with pytest.raises(ConfigError, match="output_root .* inside work_root"):
        run_layout(p, MANUAL)


def test_a_linked_work_root_is_judged_where_it_leads(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "work_link").symlink_to(tmp_path / "out")
    with pytest.raises(ConfigError, match="work_root"):
        run_layout(params(tmp_path, input_path="/x.jsonl", work_root=str(tmp_path / "work_link")), MANUAL)
