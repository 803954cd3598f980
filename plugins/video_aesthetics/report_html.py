"""The score report as one self-contained HTML page, from ``report.ReportBuilder``'s summary.

Nothing in the page is fetched at view time: the histogram is inline SVG, the thumbnails are
base64 JPEG in ``data:`` URIs, the table sorter is a few lines of inline script, the fonts are the
system's. Every text that comes from the records is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from video_aesthetics import __version__
from video_aesthetics.provenance import model_provenance
from video_aesthetics.score_stats import FLOAT_MAX, fraction
from video_aesthetics.thumbnails import THUMBNAIL_PX, thumbnail


def render_html(summary: Mapping[str, Any], *, title: str | None = None, thumbnail_px: int = THUMBNAIL_PX) -> str:
    """One self-contained HTML page for ``summary``: nothing in it is fetched at view time.

    Thumbnails of the best and worst clips are decoded here from the frames the summary names (or,
    whole-video, from the videos), so the files must be reachable where this runs.
    """
    counts = summary["counts"]
    scores = summary.get("scores")
    unit = summary.get("unit", "clip")
    digits = _digits(scores)
    title = title or "Aesthetic score report"
    subtitle = _subtitle(summary)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}{' · ' + _e(subtitle) if subtitle else ''}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1><p class='sub'>{_e(subtitle)}</p></header>",
        _provenance_banner(summary),
        _cards(summary),
        "<section id='distribution'><h2>Score distribution</h2>",
    ]
    if scores:
        parts += [_histogram_svg(summary, digits), _legend(summary), _stats_table(scores, digits)]
        parts.append(_filter_note(summary))
    else:
        parts.append(f"<p class='empty'>No {unit} was scored.</p>")
    parts.append("</section>")
    parts.append(
        _gallery("best", f"Best {len(summary['best'])} {unit}s", summary["best"], summary, thumbnail_px, digits)
    )
    worst = summary["worst"]
    parts.append(_gallery("worst", f"Worst {len(worst)} {unit}s", worst, summary, thumbnail_px, digits))
    parts.append(_failures(summary))
    parts.append(_videos(summary, digits))
    parts.append(_key_values("model", "Model", summary.get("model") or {}, "The caller did not record the model."))
    parts.append(_key_values("run", "Run", {**(summary.get("run") or {}), "config": summary.get("config")}, ""))
    parts.append(
        f"<footer>video-aesthetics {_e(summary.get('version', __version__))} · "
        f"{counts['records']} records read from {_e(summary.get('source') or 'the scored output')}</footer>"
    )
    parts.append(f"<script>{_SORT_JS}</script></body></html>")
    return "\n".join(parts) + "\n"


def _provenance_banner(summary: Mapping[str, Any]) -> str:
    """A banner at the top unless the scores are the official pair's (by checksum), naming what was used."""
    found = model_provenance(summary.get("model"))
    if found.official:
        return ""
    if found.official is None:
        return (
            "<div class='banner unknown' id='provenance' role='note'><b>Model not recorded.</b> This report does "
            "not say which CLIP model and aesthetic head scored these clips, so it cannot show that they are "
            "OpenAI's ViT-L/14 with LAION's head (pass --run-info with the line `score` printed).</div>"
        )
    reasons = "".join(f"<li>{_e(problem)}</li>" for problem in found.problems)
    return (
        "<div class='banner warning' id='provenance' role='alert'><b>Not the official model.</b> These scores "
        "were not made by OpenAI's CLIP ViT-L/14 with LAION's aesthetic head (checked by SHA-256), so they are "
        f"not LAION aesthetic scores and do not rank like them:<ul>{reasons}</ul>"
        f"<p>CLIP: <code>{_e(found.clip)}</code><br>Head: <code>{_e(found.head)}</code></p></div>"
    )


