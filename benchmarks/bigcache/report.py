"""The results as tables (``results.md``) and as data (``results.json``).

One column per data set (size x index), one row per figure, and the goals at 1M
objects checked against the 1M columns (a hit p99 against the 10k column of the
same index).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .probe import ALL

MB = 1e6
GOAL_STARTUP_S = 5.0
GOAL_PASS_S = 30.0
GOAL_P99_DURING_MS = 50.0
GOAL_LS_DU_S = 10.0
GOAL_RSS = 150 * MB
GOAL_P99_RATIO = 2.0
GOAL_BESIDE_P99_MS = 10.0  # hits while a maintenance command runs beside serve
# Maintenance commands run beside ``serve`` (run.py ``BESIDE``), in the tables' order.
BESIDE = ("gc --dry-run", "gc", "prune", "verify")
CLI = ("ls --json", "ls", "du --json", "gc --dry-run", "verify")
BESIDE_ONLY = tuple(c for c in BESIDE if c not in CLI)  # run only beside serve: gc, prune
LS_DU = ("ls --json", "ls", "du --json")
INDEX_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}

Row = dict[str, Any]


def _get(doc: Row, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def _num(value: Any, fmt: str = "{:.2f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return fmt.format(value)


def _mb(value: Any) -> str:
    return "—" if not value else f"{value / MB:.0f} MB"


def _cli(result: Row, label: str) -> str:
    return _run(_get(result, "cli", label))


def _run(run: Row | None) -> str:
    """A command's wall time and peak RSS (``processes.Measured``)."""
    if not run:
        return "—"
    if run["returncode"] is None:
        verdict = f"killed at {run['wall']:.0f} s"
    elif run["returncode"] != 0:
        verdict = f"exit {run['returncode']}, {run['wall']:.1f} s"
    else:
        verdict = f"{run['wall']:.1f} s"
    return f"{verdict}, {run['peak_rss'] / MB:.0f} MB"


def _hit(result: Row, kind: str) -> str:
    hit = _get(result, "hits", kind)
    if not hit:
        return "—"
    bad = sum(n for s, n in hit["statuses"].items() if s != "200")
    tail = f" ({bad} not 200)" if bad else ""
    return f"{hit['p50_ms']:.2f} / {hit['p99_ms']:.2f}{tail}"


def _kinds(probe: Row) -> list[Row]:
    """A probe's figures per kind that has any (not the ``all`` of a mixed probe)."""
    return [v for k, v in probe.items() if k != ALL and v.get("count")]


def _during(result: Row) -> str:
    probe = _get(result, "eviction", "probe") or {}
    values = _kinds(probe)
    if not values:
        return "—"
    worst = max(v["p99_ms"] for v in values)
    count = sum(v["count"] for v in values)
    bad = sum(n for v in values for s, n in v["statuses"].items() if s != "200")
    tail = f", {bad} not 200" if bad else ""
    return f"{worst:.1f} ({count} requests{tail})"


def _beside(result: Row, command: str) -> str:
    step = _get(result, "beside", command)
    if not step:
        return "—"
    hits = _get(step, "probe", ALL)
    run = step.get("run") or {}
    if run.get("returncode") != 0:
        code = run.get("returncode")
        return "killed at its time limit" if code is None else f"exit {code}"
    if not hits or not hits.get("count"):
        return f"no requests (in {run['wall']:.1f} s)"
    bad = sum(n for s, n in hits["statuses"].items() if s != "200")
    tail = f", {bad} not 200" if bad else ""
    return (
        f"{hits['p50_ms']:.2f} / {hits['p99_ms']:.2f} / {hits['max_ms']:.1f}"
        f" ({hits['count']} requests{tail}; {run['wall']:.1f} s)"
    )


def _beside_run_cell(command: str) -> Callable[[Row], str]:
    return lambda r: _run(_get(r, "beside", command, "run"))


def _beside_cell(command: str) -> Callable[[Row], str]:
    return lambda r: _beside(r, command)


