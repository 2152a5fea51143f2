"""Get client configuration from the code under test, the way an operator would.

Contract:
- ``config_cli(cache, command, *args)`` runs ``python -m registry_cache COMMAND
  --listen HOST:PORT <the cache's serve flags> *args`` (same interpreter, same
  ``PYTHONPATH`` and clean environment as ``CacheServer``, in the cache's empty
  working directory) and returns stdout; a non-zero exit raises ``AssertionError``
  with the output. ``serve``-only flags (``--data-dir``, ``--log-level``) are not
  passed.
- ``fetch_config(cache, path, host=None)`` GETs ``path`` (e.g. ``/registries.conf``)
  from the running cache, optionally with another ``Host`` header, and returns
  the body (``AssertionError`` unless 200).
"""

from __future__ import annotations

import subprocess
import urllib.request

from .cache import CacheServer


def config_cli(cache: CacheServer, command: str, *args: str, timeout: float = 60.0) -> str:
    argv = [*cache.command, command, "--listen", cache.host_port, *cache.args, *args]
    cache.cwd.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        argv,
        env=cache.env(),
        cwd=cache.cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout


def fetch_config(cache: CacheServer, path: str, host: str | None = None) -> str:
    request = urllib.request.Request(f"{cache.url}{path}")
    if host is not None:
        request.add_header("Host", host)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as resp:
        status = int(resp.status)
        body: bytes = resp.read()
    if status != 200:
        raise AssertionError(f"GET {path} answered {status}: {body[:500]!r}")
    return body.decode()
