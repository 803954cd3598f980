"""The results view attacked through a real api-server, with real accounts of different roles and teams.

One api-server (SQLite, SimpleAuthManager, multi-team) serves every case. Runs are triggered over
REST; their published partitions are written here as the merge writes them (a version folder and
a manifest naming its files), then bent the ways an attacker with store or XCom write access
would: links out, FIFOs, manifests naming other places or URLs, XCom naming /etc/passwd or a URL
of a local server that records every hit.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import pytest
import requests

from helpers.airflow_env import airflow, api_server_env, api_server_ready, free_port, new_home
from helpers.services import chromium_path

DAG_ID = "video_aesthetic_scoring"
VERSION = "v-20240102T030405Z-0123abcd"
PASSWORDS = {"admin": "admin-pw", "user": "user-pw", "viewer": "viewer-pw", "outsider": "outsider-pw"}
STARTUP_SECONDS = 240


@dataclass
class Server:
    base_url: str
    env: dict[str, str]
    root: Path
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def output(self) -> Path:
        return self.root / "allowed" / "out"

    def call(self, method: str, path: str, who: str = "admin", **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return requests.request(method, self.base_url + path, headers=headers, timeout=60, **kwargs)

    def trigger(self, run_id: str, conf: dict[str, Any] | None = None) -> None:
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}
        made = self.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json=body)
        assert made.status_code == 200, made.text

    def set_task(self, run_id: str, task_id: str, state: str) -> None:
        done = self.call(
            "PATCH",
            f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}",
            json={"new_state": state},
        )
        assert done.status_code == 200, done.text

    def view(self, run_id: str, tail: str = "", who: str = "admin") -> requests.Response:
        return self.call("GET", f"/video-aesthetics/runs/{DAG_ID}/{quote(run_id, safe='')}{tail}", who)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = new_home(tmp_path_factory, "view_security_home")
    root = tmp_path_factory.mktemp("view_security_data")
    (root / "allowed" / "out").mkdir(parents=True)
    (home / "passwords.json").write_text(json.dumps(PASSWORDS))
    port = free_port()
    env = api_server_env(
        home,
        port,
        AIRFLOW__CORE__MULTI_TEAM="True",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,user:user:scoring,viewer:viewer:scoring,outsider:viewer:other",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(home / "passwords.json"),
        # The DAG's bundle belongs to team "scoring": "outsider" (viewer of team "other") may not read it.
        AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST=json.dumps(
            [
                {
                    "name": "dags-folder",
                    "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                    "kwargs": {},
                    "team_name": "scoring",
                }
            ]
        ),
        VIDEO_AESTHETICS_OUTPUT_ROOT=str(root / "allowed" / "out"),
        VIDEO_AESTHETICS_ALLOWED_ROOTS=str(root / "allowed"),
    )
    airflow(env, "teams", "create", "scoring")
    airflow(env, "teams", "create", "other")
    airflow(env, "dags", "reserialize", timeout=300)
    log_path = home / "api-server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + STARTUP_SECONDS
            while not api_server_ready(base_url):
                assert process.poll() is None, f"api-server exited:\n{log_path.read_text()[-4000:]}"
                assert time.monotonic() < deadline, f"api-server not up:\n{log_path.read_text()[-4000:]}"
                time.sleep(2)
            running = Server(base_url, env, root)
            for name, password in PASSWORDS.items():
                login = requests.post(
                    f"{base_url}/auth/token", json={"username": name, "password": password}, timeout=60
                )
                assert login.status_code == 201, login.text
                running.tokens[name] = login.json()["access_token"]
            yield running
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def publish(
    output: Path,
    partition: str,
    run_id: str,
    *,
    files: dict[str, bytes] | None = None,
    extra: dict[str, Any] | None = None,
    aes_min: float | None = None,
) -> Path:
    """A partition as merge publishes it: <partition>/<version>/<files> and the manifest naming them."""
    version = output / partition / VERSION
    version.mkdir(parents=True, exist_ok=True)
    files = (
        files
        if files is not None
        else {
            "scored.jsonl": b'{"video": "a.mp4"}\n',
            "rejects.jsonl": b"not json\n",
            "report.html": b"<!doctype html><html><body><h1>report</h1><script>document.title='pwned'</script></body></html>",
        }
    )
    for name, data in files.items():
        (version / name).write_bytes(data)
    out: dict[str, Any] = {
        "path": str(version / "scored.jsonl"),
        "records": 1,
        "sha256": "0" * 64,
        "rejects": str(version / "rejects.jsonl"),
        "report": str(version / "report.html"),
        "kept": None,
    }
    manifest = {
        "run": {"dag_id": DAG_ID, "run_id": run_id, "partition": partition, "version": VERSION},
        "output": out,
        "summary": {"counts": {"records": 1, "clips": 3, "scored": 2, "failed": 1}, "scores": {"median": 5.25}},
        "config": {"aes_min": aes_min, "aes_max": None},
    }
    for key, value in (extra or {}).items():
        manifest[key] = {**manifest.get(key, {}), **value} if isinstance(value, dict) else value
    (output / partition / "_manifest.json").write_text(json.dumps(manifest))
    return version


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Recorder.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<script>alert('from the recorder')</script>")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    """A local http server that records every request: the view must never fetch from it."""
    _Recorder.hits = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_no_token_no_view(server: Server) -> None:
    server.trigger("anonymous-probe")
    for tail in ("", "/report", "/files/scored.jsonl", "/scored.jsonl"):
        assert server.view("anonymous-probe", tail, who="").status_code in (401, 403)
    assert server.call("GET", "/video-aesthetics/partitions", who="").status_code in (401, 403)


def test_a_published_run_offers_every_file_and_serves_the_report_sandboxed(server: Server) -> None:
    run_id = "published-1"
    server.trigger(run_id)
    version = publish(server.output, run_id, run_id)
    page = server.view(run_id)
    assert page.status_code == 200, page.text
    for name in ("scored.jsonl", "rejects.jsonl", "report.html", "_manifest.json"):
        assert f"/files/{name}'" in page.text
        got = server.view(run_id, f"/files/{name}")
        assert got.status_code == 200, got.text
        assert got.headers["Content-Disposition"] == f'attachment; filename="{name}"'
        assert got.headers["X-Content-Type-Options"] == "nosniff"
        source = server.output / run_id / name if name == "_manifest.json" else version / name
        assert got.content == source.read_bytes()
    assert server.view(run_id, "/scored.jsonl").content == (version / "scored.jsonl").read_bytes()
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp and "http" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff" and page.headers["Referrer-Policy"]
    assert "<iframe sandbox='allow-scripts'" in page.text
    report = server.view(run_id, "/report")
    assert report.status_code == 200 and b"<script>document.title='pwned'" in report.content
    policy = report.headers["Content-Security-Policy"]
    assert policy.startswith("sandbox") and "allow-same-origin" not in policy
    # The stored script is not the report's own sorter: its hash is not allowed to run.
    assert "script-src 'sha256-" in policy or "script-src 'none'" in policy
    assert "unsafe-inline" not in policy.split("script-src", 1)[1].split(";")[0]


def test_names_outside_the_manifest_are_never_served(server: Server) -> None:
    run_id = "published-names"
    server.trigger(run_id)
    publish(server.output, run_id, run_id)
    for name in ("..%2F_manifest.json", "%2Fetc%2Fpasswd", "kept.jsonl", "other.txt", "%2E%2E"):
        got = server.view(run_id, f"/files/{name}")
        assert got.status_code == 404, (name, got.status_code, got.text[:200])
        assert b"root:" not in got.content


def test_xcom_pointing_at_files_or_urls_is_never_followed(server: Server, recorder: str) -> None:
    """What issue 16 did as a "User": set merge's XCom over REST, then ask the view for the run's files."""
    for run_id, output in (("xcom-file", "/etc/passwd"), ("xcom-url", f"{recorder}/secret")):
        server.trigger(run_id)
        value = {"manifest": output, "output": output, "report": output, "partition": "p", "records": "<b>9</b>"}
        wrote = server.call(
            "POST",
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/merge/xcomEntries",
            who="user",
            json={"key": "return_value", "value": value},
        )
        assert wrote.status_code in (200, 201), wrote.text
        for tail in ("", "/report", "/files/scored.jsonl", "/scored.jsonl", "/files/passwd", "/files/secret"):
            got = server.view(run_id, tail)
            assert b"root:" not in got.content and b"from the recorder" not in got.content
            assert got.status_code == (200 if tail == "" else 404), (tail, got.text[:300])
        assert "<b>9</b>" not in server.view(run_id).text
    assert _Recorder.hits == []


def test_a_manifest_naming_other_places_is_refused(server: Server, recorder: str, tmp_path: Path) -> None:
    run_id = "bent-manifest"
    server.trigger(run_id)
    secret = server.root / "allowed" / "secret.txt"
    secret.write_text("secret of another partition\n")
    publish(
        server.output,
        run_id,
        run_id,
        extra={
            "output": {
                "path": "/etc/passwd",
                "rejects": f"{server.output}/{run_id}/{VERSION}/../../../secret.txt",
                "report": f"{recorder}/report.html",
                "kept": {"path": str(secret), "records": 1},
                "embeddings": f"s3://other-bucket/{run_id}/{VERSION}/embeddings.npy",
            }
        },
    )
    page = server.view(run_id)
    assert page.status_code == 200
    for name in ("scored.jsonl", "rejects.jsonl", "report.html", "kept.jsonl", "secret.txt", "passwd", "embeddings"):
        assert f"files/{name}" not in page.text, name
    for tail in ("/files/scored.jsonl", "/files/passwd", "/files/secret.txt", "/files/report.html", "/report"):
        got = server.view(run_id, tail)
        assert got.status_code == 404 and b"secret of another" not in got.content and b"root:" not in got.content
    assert _Recorder.hits == []


def test_links_and_special_files_in_the_store_are_refused(server: Server) -> None:
    outside = server.root / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "passwd").write_text("root:x:0:0\n")
    # A file of the version that is a link out of it.
    run_id = "link-out"
    server.trigger(run_id)
    version = publish(server.output, run_id, run_id)
    (version / "scored.jsonl").unlink()
    (version / "scored.jsonl").symlink_to(outside / "passwd")
    # A FIFO: opening it for reading would block a worker of the api-server forever.
    (version / "rejects.jsonl").unlink()
    os.mkfifo(version / "rejects.jsonl")
    page = server.view(run_id)
    assert page.status_code == 200 and "files/scored.jsonl'" not in page.text
    assert server.view(run_id, "/files/scored.jsonl").status_code == 404
    assert server.view(run_id, "/files/rejects.jsonl").status_code == 404
    assert server.view(run_id, "/files/report.html").status_code == 200  # the rest of the version still serves

    # A manifest that is a link to another partition's manifest; a partition folder that is a link out.
    server.trigger("manifest-link")
    publish(server.output, "elsewhere", "manifest-link")
    (server.output / "manifest-link").mkdir()
    (server.output / "manifest-link" / "_manifest.json").symlink_to(server.output / "elsewhere" / "_manifest.json")
    server.trigger("folder-link")
    publish(outside, "folder-link", "folder-link")
    (server.output / "folder-link").symlink_to(outside / "folder-link")
    for bent in ("manifest-link", "folder-link"):
        page = server.view(bent)
        assert page.status_code == 200 and "/files/" not in page.text and "cannot be shown" in page.text
        assert server.view(bent, "/files/scored.jsonl").status_code == 404


def test_another_dags_publish_under_the_same_partition_is_not_served(server: Server) -> None:
    """DAGs sharing an output store can share partition names and run ids: the manifest's DAG must match."""
    run_id = "shared-name"
    server.trigger(run_id)
    publish(server.output, run_id, run_id, extra={"run": {"dag_id": "another_teams_dag"}})
    page = server.view(run_id)
    assert page.status_code == 200 and "/files/" not in page.text and "another_teams_dag" not in page.text
    assert server.view(run_id, "/files/scored.jsonl").status_code == 404