def _pass(result: Row) -> str:
    ev = result.get("eviction") or {}
    if "duration_s" not in ev:
        return "—"
    if not ev.get("finished"):
        return f"not done in {ev['duration_s']:.0f} s"
    return f"{ev['duration_s']:.1f} s, {ev['objects']:,} objects"


def _sigterm(result: Row) -> str:
    st = result.get("sigterm") or {}
    if "grace_s" not in st:
        return "—"
    if st.get("exit_s") is None:
        return f"still running after {st['grace_s'] + 10:.0f} s"
    running = "" if st.get("pass_running") else " (pass already over)"
    return f"{st['exit_s']:.2f} s (grace {st['grace_s']:g} s){running}"


def _counts(r: Row) -> str:
    built = r["built"]
    return f"{built['tags']:,} / {built['links']:,} / {built['manifests']:,}"


def _serve_rss(r: Row) -> str:
    return (
        f"{_mb(_get(r, 'serve', 'rss_after_startup'))} / {_mb(_get(r, 'serve', 'rss_after_hits'))}"
    )


def _field(*path: str, fmt: str = "{:.2f}") -> Callable[[Row], str]:
    return lambda r: _num(_get(r, *path), fmt)


def _cli_cell(command: str) -> Callable[[Row], str]:
    return lambda r: _cli(r, command)


ROWS: list[tuple[str, str, Callable[[Row], str]]] = [
    ("index rows / files", "", lambda r: f"{r['built']['objects']:,} / {r['built']['files']:,}"),
    ("tags / links / manifests", "", _counts),
    ("build", "", _field("built", "seconds", fmt="{:.0f} s")),
    ("index on disk", "", lambda r: _mb(r.get("index_bytes"))),
    ("data set on disk (volume)", "", lambda r: _mb(r.get("disk_bytes"))),
    ("serve start-up", "≤ 5 s", _field("serve", "startup_s", fmt="{:.2f} s")),
    ("serve RSS after start-up / after hits", "≤ 150 MB", _serve_rss),
    ("manifest by tag p50 / p99 (ms)", "p99 ≤ 2x 10k", lambda r: _hit(r, "tag")),
    ("blob HEAD p50 / p99 (ms)", "p99 ≤ 2x 10k", lambda r: _hit(r, "head")),
    ("small blob GET p50 / p99 (ms)", "p99 ≤ 2x 10k", lambda r: _hit(r, "get")),
    ("CPU per hit", "", _field("hits", "cpu_per_request_ms", fmt="{:.2f} ms")),
    ("eviction pass (cap 90 %)", "≤ 30 s", _pass),
    ("eviction pass CPU", "", _field("eviction", "cpu_s", fmt="{:.1f} s")),
    ("hit p99 during the pass (ms)", "≤ 50 ms", _during),
    ("access-time flushes failed", "0", _field("eviction", "access_time_failures", fmt="{}")),
    ("serve peak RSS (pass)", "≤ 150 MB", lambda r: _mb(_get(r, "eviction", "rss_peak"))),
    ("SIGTERM during a pass: exit after", "≤ grace", _sigterm),
    *((f"`cache {c}`: wall, peak RSS", "≤ 10 s" if c in LS_DU else "", _cli_cell(c)) for c in CLI),
    *((f"`cache {c}` beside serve: wall, peak RSS", "", _beside_run_cell(c)) for c in BESIDE_ONLY),
    *(
        (f"hits beside `cache {c}`: p50 / p99 / max (ms)", "p99 ≤ 10 ms", _beside_cell(c))
        for c in BESIDE
    ),
]


def table(results: Sequence[Row]) -> str:
    head = ["figure", "goal (1M)"] + [f"{r['size']} {r.get('src', '')}".strip() for r in results]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, goal, cell in ROWS:
        cells = []
        for result in results:
            try:
                cells.append(cell(result))
            except (KeyError, TypeError):
                cells.append("—")
        lines.append("| " + " | ".join([name, goal, *cells]) + " |")
    return "\n".join(lines)


