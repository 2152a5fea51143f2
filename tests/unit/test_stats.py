"""The stats recorder's definitions, the shared history file, and the page renderer."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from registry_cache.stats.history import MINUTES_KEPT, StatsDB
from registry_cache.stats.recorder import COUNTERS, KEYS_AT, PULLS, Recorder
from registry_cache.stats.service import ratelimit_value, window, without_userinfo
from registry_cache.store.progress import FillProgress
from registry_cache.web.dashboard_html import chart, fills_part, recent_part

T0 = 1_800_000_000.0  # a minute boundary
HEX = "a" * 64


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def answer(rec: Recorder, path: str, status: int = 200, method: str = "GET", **fields: Any) -> None:
    rec.answered(method=method, path=path, status=status, fields=fields, duration=0.001)


def hub(kind: str, ref: str, cache: str | None, nbytes: int = 0) -> dict[str, Any]:
    fields = {"upstream": "docker.io", "repo": "library/alpine", "ref": ref, "bytes": nbytes}
    if cache is not None:
        fields["cache"] = cache
    return {"path": f"/v2/library/alpine/{kind}/{ref}", **fields}


def apply(db: StatsDB, rec: Recorder, now: float, pid: int = 1, **kw: Any) -> None:
    db.apply(
        rec.take(),
        pid=pid,
        started_at=T0,
        now=now,
        ratelimits=kw.get("ratelimits", {}),
        fills=kw.get("fills", []),
    )


def totals(db: StatsDB, since: float = 0) -> dict[str, int]:
    summed = [0] * len(COUNTERS)
    for counts in db.totals(since).values():
        summed = [a + b for a, b in zip(summed, counts, strict=True)]
    return dict(zip(COUNTERS, summed, strict=True))


def test_hits_misses_saved_and_pulls_follow_the_definitions(tmp_path: Path) -> None:
    clock = Clock()
    rec = Recorder(clock=clock, ticks=clock)
    answer(rec, **hub("manifests", "3.19", "MISS", 500))  # a pull, from upstream
    answer(rec, **hub("manifests", "3.19", "HIT", 500))  # a pull, from the cache
    answer(rec, **hub("manifests", "sha256:" + HEX, "HIT", 400))  # by digest: not a pull
    answer(rec, **hub("blobs", "sha256:" + HEX, "COALESCED", 1000))
    answer(rec, **hub("blobs", "sha256:" + HEX, "STALE", 7))
    answer(rec, **hub("blobs", "sha256:" + HEX, "REVALIDATED", 0), method="HEAD")
    answer(rec, **hub("blobs", "sha256:" + HEX, "UPSTREAM", 0), method="HEAD")
    rec.answered(  # the challenge before a login: not an error
        method="GET", path="/v2/", status=401, fields={}, duration=0, challenge=True
    )
    rec.answered(
        method="GET", path="/v2/", status=401, fields={"error": "UNAUTHORIZED"}, duration=0
    )  # a refused login is
    answer(rec, **hub("manifests", "nope", None), status=404)
    db = StatsDB(tmp_path / "stats.sqlite3")
    apply(db, rec, T0)
    got = totals(db)
    assert got["requests"] == 10
    assert (got["hits"], got["misses"], got["saved"], got["stale"]) == (5, 2, 3, 1)
    assert (got["pulls"], got["errors"]) == (2, 2)
    assert got["bytes_cache"] == 500 + 400 + 1000 + 7
    assert got["bytes_served"] == 500 + 500 + 400 + 1000 + 7
    assert db.top(0, "pulls", 5) == [("docker.io", "library/alpine", 2, 2407)]
    assert [e.reference for e in db.events("pull", 5)] == ["3.19", "3.19"]
    assert [e.status for e in db.events("error", 5)] == [404, 401]


def test_quiet_answers_are_counted_at_flush_in_the_minute_they_ended(tmp_path: Path) -> None:
    clock, ticks = Clock(), Clock(1000.0)  # the hot path's clock is not the wall clock
    rec = Recorder(clock=clock, ticks=ticks)
    for second in (10, 70, 71, 130):  # three minutes, one fold
        clock.now, ticks.now = T0 + second, 1000.0 + second
        answer(rec, **hub("manifests", "1", "HIT", 10))
    answer(rec, **hub("blobs", "sha256:" + HEX, "COALESCED", 5), method="HEAD")
    db = StatsDB(tmp_path / "stats.sqlite3")
    apply(db, rec, clock.now)
    minutes = db.series("minutes", 0)
    assert {t: c[0] for t, c in minutes.items()} == {int(T0): 1, int(T0) + 60: 2, int(T0) + 120: 2}
    got = totals(db)
    assert (got["hits"], got["saved"], got["pulls"], got["bytes_cache"]) == (5, 5, 4, 40)
    assert [e.at for e in db.events("pull", 5)] == [T0 + 130, T0 + 71, T0 + 70, T0 + 10]


def test_recent_pulls_keep_the_newest_whichever_way_they_were_counted(tmp_path: Path) -> None:
    clock = Clock()
    rec = Recorder(clock=clock, ticks=clock)
    for i in range(60):  # hits: counted at flush time
        clock.now = T0 + i
        answer(rec, **hub("manifests", f"hit{i}", "HIT", 1))
    clock.now = T0 + 60
    answer(rec, **hub("manifests", "miss", "MISS", 1))  # counted at once
    pending = rec.take()
    refs = [e.reference for e in pending.events]
    assert len(refs) == 50 and refs[-1] == "miss" and refs[0] == "hit11"
    assert sum(c[PULLS] for c in pending.minutes.values()) == 61


def test_many_different_answers_between_flushes_are_counted_early() -> None:
    clock = Clock()
    rec = Recorder(clock=clock, ticks=clock)
    for i in range(KEYS_AT * 2 + 1):  # every blob another: a key each
        answer(rec, **hub("blobs", f"sha256:{i:064x}", "HIT", 1))
    assert len(rec._tally) < KEYS_AT  # the bound is the behaviour
    assert sum(c[0] for c in rec.take().minutes.values()) == KEYS_AT * 2 + 1


def test_alike_hits_share_one_count_and_keep_their_repository_and_pulls() -> None:
    clock = Clock()
    rec = Recorder(clock=clock, ticks=clock)
    for i in range(1_000):  # the same two hits over and over, as a busy node sends them
        clock.now = T0 + i * 0.01
        answer(rec, **hub("manifests", "3.19", "HIT", 500))
        answer(rec, method="HEAD", **hub("blobs", f"sha256:{HEX}", "HIT", 0))
    assert len(rec._tally) == 2  # one number per alike answer, not a row per request
    pending = rec.take()
    counts = pending.minutes[(int(T0), "docker.io")]
    assert counts[0] == 2_000 and counts[PULLS] == 1_000
    assert pending.repos[(int(T0) - int(T0) % 3600, "docker.io", "library/alpine")] == [
        1_000,
        500_000,
    ]
    recent = pending.events
    assert len(recent) == 50 and {(e.repository, e.reference) for e in recent} == {
        ("library/alpine", "3.19")
    }
    assert recent[-1].at == T0 + 9.99  # the newest kept, with its own time


def test_two_workers_add_up_and_the_history_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "stats.sqlite3"
    clock = Clock()
    first, second = Recorder(clock=clock, ticks=clock), Recorder(clock=clock, ticks=clock)
    db1, db2 = StatsDB(path), StatsDB(path)
    for _ in range(3):
        answer(first, **hub("manifests", "1", "HIT", 10))
    answer(second, **hub("manifests", "1", "MISS", 10))
    apply(db1, first, T0, pid=1)
    apply(db2, second, T0, pid=2)
    clock.now = T0 + 90  # the next minute
    answer(second, **hub("manifests", "1", "HIT", 10))
    apply(db2, second, clock.now, pid=2)
    assert totals(db1)["requests"] == 5 and totals(db1)["hits"] == 4
    assert sorted(db1.series("minutes", 0)) == [int(T0), int(T0) + 60]
    assert db1.series("hours", 0)[int(T0 - T0 % 3600)][0] == 5
    assert {w[0] for w in db1.workers()} == {1, 2}
    db1.close()
    db2.close()
    again = StatsDB(path)
    assert totals(again)["requests"] == 5
    assert again.top(0, "pulls", 1)[0][2] == 5


def test_the_newest_upstream_event_wins_whoever_wrote_it(tmp_path: Path) -> None:
    path = tmp_path / "stats.sqlite3"
    clock = Clock()
    a, b = Recorder(clock=clock, ticks=clock), Recorder(clock=clock, ticks=clock)
    db = StatsDB(path)
    answer(a, **hub("manifests", "1", "MISS"))  # ok at T0
    clock.now = T0 + 5
    request = hub("manifests", "2", None)
    request["error"] = "UNAVAILABLE"
    request["message"] = "upstream docker.io unreachable (connection refused)"
    b.answered(method="GET", path=request.pop("path"), status=503, fields=request, duration=0.0)
    apply(db, b, T0 + 5, pid=2, ratelimits={"docker.io": "76;w=21600"})
    apply(db, a, T0 + 6, pid=1)  # flushed later, but its event is older
    row = db.upstreams()["docker.io"]
    assert (row.ok_at, row.error_at, row.error_kind) == (T0, T0 + 5, "UNAVAILABLE")
    assert row.error == "upstream docker.io unreachable (connection refused)"
    assert ratelimit_value(row.ratelimit) == 76


def test_retention_drops_old_minutes_but_keeps_hours(tmp_path: Path) -> None:
    clock = Clock()
    rec, db = Recorder(clock=clock, ticks=clock), StatsDB(tmp_path / "stats.sqlite3")
    answer(rec, **hub("manifests", "1", "HIT"))
    apply(db, rec, T0)
    later = T0 + MINUTES_KEPT + 3600
    apply(db, rec, later)  # pruning runs with the flush
    assert db.series("minutes", 0) == {}
    assert sum(c[0] for c in db.series("hours", 0).values()) == 1


def test_a_corrupt_or_foreign_file_starts_again(tmp_path: Path) -> None:
    path = tmp_path / "stats.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    StatsDB(path).close()
    assert (tmp_path / "stats.sqlite3.corrupt").exists()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    StatsDB(path).close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (1,)


def test_window_and_helpers() -> None:
    counts = dict.fromkeys(COUNTERS, 0) | {"hits": 3, "misses": 1, "bytes_cache": 9}
    summary = window([counts[c] for c in COUNTERS])
    assert summary["hit_ratio"] == 0.75 and summary["upstream_bytes_saved"] == 9
    assert window([0] * len(COUNTERS))["hit_ratio"] is None
    assert without_userinfo("https://user:pw@registry.example:5000/x") == (
        "https://registry.example:5000/x"
    )
    assert ratelimit_value("garbage") is None


def test_the_renderer_escapes_names_and_breaks_lines_at_gaps() -> None:
    evil = '<script>alert("x")</script>'
    page = recent_part(
        {
            "generated_at": T0,
            "recent": {
                "pulls": [
                    {
                        "at": T0, "upstream": "docker.io", "repository": evil, "reference": evil,
                        "cache": "HIT", "status": 200, "bytes": 1, "duration_ms": 1.0,
                    }
                ],
                "errors": [],
            },
        }
    )  # fmt: skip
    assert "<script>" not in page and "&lt;script&gt;alert(&quot;x&quot;)" in page
    fill = FillProgress("sha256:" + HEX, 100, 50, 2, "docker.io", evil, T0)
    rows = fills_part(
        [
            {
                "digest": fill.digest, "upstream": fill.upstream, "repository": fill.repository,
                "size": 100, "written": 50, "percent": 50.0, "rate_bytes_per_second": 10,
                "followers": 2, "worker": "this worker",
            }
        ]
    )  # fmt: skip
    assert "<script>" not in rows and 'value="50"' in rows
    points = [{"v": v} for v in (0.5, None, 0.25, 1.0)]
    svg = chart("t", points, [("v", "v", "s1")], ratio=True, ticks=("a", "b", "c"), chart_id="x")
    assert svg.count("<circle") == 1 and svg.count("<polyline") == 1  # a gap splits the line
    assert "latest 100.0%, lowest 25.0%" in svg


def test_dashboard_auth_follows_htpasswd_and_needs_it(tmp_path: Path) -> None:
    import pytest

    from registry_cache.config import build_settings
    from registry_cache.errors import ConfigError

    users = tmp_path / "htpasswd"
    users.write_text("")
    env: dict[str, str] = {}
    assert not build_settings(environ=env, dotenv=None).dashboard_login
    assert build_settings(environ=env, dotenv=None, flags={"htpasswd": users}).dashboard_login
    off = {"REGISTRY_CACHE_DASHBOARD_AUTH": "false", "REGISTRY_CACHE_HTPASSWD": str(users)}
    assert not build_settings(environ=off, dotenv=None).dashboard_login
    with pytest.raises(ConfigError, match="dashboard_auth: true needs htpasswd"):
        build_settings(environ={"REGISTRY_CACHE_DASHBOARD_AUTH": "true"}, dotenv=None)


def test_the_dashboard_can_be_turned_off_by_flag_env_or_file(tmp_path: Path) -> None:
    import pytest

    from registry_cache.config import ENV_SETTINGS, build_settings
    from registry_cache.errors import ConfigError

    assert "dashboard" in ENV_SETTINGS
    assert build_settings(environ={}, dotenv=None).dashboard is True
    assert not build_settings(environ={}, dotenv=None, flags={"dashboard": False}).dashboard
    env = {"REGISTRY_CACHE_DASHBOARD": "false"}
    assert not build_settings(environ=env, dotenv=None).dashboard
    config = tmp_path / "config.yaml"
    config.write_text("dashboard: false\n")
    assert not build_settings(config_file=config, environ={}, dotenv=None).dashboard
    flag = {"dashboard": True}
    assert build_settings(config_file=config, environ={}, dotenv=None, flags=flag).dashboard
    with pytest.raises(ConfigError, match="dashboard"):
        build_settings(environ={"REGISTRY_CACHE_DASHBOARD": "maybe"}, dotenv=None)
    users = tmp_path / "htpasswd"
    users.write_text("")
    both = {"REGISTRY_CACHE_DASHBOARD_AUTH": "true", "REGISTRY_CACHE_HTPASSWD": str(users)}
    with pytest.raises(ConfigError, match="dashboard_auth: true needs the dashboard"):
        build_settings(environ=both | env, dotenv=None)


def _luminance(hex_colour: str) -> float:
    if len(hex_colour) == 4:  # #abc
        hex_colour = "#" + "".join(c * 2 for c in hex_colour[1:])
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_the_dashboard_colours_keep_wcag_aa_contrast() -> None:
    import re
    from importlib import resources

    css = resources.files("registry_cache.web").joinpath("static", "dashboard.css").read_text()
    colours = dict(re.findall(r"--([a-z0-9]+): (#[0-9a-f]{6}|#[0-9a-f]{3});", css))
    for text in ("fg", "muted", "accent", "s1", "s2", "ok", "bad", "warn"):
        for background in ("bg", "panel"):
            lighter, darker = sorted(
                (_luminance(colours[text]), _luminance(colours[background])), reverse=True
            )
            ratio = (lighter + 0.05) / (darker + 0.05)
            assert ratio >= 4.5, f"--{text} on --{background}: {ratio:.2f}:1"
