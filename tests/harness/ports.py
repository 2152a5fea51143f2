"""Free loopback ports and waiting for HTTP servers.

Contract: ``free_port()`` returns a TCP port on 127.0.0.1 that was bindable a moment
ago and that this process has not handed out before. Ports are drawn below the
Linux ephemeral range (32768+) so outgoing connections cannot grab them between
the probe and the server's own bind. A caller that loses the race sees its server
fail with "address already in use" and should retry with a new port.
"""

from __future__ import annotations

import functools
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

# One implementation for the tests and the benchmark suite (same range, same rules).
from benchmarks.servers import LOOPBACK, free_port

__all__ = ["LOOPBACK", "free_port", "http_status", "port_is_open", "wait_http"]


def port_is_open(port: int, host: str = LOOPBACK) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


PROBE_USER_AGENT = "registry-cache-harness-probe"

_opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({}),  # never use a proxy from the environment
    _NoRedirect(),
)
_opener.addheaders = [("User-Agent", PROBE_USER_AGENT)]


@functools.cache
def _tls_opener(ca_file: str) -> urllib.request.OpenerDirector:
    context = ssl.create_default_context(cafile=ca_file)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), _NoRedirect(), urllib.request.HTTPSHandler(context=context)
    )
    opener.addheaders = [("User-Agent", PROBE_USER_AGENT)]
    return opener


def http_status(url: str, timeout: float = 2.0, *, ca_file: Path | None = None) -> int | None:
    """The HTTP status ``GET url`` answers (4xx/5xx included), None if no HTTP answer.

    Sent with ``User-Agent: registry-cache-harness-probe`` so access logs can skip it.
    ``ca_file``: trust this CA for an https URL.
    """
    opener = _opener if ca_file is None else _tls_opener(str(ca_file))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_http(
    url: str,
    timeout: float = 10.0,
    *,
    expect: int | None = None,
    proc: subprocess.Popen[bytes] | None = None,
    interval: float = 0.05,
) -> int:
    """Poll ``GET url`` until it answers; return the status.

    Any HTTP answer counts unless ``expect`` names the status to wait for. If ``proc``
    is given and exits first, raise ``RuntimeError`` at once. On timeout raise
    ``TimeoutError`` naming the last status seen.
    """
    deadline = time.monotonic() + timeout
    last: int | None = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process {proc.pid} exited with {proc.returncode} before {url} answered"
            )
        last = http_status(url, timeout=min(2.0, max(0.1, deadline - time.monotonic())))
        if last is not None and (expect is None or last == expect):
            return last
        if time.monotonic() >= deadline:
            wanted = "any answer" if expect is None else f"status {expect}"
            raise TimeoutError(f"{url} gave no {wanted} within {timeout}s (last: {last})")
        time.sleep(interval)
