"""The ``dashboard`` scenario: what the dashboard's counting costs every request.

Three fresh caches (new processes every repetition) over the same upstream, alike but
for ``--no-dashboard`` on the second (no ``Recorder.answered`` per request, no flush of
counters every 5 s, no history file); the third is the first again, so that the run shows what two
identical caches differ by on this machine. Manifest-by-tag load (wrk, 32
connections) against each in turn, in the order A B C C B A within a repetition
(rotated every repetition), so that drift in a shared machine falls on all alike.
Per contender: requests/s, p99, and the cache's CPU per request (its process's
utime + stime from /proc over the requests wrk counted). The ratios of "on" over
"off" are the cost; "on" over "on, again" is the noise floor.

Beside it, ``Recorder.answered`` alone, per call (warm hits: manifest by tag, blob
HEAD, blob GET; what it leaves for the flush included), timed in a child process that
imports the measured ``registry_cache``: the part of the difference that is the
counting itself, and its share of the CPU per request with the dashboard off. On two
shared cores the end-to-end ratio moves by a few percent between identical caches
(the "noise" figure), so a cost of 1 % shows only in that share; the ratios pooled
over every repetition are the end-to-end figure's steadiest form.

Last, the same two caches counted in instructions (``instructions``: callgrind, 3000
manifest GETs each): a figure that machine noise does not move, which resolves the
counting's cost to a tenth of a percent where CPU time cannot.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

from . import instructions
from .actions import ScenarioError
from .content import MANIFEST_ACCEPT
from .httpio import request
from .lab import Lab
from .measure import RssMonitor
from .results import ScenarioResult
from .scenarios import (
    CACHE,
    RSS,
    Plan,
    _check_manifest,
    _load,
    _manifest_url,
    repeat,
    rotated,
)
from .servers import Cache, product_env

ON = "dashboard on"
OFF = "dashboard off"
TWIN = "dashboard on, again"
OFF_FLAG = "--no-dashboard"
DASHBOARD_CPU = f"CPU per request, {ON} vs off"
NOISE_FLOOR = f"CPU per request, {ON} vs {TWIN} (noise)"
SHARE = f"Recorder.answered share of CPU per request, {ON}"
POOLED = f"{DASHBOARD_CPU}, every repetition pooled"
POOLED_NOISE = f"{NOISE_FLOOR}, every repetition pooled"
INSTRUCTIONS = f"instructions per request, {ON} vs off (callgrind)"
LOOP_INSTRUCTIONS = f"instructions per request, event-loop thread only, {ON} vs off (callgrind)"
COUNTED_REQUESTS = 3000  # ~40 s per cache under callgrind here; 300 with --quick
# Times Recorder.answered as access_log calls it (positionally, with the perf_counter it
# read) on warm hits: manifest by tag, blob HEAD, small blob GET in turn, the collector
# on; its flush-time counting (fold) included. Prints microseconds per call (best of 5).
ANSWERED_COST = """
import gc, inspect, timeit
from registry_cache.stats.recorder import Recorder
recorder = Recorder()
blob = "/v2/library/bench/blobs/sha256:" + "a" * 64
hits = [
    ("GET", "/v2/library/bench/manifests/v1", {"upstream": "docker.io", "repo": "library/bench",
     "ref": "v1", "cache": "HIT", "bytes": 1234}),
    ("HEAD", blob, {"upstream": "docker.io", "repo": "library/bench", "ref": blob[-71:],
     "cache": "HIT", "bytes": 0}),
    ("GET", blob, {"upstream": "docker.io", "repo": "library/bench", "ref": blob[-71:],
     "cache": "HIT", "bytes": 4096}),
]
call = recorder.answered
tail = (0.0002, False, 1.0)[: len(inspect.signature(call).parameters) - 4]  # older: no `at`
def three():
    for method, path, fields in hits:
        call(method, path, 200, fields, *tail)