def _subtitle(summary: Mapping[str, Any]) -> str:
    run = summary.get("run") or {}
    bits = [f"{key} {run[key]}" for key in ("dag_id", "partition", "run_id", "logical_date") if run.get(key)]
    if not bits and summary.get("source"):
        bits.append(str(summary["source"]))
    return " · ".join(bits)


def _cards(summary: Mapping[str, Any]) -> str:
    counts = summary["counts"]
    unit = summary.get("unit", "clip")
    cards = [
        ("Records", counts["records"], "input records in the scored output"),
        (f"{unit.capitalize()}s", counts["clips"], f"{unit}s to score"),
        ("Scored", counts["scored"], f"{unit}s with a score"),
        ("Failed", counts["failed"], f"{unit}s without a score (see below)"),
        ("Passthrough", counts["passthrough"], f"records with no {unit} to score, passed through"),
        ("Rejected", counts["rejected"], "malformed input lines sent to the rejects file"),
    ]
    kept = summary.get("filter")
    if kept:
        cards.append(("Kept", kept["kept"], "passing the aesthetic filter (filtered: true)"))
    html_cards = "".join(
        f"<div class='card' title='{_e(hint)}'><div class='n'>{'—' if value is None else f'{value:,}'}</div>"
        f"<div class='l'>{_e(label)}</div></div>"
        for label, value, hint in cards
    )
    return f"<section class='cards' id='counts'>{html_cards}</section>"


def _digits(scores: Mapping[str, Any] | None) -> int:
    """Decimals that show differences across the score range: 3 for scores spread over units."""
    if not scores:
        return 3
    span = scores["max"] / 2 - scores["min"] / 2  # halved: finite for any finite scores
    if not span > 0:
        return 3
    return max(2, min(8, 1 - math.floor(math.log10(span))))


# Beyond this magnitude a score is shown in exponent form: 1e+17, not eighteen digits and decimals.
_PLAIN_LIMIT = 1e9


def _f(value: float | None, digits: int) -> str:
    if value is None:
        return "—"
    if value != 0 and not 10.0**-digits <= abs(value) < _PLAIN_LIMIT:
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}"


_LINES = (
    ("p5", "p5", "#8a8a8a", "2,3"),
    ("p25", "p25", "#5a5a5a", "5,3"),
    ("median", "median", "#111", ""),
    ("p75", "p75", "#5a5a5a", "5,3"),
    ("p95", "p95", "#8a8a8a", "2,3"),
    ("mean", "mean", "#1f77b4", "8,3,2,3"),
)


def _histogram_svg(summary: Mapping[str, Any], digits: int) -> str:
    scores = summary["scores"]
    hist = scores["histogram"]
    edges, counts = hist["edges"], hist["counts"]
    width, height, left, right, top, bottom = 960, 320, 60, 20, 56, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    low, high = _padded(edges[0], edges[-1])

    def x(value: float) -> float:
        return left + fraction(value, low, high) * plot_w

    peak = max(counts) or 1
    out = [
        f"<svg id='histogram' viewBox='0 0 {width} {height}' width='100%' role='img' "
        f"aria-label='Histogram of {scores['count']} scores'>"
    ]
    filt = summary.get("filter")
    if filt:
        # Shade what the filter drops, so the threshold reads at a glance.
        if filt.get("aes_min") is not None:
            out.append(_shade(left, x(filt["aes_min"]), top, plot_h))
        if filt.get("aes_max") is not None:
            out.append(_shade(x(filt["aes_max"]), left + plot_w, top, plot_h))
    for value in _nice_ticks(0, peak, 4):
        y = top + plot_h - value / peak * plot_h
        out.append(f"<line x1='{left}' x2='{left + plot_w}' y1='{y:.1f}' y2='{y:.1f}' class='grid'/>")
        out.append(f"<text x='{left - 6}' y='{y + 4:.1f}' class='tick' text-anchor='end'>{value:g}</text>")
    out.extend(_bars(edges, counts, x, top + plot_h, plot_h / peak, digits))
    axis_y = top + plot_h
    out.append(f"<line x1='{left}' x2='{left + plot_w}' y1='{axis_y}' y2='{axis_y}' class='axis'/>")
    for value in _nice_ticks(low, high, 8):
        out.append(f"<text x='{x(value):.1f}' y='{axis_y + 18}' class='tick' text-anchor='middle'>{value:g}</text>")
    out.append(
        f"<text x='{left + plot_w / 2}' y='{height - 6}' class='label' text-anchor='middle'>aesthetic score</text>"
    )
    markers = [(name, scores[key], colour, dash) for key, name, colour, dash in _LINES]
    if filt:
        for key in ("aes_min", "aes_max"):
            if filt.get(key) is not None:
                markers.append((key, filt[key], "#d62728", ""))
    out.extend(_marker_lines(markers, x, top, axis_y, digits))
    out.append("</svg>")
    return "".join(out)


