"""The CLI: once end to end as a user runs it (the installed ``video-aesthetics`` command), the rest in-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.cli import score_args
from helpers.media import clip_record, frame_dataset, read_jsonl, write_jsonl
from video_aesthetics.cli import build_parser, main
from video_aesthetics.config import ScoringConfig
from video_aesthetics.runner import score_file

# The console script pip installed beside this interpreter: the real entry point.
COMMAND = str(Path(sys.executable).with_name("video-aesthetics"))


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([COMMAND, *args], capture_output=True, text=True, timeout=300, env=env)


def _run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``video-aesthetics ARGS`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse's own errors and --help
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _score_args(source: Path, out: Path, root: Path, model_args: dict, *extra: str) -> list[str]:
    return [*score_args(source, out, model_args, figure_root=root, num_workers=0), *extra]


def test_score_end_to_end(tmp_path: Path, model_args: dict) -> None:
    source, root = frame_dataset(tmp_path, videos=2, clips_per_video=2)
    out = tmp_path / "out.jsonl"
    run = _cli(*score_args(source, out, model_args, figure_root=root, num_workers=1, batch_size=3, reduction="max"))
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
        (["--load-num", "0"], "--load-num must be an integer >= 1"),
        (["--device", "tpu"], "device must be"),
        (["--device", "cuda:abc"], "device must be"),
        (["--device", "cuda:\u0663"], "device must be"),  # an Arabic-Indic digit passes str.isdigit
        (["--device", "cuda:99999999999999999999"], "device must be"),
        (["--mlp-checkpoint", "/no/such/head.pth"], "/no/such/head.pth"),
        (["--output-key", "video"], "video field"),
        (["--embeddings-dtype", "float32"], "no --embeddings was given: add --embeddings PATH.parquet"),
        (["--decode", "gpu"], "use decode 'auto', 'fast' or 'exact'"),
        (["--precision", "fp8"], "use precision 'auto' or 'fp32'"),
    ],
)
def test_bad_configuration_exits_2_and_says_what_to_change(
    tmp_path: Path, model_args: dict, capsys: pytest.CaptureFixture, args: list, message: str
) -> None:
    source, root = frame_dataset(tmp_path, videos=1, clips_per_video=1, frames_per_clip=1)
    code, out, err = _run(capsys, *_score_args(source, tmp_path / "o.jsonl", root, model_args), *args)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists()


def test_malformed_input_names_file_and_line(tmp_path: Path, model_args: dict, capsys: pytest.CaptureFixture) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"video": "a.mp4", "video_clips": {"clips": []}}, "{oops"])
    source.write_bytes(source.read_bytes() + b'{"bad": "\xff"}\n')
    code, _, err = _run(capsys, *_score_args(source, tmp_path / "o.jsonl", tmp_path, model_args))
    assert code == 2
    assert "in.jsonl:2: malformed JSON" in err and "--skip-bad-records (skip_bad_records=True)" in err
    code, out, err = _run(
        capsys, *_score_args(source, tmp_path / "o.jsonl", tmp_path, model_args, "--skip-bad-records")
    )
    assert code == 0, err
    assert json.loads(out)["rejected"] == 2
    rejects = read_jsonl(tmp_path / "o.rejects.jsonl")
    assert [r["line"] for r in rejects] == [2, 3] and "raw_base64" in rejects[1]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("folder", "is a folder"),
        ("missing", "does not exist"),
        ("/proc/self/mem", "cannot read input /proc/self/mem"),
        ("/dev/zero", "is a device"),
    ],
)
def test_unusable_inputs_exit_2_without_a_traceback(
    tmp_path: Path, model_args: dict, capsys: pytest.CaptureFixture, given: str, message: str
) -> None:
    path = {"folder": str(tmp_path), "missing": str(tmp_path / "nope.jsonl")}.get(given, given)
    code, out, err = _run(capsys, *_score_args(Path(path), tmp_path / "o.jsonl", tmp_path, model_args))
    assert (code, out) == (2, "")
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("where", ["folder", "proc", "input"])
def test_unusable_outputs_exit_2_before_scoring(
    tmp_path: Path, model_args: dict, capsys: pytest.CaptureFixture, where: str
) -> None:
    source, root = frame_dataset(tmp_path, videos=1, clips_per_video=1, frames_per_clip=1)
    out = {"folder": root, "proc": Path("/proc/va/o.jsonl"), "input": source}[where]
    before = source.read_bytes()
    args = _score_args(source, out, root, {**model_args, "mlp_checkpoint": "/no/such/head.pth"})
    code, _, err = _run(capsys, *args)
    assert code == 2 and "Traceback" not in err and "/no/such/head.pth" not in err
    assert source.read_bytes() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_exits_2(tmp_path: Path, model_args: dict, capsys: pytest.CaptureFixture) -> None:
    source, root = frame_dataset(tmp_path, videos=1, clips_per_video=1, frames_per_clip=1)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code, _, err = _run(capsys, *_score_args(source, locked / "o.jsonl", root, model_args))
    assert code == 2 and "cannot write" in err


def test_records_from_standard_input(
    tmp_path: Path, model_args: dict, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, root = frame_dataset(tmp_path, videos=2, clips_per_video=1, frames_per_clip=1)
    read_end, write_end = os.pipe()
    os.write(write_end, source.read_bytes())
    os.close(write_end)
    monkeypatch.setattr(sys, "stdin", os.fdopen(read_end, "r"))
    code, out, err = _run(capsys, *_score_args(Path("-"), tmp_path / "o.jsonl", root, model_args))
    assert code == 0, err
    assert json.loads(out)["records"] == 2 and len(read_jsonl(tmp_path / "o.jsonl")) == 2


def test_figure_root_is_required_for_clips(capsys: pytest.CaptureFixture) -> None:
    code, _, err = _run(capsys, "score", "--input", "in.jsonl", "--output", "o.jsonl")
    assert code == 2 and "--figure-root is required" in err


def test_help_documents_every_option(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _run(capsys, "score", "--help")
    assert code == 0
    score = build_parser()._subparsers._group_actions[0].choices["score"]
    for action in score._actions:
        for flag in action.option_strings:
            assert flag in out
        assert action.help, f"{action.option_strings} has no help text"


def test_sigterm_leaves_no_temporary_file_and_exits_143(tmp_path: Path, model_args: dict) -> None:
    """Stopped while it reads a pipe: the lock, the spooled copy and the output's temporary all go."""
    source, root = frame_dataset(tmp_path, videos=1, clips_per_video=1, frames_per_clip=1)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "o.jsonl").write_text("previous run\n")
    args = _score_args(Path("-"), outputs / "o.jsonl", root, model_args, "--skip-bad-records")
    process = subprocess.Popen(
        [sys.executable, "-m", "video_aesthetics", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdin is not None
        process.stdin.write(source.read_bytes()[:10])  # a partial line; the pipe stays open
        process.stdin.flush()
        deadline = time.monotonic() + 120
        while not any(p.name.endswith(".tmp") and ".spool." in p.name for p in outputs.iterdir()):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        # The output; the locks and temporaries of output and rejects; the spooled input.
        assert len(list(outputs.iterdir())) == 6
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM
    assert b"stopped by SIGTERM" in err and b"Traceback" not in err
    assert sorted(p.name for p in outputs.iterdir()) == ["o.jsonl"]
    assert (outputs / "o.jsonl").read_text() == "previous run\n"


@pytest.mark.parametrize("command", ["score", "report"])
def test_help_states_each_default_once(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "(default: the same as --video-clips-key)" in text
    if command == "score":
        assert "(default: OUT.rejects.jsonl)" in text and "(default: auto)" in text


# --- every output is checked with the others before the model loads ------------------------------------

NO_HEAD = "/no/such/head.pth"  # loading it fails: an error that does not name it came before any model loaded


@pytest.mark.parametrize("report", ["default-rejects", "input", "output-by-link", "proc", "link-out", "folder"])
def test_the_report_is_refused_with_the_other_outputs_before_scoring(
    tmp_path: Path, model_args: dict, capsys: pytest.CaptureFixture, report: str
) -> None:
    source, root = frame_dataset(tmp_path, videos=1, clips_per_video=1, frames_per_clip=1)
    source.write_bytes(source.read_bytes() + b"a bad line\n")
    before = source.read_bytes()
    out = tmp_path / "out.jsonl"
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "r.html").symlink_to(tmp_path / "elsewhere" / "r.html")
    (tmp_path / "alias.jsonl").symlink_to(out)
    target = {
        "default-rejects": tmp_path / "out.rejects.jsonl",  # what --skip-bad-records writes without --rejects
        "input": source,
        "output-by-link": tmp_path / "alias.jsonl",
        "proc": Path("/proc/video-aesthetics/r.html"),
        "link-out": tmp_path / "runs" / "r.html",
        "folder": tmp_path / "runs",
    }[report]
    args = _score_args(source, out, root, {**model_args, "mlp_checkpoint": NO_HEAD}, "--skip-bad-records")
    code, stdout, err = _run(capsys, *args, "--report", str(target))
    assert (code, stdout) == (2, "") and "Traceback" not in err and NO_HEAD not in err
    assert "report" in err
    assert source.read_bytes() == before
    assert not out.exists() and not (tmp_path / "out.rejects.jsonl").exists()
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == []


@pytest.mark.parametrize("nproc", ["0", "-1", str(10**6)])
def test_nproc_outside_one_to_the_cpus_is_refused_before_scoring(
    tmp_path: Path, model_args: dict, capsys: pytest.CaptureFixture, nproc: str
) -> None:
    source, root = frame_dataset(tmp_path, videos=1, clips_per_video=1, frames_per_clip=1)
    args = _score_args(source, tmp_path / "o.jsonl", root, {**model_args, "mlp_checkpoint": NO_HEAD})
    code, _, err = _run(capsys, *args, "--nproc", nproc)
    assert code == 2 and "--nproc" in err and NO_HEAD not in err and "Traceback" not in err
    # Below 1 or above the declared bound (parameters.py): refused by the bound; else by the CPUs there are.
    assert ("nproc must be an integer >= 1 and <= 64" in err) == (not 1 <= int(nproc) <= 64)
    assert not (tmp_path / "o.jsonl").exists()


def _report_args(tmp_path: Path) -> list[str]:
    scored = write_jsonl(tmp_path / "scored.jsonl", [clip_record("v.mp4", ["c"])])
    return ["report", str(scored), "--figure-root", str(tmp_path), "--output", str(tmp_path / "r.html")]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("fifo", "not a regular file"),
        ("zero", "not a regular file"),
        ("folder", "is a folder"),
        ("huge", "more than the 16 MiB"),
        ("missing", "does not exist"),
    ],
)
def test_run_info_is_only_a_bounded_regular_file(tmp_path: Path, kind: str, message: str) -> None:
    """Run as a separate process: a FIFO that blocked would hang it (the subprocess timeout ends it), not the suite."""
    info = {"fifo": tmp_path / "fifo", "zero": Path("/dev/zero"), "folder": tmp_path, "missing": tmp_path / "no"}
    path = info.get(kind, tmp_path / "huge.json")
    if kind == "fifo":
        os.mkfifo(path)
    if kind == "huge":
        with open(path, "wb") as handle:  # sparse: 17 MiB that take no disk
            handle.truncate(17 << 20)
    run = _cli(*_report_args(tmp_path), "--run-info", str(path))
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert "--run-info" in run.stderr and not (tmp_path / "r.html").exists()


def test_run_info_and_the_report_must_be_different_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    info = tmp_path / "info.json"
    info.write_text("{}")
    args = _report_args(tmp_path)
    code, _, err = _run(capsys, *args[:-1], str(info), "--run-info", str(info))
    assert code == 2 and "is the input" in err and info.read_text() == "{}"


def test_a_report_of_an_input_whose_name_is_not_utf8(
    tmp_path: Path, model_args: dict, capsys: pytest.CaptureFixture
) -> None:
    source, root = frame_dataset(tmp_path, videos=1, clips_per_video=1, frames_per_clip=1)
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/in\xff.jsonl"))
    source.rename(odd)
    report = tmp_path / "report.html"
    code, out, err = _run(capsys, *_score_args(odd, tmp_path / "o.jsonl", root, model_args, "--report", str(report)))
    assert code == 0, err
    assert "in\\udcff.jsonl" in report.read_text() and json.loads(out)["report"] == str(report)
