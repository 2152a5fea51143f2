"""``registry-cache status --cache URL [--json] [--watch]``: the dashboard in a terminal.

Reads ``GET /api/v1/stats`` of a running cache (``--ca-file`` for a private CA,
``--login USER --password-file FILE`` when it asks for logins, as ``warm``) and
prints the same picture as rich tables. ``--json`` prints the API document as is.
``--watch`` redraws every ``--interval`` seconds (at least 1) until Ctrl-C (exit
0) or ``--count`` refreshes. Names are never shortened: with output piped, rows
grow as wide as they need (no ellipsis), so ``grep`` finds whole image names.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
from pathlib import Path
from typing import Any

import click
import urllib3
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..bench.refs import RefError, base_url
from ..clientconfig.registries_yaml import Login
from ..units import format_size
from .clientconfig import login_from, login_options
from .common import console, json_option
from .main import CliError

PIPE_WIDTH = 400  # a pipe has no width: tables may be this wide before rich would cut


class StatsClient:
    def __init__(self, url: str, ca_file: Path | None, login: Login | None) -> None:
        self.url = url
        context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
        self._pool = urllib3.PoolManager(
            retries=False, timeout=urllib3.Timeout(connect=5.0, read=15.0), ssl_context=context
        )
        self._headers = {"Accept": "application/json"}
        if login is not None:
            token = base64.b64encode(f"{login.username}:{login.password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    def stats(self) -> dict[str, Any]:
        try:
            response = self._pool.request("GET", self.url + "/api/v1/stats", headers=self._headers)
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise CliError(f"cannot reach the cache at {self.url}: {reason}") from None
        if response.status == 401:
            raise CliError(
                f"{self.url} asks for a login: use --login USER --password-file FILE"
                if "Authorization" not in self._headers
                else f"{self.url} refused the login"
            )
        if response.status == 404:
            if b'"DASHBOARD_OFF"' in response.data:
                raise CliError(f"{self.url} runs with its dashboard off (dashboard: false)")
            raise CliError(f"{self.url} has no /api/v1/stats: is it a registry-cache?")
        if response.status != 200:
            raise CliError(f"{self.url}/api/v1/stats answered HTTP {response.status}")
        try:
            doc: dict[str, Any] = json.loads(response.data)
        except ValueError:
            raise CliError(f"{self.url}/api/v1/stats did not answer JSON") from None
        return doc


def _pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def _size(num: int | None) -> str:
    return "-" if num is None else format_size(num)


def _ago(at: float | None, now: float) -> str:
    if at is None:
        return "never"
    seconds = max(0.0, now - at)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.0f}h ago"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", box=None, pad_edge=False, expand=False)
    for column in columns:
        # no_wrap + overflow "ignore": a long name widens its row instead of being cut.
        table.add_column(column, no_wrap=True, overflow="ignore")
    return table


def render(doc: dict[str, Any]) -> Group:
    now = doc["generated_at"]
    node = doc["node"]
    parts: list[Any] = [
        Text(
            f"registry-cache {node['version']} on {node['name']}: "
            f"{node['workers_reporting']} of {node['workers']} worker(s) reporting"
        )
    ]
    summary = _table(
        "Traffic", "WINDOW", "REQUESTS", "HIT RATIO", "FROM CACHE", "FROM UPSTREAM",
        "REQUESTS SAVED", "PULLS", "ERRORS", "STALE",
    )  # fmt: skip
    for name in ("hour", "day"):
        w = doc["summary"][name]
        summary.add_row(
            "last hour" if name == "hour" else "last 24 h",
            str(w["requests"]), _pct(w["hit_ratio"]), _size(w["bytes_from_cache"]),
            _size(w["bytes_from_upstream"]), str(w["upstream_requests_saved"]), str(w["pulls"]),
            str(w["errors"]), str(w["stale_serves"]),
        )  # fmt: skip
    parts.append(summary)
    upstreams = _table(
        "Upstreams", "UPSTREAM", "STATE", "LAST SUCCESS", "LAST ERROR", "RATELIMIT", "STALE 1H/24H"
    )
    for u in doc["upstreams"]:
        err = u["last_error"]
        upstreams.add_row(
            u["name"],
            {"ok": "[green]reachable[/]", "unknown": "no traffic yet"}.get(
                u["state"], f"[red]{escape(u['state'])}[/]"
            ),
            _ago(u["last_ok_at"], now),
            escape(f"{err['message'] or err['kind']} ({_ago(err['at'], now)})") if err else "-",
            "-" if u["ratelimit_remaining"] is None else str(u["ratelimit_remaining"]),
            f"{u['stale_serves']['hour']}/{u['stale_serves']['day']}",
        )
    parts.append(upstreams)
    fills = _table("Fills in flight", "REPOSITORY", "DIGEST", "PROGRESS", "RATE", "FOLLOWERS")
    for f in doc["fills"]:
        where = f"{f['upstream']}/{f['repository']}" if f["upstream"] else "(another worker)"
        rate = f["rate_bytes_per_second"]
        fills.add_row(
            escape(where),
            f["digest"],
            f"{_size(f['written'])} / {_size(f['size'])} ({f['percent'] or 0:.0f}%)",
            f"{_size(rate)}/s" if rate is not None else "-",
            str(f["followers"]),
        )
    parts.append(fills if doc["fills"] else Text("Fills in flight: none"))
    d = doc["disk"]
    cap = (
        f" of {_size(d['cap_bytes'])} ({_pct(d['used_ratio'])}, {d['cap_source']})"
        if d["cap_bytes"]
        else " (no cap)"
    )
    ev = d["evictions"]
    parts.append(
        Text(
            f"Disk: {_size(d['used_bytes'])} cached{cap}; "
            f"{_size(d['filesystem_free_bytes'])} free; evictions {ev['hour']} in 1 h, "
            f"{ev['day']} in 24 h"
        )
    )
    replicas = [r for r in doc["replicas"] if r.get("url")]
    if replicas:
        table = _table("Replicas", "REPLICA", "STATE", "HEARTBEAT", "OBJECTS", "LOCAL TIER", "CAP")
        for r in replicas:
            tier = r.get("local_tier") or {}
            table.add_row(
                escape(r["url"]) + (" (this one)" if r.get("self") else ""),
                "[green]up[/]" if r.get("alive") else "[red]gone[/]",
                f"{r.get('seen_seconds_ago', 0):.0f} s ago",
                str(tier.get("objects")),
                _size(tier.get("bytes")),
                _size(tier.get("cap")) if tier.get("cap") else "none",
            )
        parts.append(table)
    shared = doc.get("shared_tier")
    if shared:
        state = "reachable" if shared["reachable"] else f"unreachable ({shared['error']})"
        cap = _size(shared["cap"]) if shared["cap"] else "none"
        parts.append(
            Text(
                f"Shared tier {shared['url']}: {_size(shared['bytes'])} in"
                f" {shared['objects']} objects, cap {cap}; {state}"
            )
        )
    top = _table("Top images (24 h)", "IMAGE", "PULLS", "BYTES")
    for t in doc["top_images"]["by_pulls"]:
        top.add_row(escape(t["image"]), str(t["pulls"]), _size(t["bytes"]))
    parts.append(top if doc["top_images"]["by_pulls"] else Text("Top images: no pulls yet"))
    errors = doc["recent"]["errors"][:5]
    if errors:
        table = _table("Recent errors", "WHEN", "REQUEST", "STATUS", "MESSAGE")
        for e in errors:
            ref = f":{e['reference']}" if e["reference"] else ""
            table.add_row(
                _ago(e["at"], now),
                escape(f"{e['method']} {e['upstream'] or '-'}/{e['repository'] or '-'}{ref}"),
                str(e["status"]),
                escape(e["message"] or e["error"] or ""),
            )
        parts.append(table)
    return Group(*parts)


@click.command()
@click.option("--cache", "cache_url", metavar="URL", required=True, help="The running cache.")
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Trust this CA for an https --cache (a private or self-signed certificate).",
)
@login_options("Log in to --cache as this user (a cache started with --htpasswd).")
@json_option("Print the API document (/api/v1/stats) as JSON.")
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(1.0, 3600.0),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes with --watch (at least 1).",
)
@click.option(
    "--count", type=click.IntRange(1), default=None, help="With --watch: stop after N refreshes."
)
def status(  # noqa: PLR0917 - one parameter per click option
    cache_url: str,
    ca_file: Path | None,
    as_json: bool,
    watch: bool,
    interval: float,
    count: int | None,
    **params: Any,
) -> None:
    """Show a running cache's dashboard: traffic, upstreams, fills, disk, top images."""
    try:
        url = base_url(cache_url)
    except RefError as exc:
        raise click.BadParameter(str(exc), param_hint="--cache") from None
    if ca_file is not None and not url.startswith("https://"):
        raise click.UsageError("--ca-file is for an https:// --cache")
    client = StatsClient(url, ca_file, login_from(params))
    out = console()
    if not out.is_terminal:
        out = Console(soft_wrap=True, highlight=False, width=PIPE_WIDTH)
    shown = 0
    try:
        while True:
            doc = client.stats()
            if as_json:
                click.echo(json.dumps(doc, indent=2))
            else:
                if watch and out.is_terminal:
                    out.clear()
                out.print(render(doc))
            shown += 1
            if not watch or (count is not None and shown >= count):
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return  # Ctrl-C ends --watch: not an error
