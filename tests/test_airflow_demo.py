"""``python -m video_aesthetics.airflow.demo`` end to end: sample, a real local Airflow, the DAG, the printed table."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.airflow_env import published
from helpers.media import read_jsonl
from video_aesthetics.airflow.demo import format_table, score_rows
from video_aesthetics.config import ScoringConfig
from video_aesthetics.runner import score_file

DATE = "2024-05-01"
ROW = re.compile(r"^(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(-?\d+\.\d+)$")


def run_demo(out: Path, env: dict[str, str], *extra: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "video_aesthetics.airflow.demo", "--out", str(out), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=out.parent,
    )


@pytest.mark.slow
def test_demo_scores_every_clip_through_airflow(tmp_path: Path, model_args: dict[str, str]) -> None:
    env = {
        **os.environ,
        "VIDEO_AESTHETICS_CLIP_MODEL": model_args["clip_model"],
        "VIDEO_AESTHETICS_MLP_CHECKPOINT": model_args["mlp_checkpoint"],
    }
    out = tmp_path / "demo"
    result = run_demo(out, env, "--videos", "1", "--seconds", "2", "--num-workers", "0", "--date", DATE)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    manifest, scored = published(out / "scored" / DATE)
    records = read_jsonl(scored)
    assert [(r["source_image"], r["variant"]) for r in records] == [
        ("astronaut", v) for v in ("original", "blurred", "noisy", "dark", "washed_out")
    ]
    clips = {c["id"]: c for r in records for c in r["video_clips"]["clips"]}
    assert len(clips) == 15
    assert all(isinstance(c["aesthetic_score"], float) and math.isfinite(c["aesthetic_score"]) for c in clips.values())
    assert manifest["clips"]["scored"] == 15 and manifest["clips"]["failed"] == 0
    assert len(manifest["shards"]) > 1

    # The frames were not there before the run: the DAG's check_frames extracted them.
    for cid in clips:
        stem = cid.rsplit("_", 1)[0]
        assert len(list((out / "frames" / stem / cid / "img").glob("frame_*.jpg"))) == 3

    # The printed table lists every clip once, best first, with the scores of the output file.
    rows = [ROW.match(line.strip()) for line in result.stdout.splitlines()]
    table = [m.groups() for m in rows if m]
    assert [int(t[0]) for t in table] == list(range(1, 16))
    assert {t[1] for t in table} == set(clips)
    for _, cid, photo, variant, score in table:
        assert float(score) == pytest.approx(clips[cid]["aesthetic_score"], abs=5e-4)
        assert (photo, variant) == ("astronaut", cid[len("astronaut_") :].rsplit("_", 1)[0])
    printed = [float(t[4]) for t in table]
    assert printed == sorted(printed, reverse=True)
    assert "mean score by version" in result.stdout
    assert str(scored) in result.stdout and f"Report:   {manifest['output']['report']}" in result.stdout
    # Progress while the DAG runs: every task's start and end, and the scorer's own lines.
    for task in ("check_frames", "plan_shards", "score_shard[0]", "merge"):
        assert f"started  {task}" in result.stdout or f"started {task}" in result.stdout
        assert f"finished {task}" in result.stdout
    assert re.search(r"scored \d+/\d+ clips", result.stdout)

    # Sharded through Airflow, the scores are the library's own on the same frames.
    direct = score_file(
        out / "sample" / "clips.jsonl",
        tmp_path / "direct.jsonl",
        ScoringConfig(figure_root=str(out / "frames"), num_workers=0, **model_args),
    )
    assert direct.scored == 15
    for record in read_jsonl(tmp_path / "direct.jsonl"):
        for clip in record["video_clips"]["clips"]:
            assert clip["aesthetic_score"] == pytest.approx(clips[clip["id"]]["aesthetic_score"], abs=1e-5)


def test_demo_without_weights_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDEO_AESTHETICS_CLIP_MODEL", raising=False)
    monkeypatch.delenv("VIDEO_AESTHETICS_MLP_CHECKPOINT", raising=False)
    monkeypatch.setenv("VIDEO_AESTHETICS_OFFLINE", "1")
    out = tmp_path / "demo"
    result = run_demo(out, dict(os.environ), "--videos", "1", timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    # The settings, as lines to copy (the README shows the same two).
    assert "  export VIDEO_AESTHETICS_CLIP_MODEL=/path/to/ViT-L-14.pt" in result.stderr
    assert "  export VIDEO_AESTHETICS_MLP_CHECKPOINT=/path/to/sac+logos+ava1-l14-linearMSE.pth" in result.stderr
    # ... said once: not again in the library's own words.
    assert result.stderr.count("VIDEO_AESTHETICS_CLIP_MODEL") == 1
    assert "VIDEO_AESTHETICS_OFFLINE" in result.stderr
    # It stops before doing any work.
    assert not (out / "airflow").exists() and not (out / "sample").exists()


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = run_demo(out, dict(os.environ), timeout=60)
    assert result.returncode == 2
    assert "did not write" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_demo_rejects_bad_sizes_before_any_work(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", dict(os.environ), "--videos", "99", timeout=60)
    assert result.returncode == 2
    assert "videos must be between 1 and" in result.stderr
    assert not (tmp_path / "demo").exists()


def test_table_orders_by_score_and_puts_unscored_last(tmp_path: Path) -> None:
    scored = tmp_path / "scored.jsonl"
    clips = [
        {"id": "a_0", "aesthetic_score": 4.5},
        {"id": "a_1", "aesthetic_score": None, "aesthetic_error": "no_frames"},
        {"id": "a_2", "aesthetic_score": 6.25},
    ]
    scored.write_text(
        json.dumps({"video": ["a.mp4"], "video_clips": {"clips": clips}, "source_image": "coffee", "variant": "dark"})
        + "\n"
        + json.dumps({"x": 1})
        + "\n"
    )
    rows = score_rows(scored)
    assert [r["clip"] for r in rows] == ["a_2", "a_0", "a_1"]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["#", "clip", "photograph", "version", "score"]
    assert lines[2].split() == ["1", "a_2", "coffee", "dark", "6.250"]
    assert lines[4].split()[-2:] == ["-", "(no_frames)"]
