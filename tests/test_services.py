"""Test tiers (tests/helpers/services.py, tests/conftest.py): a missing service skips with what to do, unless required.

Each case runs pytest on the real service tests with the service made unreachable the way a fresh
machine lacks it: PostgreSQL and Redis addresses pointed at closed ports, Chromium off PATH. The
real servers are never stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers.airflow_env import REPO, free_port
from helpers.services import REQUIRE_ENV


def _pytest(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != REQUIRE_ENV}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _closed() -> dict[str, str]:
    return {
        "VIDEO_AESTHETICS_TEST_POSTGRES": f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        "VIDEO_AESTHETICS_TEST_REDIS": f"redis://127.0.0.1:{free_port()}",
    }


def test_celery_tests_skip_naming_both_servers_when_they_are_unreachable() -> None:
    closed = _closed()
    run = _pytest("tests/test_celery.py", **closed)
    assert run.returncode == 0, run.stdout[-3000:]
    assert run.stdout.rstrip().splitlines()[-1].startswith("2 skipped in ")
    postgres_port = closed["VIDEO_AESTHETICS_TEST_POSTGRES"].split(":")[2].split("/")[0]
    assert f"PostgreSQL not reachable at 127.0.0.1:{postgres_port}" in run.stdout
    assert "apt-get install postgresql" in run.stdout and "-m 'not celery'" in run.stdout
    assert f"Redis not reachable at {closed['VIDEO_AESTHETICS_TEST_REDIS'][len('redis://') :]}" in run.stdout
    assert "apt-get install redis-server" in run.stdout


def test_required_services_fail_instead_of_skipping() -> None:
    run = _pytest("tests/test_celery.py", **_closed(), **{REQUIRE_ENV: "1"})
    assert run.returncode != 0
    assert run.stdout.rstrip().splitlines()[-1].startswith("2 errors in ")
    assert f"{REQUIRE_ENV}=1: this run needs them" in run.stdout


def test_browser_tests_skip_without_chromium_on_path(tmp_path: Path) -> None:
    # PATH with nothing but this interpreter's folder: no chromium, whatever the machine has.
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    run = _pytest("tests/test_scheduler.py", "-k", "browser", PATH=str(bare))
    assert run.returncode == 0, run.stdout[-3000:]
    assert run.stdout.rstrip().splitlines()[-1].startswith("1 skipped, ")
    assert "Chromium is not on PATH: install it (apt-get install chromium" in run.stdout
    required = _pytest("tests/test_scheduler.py", "-k", "browser", PATH=str(bare), **{REQUIRE_ENV: "1"})
    assert required.returncode != 0 and "Chromium is not on PATH" in required.stdout
