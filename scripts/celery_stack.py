#!/usr/bin/env python3
"""Run the video_aesthetic_scoring DAG on CeleryExecutor with PostgreSQL and Redis, without Docker.

Uses a PostgreSQL server and a Redis server that already run (by default this machine's, on their
standard ports) and leaves them as it found them: it creates its own database (a unique name), claims
a Redis database number nobody uses, and on exit stops every process it started, drops the
database and empties the Redis database it claimed. It never deletes results: the output store
(output_root) and the extracted frames (figure_root) live in ``demo_output/celery/`` of this
checkout, or under ``--output``, or where VIDEO_AESTHETICS_OUTPUT_ROOT / VIDEO_AESTHETICS_FIGURE_ROOT
say, never inside the temporary AIRFLOW_HOME that Ctrl-C removes. Started:

* ``airflow db migrate`` and the ``gpu`` pool (one slot per GPU task the gpu worker runs),
* a scheduler, a dag-processor and an api-server (simple auth manager, one admin user),
* two Celery workers: ``default`` serving the ``default`` queue (check_frames, plan_shards, merge)
  and ``gpu`` serving only the ``gpu`` queue, where score_shard goes (VIDEO_AESTHETICS_QUEUE=gpu,
  VIDEO_AESTHETICS_POOL=gpu). Each task's torch threads are the host's CPUs shared between the
  workers' task slots (VIDEO_AESTHETICS_THREADS, unless set).

Usage (the ``celery`` and ``postgres`` extras installed: ``pip install -e ".[celery,postgres]"``)::

    python scripts/celery_stack.py [--output DIR] [--port 8080] [--gpu-slots 1] [--default-concurrency 2]

It prints the UI's address, the admin password and where the results go, runs until Ctrl-C or
SIGTERM, then cleans up (the results stay).
VIDEO_AESTHETICS_* and AIRFLOW__* variables of the calling environment reach every service (those
the stack sets itself excepted). Tests use ``CeleryStack`` directly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379"
# Beside the demo's output (gitignored), outside any AIRFLOW_HOME the stack may remove.
DEFAULT_OUTPUT = REPO / "demo_output" / "celery"
OUTPUT_ROOT_ENV = "VIDEO_AESTHETICS_OUTPUT_ROOT"
FIGURE_ROOT_ENV = "VIDEO_AESTHETICS_FIGURE_ROOT"
DATABASE_PREFIX = "va_celery_"
REDIS_CLAIM_KEY = "video-aesthetics:celery-stack:owner"
# Redis's default 16 databases; 0 is where other programs' keys most often live, so it is never claimed.
REDIS_DATABASES = range(1, 16)
STARTUP_SECONDS = 300.0
STOP_SECONDS = 20.0
SERVICES = ("scheduler", "dag-processor", "api-server", "worker-default", "worker-gpu")
_OWNER_COMMENT = re.compile(r"^video-aesthetics celery_stack (\{.*\})$")


class StackError(RuntimeError):
    """The stack could not be started; the message says what to fix."""


@dataclass
class CeleryStack:
    """A CeleryExecutor deployment of this repository's DAGs on existing PostgreSQL and Redis servers.

    Use as a context manager: entering migrates the new database and starts every service (and
    cleans up if that fails), leaving stops them and removes what the stack made.
    """

    postgres: str = DEFAULT_POSTGRES
    redis: str = DEFAULT_REDIS
    home: Path | None = None
    # The results (scored partitions) and the extracted frames; None: the base environment's
    # VIDEO_AESTHETICS_OUTPUT_ROOT / _FIGURE_ROOT, else DEFAULT_OUTPUT/scored and DEFAULT_OUTPUT/frames.
    output_root: str | Path | None = None
    figure_root: str | Path | None = None
    port: int = 0
    gpu_slots: int = 1
    default_concurrency: int = 2
    user: str = "admin"
    base_env: Mapping[str, str] | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    database: str = ""
    redis_db: int | None = None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    _logs: dict[str, IO[str]] = field(default_factory=dict)
    _own_home: bool = False
    _commands: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)
    _log_starts: dict[str, int] = field(default_factory=dict)
    _groups: list[int] = field(default_factory=list)

    # --- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> CeleryStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        sweep_stale(self.postgres, self.redis)
        if self.home is None:
            self.home = Path(tempfile.mkdtemp(prefix="airflow-celery-"))
            self._own_home = True
        self.home.mkdir(parents=True, exist_ok=True)
        self.check_stores()
        self.port = self.port or free_port()
        self.database = create_database(self.postgres)
        self.redis_db = claim_redis_db(self.redis)
        (self.home / "passwords.json").write_text(json.dumps({self.user: self.password}), encoding="utf-8")
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.airflow("db", "migrate", timeout=600)
        self.airflow("pools", "set", "gpu", str(self.gpu_slots), "GPU task slots: one per GPU of the gpu workers")
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = str(max(1, cpus // (self.gpu_slots + self.default_concurrency)))
        workers = {
            "worker-default": ("default", self.default_concurrency),
            "worker-gpu": ("gpu", self.gpu_slots),
        }
        for name in ("api-server", "scheduler", "dag-processor"):
            self._commands[name] = ([name], self.env)
        for name, (queue, concurrency) in workers.items():
            env = {**self.env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
            env.setdefault("VIDEO_AESTHETICS_THREADS", threads)
            command = ["celery", "worker", "-q", queue, "-H", f"{queue}@{socket.gethostname()}", "-c", str(concurrency)]
            self._commands[name] = (command, env)
        for name in SERVICES:
            self.launch(name)
        self.wait_until_ready()

    def stop(self) -> None:
        """Stop every service and what it started, drop the database, empty the Redis database, remove a temporary home."""
        stop_processes(list(self.processes.values()), self._groups)
        self._groups.clear()
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        if self.database:
            drop_database(self.postgres, self.database)
            self.database = ""
        if self.redis_db is not None:
            release_redis_db(self.redis, self.redis_db)
            self.redis_db = None
        if self._own_home and self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)

    # --- services ---------------------------------------------------------------------------

    def _base(self) -> dict[str, str]:
        return dict(os.environ if self.base_env is None else self.base_env)

    @property
    def stores(self) -> dict[str, str]:
        """Where results and frames go: {VIDEO_AESTHETICS_OUTPUT_ROOT: ..., VIDEO_AESTHETICS_FIGURE_ROOT: ...}."""
        base = self._base()
        chosen = {}
        for env, given, default in (
            (OUTPUT_ROOT_ENV, self.output_root, DEFAULT_OUTPUT / "scored"),
            (FIGURE_ROOT_ENV, self.figure_root, DEFAULT_OUTPUT / "frames"),
        ):
            value = str(given) if given is not None else base.get(env) or str(default)
            # A local folder as an absolute path: the services run with another working directory.
            chosen[env] = value if "://" in value else str(Path(value).expanduser().absolute())
        return chosen

    @property
    def temporary_home(self) -> bool:
        """Whether the home is one the stack made, and removes on exit."""
        return self._own_home

    def check_stores(self) -> None:
        """Refuse a local output or frames folder inside a temporary home, which stop() removes."""
        if not self._own_home or self.home is None:
            return
        home = self.home.resolve()
        for env, value in self.stores.items():
            if "://" not in value and Path(value).resolve().is_relative_to(home):
                raise StackError(
                    f"{env}={value} lies inside the temporary AIRFLOW_HOME {home}, which is removed on exit: "
                    "choose a folder outside it (--output) or keep the home (--home)"
                )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def logs_dir(self) -> Path:
        assert self.home is not None
        return self.home / "logs" / "services"

    @property
    def sql_alchemy_conn(self) -> str:
        return database_url(self.postgres, self.database, "postgresql+psycopg2")

    @property
    def env(self) -> dict[str, str]:
        """The environment every service of the stack runs with."""
        assert self.home is not None and self.redis_db is not None
        base = self._base()
        env = {k: v for k, v in base.items() if k != "AIRFLOW_HOME" and not k.startswith("AIRFLOW__DATABASE__")}
        env.update(
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
            AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=self.sql_alchemy_conn,
            AIRFLOW__CELERY__BROKER_URL=f"{self.redis.rstrip('/')}/{self.redis_db}",
            AIRFLOW__CELERY__RESULT_BACKEND="db+" + database_url(self.postgres, self.database, "postgresql"),
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__API__BASE_URL=self.base_url,
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.base_url}/execution/",
            AIRFLOW__API_AUTH__JWT_SECRET=self._jwt_secret,
            AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{self.user}:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(self.home / "passwords.json"),
            AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="10",
            # score_shard goes to the gpu queue and pool; the other tasks to the default queue.
            VIDEO_AESTHETICS_QUEUE="gpu",
            VIDEO_AESTHETICS_POOL="gpu",
            PYTHONUNBUFFERED="1",
            **self.stores,
        )
        env.update(self.extra_env)
        return env

    @property
    def _jwt_secret(self) -> str:
        assert self.home is not None
        path = self.home / "jwt_secret"
        if not path.exists():
            path.write_text(secrets.token_hex(32), encoding="utf-8")
        return path.read_text(encoding="utf-8")

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run the ``airflow`` CLI with the stack's environment; raise StackError with its output if it fails."""
        run = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if run.returncode != 0:
            raise StackError(
                f"airflow {' '.join(args)} exited {run.returncode}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
            )
        return run

    def launch(self, name: str) -> subprocess.Popen:
        """Start (or start again) the service ``name``; its output is appended to ``<home>/logs/services/<name>.log``."""
        command, env = self._commands[name]
        if name in self._logs:
            self._logs[name].close()
        log = (self.logs_dir / f"{name}.log").open("a", encoding="utf-8")
        self._logs[name] = log
        self._log_starts[name] = len(self.log(name))
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, *command],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own: see stop_processes
        )
        self.processes[name] = process
        self._groups.append(process.pid)
        return process

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the service's main process only, as a crash or the OOM killer would."""
        process = self.processes[name]
        process.send_signal(sig)
        process.wait(timeout=60)

    def log(self, name: str) -> str:
        path = self.logs_dir / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)[-chars:]}" for name in self.processes)

    def wait_until_ready(self, seconds: float = STARTUP_SECONDS) -> None:
        """Return when the api-server answers and both Celery workers are ready; raise StackError when one died."""
        deadline = time.monotonic() + seconds
        pending = {"api-server", "worker-default", "worker-gpu"}
        while pending:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise StackError(f"{name} exited with {process.returncode} during start-up\n{self.log_tail()}")
            if "api-server" in pending and healthy(self.base_url):
                pending.discard("api-server")
            pending -= {name for name in pending if name.startswith("worker-") and self.worker_ready(name)}
            if time.monotonic() > deadline:
                raise StackError(f"{sorted(pending)} not ready after {seconds:.0f} s\n{self.log_tail()}")
            time.sleep(1)

    def worker_ready(self, name: str) -> bool:
        """Whether the worker's latest start reached Celery's "ready" (its log is appended to on restarts)."""
        return " ready." in self.log(name)[self._log_starts.get(name, 0) :]


