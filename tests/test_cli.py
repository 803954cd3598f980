"""The CLI end to end, as a user runs it: a separate process, JSONL in, JSONL out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.media import frame_dataset, read_jsonl, write_jsonl
from video_aesthetics.cli import build_parser
from video_aesthetics.config import ScoringConfig
from video_aesthetics.runner import score_file


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "video_aesthetics", *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_score_end_to_end(tmp_path: Path, model_args: dict) -> None:
    source, root = frame_dataset(tmp_path, videos=2, clips_per_video=2)
    out = tmp_path / "out.jsonl"
    run = _cli(
        "score",
        "--input",
        str(source),
        "--output",
        str(out),
        "--figure-root",
        str(root),
        "--clip-model",
        model_args["clip_model"],
        "--mlp-checkpoint",
        model_args["mlp_checkpoint"],
        "--num-workers",
        "1",
        "--batch-size",
        "3",
        "--device",
        "cpu",
        "--reduction",
        "max",
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert {k: summary[k] for k in ("records", "clips", "scored", "failed")} == {
        "records": 2,
        "clips": 4,
        "scored": 4,
        "failed": 0,
    }
    assert summary["clips_per_s"] > 0
    assert "scored 4/4 clips (100.0%)" in run.stderr and "ETA" in run.stderr
    # The same function behind the CLI, called in-process, gives the same bytes.
    again = tmp_path / "again.jsonl"
    score_file(
        source,
        again,
        ScoringConfig(**model_args, figure_root=str(root), num_workers=0, batch_size=3, device="cpu", reduction="max"),
    )
    assert out.read_bytes() == again.read_bytes()
    assert all(isinstance(c["aesthetic_score"], float) for r in read_jsonl(out) for c in r["video_clips"]["clips"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--load-num", "0"], "load_num must be an integer >= 1"),
        (["--device", "tpu"], "device must be"),
        (["--mlp-checkpoint", "/no/such/head.pth"], "/no/such/head.pth"),
    ],
)
def test_bad_configuration_exits_non_zero_and_says_what_to_change(
    tmp_path: Path, model_args: dict, args: list, message: str
) -> None:
    source, root = frame_dataset(tmp_path, videos=1, clips_per_video=1, frames_per_clip=1)
    base = [
        "score",
        "--input",
        str(source),
        "--output",
        str(tmp_path / "o.jsonl"),
        "--figure-root",
        str(root),
        "--clip-model",
        model_args["clip_model"],
        "--mlp-checkpoint",
        model_args["mlp_checkpoint"],
        "--num-workers",
        "0",
    ]
    run = _cli(*base, *args)
    assert run.returncode == 2
    assert message in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_malformed_input_names_file_and_line(tmp_path: Path, model_args: dict) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"video": "a.mp4", "video_clips": {"clips": []}}, "{oops"])
    run = _cli(
        "score",
        "--input",
        str(source),
        "--output",
        str(tmp_path / "o.jsonl"),
        "--figure-root",
        str(tmp_path),
        "--clip-model",
        model_args["clip_model"],
        "--mlp-checkpoint",
        model_args["mlp_checkpoint"],
    )
    assert run.returncode == 2
    assert "in.jsonl:2: malformed JSON" in run.stderr and "--skip-bad-records" in run.stderr


def test_figure_root_is_required_for_clips(tmp_path: Path) -> None:
    run = _cli("score", "--input", "in.jsonl", "--output", "o.jsonl")
    assert run.returncode == 2 and "--figure-root is required" in run.stderr


def test_help_documents_every_option() -> None:
    run = _cli("score", "--help")
    assert run.returncode == 0
    score = build_parser()._subparsers._group_actions[0].choices["score"]
    for action in score._actions:
        for flag in action.option_strings:
            assert flag in run.stdout
        assert action.help, f"{action.option_strings} has no help text"
