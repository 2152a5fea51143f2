"""Whole bodies fetched over HTTP and hashed as they stream (blobs through a cache).

Contract:
- ``HTTP``: one pool for a test module's requests (no retries, no redirects followed
  by ``fetch_status``; 5 s to connect, 60 s a read: a cold fill may wait on upstream).
- ``fetch(url, headers=None)`` → ``(status, "sha256:<hex>", size)`` of the
  body, read in 1 MiB chunks (a 404's JSON body hashes too: compare the status first).
- ``fetch_status(url)``: the status of a GET without following a redirect; the body is
  drained, not read.
"""

from __future__ import annotations

import hashlib

import urllib3

MIB = 1 << 20
HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=60))


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, int]:
    response = HTTP.request("GET", url, headers=headers, preload_content=False)
    hasher, size = hashlib.sha256(), 0
    for chunk in response.stream(MIB):
        hasher.update(chunk)
        size += len(chunk)
    response.release_conn()
    return response.status, "sha256:" + hasher.hexdigest(), size


def fetch_status(url: str) -> int:
    response = HTTP.request("GET", url, redirect=False, preload_content=False)
    response.drain_conn()
    response.release_conn()
    return response.status
