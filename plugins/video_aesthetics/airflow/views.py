"""The results view the plugin adds to Airflow's API server: a run's score report, its output, recent partitions.

Mounted at ``/video-aesthetics`` (see ``plugin``). Every page is shown only to users the auth
manager allows to read the DAG's runs: the API server's own checks, on its own token (the UI's
``_token`` cookie, or a Bearer header). What a run published is found through its XCom: the
merge task's summary names the manifest, the manifest names the files; a scoring task used on
its own names its output.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Iterator
from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.models.dagrun import DagRun
from airflow.models.xcom import XComModel
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, StreamingResponse
from sqlalchemy import select

from video_aesthetics.airflow import object_store
from video_aesthetics.airflow.links import VIEW_PREFIX, browser_url, run_url

log = logging.getLogger(__name__)

PREFIX = VIEW_PREFIX
MERGE_TASK = "merge"
_READ_RUNS = [Depends(requires_access_dag("GET", DagAccessEntity.RUN))]
_CHUNK = 1 << 20


def create_app() -> FastAPI:
    app = FastAPI(title="Video aesthetics", description="Score reports and outputs of video aesthetic scoring runs")
    app.add_api_route(
        "/runs/{dag_id}/{run_id}", run_page, methods=["GET"], dependencies=_READ_RUNS, response_class=HTMLResponse
    )
    app.add_api_route("/runs/{dag_id}/{run_id}/scored.jsonl", run_output, methods=["GET"], dependencies=_READ_RUNS)
    app.add_api_route(
        "/partitions", partitions_page, methods=["GET"], dependencies=_READ_RUNS, response_class=HTMLResponse
    )
    return app


def published_result(session: Any, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """What the run published: the merge summary (with its manifest), else the scoring tasks' own outputs."""
    rows = session.scalars(
        select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.key == "return_value")
    ).all()
    values = {(row.task_id, row.map_index): XComModel.deserialize_value(row) for row in rows}
    merged = values.get((MERGE_TASK, -1))
    if isinstance(merged, dict) and merged.get("manifest"):
        return {"kind": "partition", "summary": merged, "manifest": _read_json(str(merged["manifest"]))}
    outputs = [
        v for (_task, _index), v in sorted(values.items()) if isinstance(v, dict) and "sha256" in v and "output" in v
    ]
    return {"kind": "tasks", "outputs": outputs} if outputs else None


def run_page(dag_id: str, run_id: str, session: SessionDep) -> HTMLResponse:
    _require_run(session, dag_id, run_id)
    result = published_result(session, dag_id, run_id)
    if result is None:
        return HTMLResponse(_page(f"{dag_id} / {run_id}", "<p>This run has published no scores yet.</p>"))
    if result["kind"] == "partition":
        report = (result["manifest"] or {}).get("output", {}).get("report")
        if report:
            return HTMLResponse(object_store.store_path(report).read_text(encoding="utf-8"))
        return HTMLResponse(_page(f"{dag_id} / {run_id}", _summary_table([result["summary"]], dag_id)))
    rows = "".join(
        f"<tr><td>{_location(str(o.get('output')))}</td><td>{o.get('records')}</td><td>{o.get('clips')}</td>"
        f"<td>{o.get('scored')}</td><td>{o.get('failed')}</td></tr>"
        for o in result["outputs"]
    )
    table = "<table><tr><th>output</th><th>records</th><th>clips</th><th>scored</th><th>failed</th></tr>"
    return HTMLResponse(_page(f"{dag_id} / {run_id}", table + rows + "</table>"))


def run_output(dag_id: str, run_id: str, session: SessionDep) -> StreamingResponse:
    """The run's published scored records, streamed from the output store."""
    _require_run(session, dag_id, run_id)
    result = published_result(session, dag_id, run_id)
    if result is None or result["kind"] != "partition":
        raise HTTPException(404, f"run {run_id} of {dag_id} has published no partition")
    path = object_store.store_path(str(result["summary"]["output"]))
    if not path.exists():
        raise HTTPException(
            410, f"{path} is gone: a later publish of partition {result['summary']['partition']} pruned it"
        )
    return StreamingResponse(
        _stream(path),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="scored.jsonl"'},
    )


def partitions_page(
    session: SessionDep, dag_id: str = Query("video_aesthetic_scoring"), limit: int = Query(50, ge=1, le=500)
) -> HTMLResponse:
    """Recent runs' published partitions with their headline numbers."""
    rows = session.scalars(
        select(XComModel)
        .where(XComModel.dag_id == dag_id, XComModel.task_id == MERGE_TASK, XComModel.key == "return_value")
        .order_by(XComModel.timestamp.desc())
        .limit(limit)
    ).all()
    summaries = [{**XComModel.deserialize_value(row), "run_id": row.run_id} for row in rows]
    summaries = [s for s in summaries if isinstance(s, dict) and s.get("partition")]
    body = _summary_table(summaries, dag_id) if summaries else "<p>No partition has been published yet.</p>"
    return HTMLResponse(_page(f"Aesthetic scores: {dag_id}", body))


def _summary_table(summaries: list[dict[str, Any]], dag_id: str) -> str:
    head = "<tr><th>partition</th><th>records</th><th>clips</th><th>scored</th><th>median</th><th>kept</th><th>run</th></tr>"
    rows = []
    for s in summaries:
        stats = s.get("summary") or {}
        # Relative to /video-aesthetics/partitions, so that it works under any base path.
        link = run_url("", dag_id, str(s.get("run_id")))[len(PREFIX) + 1 :] if s.get("run_id") else ""
        rows.append(
            f"<tr><td>{html.escape(str(s.get('partition')))}</td><td>{s.get('records')}</td><td>{s.get('clips')}</td>"
            f"<td>{s.get('scored')}</td><td>{_number(stats.get('median'))}</td><td>{stats.get('kept', '')}</td>"
            f"<td>{f'<a href={html.escape(link)!r}>report</a>' if link else ''}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _require_run(session: Any, dag_id: str, run_id: str) -> None:
    found = session.scalar(select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    if found is None:
        raise HTTPException(404, f"no run {run_id} of {dag_id}")


def _read_json(location: str) -> dict[str, Any] | None:
    try:
        return json.loads(object_store.store_path(location).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("cannot read %s: %s", location, err)
        return None


def _stream(path: Any) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def _location(location: str) -> str:
    """A location as text, linked to its console where it lives in an object store."""
    url = browser_url(location)
    text = html.escape(location)
    return f"<a href={html.escape(url)!r}>{text}</a>" if url.startswith("https://") else text


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else ""


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:1.5rem}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}th{background:#f3f3f3}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