def _bars(
    edges: list[float], counts: list[int], x: Callable[[float], float], base: float, scale: float, digits: int
) -> list[str]:
    """One bar per non-empty bin, ``scale`` pixels per clip, standing on ``base``."""
    bars = []
    for i, count in enumerate(counts):
        if not count:
            continue
        x0, x1 = x(edges[i]), x(edges[i + 1]) if len(edges) > 1 else x(edges[0]) + 4
        bar_h = count * scale
        bars.append(
            f"<rect class='bar' x='{x0:.1f}' y='{base - bar_h:.1f}' width='{max(x1 - x0 - 1, 1):.1f}' "
            f"height='{bar_h:.1f}'><title>{_f(edges[i], digits)} to {_f(edges[i + 1], digits)}: "
            f"{count}</title></rect>"
        )
    return bars


def _marker_lines(
    markers: list[tuple[str, float, str, str]], x: Callable[[float], float], top: float, axis_y: float, digits: int
) -> list[str]:
    """A labelled vertical line per marker; labels of close lines go on up to three rows so they do not overlap."""
    out = []
    rows = [-1e9, -1e9, -1e9]
    for name, value, colour, dash in sorted(markers, key=lambda m: m[1]):
        px = x(value)
        row = next((r for r in range(len(rows)) if px - rows[r] > 84), len(rows) - 1)
        rows[row] = px
        extra = f" stroke-dasharray='{dash}'" if dash else ""
        weight = 2.5 if name.startswith("aes_") else 1.5
        out.append(
            f"<line class='marker' data-name='{name}' x1='{px:.1f}' x2='{px:.1f}' y1='{top - 4 - 14 * (2 - row)}' "
            f"y2='{axis_y}' stroke='{colour}' stroke-width='{weight}'{extra}/>"
        )
        out.append(
            f"<text x='{px:.1f}' y='{top - 8 - 14 * (2 - row)}' class='mlabel' fill='{colour}' "
            f"text-anchor='middle'>{_e(name)} {_f(value, digits)}</text>"
        )
    return out


def _shade(x0: float, x1: float, top: float, plot_h: float) -> str:
    if x1 <= x0:
        return ""
    return f"<rect class='dropped' x='{x0:.1f}' y='{top}' width='{x1 - x0:.1f}' height='{plot_h}'/>"


def _padded(low: float, high: float) -> tuple[float, float]:
    """The plotted range: [low, high] widened by 2% a side (by 0.5, or a millionth of it, for one value), within floats."""
    if high <= low:
        spread = max(0.5, abs(low) * 1e-6)
        low, high = low - spread, high + spread
    pad = (high / 2 - low / 2) * 0.04
    return max(low - pad, -FLOAT_MAX), min(high + pad, FLOAT_MAX)