def test_a_conf_output_root_outside_the_allowed_roots_is_not_read(server: Server) -> None:
    evil = server.root / "evil"
    publish(evil, "conf-outside", "conf-outside")
    server.trigger("conf-outside", {"output_root": str(evil)})
    assert server.view("conf-outside", "/files/scored.jsonl").status_code == 404
    assert "/files/" not in server.view("conf-outside").text
    # Inside the allowed roots, the run's own output_root is where its partition is read.
    inside = server.root / "allowed" / "team-store"
    version = publish(inside, "conf-inside", "conf-inside")
    server.trigger("conf-inside", {"output_root": str(inside)})
    got = server.view("conf-inside", "/files/scored.jsonl")
    assert got.status_code == 200 and got.content == (version / "scored.jsonl").read_bytes()


def test_values_from_the_store_and_the_run_are_escaped(server: Server) -> None:
    payload = "<svg onload=alert(1)>"
    run_id = "escaped"
    server.trigger(run_id, {"partition": "escaped-part"})
    # The partition now holds another run's publish whose run id is a payload; its numbers are text.
    publish(
        server.output,
        "escaped-part",
        payload,
        extra={"summary": {"counts": {"records": payload, "clips": True}, "scores": {"median": payload}}},
    )
    page = server.view(run_id)
    assert page.status_code == 200
    assert payload not in page.text and "&lt;svg onload=alert(1)&gt;" in page.text
    assert "True" not in page.text


