"""The DAG under a real Airflow: scheduler, dag-processor and api-server (LocalExecutor, SQLite) started here.

Runs are triggered through the public REST API with a conf (one without a logical date, two on
the same day as the UI triggers them), a backfill over two dates is created with ``airflow
backfill create``, unpausing schedules a run for a day that has no input, and every run's
partition must land where it should. Every process started here is stopped afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import psutil
import pytest
import requests

from helpers.airflow_env import airflow, api_server_env, api_server_ready, free_port, new_home, published
from helpers.media import clip_record, read_jsonl, write_jsonl, write_video
from helpers.services import chromium_path
from video_aesthetics.sharding import safe_name

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DAG_ID = "video_aesthetic_scoring"
BACKFILL_DATES = ("2024-01-01", "2024-01-02")
USER, PASSWORD = "tester", secrets.token_hex(8)
STARTUP_SECONDS = 240
RUNS_SECONDS = 480
# One request's bound: the api-server answers in milliseconds when idle, but on a busy 2-core machine
# (the scheduler, a worker and the suite's other processes) a write has stalled past 30 s.
HTTP_SECONDS = 120


@dataclass
class Services:
    base_url: str
    env: dict[str, str]
    root: Path
    home: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, IO[str]] = field(default_factory=dict)
    token: str = ""

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return requests.request(method, f"{self.base_url}{path}", headers=headers, timeout=HTTP_SECONDS, **kwargs)

    def log_tail(self) -> str:
        parts = []
        for name in self.processes:
            path = self.home / f"{name}.log"
            parts.append(f"--- {name}\n{path.read_text(errors='replace')[-3000:] if path.exists() else ''}")
        return "\n".join(parts)


def _partition_input(folder: Path, tag: int, videos: int = 2) -> Path:
    """A day's input: ``videos`` records of two clips each, whose frames the DAG extracts from the videos."""
    records = []
    for v in range(videos):
        stem = f"day{tag}_video{v}"
        write_video(folder / "videos" / f"{stem}.mp4", frames=24, seed=100 * tag + v)
        record = clip_record(f"videos/{stem}.mp4", [f"{stem}_0", f"{stem}_1"], day=tag)
        for c, clip in enumerate(record["video_clips"]["clips"]):
            clip.update(frame_start=12 * c, frame_end=12 * c + 12, num_frames=12)
        records.append(record)
    return write_jsonl(folder / "part.jsonl", records)


def _stop(processes: dict[str, subprocess.Popen]) -> None:
    """SIGTERM every service and what it started (task runners included), then SIGKILL what is left."""
    family: list[psutil.Process] = []
    for process in processes.values():
        try:
            parent = psutil.Process(process.pid)
            family += [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=30)
    for survivor in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            survivor.kill()
    psutil.wait_procs(alive, timeout=10)
    for process in processes.values():
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait(what: str, check, seconds: float, services: Services, every: float = 2.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, process in services.processes.items():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode} while waiting for {what}\n{services.log_tail()}")
        try:
            value = check()
        except requests.RequestException:
            value = None
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}\n{services.log_tail()}")


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory, model_args: dict[str, str]) -> Iterator[Services]:
    home = new_home(tmp_path_factory, "scheduler_home")
    root = tmp_path_factory.mktemp("scheduler_data")
    # Backfills read their dates; the run that unpausing schedules finds no input for its day.
    for tag, day in enumerate(BACKFILL_DATES):
        _partition_input(root / "input" / day, tag)
    (home / "passwords.json").write_text(json.dumps({USER: PASSWORD}))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = api_server_env(
        home,
        port,
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USER}:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(home / "passwords.json"),
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__CORE__PARALLELISM="4",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        VIDEO_AESTHETICS_INPUT_ROOT=str(root / "input"),
        VIDEO_AESTHETICS_OUTPUT_ROOT=str(root / "output"),
        VIDEO_AESTHETICS_FIGURE_ROOT=str(root / "frames"),
        VIDEO_AESTHETICS_CLIP_MODEL=model_args["clip_model"],
        VIDEO_AESTHETICS_MLP_CHECKPOINT=model_args["mlp_checkpoint"],
        VIDEO_AESTHETICS_NUM_WORKERS="0",
        VIDEO_AESTHETICS_DEVICE="cpu",
    )
    running = Services(base_url, env, root, home)
    try:
        for name in ("api-server", "scheduler", "dag-processor"):
            log = (home / f"{name}.log").open("w")
            running.logs[name] = log
            running.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", name], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        _wait(
            "the api-server",
            lambda: api_server_ready(base_url),
            STARTUP_SECONDS,
            running,
        )
        yield running
    finally:
        _stop(running.processes)
        for log in running.logs.values():
            log.close()


