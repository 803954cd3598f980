"""``make ui`` (scripts/ui.py) for real: Airflow on SQLite with the DAG, the plugin and one scored run of the sample.

Started as a user starts it, with the tiny model standing in for ViT-L/14 (the same two settings
the README shows for local weights); the printed login must open the API, the run must succeed on
its own, its tab, its download and the partitions page must answer through the api-server, and
Ctrl-C must stop every process. Everything it writes must be inside the folder it was given.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import pytest
import requests

from helpers.airflow_env import REPO, published
from helpers.media import read_jsonl
from video_aesthetics.sharding import safe_name

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

DAG_ID = "video_aesthetic_scoring"
SCRIPT = REPO / "scripts" / "ui.py"
READY_SECONDS = 600
RUN_SECONDS = 600
# Where an Airflow that ignored its AIRFLOW_HOME, or a tool run from the checkout, would write.
REPO_SPOTS = (
    "demo_output",
    "logs",
    "airflow.cfg",
    "airflow.db",
    "webserver_config.py",
    "simple_auth_manager_passwords.json.generated",
)


@dataclass
class Started:
    process: subprocess.Popen
    out: Path
    log: Path

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def banner(self) -> dict[str, str]:
        found = {}
        for key in ("UI", "run", "scores", "partitions", "results"):
            match = re.search(rf"^  {key}:\s+(\S+)", self.text(), re.MULTILINE)
            if match:
                found[key] = match.group(1)
        login = re.search(r"^  login:\s+user (\S+), password (\S+)", self.text(), re.MULTILINE)
        if login:
            found["user"], found["password"] = login.groups()
        return found


def _start(out: Path, sandbox: Path, env: dict[str, str], *args: str) -> Started:
    log = sandbox / f"ui-{time.monotonic_ns()}.log"
    handle = log.open("w", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--out", str(out), "--port", "0", *args],
        env=env,
        cwd=sandbox / "cwd",
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    handle.close()
    return Started(process, out, log)


def _wait_banner(started: Started) -> dict[str, str]:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if "5/5 Airflow is up" in started.text() and "Ctrl-C stops Airflow" in started.text():
            return started.banner()
        if started.process.poll() is not None:
            pytest.fail(f"make ui exited with {started.process.returncode}:\n{started.text()[-5000:]}")
        time.sleep(2)
    pytest.fail(f"make ui printed no address within {READY_SECONDS} s:\n{started.text()[-5000:]}")


def _stop(started: Started) -> int:
    """Ctrl-C, as a user stops it; every process it started must be gone afterwards."""
    family = psutil.Process(started.process.pid).children(recursive=True)
    assert family, "make ui started no services"
    started.process.send_signal(signal.SIGINT)
    code = started.process.wait(timeout=120)
    _, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, f"left running after Ctrl-C: {[p.pid for p in alive]}"
    return code


def _login(base_url: str, user: str, password: str) -> dict[str, str]:
    response = requests.post(f"{base_url}/auth/token", json={"username": user, "password": password}, timeout=60)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ui")
    for name in ("cwd", "home"):
        (root / name).mkdir()
    return root


@pytest.fixture(scope="module")
def env(sandbox: Path, model_args: dict[str, str]) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIDEO_AESTHETICS_"))}
    environ.update(
        # The home a user's ~/airflow, ~/.cache or ~/.config would land in: it must stay empty.
        HOME=str(sandbox / "home"),
        VIDEO_AESTHETICS_OFFLINE="1",
        VIDEO_AESTHETICS_CACHE=str(sandbox / "out" / "cache"),
        VIDEO_AESTHETICS_CLIP_MODEL=model_args["clip_model"],
        VIDEO_AESTHETICS_MLP_CHECKPOINT=model_args["mlp_checkpoint"],
        VIDEO_AESTHETICS_DEVICE="cpu",
        OMP_NUM_THREADS="1",
    )
    return environ


@pytest.fixture(scope="module")
def first(sandbox: Path, env: dict[str, str]) -> Iterator[tuple[Started, dict[str, str], dict[str, Any]]]:
    """``make ui`` started on a new folder, until its triggered run has ended; Ctrl-C afterwards."""
    before = {spot: (REPO / spot).exists() and (REPO / spot).stat().st_mtime_ns for spot in REPO_SPOTS}
    started = _start(sandbox / "out", sandbox, env)
    stopped = False
    try:
        banner = _wait_banner(started)
        headers = _login(banner["UI"], banner["user"], banner["password"])
        run_url = f"{banner['UI']}/api/v2/dags/{DAG_ID}/dagRuns/{quote(banner['run'], safe='')}"
        deadline = time.monotonic() + RUN_SECONDS
        while (run := requests.get(run_url, headers=headers, timeout=60).json())["state"] not in ("success", "failed"):
            assert time.monotonic() < deadline, f"the run did not end within {RUN_SECONDS} s: {run}"
            assert started.process.poll() is None, started.text()[-5000:]
            time.sleep(3)
        yield started, banner, {"headers": headers, "run": run}
        if started.process.poll() is None:  # not stopped by a test already
            assert _stop(started) == 0, started.text()[-3000:]
        stopped = True
    finally:
        if not stopped and started.process.poll() is None:
            started.process.kill()
            started.process.wait(timeout=60)
    # Nothing outside the folder: not the user's home, not the working directory, not the checkout.
    assert _snapshot(sandbox / "home") == set()
    assert _snapshot(sandbox / "cwd") == set()
    after = {spot: (REPO / spot).exists() and (REPO / spot).stat().st_mtime_ns for spot in REPO_SPOTS}
    assert after == before


def test_make_ui_scores_the_sample_and_serves_its_tab_download_and_partitions(
    first: tuple[Started, dict[str, str], dict[str, Any]],
) -> None:
    started, banner, state = first
    headers, run = state["headers"], state["run"]
    assert run["state"] == "success", started.text()[-3000:]
    assert run["conf"]["input_path"] == str(started.out / "sample" / "clips.jsonl")
    assert banner["results"] == str(started.out / "scored")
    # A wrong password is refused: the printed one is the login, not an open door.
    refused = requests.post(
        f"{banner['UI']}/auth/token", json={"username": banner["user"], "password": "wrong"}, timeout=60
    )
    assert refused.status_code == 401

    # The result is in the chosen folder, every clip scored.
    manifest, scored = published(started.out / "scored" / safe_name(run["dag_run_id"]))
    assert scored.is_relative_to(started.out)
    clips = [c for r in read_jsonl(scored) for c in r["video_clips"]["clips"]]
    assert clips and all(isinstance(c["aesthetic_score"], float) for c in clips)
    assert manifest["clips"]["scored"] == len(clips)

    # The run's tab as printed (the UI's page) and the view it shows, with the printed login.
    tab = requests.get(banner["scores"], headers=headers, timeout=60)
    assert tab.status_code == 200 and "<html" in tab.text.lower()
    assert banner["scores"].endswith(f"/runs/{quote(run['dag_run_id'], safe='')}/plugin/aesthetic-scores")
    view = f"{banner['UI']}/video-aesthetics/runs/{DAG_ID}/{quote(run['dag_run_id'], safe='')}"
    assert requests.get(view, timeout=60).status_code in (401, 403)
    page = requests.get(view, headers=headers, timeout=60)
    assert page.status_code == 200, page.text[-2000:]
    assert "scored.jsonl" in page.text
    download = requests.get(f"{view}/scored.jsonl", headers=headers, timeout=60)
    assert download.status_code == 200 and download.content == scored.read_bytes()

    partitions = requests.get(banner["partitions"], headers=headers, timeout=60)
    assert partitions.status_code == 200, partitions.text[-2000:]
    assert safe_name(run["dag_run_id"]) in partitions.text or run["dag_run_id"] in partitions.text


def test_a_second_make_ui_reuses_the_folder_login_and_run(
    first: tuple[Started, dict[str, str], dict[str, Any]], sandbox: Path, env: dict[str, str]
) -> None:
    """Idempotent: started again on the same folder, it triggers no second run and keeps the login."""
    started, banner, _ = first
    if _stop(started) != 0:
        pytest.fail(started.text()[-3000:])
    again = _start(started.out, sandbox, env)
    try:
        second = _wait_banner(again)
        assert second["password"] == banner["password"] and "run" not in second
        assert "using the sample dataset" in again.text()
        headers = _login(second["UI"], second["user"], second["password"])
        runs = requests.get(f"{second['UI']}/api/v2/dags/{DAG_ID}/dagRuns", headers=headers, timeout=60).json()
        assert [r["dag_run_id"] for r in runs["dag_runs"]] == [banner["run"]]
        assert _stop(again) == 0
    finally:
        if again.process.poll() is None:
            again.process.kill()
            again.process.wait(timeout=60)


def test_a_busy_port_and_a_foreign_folder_are_refused_before_any_work(tmp_path: Path, env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run(
            [sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"port {port} on 127.0.0.1 is in use" in run.stderr and "PORT=" in run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".video-aesthetics-demo"]

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(mine)], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2 and "did not write" in run.stderr and "Traceback" not in run.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
