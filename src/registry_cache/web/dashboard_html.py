"""The dashboard's HTML, rendered on the server from the ``/api/v1`` documents.

Pure functions: documents in, text out. Every value that came from a request
or a configuration goes through ``esc`` (``html.escape``), so a repository or
tag name cannot inject markup; the page's script only swaps in these
server-rendered parts. Charts are inline SVG (no chart library, no canvas), each
with a ``<title>`` and a ``<desc>`` that says its numbers in words.

Elements holding a number carry ``data-stat="<path in the API document>"`` and
``data-value="<the raw value>"``, so a test (or a person with DevTools) can
check the page against the API.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..units import format_size

PARTS = ("summary", "charts", "upstreams", "fills", "disk", "cluster", "top", "recent")
CHART_W, CHART_H = 560, 170
PAD_L, PAD_R, PAD_T, PAD_B = 64, 12, 12, 28


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def pct(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio * 100:.1f}%"


def size(num: int | None) -> str:
    return "—" if num is None else format_size(num)


def count(num: int | None) -> str:
    return "—" if num is None else f"{num:,}"


def ago(at: float | None, now: float) -> str:
    if at is None:
        return "never"
    seconds = max(0.0, now - at)
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def when(at: float | None, now: float) -> str:
    """``<time>`` with the UTC timestamp, shown relative to now."""
    if at is None:
        return "never"
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    return f'<time datetime="{iso}" title="{iso}">{esc(ago(at, now))}</time>'


def stat(path: str, value: object, text: str) -> str:
    raw = "" if value is None else value
    return f'<span data-stat="{esc(path)}" data-value="{esc(raw)}">{esc(text)}</span>'


def table(
    caption: str, headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str, label: str
) -> str:
    """A scrollable table; ``rows`` hold ready HTML cells (already escaped)."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    return (
        f'<div class="scroll" role="region" aria-label="{esc(label)}" tabindex="0">'
        f"<table><caption>{esc(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


# ---------------------------------------------------------------- parts


def summary_part(doc: dict[str, Any]) -> str:
    tiles = []
    for name, label in (("hour", "Last hour"), ("day", "Last 24 hours")):
        w = doc["summary"][name]
        p = f"summary.{name}"
        tiles.append(f'<h3 class="window">{label}</h3>')
        tiles.append(
            f'<div class="tile"><h4>Hit ratio</h4>'
            f'<p class="big">{stat(p + ".hit_ratio", w["hit_ratio"], pct(w["hit_ratio"]))}</p>'
            f"<p>{stat(p + '.hits', w['hits'], count(w['hits']))} hits, "
            f"{stat(p + '.misses', w['misses'], count(w['misses']))} misses, "
            f"{stat(p + '.requests', w['requests'], count(w['requests']))} requests</p></div>"
        )
        from_cache = stat(
            p + ".bytes_from_cache", w["bytes_from_cache"], size(w["bytes_from_cache"])
        )
        from_up = stat(
            p + ".bytes_from_upstream", w["bytes_from_upstream"], size(w["bytes_from_upstream"])
        )
        tiles.append(
            f'<div class="tile"><h4>Bytes</h4>'
            f'<p class="big">{from_cache} <small>from cache</small></p>'
            f"<p>{from_up} fetched from upstream</p></div>"
        )
        saved_bytes = stat(
            p + ".upstream_bytes_saved", w["upstream_bytes_saved"], size(w["upstream_bytes_saved"])
        )
        saved_requests = stat(
            p + ".upstream_requests_saved",
            w["upstream_requests_saved"],
            count(w["upstream_requests_saved"]),
        )
        errors = stat(p + ".errors", w["errors"], count(w["errors"]))
        tiles.append(
            f'<div class="tile"><h4>Upstream saved</h4>'
            f'<p class="big">{saved_bytes}</p>'
            f"<p>{saved_requests} requests not sent upstream; {errors} errors</p></div>"
        )
    return '<div class="tiles">' + "".join(tiles) + "</div>"


