"""The run's preflight: a pool that does not exist fails the run at its first task instead of hanging it.

A real api-server (SQLite) serves the plugin's pool lookup; dag.test() runs the DAG with its
scoring tasks in the pool ``gpu``: before the pool exists the run fails at check_frames, naming
the fix; once ``airflow pools set`` created it, the same run succeeds.
"""

from __future__ import annotations

import http.server
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.airflow_env import airflow, api_server_env, api_server_ready, dag_test, free_port, new_home
from helpers.media import clip_record, write_frames, write_jsonl
from video_aesthetics.airflow import preflight
from video_aesthetics.errors import ConfigError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DAG_ID = "video_aesthetic_scoring"
STARTUP_SECONDS = 240


# The plugin entry the package's own plugin carries, in a plugins folder of its own, so that this
# api-server serves the lookup whatever else the installed plugin mounts.
@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An api-server on a fresh SQLite home, and the environment that dag.test() shares it with."""
    home = new_home(tmp_path_factory, "preflight_home")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    # The route comes from the installed package's plugin (its entry point), as in a deployment.
    env = api_server_env(
        home,
        port,
        VIDEO_AESTHETICS_POOL="gpu",
        VIDEO_AESTHETICS_RETRIES="2",
    )
    log_path = home / "api-server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + STARTUP_SECONDS
            while not api_server_ready(base_url):
                assert server.poll() is None, f"api-server exited {server.returncode}:\n{log_path.read_text()[-4000:]}"
                assert time.monotonic() < deadline, f"api-server not up:\n{log_path.read_text()[-4000:]}"
                time.sleep(2)
            yield {"env": env, "base_url": base_url}
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)


def test_the_api_server_says_whether_a_pool_exists_and_has_slots(api_server: dict[str, Any]) -> None:
    env, base_url = api_server["env"], api_server["base_url"]
    assert preflight.api_base_url() != base_url  # this process is not configured: the test passes the URL
    assert preflight.pool_status("absent", base_url) == {"pool": "absent", "exists": False, "slots": None}
    with pytest.raises(ConfigError, match=r"pool 'absent' does not exist, so score_shard would wait"):
        preflight.check_pools([("score_shard", "absent")], base_url)

    airflow(env, "pools", "set", "zero", "0", "no slots")
    with pytest.raises(ConfigError, match=r"pool 'zero' has 0 slots"):
        preflight.check_pools([("score_shard", "zero")], base_url)

    airflow(env, "pools", "set", "two", "2", "two slots")
    assert preflight.pool_status("two", base_url) == {"pool": "two", "exists": True, "slots": 2}
    preflight.check_pools([("score_shard", "two"), ("check_frames", "default_pool")], base_url)


def test_without_an_api_server_to_ask_the_check_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, logger=preflight.__name__):
        preflight.check_pools([("score_shard", "gpu")], nobody)
    assert "cannot check pool 'gpu'" in caplog.text and nobody in caplog.text


def test_a_server_without_the_plugin_route_is_not_taken_for_an_answer(caplog: pytest.LogCaptureFixture) -> None:
    """An API server without the route serves its UI page (200, HTML) for unknown paths: not a pool status."""

    class UiPage(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><html><body>Airflow</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), UiPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.WARNING, logger=preflight.__name__):
            preflight.check_pools([("score_shard", "gpu")], f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    assert "did not answer with a pool status" in caplog.text


def test_a_missing_pool_fails_the_run_at_once_and_the_run_works_once_it_exists(
    api_server: dict[str, Any], tmp_path: Path, model_args: dict[str, str]
) -> None:
    write_frames(tmp_path / "frames", "video0", "video0_0", 2, seed=5)
    source = write_jsonl(tmp_path / "clips.jsonl", [clip_record("videos/video0.mp4", ["video0_0"])])
    conf = {
        "input_path": str(source),
        "output_root": str(tmp_path / "out"),
        "figure_root": str(tmp_path / "frames"),
        "on_missing_frames": "fail",
        "num_workers": 0,
        "device": "cpu",
        **model_args,
    }
    env = api_server["env"]

    [failed] = dag_test(env, DAG_ID, [{"conf": conf}])
    assert failed.get("state") == "failed", failed.get("message") or failed["log"][-5000:]
    states = {t["task_id"]: t for t in failed["tasks"]}
    # Not retried: no retry can create the pool.
    assert states["check_frames"]["state"] == "failed" and states["check_frames"]["try_number"] == 1
    assert {states[t]["state"] for t in ("plan_shards", "score_shard", "merge")} == {"upstream_failed"}
    assert "pool 'gpu' does not exist, so score_shard would wait in 'scheduled' forever" in failed["log"]
    assert '`airflow pools set gpu <slots> "GPU slots"`' in failed["log"]
    assert "unset VIDEO_AESTHETICS_POOL" in failed["log"]
    assert not (tmp_path / "out").exists()

    airflow(env, "pools", "set", "gpu", "1", "GPU slots")
    [ran] = dag_test(env, DAG_ID, [{"conf": conf}])
    assert ran.get("state") == "success", ran.get("message") or ran["log"][-5000:]
    assert "pool 'gpu' for score_shard: 1 slot(s)" in ran["log"]
