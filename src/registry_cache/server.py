"""Process model: bind once, then serve in this process or in N forked workers.

The listening sockets are bound by the parent before forking so an address in use
fails at once with a clear message; each worker accepts on its own SO_REUSEPORT
socket, so the kernel balances connections between them.
Workers share nothing but the data directory: the SQLite index (WAL) and the
``flock``-keyed fills make that safe. SIGTERM (sent by ``kill <pid>``, systemd,
docker stop): stop accepting, let in-flight responses finish within the grace
period, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time

from . import metrics
from .config import Settings
from .errors import IndexUnavailable
from .index import open_index
from .store.blobs import FileBlobStore
from .store.layout import Layout
from .store.maintenance import clean_leftovers
from .tls import server_context

log = logging.getLogger("registry_cache.server")

# File descriptors a worker needs besides client connections: the index, blobs
# being sent or filled, upstream connections (a pool of 32 per upstream), pipes.
FD_RESERVE = 256


class ServeError(Exception):
    """Cannot start (address in use, data directory not writable)."""


def bind(settings: Settings, count: int = 1) -> list[socket.socket]:
    """``count`` listening sockets on the configured address (SO_REUSEPORT when > 1).

    One socket per worker lets the kernel spread connections evenly: with a single
    shared socket one worker sometimes accepted every keep-alive connection of a
    load test (measured: 3 runs in 30) while the other idled.
    """
    host, port = settings.host, settings.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if count > 1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            for other in socks:
                other.close()
            raise ServeError(f"cannot listen on {settings.listen}: {exc.strerror}") from None
        port = sock.getsockname()[1]  # port 0: the others join the port the first got
        sock.listen(1024)
        sock.setblocking(False)
        socks.append(sock)
    return socks


def prepare_data_dir(settings: Settings) -> None:
    """Create the layout and schema, and tidy partials left by a crash (before forking)."""
    layout = Layout(settings.data_dir)
    try:
        layout.create()
        asyncio.run(_create_index(settings))
    except OSError as exc:
        raise ServeError(f"data directory {settings.data_dir}: {exc.strerror or exc}") from None
    except IndexUnavailable as exc:
        raise ServeError(str(exc)) from None
    # Leftovers of a crash: temp files and partials older than an hour go; younger
    # partials stay to be resumed by the next request for their blob.
    removed, _ = clean_leftovers(layout, FileBlobStore(layout), time.time(), grace=3600.0)
    if removed:
        log.info("removed %d stale temporary/partial file(s)", len(removed))


async def _create_index(settings: Settings) -> None:
    """Create or migrate the index's schema once, before any worker opens it. A
    PostgreSQL index unreachable now is not fatal: replicas serve without it."""
    index = await open_index(settings, wait=not settings.clustered)
    await index.close()


async def run_worker(settings: Settings, sock: socket.socket) -> None:
    # Imported here, in the worker: the supervising parent never needs aiohttp and
    # the whole app, and stays small (it is counted in the RSS of a prefork server).
    from aiohttp import web

    from .web.app import build_app
    from .web.connections import BoundedSite

    app = build_app(settings)
    # aiohttp waits shutdown_timeout for handlers to finish, then as long again for
    # the ones it asked to stop (a streaming response just goes on): half each
    # keeps the whole shutdown within the grace, all of it usable by a download.
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_grace / 2,
        # Bounds slow and idle clients: see web/connections.py.
        keepalive_timeout=settings.client_header_timeout,
    )
    await runner.setup()
    site = BoundedSite(
        runner,
        sock,
        max_connections=settings.max_connections,
        header_timeout=settings.client_header_timeout,
        ssl_context=server_context(settings),
    )
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("listening on %s://%s (pid %d)", settings.scheme, settings.listen, os.getpid())
    await stop.wait()
    log.info("shutting down: finishing in-flight requests (up to %.0fs)", settings.shutdown_grace)
    await runner.cleanup()


def raise_open_files_limit(settings: Settings) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit, for this process and its workers.

    Every client connection is a file descriptor; a soft limit of 1024 (a common
    default) would have the kernel refuse connections (and asyncio stop accepting
    for a second at a time) long before ``max_connections``. Returns the limit now.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit is not settable as such: the kernel's usual nr_open.
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
    needed = settings.max_connections + FD_RESERVE
    if soft < needed:
        log.warning(
            "open-files limit %d is below max_connections %d plus %d for files and upstreams:"
            " clients may be refused early (raise the hard limit, e.g. ulimit -Hn)",
            soft, settings.max_connections, FD_RESERVE,
        )  # fmt: skip
    return soft


def serve(settings: Settings) -> int:
    raise_open_files_limit(settings)
    prepare_data_dir(settings)
    socks = bind(settings, settings.workers)
    log.info(
        "registry-cache: upstreams %s; default %s; domain %s; data %s",
        ", ".join(f"{n}={u.url}" for n, u in settings.upstreams.items()),
        settings.default_upstream or "none",
        settings.domain or "none",
        settings.data_dir,
    )
    if settings.workers == 1:
        asyncio.run(run_worker(settings, socks[0]))
        _abandon_stuck_threads()
        return 0
    # Before forking: every worker's counters go to files /metrics sums up.
    metrics.enable_multiprocess(Layout(settings.data_dir).metrics)
    return _prefork(settings, socks)


def _abandon_stuck_threads(wait: float = 0.5) -> None:
    """Exit now if a thread is still blocked in an upstream call after the grace period.

    Python joins thread-pool threads at exit, so one waiting for a hanging upstream
    (up to its timeouts) would hold the process well past ``shutdown_grace``. Its
    request was already given up on; the pool's idle threads end by themselves.
    """
    deadline = time.monotonic() + wait
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.current_thread()
    ):
        log.warning("exiting with upstream requests still pending")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _prefork(settings: Settings, socks: list[socket.socket]) -> int:
    children: dict[int, int] = {}
    stopping = False

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            for other in socks[:slot] + socks[slot + 1 :]:
                other.close()  # each worker accepts on its own socket only
            code = 0
            try:
                asyncio.run(run_worker(settings, socks[slot]))
            except BaseException:
                log.exception("worker crashed")
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = slot

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        # Our copies of the listening sockets would keep the port open (connections
        # queued but never served) after every worker closed its own: close them, so
        # new clients are refused at once and go elsewhere.
        for sock in socks:
            sock.close()
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for slot in range(settings.workers):
        spawn(slot)
    failures = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        slot = children.pop(pid, -1)
        if slot < 0 or stopping:
            continue
        failures += 1
        log.error("worker %d exited (status %d); restarting", pid, status)
        if failures > 10 * settings.workers:
            log.error("workers keep dying; giving up")
            forward(signal.SIGTERM, None)
            continue
        time.sleep(0.5)
        spawn(slot)
    for sock in socks:
        sock.close()
    sys.stdout.flush()
    return 0
