"""Progress lines (progress.py): ETA from the first batch on, a steady grid through bursts and stalls, the heartbeat."""

from __future__ import annotations

import logging
import re
import threading

import pytest

from video_aesthetics.progress import Progress, duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _eta_seconds(line: str) -> float:
    match = re.search(r"ETA (?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$", line)
    assert match, line
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _run(progress: Progress, clock: FakeClock, arrivals: list[float], until: float) -> list[tuple[float, str]]:
    """Feed results arriving at ``arrivals`` and heartbeat ticks every simulated second; (time, line) of each line."""
    lines: list[tuple[float, str]] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append((clock.now, record.getMessage()))  # type: ignore[method-assign]
    logger = logging.getLogger("video_aesthetics.progress")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        events = sorted([(t, "result") for t in arrivals] + [(float(s), "tick") for s in range(1, int(until) + 1)])
        for when, kind in events:
            clock.now = when
            progress.update() if kind == "result" else progress.tick()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return lines


def test_first_eta_is_not_hours_for_a_minute_of_work() -> None:
    # 40 batches of 64: the first ready after 45 s (workers starting, first decode), then one every 1.5 s.
    batches = [45.0 + 1.5 * b for b in range(40)]
    arrivals = [t for t in batches for _ in range(64)]
    clock = FakeClock()
    lines = _run(Progress(len(arrivals), interval=10.0, clock=clock), clock, arrivals, until=120)
    end = arrivals[-1]
    assert [t for t, _ in lines] == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, end]
    assert all("waiting for the first batch" in line for t, line in lines if t < 45)
    assert "measuring speed" in lines[4][1]  # 5 s after the first batch: too early to tell
    with_eta = [(t, line) for t, line in lines[:-1] if "clips/s" in line]
    assert len(with_eta) == 5
    # Within a batch's worth of the truth (a line can fall mid-batch); counting from the start gave 7m30s here.
    for when, line in with_eta:
        assert abs(_eta_seconds(line) - (end - when)) <= 0.2 * (end - when) + 1, line
    assert lines[-1][1] == "scored 2560/2560 clips (100.0%) in 1m44s, 24.7 clips/s, ETA 0s"


def test_lines_keep_a_steady_rate_through_bursts_and_stalls() -> None:
    # 3000 results in a steady trickle, then nothing for 55 s, then the rest.
    arrivals = [0.5 + 0.01 * i for i in range(3000)] + [90.0 + 0.01 * i for i in range(1000)]
    clock = FakeClock()
    lines = _run(Progress(4000, interval=10.0, clock=clock, unit="videos"), clock, arrivals, until=120)
    assert [t for t, _ in lines] == [10, 20, 30, 40, 50, 60, 70, 80, 90, arrivals[-1]]
    # The stall shows as lines with the same count, not as silence and not as a burst afterwards.
    stalled = [line for t, line in lines if 40 <= t <= 80]
    assert all(line.startswith("scored 3000/4000 videos (75.0%) after ") for line in stalled)
    assert lines[-1][1].startswith("scored 4000/4000 videos (100.0%) in 1m40s")


def test_a_run_too_short_for_an_eta_ends_with_one_line() -> None:
    clock = FakeClock()
    lines = _run(Progress(4, interval=10.0, clock=clock), clock, [2.0, 2.0, 2.0, 2.0], until=3)
    assert lines == [(2.0, "scored 4/4 clips (100.0%) in 2s, 2.0 clips/s, ETA 0s")]


def test_heartbeat_logs_while_no_result_arrives(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress(5, interval=0.02)
    with caplog.at_level(logging.INFO, logger="video_aesthetics.progress"), progress.heartbeat():
        for _ in range(500):
            if caplog.messages:
                break
            threading.Event().wait(0.01)
    assert caplog.messages and "waiting for the first batch" in caplog.messages[0]
    assert not [t for t in threading.enumerate() if t.name == "video-aesthetics-progress"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0s"), (45, "45s"), (200, "3m20s"), (3599.6, "1h00m"), (7500, "2h05m"), (3 * 86400 + 4 * 3600, "3d04h")],
)
def test_durations_read_at_a_glance(seconds: float, text: str) -> None:
    assert duration(seconds) == text
