"""The outside services some tests need (PostgreSQL, Redis, Chromium): where they are, and whether they answer.

A test marked ``requires_postgres``, ``requires_redis`` or ``requires_chromium`` (tests/conftest.py)
is skipped with a reason that says what to install or start when its service is missing, so that
``make test`` passes on a fresh machine; with VIDEO_AESTHETICS_REQUIRE_SERVICES=1 (``.ci/run`` sets
it) the same test fails instead, so that CI cannot go green by skipping.

The addresses come from the environment, which is also how a test is pointed at a closed port to
see the skip without stopping the real server.
"""

from __future__ import annotations

import functools
import os
import shutil
from urllib.parse import urlsplit

REQUIRE_ENV = "VIDEO_AESTHETICS_REQUIRE_SERVICES"
POSTGRES_ENV = "VIDEO_AESTHETICS_TEST_POSTGRES"
REDIS_ENV = "VIDEO_AESTHETICS_TEST_REDIS"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379"
_CONNECT_SECONDS = 3


def services_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def postgres_url() -> str:
    """An admin URL of the PostgreSQL server the service tests use."""
    return os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES


def redis_url() -> str:
    """The Redis server the service tests use, without a database number."""
    return os.environ.get(REDIS_ENV) or DEFAULT_REDIS


def _where(url: str, port: int) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or port}"


@functools.cache
def postgres_problem() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when the server answers."""
    url = postgres_url()
    try:
        import psycopg2
    except ImportError:
        return 'psycopg2 is not installed: pip install -e ".[test]" (or the postgres extra)'
    try:
        psycopg2.connect(url, connect_timeout=_CONNECT_SECONDS).close()
    except psycopg2.Error as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return (
            f"PostgreSQL not reachable at {_where(url, 5432)} ({first}): start it (apt-get install postgresql), "
            f"point {POSTGRES_ENV} at an admin URL of one, or deselect these tests with -m 'not celery'"
        )
    return None


@functools.cache
def redis_problem() -> str | None:
    """Why the Redis tests cannot run here, or None when the server answers."""
    url = redis_url()
    try:
        import redis
    except ImportError:
        return 'the redis client is not installed: pip install -e ".[test]" (or the celery extra)'
    try:
        redis.Redis.from_url(url, socket_connect_timeout=_CONNECT_SECONDS, socket_timeout=_CONNECT_SECONDS).ping()
    except redis.RedisError as err:
        return (
            f"Redis not reachable at {_where(url, 6379)} ({err}): start it (apt-get install redis-server), "
            f"point {REDIS_ENV} at one, or deselect these tests with -m 'not celery'"
        )
    return None


def chromium_path() -> str | None:
    """Debian's Chromium on PATH (the browser tests drive it through Playwright, which downloads nothing)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_problem() -> str | None:
    """Why the browser tests cannot run here, or None when Chromium and Playwright are there."""
    if chromium_path() is None:
        return (
            "Chromium is not on PATH: install it (apt-get install chromium; .ci/run does) "
            "or deselect the browser tests with -m 'not requires_chromium'"
        )
    try:
        import playwright.sync_api  # noqa: F401 - only whether it imports
    except ImportError:
        return 'playwright is not installed: pip install -e ".[test]"'
    return None


PROBLEMS = {
    "requires_postgres": postgres_problem,
    "requires_redis": redis_problem,
    "requires_chromium": chromium_problem,
}
