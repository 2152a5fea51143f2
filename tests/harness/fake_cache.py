"""A stand-in for ``registry_cache serve`` that the harness self-check drives.

Run as ``python fake_cache.py serve --listen HOST:PORT [--fail] ...``: answers every
GET with 200 ``{}`` and ``Docker-Distribution-API-Version``, logs each request to
stdout, exits 0 on SIGTERM. ``--fail`` prints a message and exits 3 at once;
``--ignore-term`` ignores SIGTERM (to test the SIGKILL fallback). Other flags are
accepted and ignored.
"""

from __future__ import annotations

import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import FrameType


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print("fake-cache:", format % args, flush=True)


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "serve":
        print("usage: fake_cache.py serve --listen HOST:PORT", flush=True)
        return 2
    if "--fail" in argv:
        print("fake-cache: failing on purpose", flush=True)
        return 3
    host, _, port = argv[argv.index("--listen") + 1].rpartition(":")
    server = HTTPServer((host, int(port)), Handler)

    def on_term(signum: int, frame: FrameType | None) -> None:
        print("fake-cache: SIGTERM", flush=True)
        raise SystemExit(0)

    if "--ignore-term" in argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, on_term)
    print(f"fake-cache: listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
