"""The results view the plugin adds to Airflow's API server: a run's tab (state, downloads, report) and the partitions page.

Mounted at ``/video-aesthetics`` (see ``plugin``). Every page is shown only to users the auth
manager allows to read the DAG's runs, on the API server's own token (the UI's ``_token`` cookie,
or a Bearer header); the partitions page lists only DAGs the user may read.

Trust: XCom, manifests and files in the output store are written by people the deployment does
not trust with its api-server (anyone who may edit a DAG's runs, anyone with store write access).
So locations come from configuration only (see ``results``), every value shown is escaped, pages
carry a strict Content-Security-Policy, and the stored report is served sandboxed: its scripts run,
if at all, in an opaque origin that cannot act as Airflow's.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import math
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import IO, Any
from urllib.parse import quote, urlencode

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from sqlalchemy import and_, select

from video_aesthetics import report_html
from video_aesthetics.airflow import results
from video_aesthetics.airflow.links import TAB_ROUTE, VIEW_PREFIX
from video_aesthetics.airflow.publishing import MANIFEST_NAME

log = logging.getLogger(__name__)

PREFIX = VIEW_PREFIX
MERGE_TASK = "merge"
CHECK_TASK = "check_frames"
_READ_RUNS = [Depends(requires_access_dag("GET", DagAccessEntity.RUN))]
_CHUNK = 1 << 20
_MEDIA_TYPES = {".jsonl": "application/x-ndjson", ".json": "application/json", ".html": "text/html; charset=utf-8"}

_CSS = """
:root{color-scheme:light dark;--fg:#1a202c;--muted:#5f6b7a;--bg:#fff;--line:#e2e8f0;--head:#f7fafc;--link:#0b6bcb;
--ok:#15803d;--bad:#b91c1c;--run:#2563eb;--wait:#6b7280}
@media (prefers-color-scheme:dark){:root{--fg:#e2e8f0;--muted:#a0aec0;--bg:#1a202c;--line:#2d3748;--head:#23293a;
--link:#63b3ed;--ok:#4ade80;--bad:#f87171;--run:#60a5fa;--wait:#9ca3af}}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:14px;margin:1rem 1.25rem;
color:var(--fg);background:var(--bg)}
h1{font-size:1.25rem;margin:.2rem 0 .8rem}h2{font-size:1rem;margin:1.2rem 0 .5rem}
a{color:var(--link);text-decoration:none}a:hover{text-decoration:underline}
table{border-collapse:collapse;width:100%;margin:.4rem 0}
th,td{border-bottom:1px solid var(--line);padding:.45rem .6rem;text-align:left;white-space:nowrap}
th{background:var(--head);font-weight:600;color:var(--muted);font-size:.8rem;text-transform:uppercase}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:var(--muted)}.state{font-weight:600}
.success{color:var(--ok)}.failed,.upstream_failed{color:var(--bad)}.running{color:var(--run)}
.queued,.skipped,.scheduled{color:var(--wait)}
.downloads a{display:inline-block;margin:0 .8rem .3rem 0}.wide{overflow-x:auto}td.id{white-space:normal;overflow-wrap:anywhere;min-width:10rem}
.pager a{margin-right:1rem}.spark{stroke:var(--link);fill:none;stroke-width:1.5}
iframe{width:100%;height:85vh;border:1px solid var(--line);border-radius:4px}
"""
# The UI shows plugin pages in an iframe sandboxed without allow-top-navigation, so a link to one of
# its own pages (a run's tab, a task's log) cannot leave the frame; from the same origin, the page
# can ask the UI's router to go there (a history entry and the popstate event React Router follows).
_UI_JS = (
    "document.addEventListener('click',function(e){var a=e.target.closest&&e.target.closest('a.ui');"
    "if(!a||window.top===window)return;try{var t=window.top;t.history.pushState({},'',a.href);"
    "t.dispatchEvent(new PopStateEvent('popstate'));e.preventDefault();}catch(x){}});"
)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Our pages: one hashed script (above), our own hashed stylesheet, frames only of our own origin.
PAGE_CSP = (
    f"default-src 'none'; script-src {_sha256(_UI_JS)}; style-src {_sha256(_CSS)}; img-src data:; frame-src 'self'; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)


def _report_csp() -> str:
    """The stored report's policy: sandboxed (an opaque origin), only the report's own sorter script may run.

    The report is written by whoever can write to the output store, so it is served as a document
    that cannot act as Airflow's origin (no cookies, no same-origin requests), fetch nothing, and
    run no script but the exact table sorter ``report_html`` writes (by its hash).
    """
    script = getattr(report_html, "_SORT_JS", None)
    scripts = _sha256(script) if isinstance(script, str) else "'none'"
    return (
        "sandbox allow-scripts; default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src {scripts}; frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
    )


def create_app() -> FastAPI:
    app = FastAPI(title="Video aesthetics", description="Score reports and outputs of video aesthetic scoring runs")
    app.middleware("http")(_security_headers)
    run = "/runs/{dag_id}/{run_id}"
    app.add_api_route(run, run_page, methods=["GET"], dependencies=_READ_RUNS, response_class=HTMLResponse)
    app.add_api_route(run + "/report", run_report, methods=["GET"], dependencies=_READ_RUNS)
    app.add_api_route(run + "/files/{name}", run_file, methods=["GET"], dependencies=_READ_RUNS)
    app.add_api_route(run + "/scored.jsonl", run_scored, methods=["GET"], dependencies=_READ_RUNS)
    app.add_api_route("/partitions", partitions_page, methods=["GET"], response_class=HTMLResponse)
    return app


async def _security_headers(request: Request, call_next: Any) -> Response:
    response = await call_next(request)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


# --- the database's facts about runs ---------------------------------------------------------------


def _run(session: Any, dag_id: str, run_id: str) -> DagRun:
    found = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    if found is None:
        raise HTTPException(404, f"no run {run_id} of {dag_id}")
    return found


def _facts(run: DagRun) -> results.RunFacts:
    run_type = getattr(run.run_type, "value", run.run_type)
    conf = run.conf if isinstance(run.conf, Mapping) else {}
    return results.RunFacts(run.dag_id, run.run_id, str(run_type), run.logical_date, conf)


def _published(run: DagRun) -> tuple[results.Published | None, str | None]:
    """The run's partition's publish and, when it cannot be shown, why."""
    try:
        return results.find_published(_facts(run)), None
    except results.Refused as err:
        log.warning("run %s of %s: %s", run.run_id, run.dag_id, err)
        return None, str(err)


def _published_by_run(session: Any, dag_id: str, run_id: str) -> results.Published:
    published, why = _published(_run(session, dag_id, run_id))
    if published is None or not published.belongs_to(dag_id, run_id):
        raise HTTPException(404, why or f"run {run_id} of {dag_id} has published no partition")
    return published


# --- routes ----------------------------------------------------------------------------------------


def run_page(dag_id: str, run_id: str, session: SessionDep) -> HTMLResponse:
    """The run's tab: its state, its downloads and its report, or why it has published nothing."""
    run = _run(session, dag_id, run_id)
    published, why = _published(run)
    own = f"./{quote(run_id, safe='')}"
    ui_root = "../../../"
    parts = [_run_header(run, published.partition if published else None)]
    if published is not None and published.belongs_to(dag_id, run_id):
        parts.append(_downloads(published, own + "/files/"))
        parts.append(_numbers_table([(run, published)], runs_base=None, ui_root=ui_root))
        if "report.html" in published.files:
            parts.append(
                f"<h2>Report</h2><p><a href='{own}/report'>Open the report on its own</a>"
                f"</p><iframe sandbox='allow-scripts' src='{own}/report' title='Score report'></iframe>"
            )
    else:
        if published is not None and published.dag_id == dag_id and published.run_id:
            other = published.run_id
            link = f"<a href='./{_q(other)}'>{_e(other)}</a>"
            parts.append(f"<p>Partition {_e(published.partition)} now holds the publish of run {link}.</p>")
        elif published is not None:
            # Another DAG's publish (its readers may not be ours): say nothing about it.
            parts.append(f"<p>Partition {_e(published.partition)} holds no publish of this run.</p>")
        parts.append(_state_note(session, run, ui_root, why))
    return _html(f"Aesthetic scores: {run_id}", "".join(parts))


def run_report(dag_id: str, run_id: str, session: SessionDep) -> StreamingResponse:
    """The stored report, inline, sandboxed (see ``_report_csp``)."""
    published = _published_by_run(session, dag_id, run_id)
    handle = _open(published, "report.html")
    return StreamingResponse(
        _stream(handle),
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": _report_csp(), "Content-Disposition": "inline"},
    )


def run_file(dag_id: str, run_id: str, name: str, session: SessionDep) -> StreamingResponse:
    """A file the run published, by its name in the manifest (never a path from the request)."""
    published = _published_by_run(session, dag_id, run_id)
    handle = _open(published, name)
    suffix = name[name.rfind(".") :] if "." in name else ""
    return StreamingResponse(
        _stream(handle),
        media_type=_MEDIA_TYPES.get(suffix, "application/octet-stream"),
        # Every download is an attachment: a stored file never renders as a page of Airflow's origin.
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Content-Security-Policy": "sandbox; default-src 'none'",
        },
    )