def _nice_ticks(low: float, high: float, count: int) -> list[float]:
    """Round values between low and high, about ``count`` of them; at most a few more, whatever the range."""
    raw = (high / count - low / count) if high > low else 0.0  # divided first: finite for any finite pair
    if not (raw > 0 and math.isfinite(raw)):
        return [low]
    magnitude = 10.0 ** math.floor(math.log10(raw))
    steps = [m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw]
    if not magnitude > 0 or not steps or not math.isfinite(steps[0]):
        return [low, high]
    step = steps[0]
    first = math.ceil(low / step)
    ticks: list[float] = []
    # By index, not by adding step: past 2**53 adding a small step to a large value changes nothing.
    for index in range(count * 3):
        value = (first + index) * step
        if not math.isfinite(value) or value > high + step * 1e-9:
            break
        value = round(value, 12)
        if not ticks or value != ticks[-1]:
            ticks.append(value)
    return ticks or [low]


def _legend(summary: Mapping[str, Any]) -> str:
    scores = summary["scores"]
    unit = summary.get("unit", "clip")
    items = [
        "<span><i class='sw bar'></i>scores</span>",
        "<span><i class='sw' style='border-color:#111'></i>median</span>",
        "<span><i class='sw dash' style='border-color:#5a5a5a'></i>p25 / p75</span>",
        "<span><i class='sw dot' style='border-color:#8a8a8a'></i>p5 / p95</span>",
        "<span><i class='sw dash' style='border-color:#1f77b4'></i>mean</span>",
    ]
    if summary.get("filter"):
        items.append("<span><i class='sw' style='border-color:#d62728'></i>threshold (shaded: filtered out)</span>")
    return f"<div class='legend'>{''.join(items)}</div><p class='note'>{_e(_precision_note(scores, unit))}</p>"


def _precision_note(scores: Mapping[str, Any], unit: str) -> str:
    """What the bars and the table's numbers are, in plain words."""
    edges = (scores.get("histogram") or {}).get("edges") or []
    bar = f"Each bar spans {_g(edges[1] - edges[0])} points of score. " if len(edges) > 1 else ""
    error = scores.get("percentile_error")
    shown = 0.5 * 10.0 ** -_digits(scores)
    if isinstance(error, int | float) and error <= shown:
        percentiles = "the percentiles are exact at the precision shown"
    else:
        percentiles = f"the percentiles to within {_g(error)} points"
    return (
        f"{bar}The bars group the {unit}s' scores for display only: the table's numbers are computed from the "
        f"scores themselves, the mean and extremes exactly, {percentiles}."
    )


def _g(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) and math.isfinite(value) else "—"


def _stats_table(scores: Mapping[str, Any], digits: int) -> str:
    names = ["count", "mean", "std", "min", "p5", "p25", "median", "p75", "p95", "max"]
    head = "".join(f"<th>{name}</th>" for name in names)
    cells = "".join(
        f"<td>{scores[name]:,}</td>" if name == "count" else f"<td>{_f(scores[name], digits)}</td>" for name in names
    )
    return f"<table class='stats' id='stats'><tr>{head}</tr><tr>{cells}</tr></table>"


def _filter_note(summary: Mapping[str, Any]) -> str:
    filt = summary.get("filter")
    flags = summary.get("flags") or {}
    unit = summary.get("unit", "clip")
    text = ""
    if filt:
        bounds = " and ".join(f"{name} {filt[name]:g}" for name in ("aes_min", "aes_max") if filt.get(name) is not None)
        total = summary["counts"]["clips"] or 1
        text = (
            f"<p class='filter'>Filter {_e(bounds)}: <b>{filt['kept']:,}</b> {unit}s kept "
            f"({100 * filt['kept'] / total:.1f}%), <b>{filt['filtered_out']:,}</b> filtered out "
            "(below or above the thresholds, unscored, or already marked filtered: false).</p>"
        )
    if flags.get("true") or flags.get("false"):
        text += (
            f"<p class='note'>The file marks {flags.get('true', 0):,} {unit}s filtered: true and "
            f"{flags.get('false', 0):,} filtered: false.</p>"
        )
    return text