number = 50_000
best = min(
    timeit.timeit(three, "gc.enable()", number=number, globals=globals())
    - timeit.timeit(lambda: None, "gc.enable()", number=number, globals=globals())
    for _ in range(5)
)
print(best / number / 3 * 1e6)
"""


@dataclass(slots=True)
class Tally:
    requests: int = 0
    seconds: float = 0.0
    cpu: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.requests * 1e6 if self.requests else 0.0


def dashboard(lab: Lab, plan: Plan) -> ScenarioResult:
    title = "Dashboard's cost per request: manifest by tag, 32 connections, counting on vs off"
    result = ScenarioResult("dashboard", title)
    reference = lab.content.image.tag
    kept: dict[int, dict[str, Tally]] = {}  # per repetition, its last attempt's

    def one(rep: int, out: ScenarioResult) -> None:
        # Three new processes every repetition: a process's own luck (its heap and hash
        # layout) is a few percent here, and shows in the noise figure, not as a cost.
        with (
            lab.fresh_cache() as on,
            lab.fresh_cache(extra=[OFF_FLAG]) as off,
            lab.fresh_cache() as twin,
        ):
            servers: dict[str, Cache] = {ON: on, OFF: off, TWIN: twin}
            urls = {who: _manifest_url(server, lab, reference) for who, server in servers.items()}
            for url in urls.values():
                _check_manifest(url, lab.content.image.digest)  # the tag is now in every cache
            _check_switch(on, off, twin)
            order = rotated(list(servers), rep)
            tallies = kept[rep] = {who: Tally() for who in order}
            p99s: dict[str, list[float]] = {who: [] for who in order}
            peak = 0.0
            for who in [*order, *reversed(order)]:
                with RssMonitor(servers[who].pid) as monitor:
                    run = _load(urls[who], plan, who)
                tally = tallies[who]
                tally.requests += run.requests
                tally.seconds += run.seconds
                tally.cpu += monitor.cpu_seconds
                p99s[who].append(run.p99_ms)
                peak = max(peak, monitor.peak_mb)
                result.note(f"load generator: {run.tool}")
        out.add(RSS, "MB", peak)
        for who, tally in tallies.items():
            out.add(f"{who} requests/s", "req/s", tally.rps)
            out.add(f"{who} CPU per request", "µs", tally.cpu_us)
            out.add(f"{who} p99", "ms", max(p99s[who]))
        out.add(f"requests/s, {ON} vs off", "x", tallies[ON].rps / tallies[OFF].rps)
        out.add(DASHBOARD_CPU, "x", tallies[ON].cpu_us / tallies[OFF].cpu_us)
        out.add(NOISE_FLOOR, "x", tallies[ON].cpu_us / tallies[TWIN].cpu_us)
        extra = tallies[ON].cpu_us - tallies[OFF].cpu_us
        out.add(f"extra CPU per request, {ON}", "µs", extra)
        answered = answered_cost()
        out.add("Recorder.answered per call", "µs", answered)
        out.add(SHARE, "%", answered / tallies[OFF].cpu_us * 100)

    repeat(plan, result, one)
    pooled = {who: _pooled([tallies[who] for tallies in kept.values()]) for who in (ON, OFF, TWIN)}
    result.add(POOLED, "x", pooled[ON].cpu_us / pooled[OFF].cpu_us)
    result.add(POOLED_NOISE, "x", pooled[ON].cpu_us / pooled[TWIN].cpu_us)
    _instructions(lab, plan, result, {who: pooled[who].rps for who in (ON, OFF)})
    result.note(
        f"{CACHE} three times, new processes every repetition: {ON}, {OFF} ({OFF_FLAG}) "
        f"and {TWIN} (the same as the first: what two identical caches differ by here); "
        "per repetition the load runs A B C C B A, "
        f"{plan.load_seconds:g} s each; CPU per request = the cache's CPU time / requests; "
        "the extra CPU per request is a difference of two measurements (may be < 0); "
        "pooled: CPU time over requests of every repetition together (one figure); "
        "Recorder.answered per call: warm manifest-by-tag GET, blob HEAD and blob GET in "
        "turn, its counting at flush time included, in a child process; its share is of "
        f"the CPU per request {OFF} (what the end-to-end ratio is too coarse to resolve)"
    )
    return result


def _instructions(lab: Lab, plan: Plan, result: ScenarioResult, rates: dict[str, float]) -> None:
    """The same comparison counted in instructions (``instructions``): once, as the count
    does not vary between repetitions; the other threads' per-second work is spread at
    the request rate each cache reached under wrk."""
    missing = instructions.missing_tools()
    if missing:
        result.note(f"instructions not counted: {', '.join(missing)} not installed (valgrind)")
        return
    n = COUNTED_REQUESTS // 10 if plan.quick else COUNTED_REQUESTS
    counted: dict[str, instructions.Counted] = {}
    for who, extra in ((ON, []), (OFF, [OFF_FLAG])):
        plan.progress(f"dashboard: counting instructions, {who}")
        with lab.directory("callgrind") as where:
            server = instructions.CallgrindCache(where, lab.upstream.url, extra=extra)
            with lab.running(server) as cache:
                url = _manifest_url(cache, lab, lab.content.image.tag)
                _check_manifest(url, lab.content.image.digest)
                counted[who] = instructions.count(cache, url, {"Accept": MANIFEST_ACCEPT}, n)
    for who, got in counted.items():
        result.add(
            f"{who} instructions per request, event-loop thread", "instr", got.loop_per_request
        )
        result.add(
            f"{who} instructions per second, other threads", "instr/s", got.others_per_second
        )
        result.add(f"{who} instructions per request", "instr", got.per_request(rates[who]))
    on, off = counted[ON], counted[OFF]
    result.add(INSTRUCTIONS, "x", on.per_request(rates[ON]) / off.per_request(rates[OFF]))
    result.add(LOOP_INSTRUCTIONS, "x", on.loop_per_request / off.loop_per_request)
    result.note(
        f"instructions: callgrind, {n} manifest GETs one after another on one connection "
        f"after {instructions.WARM_REQUESTS} uncounted, per cache; the event-loop thread per "
        "request (its per-second work, the 5 s flush, weighs ~100 times more per request "
        "under callgrind's slowness than at the real rate: an overestimate), the other "
        "threads (the flush's writes) "
        "per second, spread over the requests/s each cache reached under wrk"
    )


def _pooled(tallies: list[Tally]) -> Tally:
    return Tally(
        requests=sum(t.requests for t in tallies),
        seconds=sum(t.seconds for t in tallies),
        cpu=sum(t.cpu for t in tallies),
    )


def _check_switch(on: Cache, off: Cache, twin: Cache) -> None:
    """They differ as intended: the dashboard on two, 404 there on the other. The twin is
    asked too, so that the two "on" caches have seen the same requests."""
    for server, status in ((on, 200), (off, 404), (twin, 200)):
        got = request("GET", f"{server.url}/api/v1/stats").status
        if got != status:
            raise ScenarioError(f"{server.url}/api/v1/stats: HTTP {got}, expected {status}")


def answered_cost() -> float:
    """Microseconds per ``Recorder.answered`` call, in a child with the cache's imports."""
    done = subprocess.run(
        [sys.executable, "-c", ANSWERED_COST],
        capture_output=True,
        text=True,
        env=product_env(),
        timeout=120,
        check=False,
    )
    try:
        return float(done.stdout.strip())
    except ValueError:
        raise ScenarioError(f"timing Recorder.answered: {done.stderr.strip()[-300:]}") from None