def run_scored(dag_id: str, run_id: str, session: SessionDep) -> StreamingResponse:
    return run_file(dag_id, run_id, "scored.jsonl", session)


def partitions_page(
    session: SessionDep,
    user: GetUserDep,
    dag_id: str | None = Query(None, max_length=250),
    limit: int = Query(25, ge=1, le=200),
    offset: int = Query(0, ge=0, le=100_000),
) -> HTMLResponse:
    """Published partitions of the DAGs the user may read, newest first, a page at a time."""
    # The auth manager's own answer (teams included); a plugin's sub-app has no auth manager in its
    # state, so the core API's filter dependencies cannot be used here.
    allowed = set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))
    if dag_id is not None and dag_id not in allowed:
        raise HTTPException(403, "you may not read this DAG's runs")
    dags = {dag_id} if dag_id is not None else allowed
    ti = TaskInstance
    runs = session.scalars(
        select(DagRun)
        .join(ti, and_(ti.dag_id == DagRun.dag_id, ti.run_id == DagRun.run_id))
        .where(DagRun.dag_id.in_(dags), ti.task_id == MERGE_TASK, ti.map_index == -1, ti.state == "success")
        .order_by(DagRun.run_after.desc(), DagRun.id.desc())
        .offset(offset)
        .limit(limit + 1)
    ).all()
    more = len(runs) > limit
    rows = []
    for run in runs[:limit]:
        published, _why = _published(run)
        # A partition published again by a later run is that run's row.
        if published is not None and published.belongs_to(run.dag_id, run.run_id):
            rows.append((run, published))
    title = f"Aesthetic partitions: {dag_id}" if dag_id else "Aesthetic partitions"
    if rows:
        body = _sparkline([_median(p) for _, p in reversed(rows)])
        body += _numbers_table(rows, runs_base="runs/", ui_root="../", with_dag=len(dags) > 1)
    else:
        body = "<p class='muted'>No partition has been published on this page.</p>"
    return _html(title, body + _pager(dag_id, limit, offset, more))


