"""A stop asked for by a signal (SIGTERM to the command line), honoured even where a C library swallows it.

The CLI's handler raises Terminated wherever the main thread is. When that is inside PyAV (FFmpeg
reading a file), PyAV turns the exception into an error of its own, which the reader then counts
as one unreadable video, and the run would go on to publish. So the stop is also recorded, and
checked where a run could otherwise carry on: after a caught decoding error, and before anything
is published (files.publish_together).
"""

from __future__ import annotations

from typing import NoReturn

_requested: list[int] = []


class Terminated(BaseException):
    """SIGTERM raised as an exception, so that every ``finally`` runs: no temporary file or lock is left behind.

    A BaseException, so that no ``except Exception`` on the way swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def request_stop(signum: int) -> NoReturn:
    """Record a stop for ``signum`` and raise it here (a signal handler's body)."""
    _requested.append(signum)
    raise Terminated(signum)


def check_stop() -> None:
    """Raise Terminated again if a stop was asked for and something swallowed it."""
    if _requested:
        raise Terminated(_requested[-1])


def clear_stop() -> None:
    """Forget recorded stops: a new run in this process starts with none."""
    _requested.clear()
