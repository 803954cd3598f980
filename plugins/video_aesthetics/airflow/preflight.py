"""Checks the DAG's first task makes before any work: the pools its tasks run in exist and have slots.

A task in a pool that does not exist (or has no slots) is never queued: Airflow's scheduler leaves
it ``scheduled`` forever with a warning in its own log only. So check_frames looks up every pool
the run's tasks use and fails the run at once, saying how to create the pool or unset the setting.

Task code has no metadata database in Airflow 3 (the Task SDK blocks the ORM) and the Task SDK's
Execution API has no pool lookup, so the API server answers instead: the plugin mounts
``create_app()`` at ``PREFIX`` (``/video-aesthetics-preflight/pools/<name>``), which says whether
a pool exists and its slots; nothing else. A task reaches it at the API server its supervisor
talks to (``[core] execution_api_server_url``, else ``[api] base_url``). When the API server
cannot answer (``dag.test()`` without one, an older plugin), the check is skipped with a warning.
"""

import logging
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from video_aesthetics import settings
from video_aesthetics.errors import ConfigError

log = logging.getLogger(__name__)

PREFIX = "/video-aesthetics-preflight"
DEFAULT_POOL = "default_pool"  # Airflow's own; it cannot be deleted
TIMEOUT_S = 10.0


def create_app() -> Any:
    """The API server side: ``GET /pools/{name}`` -> ``{"pool", "exists", "slots"}`` (slots -1: unlimited)."""
    from airflow.api_fastapi.common.db.common import SessionDep
    from airflow.models.pool import Pool
    from fastapi import FastAPI
    from sqlalchemy import select

    app = FastAPI(title="Video aesthetics preflight", description="What the DAG's first task checks before a run")

    # Unauthenticated: task processes hold no API token. It tells whether a pool name exists, no more.
    def pool_status(pool_name: str, session: SessionDep) -> dict[str, Any]:
        slots = session.scalar(select(Pool.slots).where(Pool.pool == pool_name))
        return {"pool": pool_name, "exists": slots is not None, "slots": slots}

    app.add_api_route("/pools/{pool_name}", pool_status, methods=["GET"])
    return app


def fastapi_app() -> dict[str, Any]:
    """The entry for an AirflowPlugin's ``fastapi_apps``."""
    return {"app": create_app(), "url_prefix": PREFIX, "name": "Video aesthetics preflight"}


def api_base_url() -> str:
    """The API server's base URL as this worker knows it: where its tasks' Execution API lives."""
    from airflow.sdk import conf

    execution = (conf.get("core", "execution_api_server_url", fallback="") or "").strip()
    if execution:
        return execution.rstrip("/").removesuffix("/execution")
    return (conf.get("api", "base_url", fallback="") or "http://localhost:8080").rstrip("/")


def pool_status(pool: str, base_url: str | None = None, timeout_s: float = TIMEOUT_S) -> dict[str, Any] | None:
    """What the API server says of ``pool`` (see ``create_app``), or None when it could not answer."""
    import httpx

    url = f"{(base_url or api_base_url()).rstrip('/')}{PREFIX}/pools/{quote(pool, safe='')}"
    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as err:
        log.warning("cannot check pool %r: the API server at %s did not answer (%s)", pool, url, err)
        return None
    if response.status_code != 200:
        log.warning("cannot check pool %r: %s answered %d (is the plugin installed?)", pool, url, response.status_code)
        return None
    try:
        status = response.json()
    except ValueError:
        status = None
    # Without the plugin's route, the API server answers unknown paths with its UI page (200, HTML).
    if not isinstance(status, dict) or "exists" not in status:
        log.warning("cannot check pool %r: %s did not answer with a pool status (is the plugin installed?)", pool, url)
        return None
    return status


def check_pools(pools: Iterable[tuple[str, str]], base_url: str | None = None) -> None:
    """Fail when a pool that (task, pool) pairs name is missing or has no slots; default_pool is always there."""
    by_pool: dict[str, list[str]] = {}
    for task_id, pool in pools:
        if pool and pool != DEFAULT_POOL:
            by_pool.setdefault(pool, []).append(task_id)
    for pool, task_ids in sorted(by_pool.items()):
        status = pool_status(pool, base_url)
        if status is None:
            continue
        tasks = ", ".join(sorted(task_ids))
        env = settings.SETTINGS["pool"].env
        if not status.get("exists"):
            raise ConfigError(
                f"pool {pool!r} does not exist, so {tasks} would wait in 'scheduled' forever: create it with "
                f'`airflow pools set {pool} <slots> "GPU slots"` (one slot per GPU), or unset {env} '
                "(the [video_aesthetics] pool setting) to run them in default_pool"
            )
        if status.get("slots") == 0:
            raise ConfigError(
                f"pool {pool!r} has 0 slots, so {tasks} would wait in 'scheduled' forever: give it one slot per "
                f'GPU with `airflow pools set {pool} <slots> "GPU slots"`, or unset {env}'
            )
        log.info("pool %r for %s: %s slot(s)", pool, tasks, status.get("slots"))


def check_run(context: Mapping[str, Any]) -> None:
    """check_frames' preflight: every pool the run's DAG puts a task in exists and has slots."""
    tasks = getattr(context.get("dag"), "tasks", None) or ()
    check_pools((task.task_id, getattr(task, "pool", None) or "") for task in tasks)