def _create_backfill(services: Services, attempts: int = 3) -> None:
    """``airflow backfill create`` over BACKFILL_DATES, tried again only when SQLite refused it a lock.

    SQLite answers "database is locked" at once, whatever the busy timeout, when two transactions
    both want to write; the CLI's transaction is rolled back then, so trying again is safe.
    """
    for attempt in range(1, attempts + 1):
        run = airflow(
            services.env,
            "backfill",
            "create",
            "--dag-id",
            DAG_ID,
            "--from-date",
            BACKFILL_DATES[0],
            "--to-date",
            BACKFILL_DATES[1],
            timeout=180,
            check=False,
        )
        existing = services.api("GET", "/api/v2/backfills", params={"dag_id": DAG_ID}).json()["total_entries"]
        if run.returncode == 0 or existing:
            assert existing == 1, run.stdout[-3000:] + run.stderr[-3000:]
            return
        assert "database is locked" in run.stderr and attempt < attempts, run.stdout[-3000:] + run.stderr[-3000:]
        time.sleep(2)


def test_rest_trigger_and_backfill_under_a_real_scheduler(services: Services) -> None:
    refused = requests.post(
        f"{services.base_url}/auth/token", json={"username": USER, "password": "wrong"}, timeout=HTTP_SECONDS
    )
    assert refused.status_code == 401
    login = requests.post(
        f"{services.base_url}/auth/token", json={"username": USER, "password": PASSWORD}, timeout=HTTP_SECONDS
    )
    assert login.status_code == 201, login.text
    services.token = login.json()["access_token"]

    _wait(
        "the dag-processor to register the DAG",
        lambda: services.api("GET", f"/api/v2/dags/{DAG_ID}").ok,
        STARTUP_SECONDS,
        services,
    )
    bad = services.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {"chunk_size": 0}})
    assert bad.status_code == 400 and "chunk_size" in bad.text
    assert services.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns").json()["total_entries"] == 0

    # The backfill is created while the DAG is paused (its runs wait for the unpause): a quiet scheduler
    # keeps the CLI's SQLite transaction clear of lock conflicts.
    _create_backfill(services)
    assert services.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False}).ok
    adhoc = _partition_input(services.root / "adhoc", tag=9, videos=3)
    triggered = services.api(
        "POST",
        f"/api/v2/dags/{DAG_ID}/dagRuns",
        json={"logical_date": None, "conf": {"input_path": str(adhoc), "chunk_size": 1}},
    )
    assert triggered.status_code == 200, triggered.text
    manual_id = triggered.json()["dag_run_id"]
    # The UI gives every trigger a logical date: two triggers of one day must not share a result.
    same_day = []
    for tag, hour in ((7, "01"), (8, "02")):
        source = _partition_input(services.root / f"ui{tag}", tag=tag, videos=tag - 6)
        response = services.api(
            "POST",
            f"/api/v2/dags/{DAG_ID}/dagRuns",
            json={"logical_date": f"2024-02-01T{hour}:00:00Z", "conf": {"input_path": str(source)}},
        )
        assert response.status_code == 200, response.text
        same_day.append(response.json()["dag_run_id"])

    def finished() -> list[dict] | None:
        runs = services.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns").json()["dag_runs"]
        kinds = {r["run_type"] for r in runs}
        done = all(r["state"] in ("success", "failed") for r in runs)
        return runs if done and {"manual", "backfill", "scheduled"} <= kinds and len(runs) >= 6 else None

    runs = _wait("every run to finish", finished, RUNS_SECONDS, services, every=3)
    assert all(r["state"] == "success" for r in runs), (runs, services.log_tail())

    output = services.root / "output"
    manual = next(r for r in runs if r["dag_run_id"] == manual_id)
    assert manual["conf"]["input_path"] == str(adhoc) and manual["logical_date"] is None
    assert len(read_jsonl(published(output / safe_name(manual_id))[1])) == 3
    for run_id, records in zip(same_day, (1, 2), strict=True):
        manifest, scored = published(output / safe_name(run_id))
        assert manifest["run"]["run_id"] == run_id and len(read_jsonl(scored)) == records
    assert not (output / "2024-02-01").exists()
    shards = services.api(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{manual_id}/taskInstances", params={"task_id": "score_shard"}
    ).json()["task_instances"]
    assert sorted(t["map_index"] for t in shards) == [0, 1, 2]
    links = services.api(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{manual_id}/taskInstances/score_shard/links", params={"map_index": 1}
    ).json()["extra_links"]
    view = f"{services.base_url}/video-aesthetics/runs/{DAG_ID}/{quote(manual_id, safe='')}"
    # Both links open the run's tab inside the UI, where the view is shown with Airflow's navigation.
    tab = f"{services.base_url}/dags/{DAG_ID}/runs/{quote(manual_id, safe='')}/plugin/aesthetic-scores"
    assert links == {"Aesthetic scores": tab}
    merge_links = services.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{manual_id}/taskInstances/merge/links").json()[
        "extra_links"
    ]
    assert merge_links == {"Aesthetic scores": tab}
    _check_results_view(services, manual_id, view)

    # Unpausing scheduled a run for a day without input: it skips, quietly, instead of failing.
    [scheduled] = [r for r in runs if r["run_type"] == "scheduled"]
    tis = services.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{scheduled['dag_run_id']}/taskInstances").json()
    assert {t["task_id"]: t["state"] for t in tis["task_instances"]}["check_frames"] == "skipped"
    assert {t["state"] for t in tis["task_instances"]} == {"skipped"}

    backfills = sorted(r["logical_date"][:10] for r in runs if r["run_type"] == "backfill")
    assert backfills == list(BACKFILL_DATES)
    dated = [r for r in runs if r["run_type"] == "backfill"]
    for run in dated:
        partition = run["logical_date"][:10]
        manifest, path = published(output / partition)
        scored = read_jsonl(path)
        source = read_jsonl(services.root / "input" / partition / "part.jsonl")
        assert [r["video"] for r in scored] == [r["video"] for r in source]
        assert all(isinstance(c["aesthetic_score"], float) for r in scored for c in r["video_clips"]["clips"])
        assert manifest["run"]["run_id"] == run["dag_run_id"] and manifest["run"]["partition"] == partition
    expected = {safe_name(manual_id), *map(safe_name, same_day), *(r["logical_date"][:10] for r in dated)}
    assert {p.name for p in output.iterdir()} == expected