# --- resources ------------------------------------------------------------------------------


def database_url(admin: str, database: str, scheme: str) -> str:
    """``admin`` (a postgresql:// URL) pointed at ``database``, with ``scheme`` (a SQLAlchemy driver name)."""
    parts = urlsplit(admin)
    return urlunsplit((scheme, parts.netloc, f"/{database}", parts.query, ""))


def _owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _stale(owner: Mapping[str, Any]) -> bool:
    """Whether ``owner`` is a stack process of this host that no longer runs."""
    if owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    return False


def _admin(postgres: str) -> Any:
    try:
        import psycopg2
    except ImportError:
        raise StackError('psycopg2 is missing: install the postgres extra, pip install -e ".[postgres]"') from None
    try:
        connection = psycopg2.connect(postgres)
    except psycopg2.OperationalError as err:
        raise StackError(f"cannot connect to PostgreSQL at {postgres}: {err}".strip()) from None
    connection.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    return connection


def create_database(postgres: str) -> str:
    """A new, empty database with a unique name, marked with its owner so that a crashed stack's can be swept."""
    name = f"{DATABASE_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
    with contextlib.closing(_admin(postgres)) as connection, connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
        cursor.execute(
            f'COMMENT ON DATABASE "{name}" IS %s', (f"video-aesthetics celery_stack {json.dumps(_owner())}",)
        )
    return name


