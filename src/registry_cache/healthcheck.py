"""The container image's HEALTHCHECK: ``python -m registry_cache.healthcheck``.

It asks the server in the same container for ``/readyz`` and exits 0 when that
answers 200, else 1 with one line on stderr (Docker keeps it in
``State.Health.Log``). Where to ask comes from the environment the server got:
the port of ``REGISTRY_CACHE_LISTEN`` (default 5000; a wildcard host is asked on
127.0.0.1), and HTTPS when ``REGISTRY_CACHE_TLS_CERT`` is set (the certificate is
not checked: the probe talks to its own container, often by an address the
certificate does not name).

Only the standard library: slim images have no curl, and a probe that runs every
few seconds should not import the server's dependencies.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

DEFAULT_LISTEN = "0.0.0.0:5000"
TIMEOUT = 4.0  # under the image's --timeout=5s, so the message is ours, not Docker's
_WILDCARDS = {"", "0.0.0.0", "::"}


def readyz_url(env: Mapping[str, str]) -> str:
    """The ``/readyz`` URL of the server configured by ``env``."""
    listen = (env.get("REGISTRY_CACHE_LISTEN") or DEFAULT_LISTEN).strip()
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in _WILDCARDS:
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if env.get("REGISTRY_CACHE_TLS_CERT") else "http"
    return f"{scheme}://{host}:{port}/readyz"


def probe(url: str, timeout: float = TIMEOUT) -> str | None:
    """None when ``url`` answers 200, else why not (one line)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            status: int = resp.status
    except urllib.error.HTTPError as exc:  # 503: a failing check, named in the body
        body = " ".join(exc.read(500).decode("utf-8", "replace").split())
        return f"{url}: {exc.code} {body}".strip()
    except (OSError, ValueError) as exc:
        return f"{url}: {exc}"
    return None if status == 200 else f"{url}: {status}"


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    url = args[0] if args else readyz_url(os.environ if env is None else env)
    problem = probe(url)
    if problem is None:
        return 0
    print(f"not ready: {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