def goals(results: Sequence[Row]) -> list[str]:
    """One line per goal at 1M (per index): pass or FAIL with the figure."""
    out: list[str] = []
    for result in results:
        if result["size"] != "1M":
            continue
        base = next(
            (
                r
                for r in results
                if r["size"] == "10k"
                and r["index"] == result["index"]
                and r.get("src") == result.get("src")
            ),
            None,
        )
        name = (
            f"{INDEX_NAMES.get(result['index'], result['index'])} {result.get('src', '')}".strip()
        )
        checks: list[tuple[str, bool | None, str]] = []
        startup = _get(result, "serve", "startup_s")
        checks.append(
            (
                "start-up ≤ 5 s",
                None if startup is None else startup <= GOAL_STARTUP_S,
                _num(startup, "{:.2f} s"),
            )
        )
        for kind, label in (
            ("tag", "manifest by tag"),
            ("head", "blob HEAD"),
            ("get", "small blob GET"),
        ):
            mine, ref = (
                _get(result, "hits", kind, "p99_ms"),
                _get(base or {}, "hits", kind, "p99_ms"),
            )
            ok = None if mine is None or ref is None else mine <= GOAL_P99_RATIO * ref
            ratio = f"{mine / ref:.2f}x" if mine and ref else "—"
            checks.append(
                (f"{label} p99 ≤ 2x 10k", ok, f"{_num(mine)} ms vs {_num(ref)} ms: {ratio}")
            )
        ev = result.get("eviction") or {}
        duration = ev.get("duration_s")
        finished = bool(ev.get("finished"))
        checks.append(
            (
                "eviction pass ≤ 30 s",
                None if duration is None else finished and duration <= GOAL_PASS_S,
                _pass(result),
            )
        )
        probe = ev.get("probe") or {}
        worst = max((v["p99_ms"] for v in _kinds(probe)), default=None)
        checks.append(
            (
                "hit p99 ≤ 50 ms during the pass",
                None if worst is None else worst <= GOAL_P99_DURING_MS,
                _during(result),
            )
        )
        for label in ("ls --json", "ls", "du --json"):
            run = _get(result, "cli", label)
            ok = None if not run else run["returncode"] == 0 and run["wall"] <= GOAL_LS_DU_S
            checks.append((f"cache {label} ≤ 10 s", ok, _cli(result, label)))
        rss = {
            "serve after start-up": _get(result, "serve", "rss_after_startup"),
            "serve during the pass": ev.get("rss_peak"),
            **{f"cache {c}": _get(result, "cli", c, "peak_rss") for c in CLI},
            **{f"cache {c}": _get(result, "beside", c, "run", "peak_rss") for c in BESIDE_ONLY},
        }
        for label, value in rss.items():
            checks.append(
                (f"RSS ≤ 150 MB: {label}", None if not value else value <= GOAL_RSS, _mb(value))
            )
        for command in BESIDE:
            hits = _get(result, "beside", command, "probe", ALL)
            p99 = hits.get("p99_ms") if hits else None
            ok = None if p99 is None else p99 <= GOAL_BESIDE_P99_MS
            checks.append((f"hit p99 ≤ 10 ms beside cache {command}", ok, _beside(result, command)))
        st = result.get("sigterm") or {}
        checks.append(
            (
                "SIGTERM within --shutdown-grace during a pass",
                st.get("within_grace"),
                _sigterm(result),
            )
        )
        for label, ok, figure in checks:
            verdict = "n/a" if ok is None else ("pass" if ok else "**FAIL**")
            out.append(f"| {name} | {label} | {figure} | {verdict} |")
    if not out:
        return []
    return ["| index | goal at 1M | measured | result |", "|---|---|---|---|", *out]


def write(out: Path, results: Sequence[Row], header: Sequence[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"header": list(header), "results": list(results)}, indent=2)
    )
    parts = ["# Big caches", "", *header, ""]
    for kind in dict.fromkeys(r["index"] for r in results):
        measured = [r for r in results if r["index"] == kind and "built" in r]
        if measured:
            parts += [f"## {INDEX_NAMES.get(kind, kind)} index", "", table(measured), ""]
    checked = goals(results)
    if checked:
        parts += ["## Goals at 1M objects", "", *checked, ""]
    notes = [n for r in results for n in r.get("notes", [])]
    if notes:
        parts += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    (out / "results.md").write_text("\n".join(parts))