def drop_database(postgres: str, name: str) -> None:
    with contextlib.closing(_admin(postgres)) as connection, connection.cursor() as cursor:
        # FORCE (PostgreSQL 13+) ends the sessions of services that did not exit.
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _redis(url: str, db: int) -> Any:
    try:
        import redis
    except ImportError:
        raise StackError('the redis client is missing: install the celery extra, pip install -e ".[celery]"') from None
    return redis.Redis.from_url(url, db=db)


def claim_redis_db(url: str) -> int:
    """The number of an empty Redis database, claimed with a key that holds this process as its owner."""
    for db in REDIS_DATABASES:
        client = _redis(url, db)
        try:
            claimed = client.set(REDIS_CLAIM_KEY, json.dumps(_owner()), nx=True)
        except Exception as err:  # noqa: BLE001 - redis raises its own tree; all mean the server is unusable
            raise StackError(f"cannot use Redis at {url}: {err}") from None
        if not claimed:
            continue
        if client.dbsize() == 1:  # nobody else's keys: ours now
            return db
        client.delete(REDIS_CLAIM_KEY)
    raise StackError(f"no empty Redis database among {REDIS_DATABASES.start}-{REDIS_DATABASES.stop - 1} at {url}")


def release_redis_db(url: str, db: int) -> None:
    """Remove every key of the claimed database (Celery's queues and results, the claim), if it is still ours."""
    client = _redis(url, db)
    owner = client.get(REDIS_CLAIM_KEY)
    if owner is not None and json.loads(owner) == _owner():
        client.flushdb()


