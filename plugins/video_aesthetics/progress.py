"""Progress lines for a run's log: samples done of total, speed and time left, on a fixed grid.

Nothing here scores: the runner feeds a Progress each result, and its heartbeat thread keeps
lines coming while none arrives. Each Progress's lock is held across fork() (decoding workers)
so that no child starts with a log line half-written.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator

from video_aesthetics.records import SampleResult

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 10.0


class Progress:
    """Progress lines for the log: samples done of total, speed and time left, every ``interval`` seconds.

    Speed is measured from the end of the first batch of results, not from the start: the start
    pays for loading the model and starting the workers, and counting it would make the first
    estimate hours long for a minute's work. Results arrive a batch at a time, so the ETA waits for
    ``warmup`` seconds of scoring after that first batch; until then the line says it is measuring.
    Lines are due on a fixed grid (every ``interval`` seconds from the start), and ``heartbeat()``
    keeps them coming while no result arrives (the model loading, a slow batch).
    """

    def __init__(
        self,
        total: int,
        interval: float = PROGRESS_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        *,
        unit: str = "clips",
        warmup: float = 10.0,
        burst: float = 0.5,
    ) -> None:
        self.total = total
        self.done = 0
        self.interval = interval
        self.clock = clock
        self.unit = unit
        self.warmup = warmup
        self.burst = burst
        self.started = clock()
        self.next_due = self.started + interval
        self._first: float | None = None  # when the first result arrived
        self._base_time = 0.0  # the end of the first batch: speed is measured from here
        self._base_done = 0
        # Re-entrant: the at-fork hook takes it in whichever thread forks (see _hold_for_fork).
        self.lock = threading.RLock()
        _ACTIVE.add(self)

    def update(self, _result: SampleResult | None = None) -> None:
        with self.lock:
            self.done += 1
            now = self.clock()
            if self._first is None:
                self._first = now
            if now - self._first <= self.burst:
                # Still the first batch: its results come together and say nothing about speed.
                self._base_time, self._base_done = now, self.done
            if self.done == self.total:
                log.info("%s", self.line(now))
                self.next_due = float("inf")
            else:
                self._tick(now)

    def tick(self) -> None:
        """Log a line if one is due; the heartbeat calls this while no result arrives."""
        with self.lock:
            self._tick(self.clock())

    def _tick(self, now: float) -> None:
        if now < self.next_due:
            return
        log.info("%s", self.line(now))
        # The next line is due on the grid; a stall longer than an interval does not cause a burst of lines.
        missed = math.floor((now - self.next_due) / self.interval)
        self.next_due += (missed + 1) * self.interval

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[None]:
        """Lines every ``interval`` seconds (real time) while the block runs, results or not."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(min(self.interval / 4, 1.0)):
                self.tick()

        thread = threading.Thread(target=beat, name="video-aesthetics-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def rate(self, now: float | None = None) -> float:
        """Samples per second since the first batch, once ``warmup`` seconds of it have passed; else 0."""
        return self._steady_rate(self.clock() if now is None else now)

    def _steady_rate(self, now: float) -> float:
        if self._first is None:
            return 0.0
        elapsed = now - self._base_time
        if elapsed < self.warmup or self.done <= self._base_done:
            return 0.0
        return (self.done - self._base_done) / elapsed

    def line(self, now: float) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        head = f"scored {self.done}/{self.total} {self.unit} ({pct:.1f}%)"
        elapsed = now - self.started
        if self.done >= self.total:
            overall = self.done / elapsed if elapsed > 0 else 0.0
            return f"{head} in {duration(elapsed)}, {overall:.1f} {self.unit}/s, ETA 0s"
        if self._first is None:
            return f"{head} after {duration(elapsed)}, waiting for the first batch (model loading, workers starting)"
        rate = self._steady_rate(now)
        if rate <= 0:
            return f"{head} after {duration(elapsed)}, measuring speed"
        left = (self.total - self.done) / rate
        return f"{head} after {duration(elapsed)}, {rate:.1f} {self.unit}/s, ETA {duration(left)}"


def duration(seconds: float) -> str:
    """A short human duration: 45s, 3m20s, 2h05m, 3d04h."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


# Decoding workers are forked while the heartbeat thread may be logging: holding every Progress's
# lock across fork() means no log line (and no stream lock) is half-written in the child.
_ACTIVE: weakref.WeakSet[Progress] = weakref.WeakSet()


def _hold_for_fork() -> None:
    for progress in list(_ACTIVE):
        progress.lock.acquire()


def _release_after_fork() -> None:
    for progress in list(_ACTIVE):
        progress.lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_hold_for_fork, after_in_parent=_release_after_fork, after_in_child=_release_after_fork)
