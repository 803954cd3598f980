"""The "Aesthetic scores" link, and the provider entry point that registers it (once)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers.airflow_env import airflow_env, use_private_airflow_home

use_private_airflow_home()

from video_aesthetics import __version__
from video_aesthetics.airflow.links import TAB_ROUTE, ScoredOutputLink, browser_url
from video_aesthetics.airflow.operators import MergeScoresOperator, VideoAestheticScoringOperator
from video_aesthetics.settings import SETTINGS


@pytest.mark.parametrize(
    ("location", "url"),
    [
        ("/data/out/2024-01-01/scored.jsonl", "file:///data/out/2024-01-01/scored.jsonl"),
        ("/data/with space/x.jsonl", "file:///data/with%20space/x.jsonl"),
        ("file:///data/x.jsonl", "file:///data/x.jsonl"),
        (
            "s3://bucket/scores/2024-01-01/scored.jsonl",
            "https://s3.console.aws.amazon.com/s3/object/bucket?prefix=scores/2024-01-01/scored.jsonl",
        ),
        ("s3://aws_conn@bucket/k.jsonl", "https://s3.console.aws.amazon.com/s3/object/bucket?prefix=k.jsonl"),
        ("gs://bucket/a/b.jsonl", "https://console.cloud.google.com/storage/browser/_details/bucket/a/b.jsonl"),
        ("hdfs://namenode/x.jsonl", "hdfs://namenode/x.jsonl"),
        (None, ""),
    ],
)
def test_browser_urls(location: str | None, url: str) -> None:
    assert browser_url(location) == url


def test_the_link_opens_the_runs_tab_inside_the_airflow_ui(monkeypatch: pytest.MonkeyPatch) -> None:
    op = VideoAestheticScoringOperator(task_id="score", input_path="/in.jsonl", output_path="s3://b/out.jsonl")
    link = ScoredOutputLink()
    assert link.name == "Aesthetic scores"
    assert link in op.operator_extra_links and link in MergeScoresOperator.operator_extra_links
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.org/base/")
    key = SimpleNamespace(dag_id="daily scores", run_id="manual__2024-01-01T00:00:00+00:00")
    assert link.get_link(op, ti_key=key) == (
        "https://airflow.example.org/base/dags/daily%20scores/runs/manual__2024-01-01T00%3A00%3A00%2B00%3A00"
        "/plugin/aesthetic-scores"
    )


def test_the_tab_route_is_the_one_the_installed_ui_serves() -> None:
    """The UI bundle routes plugin pages of a run at dags/:dagId/runs/:runId/plugin/:page (Airflow 3's React UI)."""
    import airflow

    bundle = Path(airflow.__file__).parent / "ui" / "dist" / "assets"
    code = "".join(p.read_text(encoding="utf-8", errors="replace") for p in bundle.glob("index-*.js"))
    assert "path:`dags/:dagId/runs/:runId`" in code and "path:`plugin/:page/*`" in code
    assert "`plugin/${e.url_route}`" in code
    from video_aesthetics.airflow.plugin import VideoAestheticsPlugin

    [tab] = [v for v in VideoAestheticsPlugin.external_views if v["destination"] == "dag_run"]
    assert tab["url_route"] == TAB_ROUTE and tab["name"] == ScoredOutputLink.name


_LOAD = """
import json, sys
from airflow import plugins_manager
from airflow.providers_manager import ProvidersManager
from airflow.sdk import conf
plugins, errors = plugins_manager._get_plugins()
provider = ProvidersManager().providers.get("video-aesthetics")
ours = [p for p in plugins if p.name == "video_aesthetics"]
print(json.dumps({
    "errors": errors,
    "plugins": [str(p.source) for p in ours],
    "views": [v["href"] for p in ours for v in p.external_views],
    "apps": [a["url_prefix"] for p in ours for a in p.fastapi_apps],
    "plugin_links": [type(link).__name__ for link in plugins_manager.get_operator_extra_links()],
    "provider_version": provider.version if provider else None,
    "provider_links": [n for n in ProvidersManager().extra_links_class_names if n.startswith("video_aesthetics")],
    "chunk_size": conf.get("video_aesthetics", "chunk_size"),
    "top_level": sorted(m for m in ("records", "config", "operators", "scoring", "sharding", "merge")
                        if m in sys.modules),
}))
"""


def test_airflow_loads_the_provider(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", _LOAD], env=airflow_env(tmp_path), capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert loaded["errors"] == {}
    # The plugin comes once, from the package's entry point (none from the plugins folder).
    assert len(loaded["plugins"]) == 1 and "video-aesthetics" in loaded["plugins"][0]
    assert loaded["apps"] == ["/video-aesthetics", "/video-aesthetics-preflight"]
    assert loaded["views"] == ["/video-aesthetics/runs/{DAG_ID}/{RUN_ID}", "/video-aesthetics/partitions"]
    assert loaded["plugin_links"] == []  # declared by the operator, listed by the provider: registered once
    # The provider's config section gives Airflow the settings' defaults.
    assert loaded["chunk_size"] == SETTINGS["chunk_size"].default
    assert loaded["provider_version"] == __version__
    assert loaded["provider_links"] == ["video_aesthetics.airflow.links.ScoredOutputLink"]
    # plugins/.airflowignore keeps Airflow from importing the package's files as top-level modules.
    assert loaded["top_level"] == []
