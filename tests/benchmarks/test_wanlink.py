"""The shaped link (native/wanlink.c) in a private network namespace: delay, rate, kill.

Each test runs a small probe as ``unshare -n python -c PROBE``: routes 127.0.0.2
through the forwarder, listens there, and measures from 127.0.0.1. The namespace
dies with the probe; the host's own namespace is never changed (route_far refuses).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from benchmarks import wan
from benchmarks.netns import NetnsError, netns_id, route_far

PROBE = textwrap.dedent(
    """
    import json, socket, sys, threading, time
    from pathlib import Path
    from benchmarks.native import build
    from benchmarks.netns import FAR, Link, Profile, route_far
    outer, work, mode = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    route_far(outer)
    link = Link(build("wanlink", work), work / "wanlink.log", Profile("t", 40.0, 100.0)).start()
    server = socket.create_server((FAR, 0))
    port = server.getsockname()[1]
    size = 4 << 20
    def serve():
        while True:
            conn, _ = server.accept()
            with conn:
                conn.recv(16)
                try:
                    conn.sendall(bytes(size))
                except OSError:
                    pass
    threading.Thread(target=serve, daemon=True).start()
    out = {}
    started = time.monotonic()
    client = socket.create_connection((FAR, port), timeout=10)
    out["connect_ms"] = (time.monotonic() - started) * 1e3
    if mode == "kill":
        link.kill(size // 2)
        client.settimeout(2)
    client.sendall(b"go")
    got, started = 0, time.monotonic()
    try:
        while got < size:
            chunk = client.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
    except TimeoutError:
        pass
    out["seconds"] = time.monotonic() - started
    out["bytes"] = got
    if mode == "kill":  # a new connection still passes
        again = socket.create_connection((FAR, port), timeout=10)
        again.sendall(b"go")
        out["after_kill"] = len(again.recv(65536))
    out["stats"] = link.command("stats")
    link.stop()
    print(json.dumps(out))
    """
)


def _probe(tmp_path: Path, mode: str) -> dict[str, Any]:
    why = wan.unavailable(tmp_path)
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    argv = ["unshare", "--net", "--", sys.executable, "-c", PROBE]
    argv += [str(netns_id()), str(tmp_path), mode]
    done = subprocess.run(
        argv, capture_output=True, text=True, env=wan.child_env(), timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_delay_and_rate(tmp_path: Path) -> None:
    got = _probe(tmp_path, "plain")
    connect, seconds = float(got["connect_ms"]), float(got["seconds"])
    assert 38 <= connect < 200  # one 40 ms round trip
    assert got["bytes"] == 4 << 20
    # 4 MiB at 100 Mbit/s is >= 0.34 s on the wire, plus slow start's round trips.
    assert 0.3 <= seconds < 10


def test_kill_drops_that_connection_only(tmp_path: Path) -> None:
    got = _probe(tmp_path, "kill")
    assert int(got["bytes"]) < 4 << 20
    assert int(got["after_kill"]) > 0
    killed = int(str(got["stats"]).split()[6])
    assert killed == 1


def test_routes_are_never_changed_in_the_suites_own_namespace() -> None:
    with pytest.raises(NetnsError, match="refusing"):
        route_far(netns_id())
