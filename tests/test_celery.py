"""The DAG on CeleryExecutor with PostgreSQL and Redis, started by scripts/celery_stack.py, and faults.

A scheduler, a dag-processor, an api-server and two Celery workers run on this machine's PostgreSQL
and Redis (their own database and Redis database number, removed afterwards); the ``gpu`` worker
serves only the ``gpu`` queue, where score_shard goes, with the DAG's default decoding workers: a
prefork pool's task process is daemonic, which once failed every shard.

Faults, each while a shard is being scored (its decoding workers running): the task process
SIGKILLed; its supervisor (the Celery pool process) SIGKILLed, whose task process must then die
too; the gpu worker SIGKILLed and restarted; the scheduler SIGKILLed and restarted. Each run must
still succeed with every record once, in input order, the CLI's bytes, and no staging or
temporary file left. Skip them with ``-m "not celery"``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from helpers.airflow_env import REPO, published
from helpers.cli import score_args
from helpers.media import frame_dataset, read_jsonl
from helpers.services import postgres_url, redis_url
from video_aesthetics.sharding import safe_name

pytestmark = [
    pytest.mark.slow,
    pytest.mark.celery,
    pytest.mark.requires_postgres,
    pytest.mark.requires_redis,
    pytest.mark.timeout(1800),
]

DAG_ID = "video_aesthetic_scoring"
# Generous: on a loaded machine (one core, another suite beside) a shard takes minutes to start.
RUN_SECONDS = 600
# One request's bound: a busy 2-core machine has stalled an api-server write past 30 s.
HTTP_SECONDS = 120
# Short, so that a lost worker's task is retried within the test (Airflow's default: 300 s).
HEARTBEAT_TIMEOUT = 30
WORKLOAD = re.compile(r"Executing workload in Celery: .*?task_id='(\w+)'")


def _load_stack_module() -> Any:
    """scripts/celery_stack.py, which is a script, not part of the package."""
    sys.path.insert(0, str(REPO / "scripts"))
    import celery_stack

    return celery_stack


celery_stack = _load_stack_module()


class Client:
    """The stack's REST API, logged in as its admin."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        login = requests.post(
            f"{stack.base_url}/auth/token",
            json={"username": stack.user, "password": stack.password},
            timeout=HTTP_SECONDS,
        )
        assert login.status_code == 201, login.text
        self.headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(
            method, f"{self.stack.base_url}{path}", headers=self.headers, timeout=HTTP_SECONDS, **kwargs
        )
        assert response.ok, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def task_instances(self, run_id: str) -> list[dict[str, Any]]:
        return self("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100})[
            "task_instances"
        ]

    def shard(self, run_id: str, map_index: int) -> dict[str, Any]:
        """The shard's task instance; empty before plan_shards has mapped it."""
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/score_shard/{map_index}"
        response = requests.get(f"{self.stack.base_url}{path}", headers=self.headers, timeout=HTTP_SECONDS)
        if response.status_code == 404:
            return {}
        assert response.ok, f"GET {path}: {response.status_code} {response.text}"
        return response.json()

    def trigger(self, conf: dict[str, Any]) -> str:
        return self("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})["dag_run_id"]

    def run_state(self, run_id: str) -> str:
        return self("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]


def _wait(what: str, check: Callable[[], Any], seconds: float, stack: Any, every: float = 1.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, process in stack.processes.items():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode} while waiting for {what}\n{stack.log_tail()}")
        with contextlib.suppress(requests.RequestException):
            value = check()
            if value:
                return value
        time.sleep(every)
    pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}\n{stack.log_tail()}")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Eight videos of ten clips with their frames: four shards of twenty clips; and the CLI's output for them."""
    root = tmp_path_factory.mktemp("celery_data")
    source, figure_root = frame_dataset(root, videos=8, clips_per_video=10, frames_per_clip=3)
    return {"root": root, "source": source, "figure_root": figure_root, "output_root": root / "output"}


@pytest.fixture(scope="module")
def cli_output(world: dict[str, Path], model_args: dict[str, str]) -> bytes:
    out = world["root"] / "cli.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "video_aesthetics",
            *score_args(world["source"], out, model_args, figure_root=world["figure_root"]),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out.read_bytes()


@pytest.fixture(scope="module")
def stack(world: dict[str, Path], model_args: dict[str, str]) -> Iterator[Any]:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    base_env.update(
        VIDEO_AESTHETICS_OUTPUT_ROOT=str(world["output_root"]),
        VIDEO_AESTHETICS_FIGURE_ROOT=str(world["figure_root"]),
        VIDEO_AESTHETICS_CLIP_MODEL=model_args["clip_model"],
        VIDEO_AESTHETICS_MLP_CHECKPOINT=model_args["mlp_checkpoint"],
        VIDEO_AESTHETICS_DEVICE="cpu",
        VIDEO_AESTHETICS_SCHEDULE="none",
    )
    extra = {
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        # A scheduler restarted at once adopts its predecessor's tasks at this interval (default 300 s).
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "15",
        "AIRFLOW__CORE__PARALLELISM": "8",
    }
    with celery_stack.CeleryStack(
        postgres=postgres_url(), redis=redis_url(), port=0, base_env=base_env, extra_env=extra
    ) as running:
        assert running.stores["VIDEO_AESTHETICS_OUTPUT_ROOT"] == str(world["output_root"])
        assert str(world["output_root"]) in celery_stack.banner(running)
        yield running
        groups = list(running._groups)
        url, redis_db = running.sql_alchemy_conn, running.redis_db
        home = running.home
        results = sorted(p for p in world["output_root"].rglob("*") if p.is_file())
    # The temporary home is gone; the results, which live outside it, are not.
    assert home is not None and not home.exists()
    assert results and all(p.is_file() for p in results)
    # Everything the stack made is gone: processes (helpers of killed workers too), database, Redis keys.
    assert not [group for group in groups if _group_alive(group)]
    assert not _databases(running.postgres, url)
    assert not celery_stack._redis(running.redis, redis_db).dbsize()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _databases(postgres: str, url: str) -> list[str]:
    name = url.rsplit("/", 1)[1]
    connection = celery_stack._admin(postgres)
    with contextlib.closing(connection), connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname = %s", (name,))
        return [row[0] for row in cursor.fetchall()]


@pytest.fixture(scope="module")
def api(stack: Any) -> Client:
    client = Client(stack)
    _wait("the DAG to be registered", lambda: client("GET", f"/api/v2/dags/{DAG_ID}"), 240, stack)
    client("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
    return client


def _conf(world: dict[str, Path]) -> dict[str, Any]:
    return {"input_path": str(world["source"]), "chunk_size": 2}


def _scoring(
    api: Client, run_id: str, map_index: int, try_number: int = 1, staging: Path | None = None
) -> tuple[dict[str, Any], psutil.Process]:
    """The shard's attempt and its task process, once that is scoring (its decoding workers have started).

    With ``staging``, also once its scored shard is being written there (its temporary file exists).
    """

    def started() -> tuple[dict[str, Any], psutil.Process] | None:
        ti = api.shard(run_id, map_index)
        if ti.get("try_number", 0) > try_number or (ti.get("try_number") == try_number and ti["state"] == "success"):
            pytest.fail(f"shard {map_index} try {try_number} ended before it was caught scoring: {ti}")
        if ti.get("state") != "running" or ti["try_number"] != try_number or not ti.get("pid"):
            return None
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(ti["pid"])
            writing = staging is None or any(staging.rglob(f".shard-{map_index:05d}.jsonl.*.tmp"))
            if process.children() and writing:
                return ti, process
        return None

    return _wait(f"shard {map_index} try {try_number} to score", started, RUN_SECONDS, api.stack, every=0.02)


def _worker_of(process: psutil.Process, stack: Any) -> str:
    mains = {stack.processes[name].pid: name for name in ("worker-default", "worker-gpu")}
    return next(mains[p.pid] for p in process.parents() if p.pid in mains)


def _gone(pids: list[int], seconds: float = 15) -> float:
    """Seconds until every one of ``pids`` has exited; fails after ``seconds``."""
    started = time.monotonic()
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() - started < seconds, f"still running: {[p for p in pids if _alive(p)]}"
        time.sleep(0.05)
    return time.monotonic() - started


def _finished(api: Client, run_id: str) -> str:
    state = _wait(
        f"run {run_id} to finish",
        lambda: (s := api.run_state(run_id)) in ("success", "failed") and s,
        RUN_SECONDS,
        api.stack,
        every=2,
    )
    return state


def _check_output(world: dict[str, Path], run_id: str, cli_output: bytes) -> None:
    partition = world["output_root"] / safe_name(run_id)
    manifest, scored = published(partition)
    assert scored.read_bytes() == cli_output
    ids = [c["id"] for r in read_jsonl(scored) for c in r["video_clips"]["clips"]]
    assert ids == [c["id"] for r in read_jsonl(world["source"]) for c in r["video_clips"]["clips"]]
    assert len(ids) == len(set(ids)) == 80
    assert manifest["clips"]["scored"] == 80
    leftovers = [p for p in world["output_root"].rglob("*") if p.name.startswith(".") or "_staging" in p.parts]
    assert not leftovers, leftovers


def _ended(api: Client, run_id: str, map_index: int, try_number: int) -> float:
    """When the shard's attempt was marked ended (a Unix time)."""
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/score_shard/{map_index}/tries/{try_number}"
    attempt = api("GET", path)
    assert attempt["state"] == "failed", attempt
    return datetime.fromisoformat(attempt["end_date"].replace("Z", "+00:00")).timestamp()


def _timing(what: str, seconds: float) -> None:
    # Reported, not asserted: recovery times go in the README, not in pass/fail.
    print(f"TIMING {what}: {seconds:.1f} s", flush=True)


def _executed(stack: Any, worker: str) -> set[str]:
    return set(WORKLOAD.findall(stack.log(worker)))


def test_killed_task_process_and_supervisor_are_retried_on_the_gpu_worker(
    api: Client, stack: Any, world: dict[str, Path], cli_output: bytes
) -> None:
    run_id = api.trigger(_conf(world))

    # The task process of shard 0, SIGKILLed mid-shard (stopped first, so that it is caught scoring).
    ti, task = _scoring(api, run_id, 0, staging=world["output_root"] / "_staging")
    assert _worker_of(task, stack) == "worker-gpu" and ti["queue"] == "gpu" and ti["pool"] == "gpu"
    workers = task.children()
    task.send_signal(signal.SIGSTOP)
    staged = list((world["output_root"] / "_staging").rglob(".shard-00000.jsonl.*.tmp"))
    assert staged, "shard 0 was not being written when it was stopped"
    task.send_signal(signal.SIGKILL)
    task_killed = time.monotonic(), time.time()
    _gone([w.pid for w in workers])  # its decoding workers die with it

    # The gpu slot goes to shard 1: its supervisor (the Celery pool process) SIGKILLed, its task process must die too.
    _, task = _scoring(api, run_id, 1)
    supervisor = task.parent()
    assert supervisor is not None and supervisor.ppid() == stack.processes["worker-gpu"].pid  # a prefork pool process
    assert "airflow supervisor" in " ".join(supervisor.cmdline())
    orphans = [task.pid, *(w.pid for w in task.children())]
    supervisor.send_signal(signal.SIGKILL)
    supervisor_killed = time.monotonic(), time.time()
    _timing("supervisor killed -> its task process and decoding workers gone", _gone(orphans))

    for index, (killed, wall) in ((0, task_killed), (1, supervisor_killed)):
        _wait(
            f"shard {index} to be retried",
            lambda i=index: api.shard(run_id, i).get("try_number") == 2,
            RUN_SECONDS,
            stack,
        )
        _timing(f"shard {index}: kill -> try 1 marked failed", _ended(api, run_id, index, 1) - wall)
        _scoring(api, run_id, index, try_number=2)
        _timing(f"shard {index}: kill -> try 2 scoring", time.monotonic() - killed)

    assert _finished(api, run_id) == "success", stack.log_tail()
    _timing("run with two killed attempts", api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["duration"])
    tis = api.task_instances(run_id)
    assert {t["state"] for t in tis} == {"success"}
    assert {(t["task_id"], t["queue"]) for t in tis} == {
        ("check_frames", "default"),
        ("plan_shards", "default"),
        ("score_shard", "gpu"),
        ("merge", "default"),
    }
    assert sorted(t["try_number"] for t in tis if t["task_id"] == "score_shard") == [1, 1, 2, 2]
    assert _executed(stack, "worker-gpu") == {"score_shard"}
    assert _executed(stack, "worker-default") == {"check_frames", "plan_shards", "merge"}
    _check_output(world, run_id, cli_output)


def test_a_killed_gpu_worker_and_scheduler_are_survived(
    api: Client, stack: Any, world: dict[str, Path], cli_output: bytes
) -> None:
    run_id = api.trigger(_conf(world))
    _, task = _scoring(api, run_id, 0)
    supervisor = task.parent()
    assert supervisor is not None
    family = [supervisor.pid, task.pid, *(w.pid for w in task.children())]
    stack.kill("worker-gpu")  # the worker's main process, as a crash would: its pool and tasks go with it
    killed, wall = time.monotonic(), time.time()
    _timing("gpu worker killed -> its pool process, task process and decoding workers gone", _gone(family))

    # The scheduler dies while the lost attempt still counts as running (before the worker is back, so
    # that a slow worker start cannot outlast the heartbeat timeout first), and comes back.
    assert api.shard(run_id, 0)["state"] == "running"
    stack.kill("scheduler")
    time.sleep(5)
    stack.launch("scheduler")
    _timing("gpu worker killed -> scheduler restarted", time.monotonic() - killed)
    stack.launch("worker-gpu")
    _wait("the gpu worker to restart", lambda: stack.worker_ready("worker-gpu"), 120, stack)
    _timing("gpu worker killed -> restarted worker ready", time.monotonic() - killed)
    _wait("shard 0 to be retried", lambda: api.shard(run_id, 0).get("try_number") == 2, RUN_SECONDS, stack)
    _timing("gpu worker killed -> try 1 marked failed", _ended(api, run_id, 0, 1) - wall)
    _scoring(api, run_id, 0, try_number=2)
    _timing("gpu worker killed -> try 2 scoring", time.monotonic() - killed)

    assert _finished(api, run_id) == "success", stack.log_tail()
    assert _executed(stack, "worker-gpu") == {"score_shard"}
    _check_output(world, run_id, cli_output)
    for line in stack.log("scheduler").splitlines():
        if re.search(r"orphan|Adopt|Marked \d+ SchedulerJob|without heartbeat|heartbeat", line):
            print("SCHEDULER", line[:300])
