"""The dashboard's numbers: this worker's live recorder + every worker's flushed history.

``StatsService.flush()`` runs on the access-time beat (every 5 s, ``web.app``) and
before every answer, so the worker answering sees its own requests up to the
moment; the other workers' are at most one beat (5 s) plus their flush time
late. Fills in flight are this worker's live ``FillCoordinator.progress()`` plus
what the others reported at their last flush, with their bytes read from the
growing partial files (so those move live too).

The documents are the ``/api/v1`` JSON bodies (see ``web.api``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .. import __version__
from ..digest import Digest
from ..errors import IndexUnavailable, RegistryError
from ..proxy.context import ProxyContext
from ..store.progress import FillProgress
from .history import FillRow, StatsDB
from .metricdeltas import MetricDeltas
from .recorder import COUNTERS, Recorder

log = logging.getLogger("registry_cache.stats")

LIVE = 15.0  # a worker (or its fill) not heard of for this long is not counted as live
TOP = 10
RECENT = 20
RANGES: dict[str, tuple[str, int, int]] = {
    # name: (table, step seconds, points)
    "hour": ("minutes", 60, 60),
    "day": ("minutes", 900, 96),
    "month": ("hours", 3600, 720),
}
_I = {name: i for i, name in enumerate(COUNTERS)}
UNREACHABLE = {"UNAVAILABLE", "stale", "timeout", "unreachable"}
STATES = {
    "TOOMANYREQUESTS": "rate-limited",
    "ratelimited": "rate-limited",
    "UNAUTHORIZED": "denied",
    "DENIED": "denied",
    "denied": "denied",
}


def without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def ratelimit_value(raw: str | None) -> int | None:
    """``"76;w=21600"`` → 76."""
    if raw is None:
        return None
    head = raw.split(";", 1)[0].strip()
    return int(head) if head.isdigit() else None


def window(counts: list[int]) -> dict[str, Any]:
    """The summary of one window's counters (see ``recorder`` for the definitions)."""
    c = dict(zip(COUNTERS, counts, strict=True))
    content = c["hits"] + c["misses"]
    return {
        "requests": c["requests"],
        "hits": c["hits"],
        "misses": c["misses"],
        "hit_ratio": round(c["hits"] / content, 4) if content else None,
        "bytes_served": c["bytes_served"],
        "bytes_from_cache": c["bytes_cache"],
        "bytes_from_upstream": c["bytes_upstream"],
        "upstream_bytes_saved": c["bytes_cache"],
        "upstream_requests_saved": c["saved"],
        "pulls": c["pulls"],
        "errors": c["errors"],
        "stale_serves": c["stale"],
        "upstream_errors": c["upstream_errors"],
        "evictions": c["evictions"],
        "evicted_bytes": c["evicted_bytes"],
    }


def _sum(rows: dict[str, list[int]]) -> list[int]:
    total = [0] * len(COUNTERS)
    for counts in rows.values():
        for i, v in enumerate(counts):
            total[i] += v
    return total