def test_the_tab_says_what_a_run_that_published_nothing_is_doing(server: Server) -> None:
    server.trigger("queued-run")
    queued = server.view("queued-run").text
    assert "queued" in queued and "no scores" not in queued

    server.trigger("failed-run")
    server.set_task("failed-run", "check_frames", "failed")
    failed = server.view("failed-run").text
    assert "check_frames" in failed and "failed" in failed and "log</a>" in failed
    assert "/tasks/check_frames" in failed and "no scores" not in failed

    server.trigger("skipped-run")
    server.set_task("skipped-run", "check_frames", "skipped")
    assert "no input" in server.view("skipped-run").text


def test_partitions_list_published_runs_newest_first_with_paging(server: Server) -> None:
    for index in range(3):
        run_id = f"listed-{index}"
        server.trigger(run_id)
        publish(server.output, run_id, run_id, aes_min=5.0 if index == 2 else None)
        server.set_task(run_id, "merge", "success")
    listing = server.call("GET", f"/video-aesthetics/partitions?dag_id={DAG_ID}&limit=50")
    assert listing.status_code == 200, listing.text
    text = listing.text
    assert text.index("listed-2") < text.index("listed-1") < text.index("listed-0")
    assert "None" not in text and "5.000 – ∞" in text and "<svg" in text
    assert f"dags/{DAG_ID}/runs/listed-1/plugin/aesthetic-scores" in text
    assert f"runs/{DAG_ID}/listed-1/files/scored.jsonl" in text
    first = server.call("GET", f"/video-aesthetics/partitions?dag_id={DAG_ID}&limit=1").text
    second = server.call("GET", f"/video-aesthetics/partitions?dag_id={DAG_ID}&limit=1&offset=1").text
    assert "listed-2" in first and "listed-1" not in first and "older" in first
    assert "listed-1" in second and "newer" in second
    assert "listed-2" in server.call("GET", "/video-aesthetics/partitions", who="viewer").text


