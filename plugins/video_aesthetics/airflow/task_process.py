"""The process a scoring task runs in: it dies with its Airflow supervisor, and gives torch its share of the CPUs.

Airflow's supervisor (one per running task, inside a Celery or Local executor worker) forks the
task process and heartbeats for it. A supervisor that dies (killed with its worker, out of memory)
leaves the task process reparented to init, still scoring, and the scheduler retries the task once
the heartbeats stop: two attempts on one shard, two processes on one GPU. So the task process asks
the kernel to kill it when its supervisor dies; its decoding workers and ranks die with it in turn
(``processes.die_with_parent``). SIGKILL, not SIGTERM: the Task SDK answers SIGTERM by calling
``on_kill`` and leaves the process running, counting on its supervisor to follow with SIGKILL, which
a dead supervisor cannot.

Only a task process whose supervisor is its parent is touched: ``dag.test()`` and tests that call
``execute()`` run the operator in their own process, which must not die with whatever started it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from video_aesthetics import settings
from video_aesthetics.airflow.conf import airflow_config
from video_aesthetics.processes import die_with_parent, socket_peer_pid

log = logging.getLogger(__name__)

_TASK_RUNNER = "airflow.sdk.execution_time.task_runner"


def supervisor_pid() -> int | None:
    """The pid of the Airflow supervisor this task process reports to, when that is another process; else None.

    The Task SDK's task runner talks to its supervisor over a socketpair the supervisor made before
    forking it (its ``SUPERVISOR_COMMS``); the socket's peer is the supervisor. ``dag.test()`` runs
    tasks in-process with comms that have no socket, and a bare ``execute()`` has none at all.
    """
    runner = sys.modules.get(_TASK_RUNNER)  # never imported here: a process without it runs no supervised task
    comms = getattr(runner, "SUPERVISOR_COMMS", None)
    sock = getattr(comms, "socket", None)
    if sock is None:
        return None
    pid = socket_peer_pid(sock)
    return pid if pid != os.getpid() else None


def die_with_supervisor() -> bool:
    """SIGKILL this process when its supervisor (its parent) dies; whether that was arranged."""
    supervisor = supervisor_pid()
    if supervisor is None:
        return False
    arranged = die_with_parent(signal.SIGKILL, parent=supervisor)
    if not arranged:
        log.warning("the task process (pid %d) could not be tied to its supervisor (pid %d)", os.getpid(), supervisor)
    return arranged


def cpu_threads() -> int:
    """torch's CPU threads for this task: the ``threads`` setting (environment, then ``[video_aesthetics]``)."""
    return settings.cpu_threads(airflow_config)