class StatsService:
    def __init__(
        self,
        ctx: ProxyContext,
        recorder: Recorder,
        db: StatsDB,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ctx = ctx
        self.recorder = recorder
        self.db = db
        self._clock = clock
        self._deltas = MetricDeltas()
        self._lock = asyncio.Lock()
        self._pid = os.getpid()
        self._started_at = clock()
        self._ratelimits: dict[str, str] = {}  # last value written, per upstream
        self._failing = False

    # ------------------------------------------------------------ flushing

    def own_fills(self) -> list[FillProgress]:
        """This worker's fills in flight, with who started them and when."""
        live = self.ctx.fills.progress()
        origins = self.recorder.origins
        self.recorder.forget_origins({f.digest for f in live})
        out = []
        for fill in live:
            origin = origins.get(fill.digest)
            if origin is not None:
                fill = dataclasses.replace(  # noqa: PLW2901 - completed in place
                    fill,
                    upstream=origin.upstream,
                    repository=origin.repository,
                    started_at=origin.started_at,
                )
            out.append(fill)
        return out

    def _collect(self) -> dict[str, Any]:
        """What this worker has to hand over now (on the loop thread)."""
        deltas, kinds = self._deltas.read()
        for upstream, columns in deltas.items():
            self.recorder.add_counts(upstream, columns)
        for upstream, kind in kinds.items():
            if not self.recorder.heard_of(upstream):
                # Failures no request saw (a fill's retries after its client left).
                message = f"upstream request failed ({kind})"
                self.recorder.upstream_error(upstream, kind, message)
        ratelimits = {}
        for name, client in self.ctx.clients.items():
            value = client.ratelimit_remaining
            if value is not None and self._ratelimits.get(name) != value:
                ratelimits[name] = value
        return {
            "pending": self.recorder.take(),
            "pid": self._pid,
            "started_at": self._started_at,
            "now": self._clock(),
            "ratelimits": ratelimits,
            "fills": self.own_fills(),
        }

    def _written(self, args: dict[str, Any], error: Exception | None) -> None:
        if error is not None:  # stats must never disturb serving
            if not self._failing:
                log.warning("could not write the dashboard's stats: %s", error)
            self._failing = True
            return
        self._failing = False
        self._ratelimits.update(args["ratelimits"])

    async def flush(self) -> None:
        """Hand this worker's deltas to the shared file (off the loop); never raises."""
        async with self._lock:
            args = self._collect()
            pending = args.pop("pending")
            try:
                await self.ctx.call(self.db.apply, pending, **args)
            except Exception as exc:
                self._written(args, exc)
                return
            self._written(args, None)

    def flush_now(self) -> None:
        """The last flush at shutdown, on the loop thread (no await: it must not give
        the loop a turn between the fills' end and the index closing)."""
        args = self._collect()
        pending = args.pop("pending")
        try:
            self.db.apply(pending, **args)
        except Exception as exc:
            self._written(args, exc)
            return
        self._written(args, None)

    # ------------------------------------------------------------ documents

    async def stats(self) -> dict[str, Any]:
        await self.flush()
        now = self._clock()
        doc = await self.ctx.call(self._stats_sync, now)
        disk = await self._disk(doc["summary"])
        doc["disk"] = disk
        doc["replicas"][0]["disk"] = disk
        doc["fills"] = self._fills_sync(now, await self.ctx.call(self.db.fills))
        doc["replicas"][0]["fills_in_flight"] = len(doc["fills"])
        await self._cluster(doc)
        return doc

    async def _cluster(self, doc: dict[str, Any]) -> None:
        """Cluster mode: every replica with its local tier; with a bucket: the shared tier."""
        directory = self.ctx.directory
        if directory is not None:
            try:
                replicas = await directory.replicas()
            except IndexUnavailable:
                replicas = []  # this node only, as without a cluster
            rows = []
            for replica in replicas:
                mine = replica.url == directory.me
                row: dict[str, Any] = {
                    "name": replica.info.get("host") or replica.url,
                    "url": replica.url,
                    "self": mine,
                    "alive": replica.alive,
                    "seen_seconds_ago": round(replica.seen_ago, 1),
                    "version": replica.info.get("version"),
                    "local_tier": {
                        "objects": replica.objects,
                        "bytes": replica.bytes,
                        "cap": replica.info.get("max_size"),
                    },
                }
                if mine:
                    row |= {k: v for k, v in doc["replicas"][0].items() if k not in row}
                rows.append(row)
            if rows:
                doc["replicas"] = rows
        shared = self.ctx.shared
        if shared is not None:
            objects: int | None = None
            used: int | None = None
            try:
                objects, used = await self.ctx.index.index.shared_totals()
            except IndexUnavailable:
                pass  # unknown while the index is unreachable
            health = shared.health()
            doc["shared_tier"] = {
                "url": shared.name,
                "objects": objects,
                "bytes": used,
                "cap": self.ctx.settings.shared_max_size,
                "reachable": health.ok,
                "error": health.error,
                "down_since": health.since,
            }

    def _stats_sync(self, now: float) -> dict[str, Any]:
        db = self.db
        hour, day = db.totals(now - 3600), db.totals(now - 86400)
        states = db.upstreams()
        settings = self.ctx.settings
        upstreams = []
        for name, cfg in settings.upstreams.items():
            row = states.get(name)
            upstreams.append(
                self._upstream_doc(
                    name=name,
                    url=without_userinfo(cfg.url),
                    row=row,
                    hour=hour.get(name),
                    day=day.get(name),
                )
            )
        workers = [w for w in db.workers() if now - w[2] <= LIVE]
        others = [now - w[2] for w in workers if w[0] != self._pid]
        node = {
            "name": socket.gethostname(),
            "version": __version__,
            "pid": self._pid,
            "workers": settings.workers,
            "workers_reporting": len(workers),
            # How old the other workers' numbers may be (their flush beat).
            "others_age_seconds": round(max(others), 1) if others else None,
        }
        return {
            "api": 1,
            "generated_at": now,
            "node": node,
            # Cluster mode will list every replica here and describe the shared tier;
            # a single node lists itself.
            "replicas": [{"name": node["name"], "self": True, "url": None, "workers": node}],
            "shared_tier": None,
            "summary": {"hour": window(_sum(hour)), "day": window(_sum(day))},
            "upstreams": upstreams,
            "top_images": {
                "window": "day",
                "by_pulls": [_top(r) for r in db.top(now - 86400 - 3600, "pulls", TOP)],
                "by_bytes": [_top(r) for r in db.top(now - 86400 - 3600, "bytes", TOP)],
            },
            "recent": {
                "pulls": [_event(e) for e in db.events("pull", RECENT)],
                "errors": [_event(e) for e in db.events("error", RECENT)],
            },
        }

    def _upstream_doc(
        self,
        *,
        name: str,
        url: str,
        row: Any,
        hour: list[int] | None,
        day: list[int] | None,
    ) -> dict[str, Any]:
        ok_at = row.ok_at if row else None
        error_at = row.error_at if row else None
        if ok_at is None and error_at is None:
            state, reachable = "unknown", None
        elif error_at is not None and (ok_at is None or error_at > ok_at):
            kind = row.error_kind or ""
            state = STATES.get(kind, "unreachable" if kind in UNREACHABLE else "failing")
            reachable = state not in ("unreachable",)
        else:
            state, reachable = "ok", True
        raw = row.ratelimit if row else None
        h = hour or [0] * len(COUNTERS)
        d = day or [0] * len(COUNTERS)
        return {
            "name": name,
            "url": url,
            "state": state,
            "reachable": reachable,
            "last_ok_at": ok_at,
            "last_error": (
                {"at": error_at, "kind": row.error_kind, "message": row.error}
                if row is not None and error_at is not None
                else None
            ),
            "ratelimit_remaining": ratelimit_value(raw),
            "ratelimit_raw": raw,
            "ratelimit_at": row.ratelimit_at if row else None,
            "stale_serves": {"hour": h[_I["stale"]], "day": d[_I["stale"]]},
            "hour": window(h),
            "day": window(d),
        }

    async def _disk(self, summary: dict[str, Any]) -> dict[str, Any]:
        settings = self.ctx.settings
        try:
            used: int | None = await self.ctx.index.index.total_size()
        except Exception:  # the index unreachable: shown as unknown
            used = None
        try:
            st = os.statvfs(settings.data_dir)
            fs_size: int | None = st.f_blocks * st.f_frsize
            fs_free: int | None = st.f_bavail * st.f_frsize
        except OSError:
            fs_size = fs_free = None
        caps: list[tuple[int, str]] = []
        if settings.max_size:
            caps.append((settings.max_size, "max_size"))
        if settings.max_disk_percent and fs_size:
            caps.append((int(fs_size * settings.max_disk_percent / 100), "max_disk_percent"))
        cap = min(caps) if caps else None
        return {
            "used_bytes": used,
            "cap_bytes": cap[0] if cap else None,
            "cap_source": cap[1] if cap else None,
            "used_ratio": round(used / cap[0], 4) if cap and used is not None and cap[0] else None,
            "filesystem_bytes": fs_size,
            "filesystem_free_bytes": fs_free,
            "max_age_seconds": settings.max_age,
            "evictions": {
                "hour": summary["hour"]["evictions"],
                "day": summary["day"]["evictions"],
                "hour_bytes": summary["hour"]["evicted_bytes"],
                "day_bytes": summary["day"]["evicted_bytes"],
            },
        }

    async def fills(self) -> dict[str, Any]:
        now = self._clock()
        others = await self.ctx.call(self.db.fills)
        return {"generated_at": now, "fills": self._fills_sync(now, others)}

    def _fills_sync(self, now: float, others: list[FillRow]) -> list[dict[str, Any]]:
        out = [_fill(f, now, "this worker") for f in self.own_fills()]
        seen = {f["digest"] for f in out}
        for row in others:
            fill = row.progress
            if row.pid == self._pid or fill.digest in seen or now - row.updated_at > LIVE:
                continue
            written = self._partial_size(fill.digest)
            if written is None:
                continue  # finished (committed or failed) since that worker's flush
            seen.add(fill.digest)
            out.append(_fill(dataclasses.replace(fill, written=written), now, f"pid {row.pid}"))
        out.sort(key=lambda f: f["started_at"] or 0.0)
        return out

    def _partial_size(self, digest: str) -> int | None:
        try:
            return self.ctx.fills.partial_size(Digest.parse(digest))
        except RegistryError:
            return None

    async def history(self, name: str, *, flush: bool = True) -> dict[str, Any]:
        table, step, points = RANGES[name]
        if flush:
            await self.flush()
        now = self._clock()
        end = int(now // step) * step
        start = end - (points - 1) * step
        rows = await self.ctx.call(self.db.series, table, start)
        buckets: dict[int, list[int]] = {}
        for t, counts in rows.items():
            b = buckets.setdefault(t - (t - start) % step, [0] * len(COUNTERS))
            for i, v in enumerate(counts):
                b[i] += v
        series = []
        for t in range(start, end + 1, step):
            c = buckets.get(t, [0] * len(COUNTERS))
            content = c[_I["hits"]] + c[_I["misses"]]
            series.append(
                {
                    "t": t,
                    "requests": c[_I["requests"]],
                    "hits": c[_I["hits"]],
                    "misses": c[_I["misses"]],
                    "hit_ratio": round(c[_I["hits"]] / content, 4) if content else None,
                    "bytes_from_cache": c[_I["bytes_cache"]],
                    "bytes_from_upstream": c[_I["bytes_upstream"]],
                    "bytes_served": c[_I["bytes_served"]],
                    "errors": c[_I["errors"]],
                }
            )
        return {"range": name, "step": step, "start": start, "end": end + step, "points": series}


def _top(row: tuple[str, str, int, int]) -> dict[str, Any]:
    upstream, repository, pulls, nbytes = row
    return {
        "image": f"{upstream}/{repository}",
        "upstream": upstream,
        "repository": repository,
        "pulls": pulls,
        "bytes": nbytes,
    }


def _event(e: Any) -> dict[str, Any]:
    doc = {
        "at": e.at,
        "method": e.method,
        "upstream": e.upstream or None,
        "repository": e.repository or None,
        "reference": e.reference or None,
        "status": e.status,
        "cache": e.cache or None,
        "bytes": e.bytes,
        "duration_ms": e.duration_ms,
    }
    if e.kind == "error":
        doc["error"] = e.error or None
        doc["message"] = e.message or None
    return doc


def _fill(f: FillProgress, now: float, where: str) -> dict[str, Any]:
    elapsed = max(0.0, now - f.started_at) if f.started_at is not None else None
    return {
        "digest": f.digest,
        "upstream": f.upstream,
        "repository": f.repository,
        "size": f.size,
        "written": f.written,
        "percent": round(100 * f.written / f.size, 1) if f.size else None,
        "rate_bytes_per_second": round(f.written / elapsed) if elapsed and elapsed > 0.05 else None,
        "started_at": f.started_at,
        "elapsed_seconds": round(elapsed, 1) if elapsed is not None else None,
        "followers": f.followers,
        "worker": where,
    }