def test_another_team_sees_none_of_the_dags_partitions_or_runs(server: Server) -> None:
    server.trigger("team-run")
    publish(server.output, "team-run", "team-run")
    server.set_task("team-run", "merge", "success")
    assert "team-run" in server.call("GET", "/video-aesthetics/partitions", who="viewer").text
    mine = server.call("GET", "/video-aesthetics/partitions", who="outsider")
    assert mine.status_code == 200 and "team-run" not in mine.text and DAG_ID not in mine.text
    named = server.call("GET", f"/video-aesthetics/partitions?dag_id={DAG_ID}", who="outsider")
    assert named.status_code == 403
    for tail in ("", "/files/scored.jsonl", "/report"):
        assert server.view("team-run", tail, who="outsider").status_code == 403


@pytest.mark.requires_chromium
def test_a_curator_downloads_from_the_tab_and_opens_the_partitions_page(server: Server) -> None:
    """In Chromium, inside Airflow's own UI: the run tab's download links and bytes, the sandboxed report, the list."""
    from playwright.sync_api import sync_playwright

    chromium = chromium_path()
    for run_id in ("browser-old", "browser-new"):
        server.trigger(run_id)
        publish(server.output, run_id, run_id, aes_min=4.5 if run_id == "browser-new" else None)
        server.set_task(run_id, "merge", "success")
    scored = (server.output / "browser-new" / VERSION / "scored.jsonl").read_bytes()
    shots = Path(os.environ.get("VIDEO_AESTHETICS_SCREENSHOTS", "/tmp"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            context.add_cookies([{"name": "_token", "value": server.tokens["viewer"], "url": server.base_url}])
            page = context.new_page()
            page.goto(f"{server.base_url}/dags/{DAG_ID}/runs/browser-new/plugin/aesthetic-scores")
            tab = page.frame_locator("iframe").first
            links = tab.locator(".downloads a")
            links.first.wait_for(timeout=60_000)
            assert links.all_inner_texts() == ["scored.jsonl", "rejects.jsonl", "report.html", "_manifest.json"]
            with page.expect_download() as download:
                tab.get_by_text("scored.jsonl", exact=True).click()
            assert download.value.suggested_filename == "scored.jsonl"
            assert Path(download.value.path()).read_bytes() == scored
            report = tab.frame_locator("iframe").first
            assert report.locator("h1").inner_text(timeout=30_000) == "report"
            [report_frame] = [f for f in page.frames if f.url.endswith("/browser-new/report")]
            assert report_frame.evaluate("document.title") != "pwned"  # the stored script did not run
            page.screenshot(path=str(shots / "va-run-tab.png"), full_page=True)

            page.goto(f"{server.base_url}/plugin/aesthetic-partitions")
            listing = page.frame_locator("iframe").first
            rows = listing.locator("tbody tr")
            rows.first.wait_for(timeout=60_000)
            texts = rows.all_inner_texts()
            assert "browser-new" in texts[0] and "browser-old" in texts[1]
            assert "4.500 – ∞" in texts[0] and "None" not in " ".join(texts)
            assert listing.locator("svg polyline").count() == 1
            page.screenshot(path=str(shots / "va-partitions.png"), full_page=True)
            listing.get_by_role("link", name="browser-new", exact=True).click()
            page.wait_for_url(f"**/dags/{DAG_ID}/runs/browser-new/plugin/aesthetic-scores", timeout=30_000)
        finally:
            browser.close()
