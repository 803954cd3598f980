"""A throw-away Airflow installation for tests: its own AIRFLOW_HOME, SQLite database and this repo's DAGs.

Airflow reads its configuration when it is first imported, so every test that runs Airflow's core
(dag.test(), the scheduler, the CLI) does so in a child process started with ``airflow_env(...)``.
Tests that import the Task SDK in-process (operators, ObjectStoragePath) call
``use_private_airflow_home()`` first. The database is migrated once per session into a template and
copied for each installation (a migration takes far longer than a copy).
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
PLUGINS = REPO / "plugins"
DB_NAME = "airflow.db"
EXECUTION_API_FIRST_CALL_SECONDS = 180

_template: Path | None = None
_in_process_home: Path | None = None


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of an Airflow process using ``home``: LocalExecutor, SQLite, no example DAGs.

    AIRFLOW__* variables of the calling environment are dropped so that nothing outside the test
    changes what Airflow does; ``extra`` adds or overrides variables.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(PLUGINS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        # Several processes write to one SQLite file: wait for a lock for up to a minute, as a server would.
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / DB_NAME}?timeout=60",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"),
    )
    env.update(extra)
    return env


def use_private_airflow_home() -> Path:
    """Point this process's Airflow at a private temporary home; call before anything imports airflow.

    For tests that import the Task SDK in-process (operators, ObjectStoragePath): importing airflow
    reads its configuration and creates AIRFLOW_HOME, which must never be the user's ~/airflow. A
    child process started by ``airflow_env`` gets its own home anyway.
    """
    global _in_process_home
    if _in_process_home is None:
        home = Path(tempfile.mkdtemp(prefix="airflow_home_"))
        atexit.register(shutil.rmtree, home, True)
        # Only the home: child processes of later tests inherit this environment, and a database URL or
        # DAG folder set here would override theirs.
        os.environ["AIRFLOW_HOME"] = str(home)
        _in_process_home = home
    return _in_process_home


def api_server_env(home: Path, port: int, **extra: str) -> dict[str, str]:
    """airflow_env for an api-server on 127.0.0.1:``port`` whose tasks (dag.test(), schedulers) reach it."""
    base_url = f"http://127.0.0.1:{port}"
    return airflow_env(
        home,
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__BASE_URL=base_url,
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{base_url}/execution/",
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        **extra,
    )


def airflow(env: dict[str, str], *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run the ``airflow`` CLI of this interpreter's environment."""
    run = subprocess.run(
        [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and run.returncode != 0:
        raise AssertionError(
            f"airflow {' '.join(args)} exited {run.returncode}:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
        )
    return run


def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose database has been migrated, made once per test session."""
    global _template
    if _template is None or not (_template / DB_NAME).is_file():
        home = tmp_path_factory.mktemp("airflow_template")
        airflow(airflow_env(home), "db", "migrate", timeout=600)
        _template = home
    return _template


def new_home(tmp_path_factory: pytest.TempPathFactory, name: str = "airflow_home") -> Path:
    """A fresh AIRFLOW_HOME holding a copy of the migrated database."""
    template = migrated_template(tmp_path_factory)
    home = tmp_path_factory.mktemp(name)
    shutil.copy2(template / DB_NAME, home / DB_NAME)
    return home


_DAG_TEST = textwrap.dedent(
    """
    import json, sys
    import pendulum
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.asset import AssetEvent
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    args = json.loads(sys.argv[1])
    bag = DagBag(dag_folder=args["dags"])
    if bag.import_errors:
        print("RESULT " + json.dumps([{"error": "ImportError", "message": str(bag.import_errors)}]))
        sys.exit(3)
    dag = bag.dags[args["dag_id"]]

    def outcome(run):
        with create_session() as session:
            tis = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag.dag_id,
                                                             TaskInstance.run_id == run.run_id)).all()
            tasks = [{"task_id": ti.task_id, "map_index": ti.map_index, "state": str(ti.state),
                      "rendered_map_index": ti.rendered_map_index, "try_number": ti.try_number} for ti in tis]
            rows = session.scalars(select(XComModel).where(XComModel.dag_id == dag.dag_id,
                                                           XComModel.run_id == run.run_id)).all()
            xcom = {f"{row.task_id}[{row.map_index}].{row.key}": row.value for row in rows}
            events = session.scalars(select(AssetEvent).where(AssetEvent.source_dag_id == dag.dag_id,
                                                              AssetEvent.source_run_id == run.run_id)).all()
            assets = [{"name": event.asset.name, "uri": event.asset.uri, "extra": event.extra} for event in events]
        return {"state": str(run.state), "run_id": run.run_id, "logical_date": str(run.logical_date),
                "tasks": tasks, "xcom": xcom, "asset_events": assets}

    results = []
    for spec in args["runs"]:
        logical_date = pendulum.parse(spec["logical_date"]) if spec.get("logical_date") else None
        try:
            results.append(outcome(dag.test(run_conf=spec.get("conf"), logical_date=logical_date)))
        except Exception as err:
            results.append({"error": type(err).__name__, "message": str(err)})
        print("RUN DONE " + str(len(results)), flush=True)
    print("RESULT " + json.dumps(results, default=str))
    """
)


def dag_test(
    env: dict[str, str], dag_id: str, runs: list[dict[str, Any]], timeout: float = 600, cwd: Path | None = None
) -> list[dict[str, Any]]:
    """Run ``dag.test()`` for each of ``runs`` ({"conf": ..., "logical_date": "YYYY-MM-DD"}) in one child process.

    One process for all runs: starting Airflow's in-process API and importing torch dominate a
    small run. Each outcome holds the run's state, its task states and XComs; a failure before any
    task runs (an import error, a refused param) is ``{"error": <exception class>, "message": ...}``.
    The combined log of the child is in each outcome's "log".
    """
    args = {"dags": env["AIRFLOW__CORE__DAGS_FOLDER"], "dag_id": dag_id, "runs": runs}
    run = subprocess.run(
        [sys.executable, "-c", _DAG_TEST, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise AssertionError(
            f"dag.test() printed no result (exit {run.returncode}):\n{run.stdout[-6000:]}\n{run.stderr[-6000:]}"
        )
    results = json.loads(lines[-1][len("RESULT ") :])
    for result in results:
        result["log"] = run.stdout + run.stderr
    return results


def parse_dag_folder(code: str, env: dict[str, str]) -> Any:
    """Run ``code`` (which parses the DAG folder named by ``sys.argv[1]``) in a fresh interpreter with
    ``env``; the JSON it prints last. A fresh process parses as the dag-processor does, with no state
    of this one's imports."""
    run = subprocess.run(
        [sys.executable, "-c", code, env["AIRFLOW__CORE__DAGS_FOLDER"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def api_server_ready(base_url: str) -> bool:
    """Whether the api-server at ``base_url`` answers on its REST API and on its Execution API.

    The Execution API builds its versioned routes (Cadwyn) on its first request, in the server's
    event loop, and every other request waits meanwhile: 5 s on this machine idle, 12 s beside three
    spinning processes on its 2 cores, and once past the 30 s a test's REST call waits, when the first task
    started. Asking it here, with time to spare, moves that wait to start-up.
    """
    try:
        return (
            requests.get(f"{base_url}/api/v2/monitor/health", timeout=5).ok
            and requests.get(f"{base_url}/execution/health", timeout=EXECUTION_API_FIRST_CALL_SECONDS).ok
        )
    except requests.RequestException:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def published(partition: Path) -> tuple[dict[str, Any], Path]:
    """A partition's current result as readers find it: its manifest, and the scored file the manifest names."""
    manifest = json.loads((partition / "_manifest.json").read_text(encoding="utf-8"))
    return manifest, Path(manifest["output"]["path"])


def partition_files(partition: Path) -> dict[str, bytes]:
    """Every file under ``partition`` (versions included), by relative path: a byte-for-byte snapshot."""
    return {str(p.relative_to(partition)): p.read_bytes() for p in sorted(partition.rglob("*")) if p.is_file()}
