#!/usr/bin/env python3
"""``make ui``: Airflow's UI on this machine, with the DAG, the plugin and one scored run of the demo's sample.

No Docker, no PostgreSQL, no Redis: an api-server, a scheduler and a dag-processor on SQLite with
LocalExecutor (Airflow 3 has no SequentialExecutor; LocalExecutor on SQLite is what ``airflow
standalone`` runs too). Everything lives in one folder, ``--out`` (``make ui OUT=...``), by default
this checkout's ``demo_output/`` (gitignored), shared with ``make demo``::

    <out>/sample/      the demo's generated videos and clips.jsonl (made once)
    <out>/frames/      frames the DAG extracts (figure_root)
    <out>/scored/      the output store: one partition per run (output_root)
    <out>/ui-airflow/  AIRFLOW_HOME: airflow.cfg, the SQLite database, logs, the login

Steps: check the weights (as ``make demo`` does: VIDEO_AESTHETICS_CLIP_MODEL and
VIDEO_AESTHETICS_MLP_CHECKPOINT point at local files), make the sample if it is not there, migrate
the database, start the three services, unpause the DAG and trigger one run of the sample when the
DAG has none yet, print the address and the login, and run until Ctrl-C, which stops every
service (the folder stays; the next ``make ui`` finds its runs again).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from celery_stack import LAUNCHER, free_port, healthy, stop_processes  # found through the path above

REPO = Path(__file__).resolve().parents[1]
DAG_ID = "video_aesthetic_scoring"
DEFAULT_OUT = REPO / "demo_output"
HOME_NAME = "ui-airflow"
USER = "admin"
SERVICES = ("api-server", "scheduler", "dag-processor")
STARTUP_SECONDS = 300.0
# The sample's size: small enough that its run ends within minutes on a laptop's CPU.
SAMPLE = {"videos": 2, "clips_per_video": 2, "seconds": 3.0}


class UiError(Exception):
    """Something the user can fix: printed as a message, the command exits with status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="make ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for everything this writes")
    parser.add_argument("--port", type=int, default=8080, help="the api-server's port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--num-workers", type=int, default=0, help="frame decoding processes per shard of the run")
    parser.add_argument(
        "--no-trigger", action="store_true", help="do not trigger the sample's run (by default: when the DAG has none)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    from video_aesthetics.airflow.demo import DemoError
    from video_aesthetics.errors import VideoAestheticsError

    ui: LocalAirflow | None = None
    try:
        ui = LocalAirflow(out=prepare_out(args.out), port=args.port)
        return ui.serve(args, stopping)
    except (UiError, DemoError, VideoAestheticsError) as err:
        # Each says what to change; a traceback would only hide that.
        print(f"\nmake ui: error: {err}", file=sys.stderr)
        return 2
    finally:
        if ui is not None:
            ui.stop()


def prepare_out(out: Path) -> Path:
    """The output folder, absolute; the demo's rules: a folder the demo or ``make ui`` made, or an empty or new one."""
    from video_aesthetics.airflow.demo import DemoError
    from video_aesthetics.airflow.demo import prepare_out as demo_prepare_out

    try:
        return demo_prepare_out(out)
    except DemoError as err:
        raise UiError(str(err).replace("--out", "OUT (--out)")) from None


class LocalAirflow:
    """The three services on SQLite in ``<out>/ui-airflow``, started and stopped together."""

    def __init__(self, out: Path, port: int) -> None:
        self.out = out
        self.home = out / HOME_NAME
        self.port = port
        self.processes: dict[str, subprocess.Popen] = {}
        self._logs: dict[str, IO[str]] = {}
        self._token = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs" / "services"

    def serve(self, args: argparse.Namespace, stopping: threading.Event) -> int:
        from video_aesthetics.airflow.demo import check_weights, sample_conf, weights_from_env

        self.port = self.port or free_port()
        if not port_free(self.port):
            raise UiError(f"port {self.port} on 127.0.0.1 is in use: choose another, make ui PORT=8081 (--port)")
        model = weights_from_env()
        say("1/5 checking the model weights" + (f" ({', '.join(model.values())})" if model else ""))
        identity = check_weights(model.get("clip_model"), model.get("mlp_checkpoint"))
        say(f"    CLIP {identity['clip']}, head {identity['head']}")
        jsonl, records = self.sample()
        conf = sample_conf(self.out, jsonl, max(1, math.ceil(records / 2)), 8, args.num_workers, model)
        env = self.env(jsonl, model)
        say(f"3/5 preparing Airflow in {self.home} (SQLite)")
        self.airflow(env, "db", "migrate")
        say("4/5 starting the api-server, the scheduler and the dag-processor (a minute or two)")
        for name in SERVICES:
            self.launch(name, env)
        self.wait_until_ready(env, stopping)
        run_id = None if args.no_trigger else self.trigger_first_run(conf)
        say(self.banner(run_id))
        while not stopping.wait(2):
            exited = [name for name, process in self.processes.items() if process.poll() is not None]
            if exited:
                raise UiError(f"{', '.join(exited)} exited; see {self.logs_dir}\n{self.log_tail()}")
        say("stopping; everything stays in " + str(self.out))
        return 0

    # --- set-up -------------------------------------------------------------------------------

    def sample(self) -> tuple[Path, int]:
        """The demo's sample in <out>/sample, made once (later starts reuse it and its runs)."""
        from video_aesthetics.sample_data import CLIPS_FILE, generate_sample

        jsonl = self.out / "sample" / CLIPS_FILE
        if not jsonl.is_file():
            say(f"2/5 generating the sample dataset in {jsonl.parent}")
            generate_sample(self.out / "sample", **SAMPLE)
        else:
            say(f"2/5 using the sample dataset in {jsonl.parent}")
        records = sum(1 for line in jsonl.read_text(encoding="utf-8").splitlines() if line.strip())
        return jsonl, records

    def env(self, jsonl: Path, model: dict[str, str]) -> dict[str, str]:
        """The services' environment: the demo's local Airflow, plus the api-server, the login and the sample's defaults."""
        from video_aesthetics.airflow.demo import airflow_env

        self.home.mkdir(parents=True, exist_ok=True)
        env = airflow_env(self.home, REPO / "dags")
        env.update(
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__API__BASE_URL=self.base_url,
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.base_url}/execution/",
            AIRFLOW__API_AUTH__JWT_SECRET=self._secret("jwt_secret"),
            AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USER}:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(self.passwords_file),
            # Not Airflow's fixed 8793/8794: another Airflow on this machine must not stop this one.
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
            AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="10",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            # Several processes write to one SQLite file: wait for a lock instead of failing at once.
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{self.home / 'airflow.db'}?timeout=60",
            # The trigger form's defaults: the sample, and every result inside <out>.
            VIDEO_AESTHETICS_INPUT_PATH=str(jsonl),
            VIDEO_AESTHETICS_OUTPUT_ROOT=str(self.out / "scored"),
            VIDEO_AESTHETICS_FIGURE_ROOT=str(self.out / "frames"),
            VIDEO_AESTHETICS_VIDEO_ROOT=str(jsonl.parent),
        )
        env.update({f"VIDEO_AESTHETICS_{key.upper()}": value for key, value in model.items()})
        env.pop("VIDEO_AESTHETICS_INPUT_ROOT", None)  # a scheduled run must not read another folder
        return env

    @property
    def passwords_file(self) -> Path:
        return self.home / "passwords.json"

    @property
    def password(self) -> str:
        """The admin's password: made once per home and kept there, so the login survives restarts."""
        if self.passwords_file.is_file():
            with contextlib.suppress(ValueError, AttributeError):
                saved = json.loads(self.passwords_file.read_text(encoding="utf-8")).get(USER)
                if isinstance(saved, str) and saved:
                    return saved
        password = secrets.token_urlsafe(12)
        _write_private(self.passwords_file, json.dumps({USER: password}))
        return password

    def _secret(self, name: str) -> str:
        path = self.home / name
        if not path.is_file():
            _write_private(path, secrets.token_hex(32))
        return path.read_text(encoding="utf-8").strip()

    def airflow(self, env: dict[str, str], *args: str) -> None:
        log = self.home / "ui-setup.log"
        with log.open("a", encoding="utf-8") as handle:
            run = subprocess.run(
                [sys.executable, "-m", "airflow", *args],
                env=env,
                cwd=self.home,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=900,
                check=False,
            )
        if run.returncode != 0:
            tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:])
            raise UiError(f"airflow {' '.join(args)} failed (exit status {run.returncode}); the end of {log}:\n{tail}")

    # --- services -----------------------------------------------------------------------------

    def launch(self, name: str, env: dict[str, str]) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log = (self.logs_dir / f"{name}.log").open("a", encoding="utf-8")
        self._logs[name] = log
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, name],
            env=env,
            cwd=self.home,  # whatever a service writes relative to its working directory stays in <out>
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> None:
        stop_processes(list(self.processes.values()), [p.pid for p in self.processes.values()])
        for log in self._logs.values():
            log.close()
        self._logs.clear()

    def log_tail(self, chars: int = 2000) -> str:
        parts = []
        for name in self.processes:
            path = self.logs_dir / f"{name}.log"
            text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
            parts.append(f"--- {name}\n{text[-chars:]}")
        return "\n".join(parts)

    def wait_until_ready(self, env: dict[str, str], stopping: threading.Event) -> None:
        """Return once the api-server answers and the DAG is registered; UiError when a service died or it took too long."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while not (healthy(self.base_url) and self.dag_registered()):
            exited = [name for name, process in self.processes.items() if process.poll() is not None]
            if exited:
                raise UiError(f"{', '.join(exited)} exited during start-up; see {self.logs_dir}\n{self.log_tail()}")
            if stopping.is_set():
                raise UiError("interrupted during start-up")
            if time.monotonic() > deadline:
                raise UiError(f"Airflow was not ready after {STARTUP_SECONDS:.0f} s; see {self.logs_dir}")
            time.sleep(2)

    # --- the REST API -------------------------------------------------------------------------

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if not self._token:
            self._token = self._login()
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def _login(self) -> str:
        request = urllib.request.Request(
            f"{self.base_url}/auth/token",
            method="POST",
            data=json.dumps({"username": USER, "password": self.password}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["access_token"]

    def dag_registered(self) -> bool:
        try:
            self.api("GET", f"/api/v2/dags/{DAG_ID}")
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return True

    def trigger_first_run(self, conf: dict[str, Any]) -> str | None:
        """Unpause the DAG and trigger the sample's run, unless the DAG already has runs (a second ``make ui``)."""
        self.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
        if self.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=1")["total_entries"]:
            return None
        run = self.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
        return str(run["dag_run_id"])

    def banner(self, run_id: str | None) -> str:
        dag = f"{self.base_url}/dags/{DAG_ID}"
        lines = [
            "5/5 Airflow is up",
            "",
            f"  UI:       {self.base_url}",
            f"  login:    user {USER}, password {self.password}  (kept in {self.passwords_file})",
            f"  the DAG:  {dag}",
        ]
        if run_id is not None:
            tab = f"{dag}/runs/{urllib.parse.quote(run_id, safe='')}/plugin/aesthetic-scores"
            lines += [
                f"  run:      {run_id}  (triggered on the sample; it takes a few minutes)",
                f"  scores:   {tab}  (the run's Aesthetic scores tab, once it has succeeded)",
            ]
        lines += [
            f"  partitions: {self.base_url}/video-aesthetics/partitions  (Browse > Aesthetic partitions)",
            f"  results:  {self.out / 'scored'}",
            f"  logs:     {self.logs_dir}",
            "",
            "Ctrl-C stops Airflow; everything stays in " + str(self.out),
        ]
        return "\n".join(lines)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _write_private(path: Path, text: str) -> None:
    """Write a secret readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temp, path)


def say(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
