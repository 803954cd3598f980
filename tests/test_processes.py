"""Child processes the library starts die with their parent and stop in one call, sparing everyone else's."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from video_aesthetics.processes import children_allowed, die_with_parent, stop_children, tie_to_parent


def _sleep_forever(ready: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a worker that ignores SIGTERM must still be stopped
    ready.release()
    time.sleep(600)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state in /proc says it is gone.
    state = (
        Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if Path(f"/proc/{pid}/stat").exists()
        else "X"
    )
    return state not in ("Z", "X")


def _wait_gone(pid: int, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_stop_children_stops_ours_even_when_they_ignore_sigterm_and_spares_others() -> None:
    context = multiprocessing.get_context("spawn")
    ready = context.Semaphore(0)
    ours = [context.Process(target=_sleep_forever, args=(ready,)) for _ in range(2)]
    for process in ours:
        process.start()
    for _ in ours:
        assert ready.acquire(timeout=120), "a child never started"
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        assert all(p.is_alive() for p in ours)
        stopped = stop_children(grace=1.0)
        assert sorted(stopped) == sorted(p.pid for p in ours)
        assert not any(p.is_alive() for p in ours)
        assert [p.exitcode for p in ours] == [-signal.SIGKILL] * 2
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_stop_children_with_no_children_does_nothing() -> None:
    assert stop_children() == []


_PARENT = """
import multiprocessing, os, sys, time
from video_aesthetics.processes import die_with_parent, tie_to_parent

def child(path, how, parent):
    assert die_with_parent() if how == "die_with_parent" else tie_to_parent(parent)
    open(path, "w").write(str(os.getpid()))
    time.sleep(600)

if __name__ == "__main__":
    multiprocessing.get_context("spawn").Process(target=child, args=(*sys.argv[1:], os.getpid())).start()
    time.sleep(600)
"""


@pytest.mark.parametrize("how", ["die_with_parent", "tie_to_parent"])
def test_a_child_dies_when_its_parent_is_killed_outright(tmp_path: Path, how: str) -> None:
    assert die_with_parent.__doc__ and tie_to_parent.__doc__
    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file), how])
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() or not pid_file.read_text():
            assert parent.poll() is None and time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _wait_gone(child), f"child {child} outlived its killed parent"
    finally:
        parent.kill()


_ORPHAN = """
import multiprocessing, os, sys, time
from video_aesthetics.processes import tie_to_parent

def child(path, parent):
    open(path + ".started", "w").write(str(os.getpid()))
    while os.getppid() == parent:  # the parent dies before this child asks to die with it
        time.sleep(0.01)
    tie_to_parent(parent)
    open(path, "w").write("survived")

if __name__ == "__main__":
    multiprocessing.get_context(sys.argv[2]).Process(target=child, args=(sys.argv[1], os.getpid())).start()
    while not __import__("pathlib").Path(sys.argv[1] + ".started").exists():
        time.sleep(0.01)
    os._exit(0)  # at once: multiprocessing would otherwise wait for the child at exit
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_child_whose_parent_died_before_it_asked_dies_at_once(tmp_path: Path, method: str) -> None:
    script = tmp_path / "parent.py"
    script.write_text(_ORPHAN)
    marker = tmp_path / "child"
    subprocess.run([sys.executable, str(script), str(marker), method], check=True, timeout=120)
    child = int(Path(f"{marker}.started").read_text())
    assert _wait_gone(child), f"orphaned child {child} lived on"
    assert not marker.exists(), "the orphaned child went on working after its parent had died"


def test_children_allowed_lifts_the_daemon_flag_only_while_children_start() -> None:
    # This process made daemonic, as a Celery prefork pool process is (test_scoring and test_ranks run
    # real scoring in a daemonic child).
    config = multiprocessing.current_process()._config
    assert "daemon" not in config
    context = multiprocessing.get_context("spawn")
    config["daemon"] = True
    try:
        with pytest.raises(AssertionError, match="daemonic processes are not allowed to have children"):
            context.Process(target=os.getpid).start()
        with children_allowed():
            with children_allowed():  # nested: the outer block still finds the flag lifted after
                first = context.Process(target=os.getpid)
                first.start()
            second = context.Process(target=os.getpid)
            second.start()
        assert config["daemon"] is True
        with pytest.raises(RuntimeError, match="boom"), children_allowed():
            raise RuntimeError("boom")
        assert config["daemon"] is True
        for child in (first, second):
            child.join(60)
            assert child.exitcode == 0 and not child.daemon
    finally:
        del config["daemon"]
    with children_allowed():  # a process that is not daemonic is left as it is
        assert "daemon" not in config
    assert "daemon" not in config
