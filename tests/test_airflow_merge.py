"""The merge task (airflow/merge.py) in-process: planned shards merged into local and remote stores,
shard results checked, a failed merge leaving the previous result, and no write through a link."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from helpers.airflow_env import partition_files, published, use_private_airflow_home
from helpers.dag_runs import RUN, UI, params, score_shards, write_input
from helpers.media import clip_record, read_jsonl, write_jsonl

use_private_airflow_home()

from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.io import attach
from fsspec.implementations.memory import MemoryFileSystem

from video_aesthetics.airflow.merge import merge
from video_aesthetics.airflow.shard_plan import plan_shards


def test_plan_and_merge_into_a_local_store(tmp_path: Path) -> None:
    write_input(tmp_path)
    p = params(tmp_path)
    shard_kwargs = plan_shards(p, RUN, max_shards=1024)
    assert [Path(k["input_path"]).name for k in shard_kwargs] == [
        "shard-00000.jsonl",
        "shard-00001.jsonl",
        "shard-00002.jsonl",
    ]
    # Each shard's kwargs are small XCom metadata: paths and the scoring parameters, never records.
    assert all(len(json.dumps(kwargs)) < 1024 for kwargs in shard_kwargs)
    summary = merge(p, RUN, score_shards(shard_kwargs), frames={"clips": 5})
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
    write_input(tmp_path)
    p = params(tmp_path, output_root=root, work_root=str(tmp_path / "work"))
    summary = merge(p, RUN, score_shards(plan_shards(p, RUN, max_shards=1024)))
    partition = ObjectStoragePath(f"{root}/2024-01-02")
    manifest = json.loads((partition / "_manifest.json").read_text())
    scored = ObjectStoragePath(manifest["output"]["path"])
    assert summary["output"] == str(scored) == f"{root}/2024-01-02/{summary['version']}/scored.jsonl"
    assert [json.loads(line)["n"] for line in scored.read_text().splitlines()] == [0, 1, 2, 3, 4]
    assert manifest["output"]["sha256"] == hashlib.sha256(scored.read_bytes()).hexdigest()
    assert sorted(x.name for x in partition.iterdir()) == ["_manifest.json", summary["version"]]


@pytest.mark.parametrize("damage", ["shard_missing", "count", "changed_file", "two_models"])
def test_merge_refuses_inconsistent_shard_results(tmp_path: Path, damage: str) -> None:
    write_input(tmp_path)
    p = params(tmp_path)
    results = score_shards(plan_shards(p, RUN, max_shards=1024))
    if damage == "shard_missing":
        results.pop()
    elif damage == "count":
        results[0]["records"] += 1
    elif damage == "changed_file":
        Path(results[1]["output"]).write_text(Path(results[1]["output"]).read_text() + "\n\n")
    else:
        results[2]["model"] = {"head": {"sha256": "cd" * 32}}
    with pytest.raises(AirflowFailException):
        merge(p, RUN, results)
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
    write_input(tmp_path)
    p = params(tmp_path)
    results = score_shards(plan_shards(p, RUN, max_shards=1024))
    results[1][key] = value
    with pytest.raises(AirflowFailException, match=rf"shard-00001: .*{key}.*rerun its score_shard task"):
        merge(p, RUN, results)
    assert not (tmp_path / "out" / "2024-01-02").exists() or not any((tmp_path / "out" / "2024-01-02").iterdir())


def test_merge_refuses_an_absurd_count_in_a_shard_result(tmp_path: Path) -> None:
    write_input(tmp_path)
    p = params(tmp_path)
    results = score_shards(plan_shards(p, RUN, max_shards=1024))
    results[1]["scored"] = 10**30  # a count, but not the shard's: the merged output says otherwise
    with pytest.raises(AirflowFailException, match=f"holds 5 scored clips, the shards reported {10**30 + 3}$"):
        merge(p, RUN, results)
    assert not (tmp_path / "out" / "2024-01-02").exists() or not any((tmp_path / "out" / "2024-01-02").iterdir())


def test_skip_bad_records_publishes_rejects_and_a_clean_rerun_removes_them(tmp_path: Path) -> None:
    source = write_input(tmp_path)
    source.write_text(source.read_text() + "{broken\n")
    p = params(tmp_path, skip_bad_records=True)
    first = merge(p, RUN, score_shards(plan_shards(p, RUN, max_shards=1024)))
    out = tmp_path / "out" / "2024-01-02"
    manifest, _ = published(out)
    assert manifest["output"]["rejects"] == first["rejects"] == str(out / first["version"] / "rejects.jsonl")
    assert [r["raw"] for r in read_jsonl(Path(first["rejects"]))] == ["{broken"]
    assert manifest["records"]["rejected"] == 1
    source.write_text("".join(line for line in source.read_text().splitlines(keepends=True) if "broken" not in line))
    p = params(tmp_path)
    clean = merge(p, RUN, score_shards(plan_shards(p, RUN, max_shards=1024)))
    manifest, _ = published(out)
    assert clean["rejects"] is None and manifest["output"]["rejects"] is None
    assert sorted(x.name for x in (out / clean["version"]).iterdir()) == ["report.html", "scored.jsonl"]


def test_a_merge_that_fails_after_writing_leaves_the_previous_result_byte_for_byte(tmp_path: Path) -> None:
    write_input(tmp_path)
    p = params(tmp_path)
    merge(p, RUN, score_shards(plan_shards(p, RUN, max_shards=1024)))
    out = tmp_path / "out" / "2024-01-02"
    before = partition_files(out)
    results = score_shards(plan_shards(p, RUN, max_shards=1024))
    results[0]["scored"] -= 1  # the cross-check fails once the new scored file is written
    with pytest.raises(AirflowFailException, match="scored"):
        merge(p, RUN, results)
    assert partition_files(out) == before


def test_the_report_summary_and_kept_records_are_published_with_the_scores(tmp_path: Path) -> None:
    write_input(tmp_path)
    p = params(tmp_path, aes_min=7.0)
    summary = merge(p, RUN, score_shards(plan_shards(p, RUN, max_shards=1024)))
    manifest, scored = published(tmp_path / "out" / "2024-01-02")
    version = scored.parent
    assert sorted(x.name for x in version.iterdir()) == ["kept.jsonl", "report.html", "scored.jsonl"]
    # Scores 5..9 (see score_shards): the summary is computed from what was published.
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
        runs.append((p, context, score_shards(plan_shards(p, context, max_shards=1024))))
    barrier = threading.Barrier(len(runs))
    outcomes: list[Any] = [None] * len(runs)

    def publish(index: int) -> None:
        p, context, results = runs[index]
        barrier.wait()
        outcomes[index] = merge(p, context, results)

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


# --- trust boundaries: links in the output store ------------------------------------------------------------


def test_a_manifest_linked_out_of_output_root_is_replaced_never_followed(tmp_path: Path) -> None:
    write_input(tmp_path)
    p = params(tmp_path)
    outside = tmp_path / "airflow.cfg"
    outside.write_text("[core]\nfernet_key = secret\n")
    partition = tmp_path / "out" / "2024-01-02"
    partition.mkdir(parents=True)
    (partition / "_manifest.json").symlink_to(outside)
    summary = merge(p, RUN, score_shards(plan_shards(p, RUN, max_shards=1024)))
    assert outside.read_text() == "[core]\nfernet_key = secret\n"
    assert not (partition / "_manifest.json").is_symlink()
    manifest, scored = published(partition)
    assert manifest["run"]["version"] == summary["version"] and len(read_jsonl(scored)) == 5


def test_a_partition_linked_out_of_output_root_fails_the_merge_and_writes_nothing_there(tmp_path: Path) -> None:
    write_input(tmp_path)
    p = params(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "_manifest.json").write_text("theirs")
    results = score_shards(plan_shards(p, RUN, max_shards=1024))
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / "2024-01-02").symlink_to(outside)
    with pytest.raises(AirflowFailException, match="symbolic link"):
        merge(p, RUN, results)
    assert sorted(x.name for x in outside.iterdir()) == ["_manifest.json"]
    assert (outside / "_manifest.json").read_text() == "theirs"