def _check_results_view(services: Services, run_id: str, view: str) -> None:
    """The plugin's view, served by the api-server behind its own auth: the run's results and output."""
    assert requests.get(view, timeout=HTTP_SECONDS).status_code in (401, 403)  # no token, no report
    assert requests.get(f"{view}/scored.jsonl", timeout=HTTP_SECONDS).status_code in (401, 403)
    headers = {"Authorization": f"Bearer {services.token}"}
    page = requests.get(view, headers=headers, timeout=HTTP_SECONDS)
    assert page.status_code == 200, page.text[-2000:]
    assert "<html" in page.text.lower()
    download = requests.get(f"{view}/scored.jsonl", headers=headers, timeout=HTTP_SECONDS)
    assert download.status_code == 200
    _, scored = published(services.root / "output" / safe_name(run_id))
    assert download.content == scored.read_bytes()
    # The UI sends the token as a cookie to the run page's tab (an iframe).
    by_cookie = requests.get(view, cookies={"_token": services.token}, timeout=HTTP_SECONDS)
    assert by_cookie.status_code == 200
    listing = requests.get(f"{services.base_url}/video-aesthetics/partitions", headers=headers, timeout=HTTP_SECONDS)
    assert listing.status_code == 200 and safe_name(run_id) in listing.text
    missing = requests.get(
        f"{services.base_url}/video-aesthetics/runs/{DAG_ID}/no-such-run", headers=headers, timeout=HTTP_SECONDS
    )
    assert missing.status_code == 404
    plugins = services.api("GET", "/api/v2/plugins").json()["plugins"]
    [ours] = [p for p in plugins if p["name"] == "video_aesthetics"]
    assert {v["destination"] for v in ours["external_views"]} == {"dag_run", "nav"}


@pytest.mark.requires_chromium
def test_the_report_tab_in_a_real_browser(services: Services) -> None:
    """The run page's "Aesthetic scores" tab, rendered by Chromium: histogram, thumbnails and counts."""
    from playwright.sync_api import sync_playwright

    chromium = chromium_path()

    assert services.token, "test_rest_trigger_and_backfill_under_a_real_scheduler logs in and runs the DAG first"
    runs = services.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns").json()["dag_runs"]
    run = next(r for r in runs if r["run_type"] == "backfill" and r["state"] == "success")
    manifest, _ = published(services.root / "output" / run["logical_date"][:10])
    counts = manifest["summary"]["counts"]
    tab = f"{services.base_url}/dags/{DAG_ID}/runs/{quote(run['dag_run_id'], safe='')}/plugin/aesthetic-scores"
    view = f"{services.base_url}/video-aesthetics/runs/{DAG_ID}/{quote(run['dag_run_id'], safe='')}"
    artifacts = Path(
        os.environ.get("VIDEO_AESTHETICS_TEST_ARTIFACTS", Path(__file__).parents[1] / "build" / "test-artifacts")
    )
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            anonymous = browser.new_context().new_page()
            refused = anonymous.goto(view)
            assert refused is not None and refused.status in (401, 403)
            assert "<svg" not in anonymous.content()

            context = browser.new_context(viewport={"width": 1400, "height": 1800})
            context.add_cookies([{"name": "_token", "value": services.token, "url": services.base_url}])
            page = context.new_page()
            page.goto(tab)
            # The tab (the plugin's page) embeds the stored report in its own sandboxed frame.
            report = page.frame_locator("iframe").first.frame_locator("iframe").first
            report.locator("svg").first.wait_for(timeout=60_000)
            text = report.locator("body").inner_text()
            assert str(counts["clips"]) in text and str(counts["records"]) in text
            thumbnails = report.locator("img[src^='data:image/']")
            assert thumbnails.count() >= 2  # the best and the worst clips, embedded
            assert report.locator("svg line, svg rect").count() > 3  # the histogram's bars and its lines
            page.screenshot(path=str(artifacts / "report-tab.png"), full_page=True)
        finally:
            browser.close()
