"""The child processes the library starts (decoding workers, ranks): they die with their parent and stop in one call.

A task killed by Airflow (or a parent killed outright) must not leave scoring processes behind,
reading frames or holding a GPU beside the task's retry.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
STOP_GRACE_SECONDS = 5.0
# Held while the daemon flag is lifted: threads starting children at once must restore it in order.
_CHILDREN_ALLOWED = threading.RLock()


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux); whether it could.

    With ``parent``, only when that process is this one's parent; and should it have exited before
    the request took hold (the kernel watches only the parent it finds then), ``sig`` comes at once.
    """
    if not sys.platform.startswith("linux") or (parent is not None and os.getppid() != parent):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        done = libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if done and parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return done


def tie_to_parent(parent: int, sig: int = signal.SIGKILL) -> bool:
    """For a child of ``parent``: ``sig`` when ``parent`` exits, and at once if it already has; whether the kernel will send it.

    A child can ask for the signal only once it runs. Should ``parent`` die in between (a task killed
    while its workers start), the kernel has already handed the child to another parent and would never
    signal it: the child would work on for nobody, holding frames or a GPU.
    """
    if die_with_parent(sig, parent=parent):
        return True
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return False


def socket_peer_pid(sock: socket.socket) -> int | None:
    """The process at the other end of a Unix socket (of a socketpair: the one that made it); None if unknown."""
    try:
        credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):  # not a Unix socket, closed, or not Linux
        return None
    pid = struct.unpack("3i", credentials)[0]
    return pid or None


@contextlib.contextmanager
def children_allowed() -> Iterator[None]:
    """Let this process start child processes while multiprocessing calls it daemonic; start them inside.

    Celery's prefork pool runs tasks in daemonic processes (billiard makes its pool process
    multiprocessing's current process, daemon flag set), and Airflow's task process is forked from
    one and inherits the flag: multiprocessing then refuses to start DataLoader workers or ranks
    ("daemonic processes are not allowed to have children"). The rule exists because a daemonic
    process is terminated, not joined, when its parent exits, which would orphan its children. The
    library's children cannot be orphaned: each asks the kernel to kill it when its parent dies
    (``die_with_parent``). So the flag is lifted only while children start, and set again after;
    children made inside are not daemonic unless their starter says so (DataLoader's workers are).
    """
    process = multiprocessing.current_process()
    # _config is where multiprocessing (and billiard, which shares it) keeps the flag that start() checks.
    config = getattr(process, "_config", None)
    with _CHILDREN_ALLOWED:
        if not isinstance(config, dict) or not config.get("daemon"):
            yield
            return
        config["daemon"] = False
        try:
            yield
        finally:
            config["daemon"] = True


def stop_children(grace: float = STOP_GRACE_SECONDS) -> list[int]:
    """SIGTERM every live child this process started through multiprocessing, SIGKILL those left after ``grace``.

    Those are the library's decoding workers and spawned ranks; processes started any other way
    (a subprocess of the caller's) are not ours to stop. Returns the pids that were running.
    """
    children = multiprocessing.active_children()
    if not children:
        return []
    log.warning("stopping %d child process(es): %s", len(children), [c.pid for c in children])
    for child in children:
        with contextlib.suppress(ProcessLookupError, AttributeError):
            child.terminate()
    deadline = time.monotonic() + grace
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
    for child in children:
        if child.is_alive():
            log.warning("killing child process %s, which ignored SIGTERM", child.pid)
            child.kill()
            child.join()
    return [c.pid for c in children if c.pid is not None]