def sweep_stale(postgres: str, redis_url: str) -> None:
    """Drop the databases and empty the Redis databases of stacks of this host whose process is gone (killed outright)."""
    with contextlib.closing(_admin(postgres)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database WHERE datname LIKE %s",
            (DATABASE_PREFIX + "%",),
        )
        for name, comment in cursor.fetchall():
            match = _OWNER_COMMENT.match(comment or "")
            if match and _stale(json.loads(match.group(1))):
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for db in REDIS_DATABASES:
        client = _redis(redis_url, db)
        owner = client.get(REDIS_CLAIM_KEY)
        if owner is not None and _stale(json.loads(owner)):
            client.flushdb()


# --- processes ------------------------------------------------------------------------------


# Runs each service: a stack whose owner dies (a closed terminal, a killed test) must not leave services
# behind, so each asks for SIGTERM when its parent exits (PR_SET_PDEATHSIG, kept across exec), then
# becomes ``python -m airflow ...``. Not preexec_fn, which is unsafe in a process with threads.
LAUNCHER = (
    "import ctypes, os, sys; ctypes.CDLL(None).prctl(1, 15, 0, 0, 0); "
    "os.execv(sys.executable, [sys.executable, '-m', 'airflow', *sys.argv[1:]])"
)


def stop_processes(processes: list[subprocess.Popen], groups: list[int], grace: float = STOP_SECONDS) -> None:
    """SIGTERM the services and their process groups, then SIGKILL whatever is left.

    Each service leads its own process group, which keeps the helpers it starts (a Celery worker's
    log server, say) even when they outlive it; task processes, which Airflow puts in groups of
    their own, are found as descendants.
    """
    import psutil

    family: dict[int, psutil.Process] = {}
    for pid in {*groups, *(p.pid for p in processes)}:
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(pid)
            for member in (parent, *parent.children(recursive=True)):
                family[member.pid] = member
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
    _, alive = psutil.wait_procs(list(family.values()), timeout=grace)
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    for survivor in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            for member in (survivor, *survivor.children(recursive=True)):
                member.kill()
    psutil.wait_procs(alive, timeout=10)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(base_url: str) -> bool:
    """Whether the api-server answers on its REST API and on its Execution API.

    The Execution API builds its versioned routes on its first request, in the server's event loop,
    and every other request waits meanwhile (seconds; far longer on a busy host): asked here, that
    happens during start-up rather than when the first task starts and the UI is in use.
    """
    try:
        for path, timeout in (("/api/v2/monitor/health", 5), ("/execution/health", 180)):
            with urllib.request.urlopen(f"{base_url}{path}", timeout=timeout) as response:
                if response.status != 200:
                    return False
        return True
    except (urllib.error.URLError, OSError):
        return False


# --- command line ---------------------------------------------------------------------------


def banner(stack: CeleryStack) -> str:
    """What the user needs once the stack is up: the address, the login, and where the results stay."""
    stores = stack.stores
    home = f"AIRFLOW_HOME {stack.home}" + (" (temporary: removed on exit)" if stack.temporary_home else "")
    return (
        f"Airflow is up at {stack.base_url} (user {stack.user}, password {stack.password})\n"
        f"results:  {stores[OUTPUT_ROOT_ENV]}  (kept on exit)\n"
        f"frames:   {stores[FIGURE_ROOT_ENV]}  (kept on exit)\n"
        f"database {stack.database}, Redis database {stack.redis_db}, {home}\n"
        f"service logs in {stack.logs_dir}; Ctrl-C stops everything and cleans up (the results stay)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="an admin URL of the PostgreSQL server")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="the Redis server, without a database number")
    parser.add_argument("--home", type=Path, help="AIRFLOW_HOME to use and keep (default: a temporary one)")
    parser.add_argument(
        "--output",
        type=Path,
        help=f"folder for the results (OUTPUT/scored) and extracted frames (OUTPUT/frames), kept on exit "
        f"(default: {OUTPUT_ROOT_ENV} and {FIGURE_ROOT_ENV} if set, else {DEFAULT_OUTPUT})",
    )
    parser.add_argument("--port", type=int, default=8080, help="the api-server's port (0: any free one)")
    parser.add_argument("--gpu-slots", type=int, default=1, help="score_shard tasks at once: the gpu pool and worker")
    parser.add_argument("--default-concurrency", type=int, default=2, help="task slots of the default worker")
    args = parser.parse_args(argv)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    stack = CeleryStack(
        postgres=args.postgres,
        redis=args.redis,
        home=args.home,
        output_root=args.output / "scored" if args.output else None,
        figure_root=args.output / "frames" if args.output else None,
        port=args.port,
        gpu_slots=args.gpu_slots,
        default_concurrency=args.default_concurrency,
    )
    try:
        with stack:
            print(banner(stack), flush=True)
            while not stopping.wait(2):
                exited = [name for name, process in stack.processes.items() if process.poll() is not None]
                if exited:
                    print(f"{', '.join(exited)} exited; stopping\n{stack.log_tail()}", file=sys.stderr)
                    return 1
    except StackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
