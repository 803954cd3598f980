"""Scoring with several processes on CPU: gloo ranks spawned by the library, or started by torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from helpers.cli import score_args
from helpers.daemonic import run_daemonic, score_file_bytes
from helpers.media import clip_record, frame_dataset, read_jsonl, write_jsonl, write_video
from video_aesthetics import JsonlStorage, VideoAestheticEvaluator, cli
from video_aesthetics.config import ScoringConfig
from video_aesthetics.errors import ConfigError, RankFailedError
from video_aesthetics.ranks import merge_rank_results, resolve_nproc, wanted
from video_aesthetics.runner import score_file

BIN = Path(sys.executable).parent


def _dataset(root: Path) -> tuple[Path, Path]:
    """Nine clips in five batches of two, a clip without frames and a record that passes through."""
    source, figure_root = frame_dataset(root, videos=4, clips_per_video=2, frames_per_clip=2)
    records = read_jsonl(source)
    records.insert(2, {"caption": "no video", "n": 7})
    records.append(clip_record("videos/video9.mp4", ["video9_missing"]))
    return write_jsonl(source, records), figure_root


def _score_args(source: Path, out: Path, figure_root: Path, model_args: dict[str, str]) -> list[str]:
    return score_args(source, out, model_args, figure_root=figure_root, num_workers=0, batch_size=2, frame_scores=True)


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "video-aesthetics"), *args], capture_output=True, text=True, env=env or dict(os.environ), timeout=600
    )


def _stats(stdout: str) -> dict:
    [line] = [line for line in stdout.splitlines() if line.startswith("{")]
    return json.loads(line)


def _clip_scores(path: Path) -> list[tuple[str, object]]:
    return [
        (clip["id"], clip["aesthetic_score"])
        for record in read_jsonl(path)
        for clip in record.get("video_clips", {}).get("clips", [])
    ]


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, model_args: dict[str, str]) -> tuple[Path, Path, Path]:
    """The dataset and its output scored by one process: what every multi-process run must reproduce."""
    root = tmp_path_factory.mktemp("single")
    source, figure_root = _dataset(root)
    out = root / "one.jsonl"
    assert cli.main([*_score_args(source, out, figure_root, model_args), "--nproc", "1"]) == 0
    return source, figure_root, out


def test_merge_shards_restores_input_order_and_refuses_duplicates() -> None:
    shards = [
        [(0, 1.0, None, None), (1, 2.0, None, None), (4, None, "no_frames", None)],
        [(2, 3.0, None, [3.0]), (3, 4.0, None, None)],
    ]
    assert [(r.seq, r.score, r.error) for r in merge_rank_results(shards)] == [
        (0, 1.0, None),
        (1, 2.0, None),
        (2, 3.0, None),
        (3, 4.0, None),
        (4, None, "no_frames"),
    ]
    assert merge_rank_results(shards)[2].frame_scores == [3.0]
    with pytest.raises(RuntimeError, match="sample 1 was scored by more than one rank"):
        merge_rank_results([[(0, 1.0, None, None), (1, 2.0, None, None)], [(1, 2.0, None, None)]])


def test_when_to_go_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not wanted(False, None) and not wanted(False, 1)
    assert wanted(True, None) and wanted(False, 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert wanted(False, None)


def test_cpu_runs_need_a_process_count() -> None:
    config = ScoringConfig(device="cpu")
    with pytest.raises(ConfigError, match=r"nproc=N \(--nproc N\)"):
        resolve_nproc(config, None)
    with pytest.raises(ConfigError, match="nproc must be an integer >= 1"):
        resolve_nproc(config, 0)
    assert resolve_nproc(config, 3) == 3


@pytest.mark.slow
def test_cli_two_processes_give_the_same_bytes_as_one(tmp_path: Path, model_args: dict, single: tuple) -> None:
    source, figure_root, one = single
    out = tmp_path / "two.jsonl"
    done = _cli([*_score_args(source, out, figure_root, model_args), "--nproc", "2"])
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == one.read_bytes()
    scores = _clip_scores(out)
    # Every clip exactly once, in input order, each with its score (or its error).
    assert [cid for cid, _ in scores] == [cid for cid, _ in _clip_scores(one)] and len(scores) == 9
    assert sum(isinstance(score, float) for _, score in scores) == 8
    stats = _stats(done.stdout)
    assert (stats["records"], stats["clips"], stats["scored"], stats["failed"], stats["passthrough"]) == (6, 9, 8, 1, 1)
    assert stats["model"]["head"]["path"] == model_args["mlp_checkpoint"]


@pytest.mark.slow
def test_torchrun_ranks_write_once_and_agree_with_one_process(tmp_path: Path, model_args: dict, single: tuple) -> None:
    source, figure_root, one = single
    out = tmp_path / "torchrun.jsonl"
    command = [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "video_aesthetics",
        *_score_args(source, out, figure_root, model_args),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == one.read_bytes()
    assert _stats(done.stdout)["clips"] == 9  # only rank 0 reports (and writes)


@pytest.mark.slow
def test_a_killed_rank_fails_the_run_and_nothing_is_written(tmp_path: Path, model_args: dict) -> None:
    # Whole videos in batches of one: rank 0 scores the first, rank 1 the second. Rank 1 is stopped
    # (SIGSTOP) as soon as it exists, so it cannot finish first, and then killed mid-run.
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [{"video": str(write_video(tmp_path / f"{name}.mp4", frames=4, seed=seed))} for seed, name in enumerate("ab")],
    )
    out, scratch = tmp_path / "out.jsonl", tmp_path / "tmp"
    scratch.mkdir()
    args = [
        str(BIN / "video-aesthetics"),
        *score_args(source, out, model_args, video_clips_key="", num_workers=0, batch_size=1, nproc=2),
    ]
    run = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(scratch)}
    )
    try:
        ranks = _wait_for_ranks(psutil.Process(run.pid), 2)
        # The parent starts rank 0, then rank 1.
        victim = sorted(ranks, key=lambda p: (p.create_time(), p.pid))[1]
        victim.suspend()
        victim.kill()
        stdout, stderr = run.communicate(timeout=300)
    finally:
        run.kill()
    assert run.returncode == 2, stderr
    assert f"error: rank 1 (pid {victim.pid}) was killed by SIGKILL" in stderr
    assert "the run was stopped and no output was written" in stderr and not stdout.strip()
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    assert not list(scratch.iterdir())  # the ranks' scratch folder is gone too
    assert not any(_alive(p) for p in ranks)


def _wait_for_ranks(parent: psutil.Process, count: int) -> list[psutil.Process]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ranks = [p for p in parent.children() if "spawn_main" in " ".join(_cmdline(p))]
        if len(ranks) == count:
            return ranks
        time.sleep(0.05)
    raise AssertionError("the ranks did not start")


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_a_rank_that_raises_names_itself_and_its_error(tmp_path: Path, model_args: dict, single: tuple) -> None:
    source, figure_root, _ = single
    head = tmp_path / "broken.pth"
    head.write_bytes(b"not a checkpoint")
    config = ScoringConfig(
        **{**model_args, "mlp_checkpoint": str(head)}, figure_root=str(figure_root), num_workers=0, device="cpu"
    )
    out = tmp_path / "out.jsonl"
    expected = r"(?s)rank [01] failed while loading the model: WeightsError: .*broken\.pth.*no output was written"
    with pytest.raises(RankFailedError, match=expected):
        score_file(source, out, config, nproc=2)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["broken.pth"]


@pytest.mark.slow
def test_evaluator_spawns_ranks_itself_with_init_distributed(tmp_path: Path, model_args: dict, single: tuple) -> None:
    source, figure_root, one = single
    storage = JsonlStorage(str(source), cache_path=str(tmp_path))
    evaluator = VideoAestheticEvaluator(
        figure_root=str(figure_root),
        **model_args,
        batch_size=2,
        num_workers=0,
        init_distributed=True,
        device="cpu",
        frame_scores=True,
        nproc=2,
    )
    assert evaluator.run(storage.step()) == ["video_clips"]
    assert read_jsonl(tmp_path / "dataflow_cache_step1.jsonl") == read_jsonl(one)
    assert evaluator.scorer is None  # the model lived in the ranks
    assert (evaluator.last_stats.clips, evaluator.last_stats.scored) == (9, 8)


@pytest.mark.slow
def test_ranks_start_inside_a_daemonic_process(tmp_path: Path, model_args: dict, single: tuple) -> None:
    # As a Celery prefork worker's task would (test_scoring covers decoding workers in a daemonic process).
    source, figure_root, one = single
    config = ScoringConfig(
        **model_args, figure_root=str(figure_root), device="cpu", num_workers=0, batch_size=2, frame_scores=True
    )
    assert run_daemonic(score_file_bytes, str(source), str(tmp_path / "two.jsonl"), config, 2) == one.read_bytes()
