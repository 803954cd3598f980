"""A scoring task's process dies with its Airflow supervisor, and only then; it gives torch the threads it is told."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from helpers.airflow_env import airflow_env, use_private_airflow_home
from helpers.media import frame_dataset

use_private_airflow_home()

from airflow.sdk.exceptions import AirflowFailException

from video_aesthetics.airflow.operators import VideoAestheticScoringOperator
from video_aesthetics.airflow.task_process import die_with_supervisor, supervisor_pid
from video_aesthetics.processes import die_with_parent

_PR_GET_PDEATHSIG = 2

# A real Task SDK supervisor (WatchedSubprocess forks the task process and hands it the socketpair
# it talks over, as for every task) whose task process starts as task_runner.main() does.
_SUPERVISOR = textwrap.dedent(
    """
    import os, sys, time, uuid
    from airflow.sdk.execution_time.supervisor import WatchedSubprocess

    def task():
        import structlog
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.comms import CommsDecoder
        from video_aesthetics.airflow.task_process import die_with_supervisor, supervisor_pid

        task_runner.SUPERVISOR_COMMS = CommsDecoder(log=structlog.get_logger())
        armed = die_with_supervisor() if sys.argv[2] == "arm" else None
        with open(sys.argv[1] + ".tmp", "w") as out:
            out.write(f"{os.getpid()} {os.getppid()} {supervisor_pid()} {armed}")
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
        time.sleep(600)

    if __name__ == "__main__":
        WatchedSubprocess.start(target=task, id=uuid.uuid4())
        time.sleep(600)
    """
)


def _pdeathsig() -> int:
    value = ctypes.c_int()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_GET_PDEATHSIG, ctypes.byref(value), 0, 0, 0)
    return value.value


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.parametrize("arm", [True, False])
def test_a_task_process_dies_with_its_killed_supervisor(tmp_path: Path, arm: bool) -> None:
    script = tmp_path / "supervisor.py"
    script.write_text(_SUPERVISOR)
    report = tmp_path / "task.txt"
    supervisor = subprocess.Popen(
        [sys.executable, str(script), str(report), "arm" if arm else "leave"], env=airflow_env(tmp_path / "home")
    )
    task = None
    try:
        deadline = time.monotonic() + 120
        while not report.exists():
            assert supervisor.poll() is None and time.monotonic() < deadline, "the task process never started"
            time.sleep(0.1)
        pid, parent, peer, armed = report.read_text().split()
        task = int(pid)
        assert int(parent) == supervisor.pid and int(peer) == supervisor.pid
        assert armed == ("True" if arm else "None")
        supervisor.send_signal(signal.SIGKILL)  # as the OOM killer or a lost worker would
        supervisor.wait()
        deadline = time.monotonic() + (10 if arm else 3)
        while _alive(task) and time.monotonic() < deadline:
            time.sleep(0.05)
        # Unarmed, the orphan scores on beside its retry: what the issue saw.
        assert _alive(task) is not arm
    finally:
        supervisor.kill()
        supervisor.wait()
        if task is not None and _alive(task):
            os.kill(task, signal.SIGKILL)


def test_a_process_without_a_supervisor_is_left_alone() -> None:
    # dag.test() and direct execute() calls run the operator in their own process.
    assert supervisor_pid() is None
    assert die_with_supervisor() is False
    assert die_with_parent(signal.SIGKILL, parent=os.getpid()) is False  # not our parent: nothing is armed
    assert _pdeathsig() == 0


def _operator(tmp_path: Path, model_args: dict[str, str]) -> VideoAestheticScoringOperator:
    source, figure_root = frame_dataset(tmp_path, videos=2, clips_per_video=2, frames_per_clip=2)
    return VideoAestheticScoringOperator(
        task_id="score",
        input_path=str(source),
        output_path=str(tmp_path / "out.jsonl"),
        figure_root=str(figure_root),
        num_workers=0,
        device="cpu",
        **model_args,
    )


def test_execute_gives_torch_the_threads_setting_and_restores_the_callers(
    tmp_path: Path, model_args: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    before = torch.get_num_threads()
    outputs = []
    for threads in ("1", "3"):
        monkeypatch.setenv("VIDEO_AESTHETICS_THREADS", threads)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="video_aesthetics"):
            summary = _operator(tmp_path / threads, model_args).execute(context={})
        assert f"scoring with {threads} CPU thread(s)" in caplog.text
        assert torch.get_num_threads() == before
        outputs.append((tmp_path / threads / "out.jsonl").read_bytes())
        assert summary["scored"] == 4
    assert outputs[0] == outputs[1]  # the thread count changes the speed, never the scores
    assert _pdeathsig() == 0  # run in-process: this process is not tied to whatever started it


def test_a_bad_threads_setting_fails_the_task_at_once(
    tmp_path: Path, model_args: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIDEO_AESTHETICS_THREADS", "half")
    with pytest.raises(AirflowFailException, match="VIDEO_AESTHETICS_THREADS.*got 'half'"):
        _operator(tmp_path, model_args).execute(context={})
    assert not (tmp_path / "out.jsonl").exists()
