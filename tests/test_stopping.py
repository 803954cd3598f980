"""stopping.py: a stop asked for by a signal is raised at once, kept, raised again where checked, and forgotten only on purpose."""

from __future__ import annotations

import signal

import pytest

from video_aesthetics.stopping import Terminated, check_stop, clear_stop, request_stop


def test_a_requested_stop_is_raised_again_until_cleared() -> None:
    check_stop()  # nothing asked for: nothing raised
    with pytest.raises(Terminated) as raised:
        request_stop(signal.SIGTERM)
    assert raised.value.signum == signal.SIGTERM
    try:
        try:
            request_stop(signal.SIGTERM)
        except Exception:  # noqa: BLE001 - what a library's broad handler does: it cannot catch the stop
            pytest.fail("Terminated must pass through `except Exception`")
        except Terminated:
            pass
        with pytest.raises(Terminated):
            check_stop()  # swallowed somewhere below (a BaseException handler, a C library): still there
    finally:
        clear_stop()
    check_stop()