def chart(
    title: str,
    points: Sequence[dict[str, Any]],
    series: Sequence[tuple[str, str, str]],
    *,
    ratio: bool,
    ticks: tuple[str, str, str],
    chart_id: str,
) -> str:
    """A line chart of ``series`` = (label, key, css class) over ``points``."""
    values = [p[key] for p in points for _, key, _ in series if p[key] is not None]
    top = 1.0 if ratio else float(max(values, default=0) or 1)
    inner_w, inner_h = CHART_W - PAD_L - PAD_R, CHART_H - PAD_T - PAD_B
    n = max(1, len(points) - 1)

    def xy(i: int, v: float) -> str:
        return f"{PAD_L + inner_w * i / n:.1f},{PAD_T + inner_h * (1 - v / top):.1f}"

    grid, labels = [], []
    for frac in (0.0, 0.5, 1.0):
        y = PAD_T + inner_h * (1 - frac)
        grid.append(
            f'<line class="grid" x1="{PAD_L}" x2="{CHART_W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        text = pct(frac) if ratio else size(int(top * frac))
        labels.append(
            f'<text class="ylab" x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{esc(text)}</text>"
        )
    for i, (anchor, text) in enumerate(zip(("start", "middle", "end"), ticks, strict=True)):
        x = PAD_L + inner_w * i / 2
        labels.append(
            f'<text class="xlab" x="{x:.1f}" y="{CHART_H - 8}" text-anchor="{anchor}">'
            f"{esc(text)}</text>"
        )
    lines = []
    described = []
    for label, key, css in series:
        segments: list[list[str]] = [[]]
        for i, p in enumerate(points):
            v = p[key]
            if v is None:
                if segments[-1]:
                    segments.append([])
                continue
            segments[-1].append(xy(i, float(v)))
        for seg in segments:
            if len(seg) == 1:
                cx, cy = seg[0].split(",")
                lines.append(f'<circle class="{css}" cx="{cx}" cy="{cy}" r="2.5"/>')
            elif seg:
                lines.append(f'<polyline class="{css}" points="{" ".join(seg)}"/>')
        known = [p[key] for p in points if p[key] is not None]
        if not known:
            described.append(f"{label}: no data")
        elif ratio:
            described.append(f"{label}: latest {pct(known[-1])}, lowest {pct(min(known))}")
        else:
            described.append(f"{label}: {size(sum(known))} in total, peak {size(max(known))}")
    legend = "".join(
        f'<li><span class="swatch {css}" aria-hidden="true"></span>{esc(label)}</li>'
        for label, _, css in series
    )
    desc = "; ".join(described)
    return (
        f'<figure class="chart"><svg viewBox="0 0 {CHART_W} {CHART_H}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d">'
        f'<title id="{chart_id}-t">{esc(title)}</title><desc id="{chart_id}-d">{esc(desc)}</desc>'
        + "".join(grid)
        + "".join(lines)
        + "".join(labels)
        + f'</svg><figcaption>{esc(title)}<ul class="legend">{legend}</ul></figcaption></figure>'
    )


def charts_part(hour: dict[str, Any], day: dict[str, Any]) -> str:
    out = []
    for hist, name, ticks in (
        (hour, "hour", ("60 min ago", "30 min ago", "now")),
        (day, "day", ("24 h ago", "12 h ago", "now")),
    ):
        step = "per minute" if name == "hour" else "per 15 minutes"
        span = "last hour" if name == "hour" else "last 24 hours"
        out.append(
            chart(
                f"Hit ratio, {span} ({step})",
                hist["points"],
                [("hit ratio", "hit_ratio", "s1")],
                ratio=True,
                ticks=ticks,
                chart_id=f"ratio-{name}",
            )
        )
        out.append(
            chart(
                f"Bytes served from cache vs fetched from upstream, {span} ({step})",
                hist["points"],
                [
                    ("served from cache", "bytes_from_cache", "s1"),
                    ("fetched from upstream", "bytes_from_upstream", "s2"),
                ],
                ratio=False,
                ticks=ticks,
                chart_id=f"bytes-{name}",
            )
        )
    return '<div class="charts">' + "".join(out) + "</div>"


STATE_TEXT = {
    "ok": "reachable",
    "unreachable": "unreachable",
    "rate-limited": "rate limited",
    "denied": "refusing the cache's credentials",
    "failing": "failing",
    "unknown": "no traffic yet",
}


def upstreams_part(doc: dict[str, Any]) -> str:
    now = doc["generated_at"]
    rows = []
    for i, u in enumerate(doc["upstreams"]):
        p = f"upstreams.{i}"
        err = u["last_error"]
        error_cell = (
            f"{esc(err['message'] or err['kind'])} <small>({when(err['at'], now)})</small>"
            if err
            else "none"
        )
        state = u["state"]
        rows.append(
            [
                f"<strong>{esc(u['name'])}</strong><br><small>{esc(u['url'])}</small>",
                f'<span class="state {esc(state)}" data-stat="{p}.state" '
                f'data-value="{esc(state)}">{esc(STATE_TEXT.get(state, state))}</span>'
                f"<br><small>last success {when(u['last_ok_at'], now)}</small>",
                error_cell,
                stat(
                    f"{p}.ratelimit_remaining",
                    u["ratelimit_remaining"],
                    count(u["ratelimit_remaining"]),
                ),
                stat(
                    f"{p}.stale_serves.hour",
                    u["stale_serves"]["hour"],
                    count(u["stale_serves"]["hour"]),
                )
                + " / "
                + stat(
                    f"{p}.stale_serves.day",
                    u["stale_serves"]["day"],
                    count(u["stale_serves"]["day"]),
                ),
                stat(
                    f"{p}.day.bytes_from_upstream",
                    u["day"]["bytes_from_upstream"],
                    size(u["day"]["bytes_from_upstream"]),
                ),
                stat(f"{p}.day.hit_ratio", u["day"]["hit_ratio"], pct(u["day"]["hit_ratio"])),
            ]
        )
    return table(
        "Upstream registries",
        [
            "upstream",
            "state",
            "last error",
            "ratelimit remaining",
            "stale serves (1 h / 24 h)",
            "fetched (24 h)",
            "hit ratio (24 h)",
        ],
        rows,
        "No upstream is configured.",
        "Upstreams",
    )


def fills_part(fills: Sequence[dict[str, Any]]) -> str:
    rows = []
    for i, f in enumerate(fills):
        p = f"fills.{i}"
        where = f"{f['upstream']}/{f['repository']}" if f["upstream"] else "(another worker)"
        total = f["size"]
        bar = (
            f'<progress max="{total}" value="{f["written"]}" aria-label="{esc(f["digest"])} '
            f'progress">{esc(pct((f["percent"] or 0) / 100))}</progress> '
            if total
            else ""
        )
        rate = f["rate_bytes_per_second"]
        rows.append(
            [
                esc(where),
                f'<code title="{esc(f["digest"])}">{esc(f["digest"][:19])}…</code>',
                bar
                + stat(f"{p}.written", f["written"], size(f["written"]))
                + " / "
                + stat(f"{p}.size", total, size(total)),
                esc(size(rate) + "/s" if rate is not None else "—"),
                stat(f"{p}.followers", f["followers"], count(f["followers"])),
                esc(f["worker"]),
            ]
        )
    return table(
        "Fills in flight",
        ["repository", "digest", "progress", "rate (average)", "followers", "worker"],
        rows,
        "No fill in flight.",
        "Fills in flight",
    )


def disk_part(doc: dict[str, Any]) -> str:
    d = doc["disk"]
    used, cap = d["used_bytes"], d["cap_bytes"]
    meter = (
        f'<meter min="0" max="{cap}" value="{used}" aria-label="disk use">'
        f"{esc(pct(d['used_ratio']))}</meter>"
        if cap and used is not None
        else ""
    )
    cap_text = (
        f"{stat('disk.cap_bytes', cap, size(cap))} cap ({esc(d['cap_source'])}), "
        f"{stat('disk.used_ratio', d['used_ratio'], pct(d['used_ratio']))} used"
        if cap
        else "no size cap"
    )
    ev = d["evictions"]
    free = stat(
        "disk.filesystem_free_bytes", d["filesystem_free_bytes"], size(d["filesystem_free_bytes"])
    )
    return (
        f'<div class="tile wide"><p class="big">{stat("disk.used_bytes", used, size(used))}'
        f" <small>cached</small></p>{meter}<p>{cap_text}; {free} free on the file system.</p>"
        f"<p>Evictions: {stat('disk.evictions.hour', ev['hour'], count(ev['hour']))} in the last"
        f" hour ({esc(size(ev['hour_bytes']))}), "
        f"{stat('disk.evictions.day', ev['day'], count(ev['day']))} in 24 hours"
        f" ({esc(size(ev['day_bytes']))}).</p></div>"
    )


def cluster_part(doc: dict[str, Any]) -> str:
    """Every replica (cluster mode) and the shared tier (a bucket), when there are any."""
    replicas = [r for r in doc["replicas"] if r.get("url")]
    rows = []
    for i, r in enumerate(replicas):
        tier = r.get("local_tier") or {}
        cap = tier.get("cap")
        name = esc(r["url"]) + (" <small>(this one)</small>" if r.get("self") else "")
        state = "up" if r.get("alive") else "gone"
        rows.append(
            [
                name,
                stat(f"replicas.{i}.alive", int(bool(r.get("alive"))), state),
                esc(f"{r.get('seen_seconds_ago', 0):.0f} s ago"),
                stat(
                    f"replicas.{i}.local_tier.objects",
                    tier.get("objects"),
                    count(tier.get("objects")),
                ),
                stat(f"replicas.{i}.local_tier.bytes", tier.get("bytes"), size(tier.get("bytes"))),
                esc(size(cap) if cap else "none"),
            ]
        )
    parts = []
    if rows:
        parts.append(
            table(
                "Replicas sharing this cache's index",
                ["replica", "state", "heartbeat", "objects", "local tier", "cap"],
                rows,
                "No replica has announced itself yet.",
                "replicas",
            )
        )
    shared = doc.get("shared_tier")
    if shared:
        cap = shared.get("cap")
        state = "reachable" if shared.get("reachable") else f"unreachable: {shared.get('error')}"
        parts.append(
            f'<div class="tile wide"><p class="big">'
            f"{stat('shared_tier.bytes', shared.get('bytes'), size(shared.get('bytes')))}"
            f" <small>in {esc(shared['url'])}</small></p>"
            f"<p>{stat('shared_tier.objects', shared.get('objects'), count(shared.get('objects')))}"
            f" objects; cap {esc(size(cap) if cap else 'none')}; "
            f"{stat('shared_tier.reachable', int(bool(shared.get('reachable'))), state)}.</p></div>"
        )
    if not parts:
        return '<p class="empty">One node, no shared tier.</p>'
    return "".join(parts)


def top_part(doc: dict[str, Any]) -> str:
    out = []
    for key, caption in (("by_pulls", "Top images by pulls"), ("by_bytes", "Top images by bytes")):
        rows = [
            [
                esc(t["image"]),
                stat(f"top_images.{key}.{i}.pulls", t["pulls"], count(t["pulls"])),
                stat(f"top_images.{key}.{i}.bytes", t["bytes"], size(t["bytes"])),
            ]
            for i, t in enumerate(doc["top_images"][key])
        ]
        listing = table(
            caption + " (24 h)", ["image", "pulls", "bytes served"], rows, "No pulls yet.", caption
        )
        out.append(f'<div class="half">{listing}</div>')
    return '<div class="pair">' + "".join(out) + "</div>"


def recent_part(doc: dict[str, Any]) -> str:
    now = doc["generated_at"]
    pulls = [
        [
            when(e["at"], now),
            esc(f"{e['upstream']}/{e['repository']}:{e['reference']}"),
            esc(e["cache"] or "—"),
            esc(e["status"]),
            esc(size(e["bytes"])),
            esc(f"{e['duration_ms']:.1f} ms"),
        ]
        for e in doc["recent"]["pulls"]
    ]
    errors = [
        [
            when(e["at"], now),
            esc(
                f"{e['method']} {e['upstream'] or '-'}/{e['repository'] or '-'}"
                f"{':' + e['reference'] if e['reference'] else ''}"
            ),
            esc(e["status"]),
            esc(e["error"] or "—"),
            esc(e["message"] or ""),
        ]
        for e in doc["recent"]["errors"]
    ]
    return (
        '<div class="stack"><div>'
        + table(
            "Most recent pulls",
            ["when", "image", "cache", "status", "bytes", "time"],
            pulls,
            "No pulls yet.",
            "Recent pulls",
        )
        + "</div><div>"
        + table(
            "Most recent errors",
            ["when", "request", "status", "code", "message"],
            errors,
            "No errors.",
            "Recent errors",
        )
        + "</div></div>"
    )


def render_parts(
    doc: dict[str, Any], hour: dict[str, Any], day: dict[str, Any], names: Iterable[str] = PARTS
) -> dict[str, str]:
    makers = {
        "summary": lambda: summary_part(doc),
        "charts": lambda: charts_part(hour, day),
        "upstreams": lambda: upstreams_part(doc),
        "fills": lambda: fills_part(doc["fills"]),
        "disk": lambda: disk_part(doc),
        "cluster": lambda: cluster_part(doc),
        "top": lambda: top_part(doc),
        "recent": lambda: recent_part(doc),
    }
    return {name: makers[name]() for name in names}


SECTIONS = (
    ("summary", "At a glance"),
    ("charts", "History"),
    ("upstreams", "Upstreams"),
    ("fills", "Fills in flight"),
    ("disk", "Disk"),
    ("cluster", "Cluster"),
    ("top", "Top images"),
    ("recent", "Recent activity"),
)


def render_page(
    doc: dict[str, Any],
    hour: dict[str, Any],
    day: dict[str, Any],
    links: Sequence[tuple[str, str]],
) -> str:
    parts = render_parts(doc, hour, day)
    node = doc["node"]
    nav = "".join(f'<li><a href="{esc(href)}">{esc(text)}</a></li>' for href, text in links)
    sections = "".join(
        f'<section aria-labelledby="h-{name}"><h2 id="h-{name}">{esc(title)}</h2>'
        f'<div data-part="{name}">{parts[name]}</div></section>'
        for name, title in SECTIONS
    )
    workers = f"{node['workers_reporting']} of {node['workers']} worker(s) reporting"
    if node["others_age_seconds"] is not None:
        workers += f", other workers' numbers up to {node['others_age_seconds']:.0f} s old"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>registry-cache on {esc(node["name"])}</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/dashboard.css">
<script src="/static/dashboard.js" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to the numbers</a>
<header>
<h1>registry-cache <small>on {esc(node["name"])}</small></h1>
<p class="meta">version {esc(node["version"])}; {esc(workers)};
updated <span id="updated">{esc(when_text(doc["generated_at"]))}</span>
<button type="button" id="pause" aria-pressed="false">Pause updates</button></p>
<nav aria-label="Client configuration and API"><ul>{nav}</ul></nav>
</header>
<main id="main">
<noscript><p>Updates need JavaScript; reload the page for fresh numbers.</p></noscript>
{sections}
</main>
</body>
</html>
"""


def when_text(at: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(at))
