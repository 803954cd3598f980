"""The results view's pieces that need no api-server: where a run's result is looked for, what is served, how it renders.

Request-level and auth cases run through a real api-server in test_view_security.py; here the
functions behind them are called directly, on real folders, links, FIFOs and a memory:// store.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from helpers.airflow_env import use_private_airflow_home
from helpers.s3 import S3Server, s3_server  # noqa: F401 - the fixture

use_private_airflow_home()

from video_aesthetics.airflow import results, views
from video_aesthetics.airflow.results import Refused, RunFacts, find_published, open_file, output_store, partition_of
from video_aesthetics.config import ScoringConfig
from video_aesthetics.report import summarise
from video_aesthetics.report_html import render_html
from video_aesthetics.sharding import safe_name

VERSION = "v-20240102T030405Z-0123abcd"
DAG_ID = "video_aesthetic_scoring"
DAY = datetime(2024, 1, 2, tzinfo=timezone.utc)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    out = tmp_path / "allowed" / "out"
    out.mkdir(parents=True)
    monkeypatch.setenv("VIDEO_AESTHETICS_OUTPUT_ROOT", str(out))
    monkeypatch.delenv("VIDEO_AESTHETICS_ALLOWED_ROOTS", raising=False)
    monkeypatch.delenv("VIDEO_AESTHETICS_OUTPUT_CONN_ID", raising=False)
    return out


def _publish(root: Path, partition: str, run_id: str, output: dict[str, Any] | None = None) -> Any:
    version = root / partition / VERSION
    version.mkdir(parents=True, exist_ok=True)
    for name in ("scored.jsonl", "report.html"):
        (version / name).write_bytes(f"{name} of {run_id}\n".encode())
    manifest = {
        "run": {"dag_id": DAG_ID, "run_id": run_id, "version": VERSION},
        "output": output
        if output is not None
        else {"path": str(version / "scored.jsonl"), "report": str(version / "report.html"), "kept": None},
    }
    (root / partition / "_manifest.json").write_text(json.dumps(manifest))
    return version


def _run(run_id: str = "manual__1", run_type: str = "manual", **conf: Any) -> RunFacts:
    return RunFacts(DAG_ID, run_id, run_type, DAY, conf)


# --- where the result is looked for ----------------------------------------------------------------


def test_the_partition_is_computed_as_the_dag_computes_it() -> None:
    assert partition_of(_run(run_type="scheduled")) == "2024-01-02"
    assert partition_of(_run(run_type="backfill")) == "2024-01-02"
    assert partition_of(_run("manual__2024-01-01T00:00:00+00:00")) == safe_name("manual__2024-01-01T00:00:00+00:00")
    assert partition_of(_run(partition="reprocess-1", run_type="scheduled")) == "reprocess-1"
    for bad in ("../etc", "/etc", "v-20240101T000000Z-x", "_staging", "a/b", ".hidden"):
        with pytest.raises(Refused):
            partition_of(_run(partition=bad))


def test_the_conf_output_root_counts_only_inside_the_allowed_roots(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = str(store.parent.parent / "elsewhere")
    assert output_store({"output_root": other}).root == other  # unset: any location, as the DAG does
    monkeypatch.setenv("VIDEO_AESTHETICS_ALLOWED_ROOTS", str(store.parent))
    assert output_store({"output_root": other}) == results.Store(str(store), None, False)
    inside = str(store.parent / "team")
    assert output_store({"output_root": inside, "output_conn_id": "c"}) == results.Store(inside, "c", True)
    for odd in ({"output_root": 7}, {"output_root": ["x"]}, {}):
        assert output_store(odd).root == str(store)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/out", "https://example.org/out", "ftp://h/out", "simplecache::s3://b/out", "zip://a"]
)
def test_a_conf_output_root_the_server_would_fetch_by_url_is_never_used(store: Path, url: str) -> None:
    """Even with allowed_roots unset (any location), the view reads no http(s)/ftp URL a user named."""
    assert output_store({"output_root": url}).root == str(store)


def test_a_published_partition_offers_what_its_manifest_names(store: Path) -> None:
    version = _publish(store, "manual__1", "manual__1")
    published = find_published(_run())
    assert published is not None and published.run_id == "manual__1" and published.version == VERSION
    assert set(published.files) == {"scored.jsonl", "report.html", "_manifest.json"}
    assert published.published_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    with open_file(published, "scored.jsonl") as handle:
        assert handle.read() == (version / "scored.jsonl").read_bytes()
    with pytest.raises(Refused, match="no file named"):
        open_file(published, "kept.jsonl")
    assert find_published(_run("manual__2")) is None  # nothing published: no manifest
    assert published.belongs_to(DAG_ID, "manual__1")
    assert not published.belongs_to("another_dag", "manual__1") and not published.belongs_to(DAG_ID, "manual__2")


def test_a_root_reached_through_a_link_still_matches_the_manifest(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _publish(store, "manual__1", "manual__1")
    alias = store.parent / "alias"
    alias.symlink_to(store)
    monkeypatch.setenv("VIDEO_AESTHETICS_OUTPUT_ROOT", str(alias))
    published = find_published(_run())
    assert published is not None and "scored.jsonl" in published.files


@pytest.mark.parametrize(
    "named",
    [
        "/etc/passwd",
        "{version}/../../other/scored.jsonl",
        "{root}/other/{v}/scored.jsonl",
        "file:///etc/passwd",
        "http://127.0.0.1:9/scored.jsonl",
        "s3://bucket/out/manual__1/{v}/scored.jsonl",
        "scored.jsonl",
        "",
    ],
)
def test_a_manifest_naming_any_other_place_is_not_served(store: Path, named: str) -> None:
    version = store / "manual__1" / VERSION
    _publish(store, "other", "other")
    location = named.format(version=version, root=store, v=VERSION)
    _publish(store, "manual__1", "manual__1", output={"path": location})
    published = find_published(_run())
    assert published is not None and set(published.files) == {"_manifest.json"}


def test_links_fifos_and_devices_in_the_version_are_not_served(store: Path, tmp_path: Path) -> None:
    version = _publish(store, "manual__1", "manual__1")
    (tmp_path / "secret").write_text("secret")
    (version / "scored.jsonl").unlink()
    (version / "scored.jsonl").symlink_to(tmp_path / "secret")
    published = find_published(_run())
    assert published is not None and "scored.jsonl" not in published.files
    (version / "report.html").unlink()
    os.mkfifo(version / "report.html")
    published = find_published(_run())
    assert published is not None and "report.html" in published.files
    with pytest.raises(Refused, match="not a regular file"):
        open_file(published, "report.html")  # refused at once, never blocks on the FIFO
    (version / "report.html").unlink()
    (version / "report.html").symlink_to("/dev/zero")
    assert "report.html" not in (find_published(_run()) or results.Published("", "", {}, {}, None)).files


def test_a_file_swapped_for_a_link_after_the_manifest_was_read_is_refused(store: Path, tmp_path: Path) -> None:
    version = _publish(store, "manual__1", "manual__1")
    published = find_published(_run())
    assert published is not None
    (tmp_path / "secret").write_text("secret")
    (version / "scored.jsonl").unlink()
    (version / "scored.jsonl").symlink_to(tmp_path / "secret")
    with pytest.raises(Refused):
        open_file(published, "scored.jsonl")


@pytest.mark.parametrize(
    "bend",
    ["manifest_link", "manifest_fifo", "folder_link", "version_link", "not_json", "huge", "list", "bad_version"],
)
def test_a_bent_partition_is_refused_with_a_reason(store: Path, tmp_path: Path, bend: str) -> None:
    partition = store / "manual__1"
    version = _publish(store, "manual__1", "manual__1")
    manifest = partition / "_manifest.json"
    if bend == "manifest_link":
        _publish(store, "elsewhere", "manual__1")
        manifest.unlink()
        manifest.symlink_to(store / "elsewhere" / "_manifest.json")
    elif bend == "manifest_fifo":
        manifest.unlink()
        os.mkfifo(manifest)
    elif bend == "folder_link":
        moved = tmp_path / "moved"
        partition.rename(moved)
        partition.symlink_to(moved)
    elif bend == "version_link":
        moved = tmp_path / "moved-version"
        version.rename(moved)
        version.symlink_to(moved)
    elif bend == "not_json":
        manifest.write_bytes(b"\xff\xfe not json")
    elif bend == "huge":
        with manifest.open("wb") as handle:
            handle.truncate(results.MANIFEST_MAX_BYTES + 10)
    elif bend == "list":
        manifest.write_text("[]")
    elif bend == "bad_version":
        manifest.write_text(json.dumps({"run": {"run_id": "manual__1", "version": "../.."}, "output": {}}))
    with pytest.raises(Refused) as err:
        find_published(_run())
    assert "manual__1" in str(err.value) or "_manifest.json" in str(err.value)


def test_an_output_root_outside_the_allowed_roots_is_refused(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _publish(store, "manual__1", "manual__1")
    monkeypatch.setenv("VIDEO_AESTHETICS_ALLOWED_ROOTS", str(store.parent.parent / "elsewhere"))
    with pytest.raises(Refused, match="allowed_roots"):
        find_published(_run())


def test_an_object_store_serves_only_keys_under_the_version(
    monkeypatch: pytest.MonkeyPatch,
    s3_server: S3Server,  # noqa: F811
) -> None:
    bucket = s3_server.create_bucket(f"scores-{os.getpid()}")
    fs = s3_server.fs()
    root = f"s3://{bucket}/out"
    version = f"{root}/manual__1/{VERSION}"
    for name in ("scored.jsonl", "report.html", "rejects.jsonl", "kept.jsonl"):
        fs.pipe_file(f"{version}/{name}", f"{name}\n".encode())
    fs.pipe_file(f"{root}/manual__1/secret.jsonl", b"secret")
    output = {
        "path": f"s3://{s3_server.conn_id}@{bucket}/out/manual__1/{VERSION}/scored.jsonl",  # with its connection
        "report": f"s3://other-bucket/out/manual__1/{VERSION}/report.html",
        "rejects": f"{version}/../secret.jsonl",
        "kept": {"path": "http://127.0.0.1:9/kept.jsonl", "records": 1},
    }
    manifest = {"run": {"dag_id": DAG_ID, "run_id": "manual__1", "version": VERSION}, "output": output}
    fs.pipe_file(f"{root}/manual__1/_manifest.json", json.dumps(manifest).encode())
    monkeypatch.setenv("VIDEO_AESTHETICS_OUTPUT_ROOT", root)
    monkeypatch.setenv("VIDEO_AESTHETICS_OUTPUT_CONN_ID", s3_server.conn_id)
    monkeypatch.setenv("VIDEO_AESTHETICS_ALLOWED_ROOTS", root)
    published = find_published(_run())
    assert published is not None and set(published.files) == {"scored.jsonl", "_manifest.json"}
    with open_file(published, "scored.jsonl") as handle:
        assert handle.read() == b"scored.jsonl\n"
    assert find_published(_run("manual__2")) is None
    monkeypatch.setenv("VIDEO_AESTHETICS_ALLOWED_ROOTS", f"s3://{bucket}/elsewhere")
    with pytest.raises(Refused, match="allowed_roots"):
        find_published(_run())


# --- what is rendered ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (5.25, "5.250"),
        (3, "3.000"),
        (True, ""),
        (float("nan"), ""),
        (float("inf"), ""),
        ("5", ""),
        (None, ""),
        (1e308, "1.000e+308"),
        (-1e17, "-1.000e+17"),
    ],
)
def test_only_real_numbers_are_formatted(value: Any, shown: str) -> None:
    assert views._float(value) == shown


def test_integers_are_shown_only_when_they_are_integers() -> None:
    assert views._int(7) == "7"
    assert views._int(True) == "" and views._int("<b>") == "" and views._int(7.5) == ""


def test_the_sparkline_survives_any_finite_medians() -> None:
    for medians in ([1.0, 2.0, 3.0], [1e308, -1e308, 0.0], [5.0, 5.0], [True, "x", 2.0, None, 3.0]):
        svg = views._sparkline(medians)
        assert svg.count("<polyline") == 1
        points = re.search(r"points='([^']*)'", svg)
        assert points and all(float(n) == float(n) for p in points.group(1).split() for n in p.split(","))
    assert views._sparkline([1.0]) == "" and views._sparkline([]) == ""


def _hashes(policy: str, directive: str) -> set[str]:
    part = next(p for p in policy.split(";") if p.strip().startswith(directive + " "))
    return set(re.findall(r"'sha256-([^']+)'", part))


def _sha(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def test_the_page_policy_allows_exactly_its_own_style_and_script() -> None:
    page = views._html("t <x>", "<p>body</p>").body.decode()
    styles = re.findall(r"<style>(.*?)</style>", page, re.S)
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert _hashes(views.PAGE_CSP, "style-src") == {_sha(s) for s in styles}
    assert _hashes(views.PAGE_CSP, "script-src") == {_sha(s) for s in scripts}
    assert "<title>t &lt;x&gt;</title>" in page
    for directive in ("default-src 'none'", "frame-ancestors 'self'", "base-uri 'none'"):
        assert directive in views.PAGE_CSP
    assert "unsafe" not in views.PAGE_CSP and "http" not in views.PAGE_CSP


def test_the_report_policy_is_a_sandbox_that_runs_only_the_reports_own_script() -> None:
    page = render_html(summarise([], ScoringConfig()))
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    policy = views._report_csp()
    assert policy.split(";")[0].strip().startswith("sandbox") and "allow-same-origin" not in policy
    assert _hashes(policy, "script-src") == {_sha(s) for s in scripts}
    assert "connect-src" not in policy and "default-src 'none'" in policy  # nothing fetched, no beacon


def test_the_state_of_a_run_and_task_ids_are_escaped() -> None:
    assert views._state("<b>") == "<span class='state &lt;b&gt;'>&lt;b&gt;</span>"