# --- rendering -------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _q(value: str) -> str:
    return quote(value, safe="")


def _int(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else ""


def _float(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return ""
    return f"{value:.3f}" if abs(value) < 1e6 else f"{value:.3e}"


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(value, datetime) else ""


def _html(title: str, body: str) -> HTMLResponse:
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<meta name='referrer' content='same-origin'><title>{_e(title)}</title><style>{_CSS}</style>"
        f"</head><body><h1>{_e(title)}</h1>{body}<script>{_UI_JS}</script></body></html>"
    )
    return HTMLResponse(page)


def _value(state: Any) -> str:
    return str(getattr(state, "value", state) or "none")


def _state(state: Any) -> str:
    text = _value(state)
    return f"<span class='state {_e(text)}'>{_e(text)}</span>"


def _run_header(run: DagRun, partition: str | None) -> str:
    ui = f"../../../dags/{_q(run.dag_id)}/runs/{_q(run.run_id)}"
    bits = [
        f"DAG <b>{_e(run.dag_id)}</b>",
        f"run <a href='{ui}' target='_top' class='ui'>{_e(run.run_id)}</a>",
        f"state {_state(run.state)}",
    ]
    if run.logical_date is not None:
        bits.append(f"logical date {_e(_time(run.logical_date))}")
    if partition:
        bits.append(f"partition <b>{_e(partition)}</b>")
    return f"<p>{' · '.join(bits)}</p>"


def _downloads(published: results.Published, base: str) -> str:
    names = [n for n in results.KNOWN_FILES if n in published.files]
    names += sorted(n for n in published.files if n not in results.KNOWN_FILES)
    links = "".join(f"<a href='{base}{_q(n)}' download='{_e(n)}'>{_e(n)}</a>" for n in names)
    return f"<h2>Downloads</h2><p class='downloads'>{links}</p>"


def _counts(published: results.Published) -> Mapping[str, Any]:
    summary = published.manifest.get("summary")
    counts = summary.get("counts") if isinstance(summary, Mapping) else None
    return counts if isinstance(counts, Mapping) else {}


def _median(published: results.Published) -> Any:
    summary = published.manifest.get("summary")
    scores = summary.get("scores") if isinstance(summary, Mapping) else None
    return scores.get("median") if isinstance(scores, Mapping) else None


def _kept(published: results.Published) -> str:
    output = published.manifest.get("output")
    kept = output.get("kept") if isinstance(output, Mapping) else None
    return _int(kept.get("records")) if isinstance(kept, Mapping) else ""


def _thresholds(published: results.Published) -> str:
    config = published.manifest.get("config")
    if not isinstance(config, Mapping):
        return ""
    low, high = _float(config.get("aes_min")), _float(config.get("aes_max"))
    if not low and not high:
        return ""
    return f"{_e(low) or '−∞'} – {_e(high) or '∞'}"


def _numbers_table(
    rows: list[tuple[DagRun, results.Published]],
    *,
    runs_base: str | None,
    ui_root: str,
    with_dag: bool = False,
) -> str:
    """The partitions' numbers; with ``runs_base``, one row per run with its tab (in the UI) and downloads."""
    listing = runs_base is not None
    head = ["DAG"] if with_dag else []
    if listing:
        head += ["Logical date", "Run", "State", "Partition"]
    head += ["Records", "Clips", "Scored", "Failed", "Median", "Thresholds", "Kept", "Published"]
    if listing:
        head.append("Downloads")
    out = ["<div class='wide'><table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for run, published in rows:
        counts = _counts(published)
        d, r = _q(run.dag_id), _q(run.run_id)
        cells = [f"<td>{_e(run.dag_id)}</td>"] if with_dag else []
        if listing:
            tab = f"{ui_root}dags/{d}/runs/{r}/plugin/{TAB_ROUTE}"
            cells += [
                f"<td>{_e(_time(run.logical_date)[:10])}</td>",
                f"<td class='id'><a href='{tab}' target='_top' class='ui' title='The run&#39;s Aesthetic scores tab'>"
                f"{_e(run.run_id)}</a></td>",
                f"<td>{_state(run.state)}</td>",
                f"<td class='id'>{_e(published.partition)}</td>",
            ]
        cells += [f"<td class='n'>{_int(counts.get(k))}</td>" for k in ("records", "clips", "scored", "failed")]
        cells += [
            f"<td class='n'>{_e(_float(_median(published)))}</td>",
            f"<td>{_thresholds(published)}</td>",
            f"<td class='n'>{_kept(published)}</td>",
            f"<td>{_e(_time(published.published_at)[:16])}</td>",
        ]
        if listing:
            files = " ".join(
                f"<a href='{runs_base}{d}/{r}/files/{_q(n)}' download='{_e(n)}' title='{_e(n)}'>{_e(n.split('.')[0])}</a>"
                for n in results.KNOWN_FILES
                if n in published.files and n != MANIFEST_NAME
            )
            cells.append(f"<td class='downloads'>{files}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _state_note(session: Any, run: DagRun, ui_root: str, why: str | None) -> str:
    """What a run that published nothing is doing: never "no scores yet" for a run that failed."""
    state = _value(run.state)
    tis = session.scalars(
        select(TaskInstance).where(TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id)
    ).all()
    failed = sorted((t for t in tis if _value(t.state) == "failed"), key=_ti_order)
    check = next((t for t in tis if t.task_id == CHECK_TASK and t.map_index == -1), None)
    parts = []
    if why:
        parts.append(f"<p class='failed'>The published result cannot be shown: {_e(why)}</p>")
    if failed:
        parts.append(f"<p>This run {_state(state)}: these tasks failed (their logs say why).</p>")
        parts.append("<table><thead><tr><th>Task</th><th>Map index</th><th>Try</th><th>Log</th></tr></thead><tbody>")
        for ti in failed:
            path = f"{ui_root}dags/{_q(run.dag_id)}/runs/{_q(run.run_id)}/tasks/{_q(ti.task_id)}"
            if ti.map_index >= 0:
                path += f"/mapped/{ti.map_index}"
            tries = _int(ti.try_number)
            log_url = path + (f"?try_number={tries}" if tries else "")
            parts.append(
                f"<tr><td>{_e(ti.task_id)}</td><td class='n'>{_e(ti.map_index if ti.map_index >= 0 else '')}</td>"
                f"<td class='n'>{tries}</td><td><a href='{log_url}' target='_top' class='ui'>log</a></td></tr>"
            )
        parts.append("</tbody></table>")
    elif check is not None and _value(check.state) == "skipped":
        parts.append(f"<p>This run {_state(state)}: {CHECK_TASK} was skipped, so there was no input to score.</p>")
    elif state in ("queued", "running"):
        parts.append(f"<p>This run is {_state(state)}: its files appear here once its merge task has published.</p>")
    elif state == "failed":
        parts.append(f"<p>This run {_state(state)} before any task failed (it was marked failed).</p>")
    elif not why:
        parts.append(f"<p>This run {_state(state)} but its partition has no published result in the output store.</p>")
    return "".join(parts)


def _ti_order(ti: TaskInstance) -> tuple[str, int]:
    return (ti.task_id, ti.map_index)


def _sparkline(medians: list[Any]) -> str:
    """An inline SVG line of the median over the page's partitions, oldest first; nothing below two points."""
    values = [float(v) for v in medians if not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)]
    if len(values) < 2:
        return ""
    low, high = min(values), max(values)
    span = high - low
    width, height = 240, 40
    step = width / (len(values) - 1)
    if not math.isfinite(span) or span == 0:
        ys = [height / 2] * len(values)
    else:
        ys = [height - 2 - (v - low) / span * (height - 4) for v in values]
    points = " ".join(f"{i * step:.1f},{y:.1f}" for i, y in enumerate(ys))
    label = f"Median over these {len(values)} partitions, oldest to newest: {_float(low)} to {_float(high)}"
    return (
        f"<p class='muted'>{_e(label)}</p><svg width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
        f"role='img' aria-label='{_e(label)}'><polyline class='spark' points='{points}'/></svg>"
    )


def _pager(dag_id: str | None, limit: int, offset: int, more: bool) -> str:
    def link(to: int, text: str) -> str:
        query = {"limit": limit, "offset": to, **({"dag_id": dag_id} if dag_id else {})}
        return f"<a href='partitions?{_e(urlencode(query))}'>{_e(text)}</a>"

    links = []
    if offset > 0:
        links.append(link(max(0, offset - limit), "← newer"))
    if more:
        links.append(link(offset + limit, "older →"))
    return f"<p class='pager'>{''.join(links)}</p>" if links else ""


# --- files -----------------------------------------------------------------------------------------


def _open(published: results.Published, name: str) -> IO[bytes]:
    try:
        return results.open_file(published, name)
    except results.Refused as err:
        raise HTTPException(404, str(err)) from None


def _stream(handle: IO[bytes]) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(_CHUNK):
            yield chunk