def _gallery(
    anchor: str, heading: str, entries: list[Mapping[str, Any]], summary: Mapping[str, Any], px: int, digits: int
) -> str:
    if not entries:
        return f"<section id='{anchor}'><h2>{_e(heading)}</h2><p class='empty'>None.</p></section>"
    figures = []
    for entry in entries:
        thumb = thumbnail(entry, summary, px)
        image = (
            f"<img src='{thumb}' alt='{_e(entry['clip_id'])}' loading='lazy'>"
            if thumb
            else "<div class='noimg'>no frame</div>"
        )
        video = str(entry.get("video") or "")
        figures.append(
            f"<figure class='clip'>{image}<figcaption><b>{_f(entry['score'], digits)}</b> "
            f"<span class='id' title='{_e(entry['clip_id'])}'>{_e(entry['clip_id'])}</span>"
            f"<span class='video' title='{_e(video)}'>{_e(_basename(video))}</span></figcaption></figure>"
        )
    return f"<section id='{anchor}'><h2>{_e(heading)}</h2><div class='grid'>{''.join(figures)}</div></section>"


def _basename(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _failures(summary: Mapping[str, Any]) -> str:
    failures = summary.get("failures") or {}
    unit = summary.get("unit", "clip")
    if not failures:
        return (
            f"<section id='failures'><h2>{unit.capitalize()}s without a score</h2><p class='empty'>None.</p></section>"
        )
    rows = []
    for reason, info in failures.items():
        examples = ", ".join(
            f"<span title='{_e(ex.get('video', ''))}'>{_e(ex['clip_id'])}</span>" for ex in info["examples"]
        )
        more = info["count"] - len(info["examples"])
        if more > 0:
            examples += f" and {more:,} more"
        rows.append(
            f"<tr><td><code>{_e(reason)}</code></td><td class='num'>{info['count']:,}</td><td>{examples}</td></tr>"
        )
    return (
        f"<section id='failures'><h2>{unit.capitalize()}s without a score</h2>"
        "<table><thead><tr><th>reason</th><th>count</th><th>examples</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _videos(summary: Mapping[str, Any], digits: int) -> str:
    table = summary.get("videos") or {}
    rows = table.get("rows") or []
    if not rows:
        return "<section id='videos'><h2>Videos</h2><p class='empty'>No video has a score.</p></section>"
    if table.get("complete"):
        note = f"All {len(rows):,} videos with a score"
    else:
        note = f"The {table['limit']:,} best and {table['limit']:,} worst of {table['count']:,} videos by mean score"
    if table.get("without_scores"):
        note += f"; {table['without_scores']:,} videos have no scored clip"
    note += ". One row per input record; click a column to sort."
    body = "".join(
        "<tr>"
        f"<td data-v='{_e(row['video'])}' title='{_e(row['video'])}'>{_e(_basename(row['video']) or '?')}</td>"
        f"<td class='num' data-v='{row['record'] + 1}'>{row['record'] + 1:,}</td>"
        f"<td class='num' data-v='{row['clips']}'>{row['clips']:,}</td>"
        f"<td class='num' data-v='{row['scored']}'>{row['scored']:,}</td>"
        + "".join(f"<td class='num' data-v='{row[k]!r}'>{_f(row[k], digits)}</td>" for k in ("mean", "min", "max"))
        + "</tr>"
        for row in rows
    )
    head = "".join(
        f"<th data-type='{kind}'>{name}</th>"
        for name, kind in (
            ("video", "text"),
            ("record", "num"),
            ("clips", "num"),
            ("scored", "num"),
            ("mean", "num"),
            ("min", "num"),
            ("max", "num"),
        )
    )
    return (
        f"<section id='videos'><h2>Videos</h2><p class='note'>{_e(note)}</p>"
        f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>"
    )


def _key_values(anchor: str, heading: str, data: Mapping[str, Any], empty: str) -> str:
    flat = list(_flatten(data))
    if not flat:
        return f"<section id='{anchor}'><h2>{_e(heading)}</h2><p class='empty'>{_e(empty)}</p></section>"
    rows = "".join(f"<tr><th>{_e(key)}</th><td><code>{_e(value)}</code></td></tr>" for key, value in flat)
    return f"<section id='{anchor}'><h2>{_e(heading)}</h2><table class='kv'>{rows}</table></section>"


def _flatten(data: Any, prefix: str = "") -> Iterable[tuple[str, str]]:
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, list) and data and all(isinstance(v, Mapping) for v in data):
        for index, value in enumerate(data):
            yield from _flatten(value, f"{prefix}[{index}]")
    elif data is not None:
        yield prefix, data if isinstance(data, str) else json.dumps(data)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


_CSS = """
:root{--fg:#1d1d1f;--muted:#666;--line:#ddd;--bar:#6b8fc7;--bg:#fafafa}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);
margin:0 auto;max-width:1200px;padding:16px 24px 48px;background:#fff;line-height:1.4}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.2em;margin:1.6em 0 .5em;border-bottom:1px solid var(--line)}
.sub,.note,footer{color:var(--muted);font-size:.9em}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:12px}
.card{background:var(--bg);border:1px solid var(--line);border-radius:8px;padding:10px 16px;min-width:120px}
.card .n{font-size:1.5em;font-weight:600}.card .l{color:var(--muted);font-size:.85em}
svg{display:block;max-width:960px;background:#fff}
svg .bar{fill:var(--bar)}svg .grid{stroke:#eee}svg .axis{stroke:#333}
svg .tick{font-size:12px;fill:#444}svg .label{font-size:13px;fill:#333}
svg .mlabel{font-size:12px;font-weight:600}svg .dropped{fill:#d62728;opacity:.07}
.legend{display:flex;flex-wrap:wrap;gap:16px;font-size:.85em;color:#333;margin:4px 0}
.sw{display:inline-block;width:18px;height:0;border-top:2px solid;vertical-align:middle;margin-right:5px}
.sw.bar{height:10px;border:0;background:var(--bar)}.sw.dash{border-top-style:dashed}.sw.dot{border-top-style:dotted}
table{border-collapse:collapse;font-size:.9em;margin:6px 0}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;vertical-align:top}
td.num,table.stats td{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;user-select:none;background:var(--bg)}
table.sortable th[data-order=asc]::after{content:" ▲"}table.sortable th[data-order=desc]::after{content:" ▼"}
table.kv th{font-weight:500;color:#444;white-space:nowrap}table.kv code{word-break:break-all}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(172px,1fr));gap:12px}
figure.clip{margin:0;background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:6px}
figure.clip img,.noimg{display:block;max-width:160px;max-height:160px;margin:0 auto}
.noimg{width:160px;height:90px;line-height:90px;text-align:center;color:var(--muted);background:#eee}
figcaption{font-size:.8em;margin-top:4px;overflow:hidden}
figcaption b{font-size:1.15em;margin-right:6px}
figcaption span{display:block;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
figcaption .video{color:var(--muted)}
.filter{background:#fff5f5;border-left:3px solid #d62728;padding:6px 10px}
.empty{color:var(--muted);font-style:italic}
"""

# Sorts a table by the clicked column: numbers by value, text alphabetically; a second click reverses.
_SORT_JS = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
    var asc = th.dataset.order !== "asc", numeric = th.dataset.type === "num";
    table.querySelectorAll("th").forEach(function (h) { delete h.dataset.order; });
    th.dataset.order = asc ? "asc" : "desc";
    var key = function (row) {
      var v = row.cells[col].dataset.v;
      return numeric ? parseFloat(v) : v.toLowerCase();
    };
    Array.from(body.rows)
      .sort(function (a, b) { var x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); })
      .forEach(function (row) { body.appendChild(row); });
  });
});
"""
