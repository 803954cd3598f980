"""How the DAG's task bodies fail: the library's own errors at once, anything else for a retry.

A ``VideoAestheticsError`` (bad params, a malformed input, a lost record) names what to change;
retrying the task cannot fix it, so it fails the task without spending the run's retries.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from airflow.sdk.exceptions import AirflowFailException

from video_aesthetics.errors import VideoAestheticsError


@contextlib.contextmanager
def failing_fast() -> Iterator[None]:
    """Turn the library's own errors into AirflowFailException: retrying cannot fix them."""
    try:
        yield
    except VideoAestheticsError as err:
        raise AirflowFailException(str(err)) from err
