"""The image's HEALTHCHECK probe: where it asks, and what it says when the answer is bad
(run against real caches in tests/integration/test_health.py and test_image.py)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from registry_cache.healthcheck import main, readyz_url


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, "http://127.0.0.1:5000/readyz"),
        ({"REGISTRY_CACHE_LISTEN": ""}, "http://127.0.0.1:5000/readyz"),
        ({"REGISTRY_CACHE_LISTEN": "0.0.0.0:8080"}, "http://127.0.0.1:8080/readyz"),
        ({"REGISTRY_CACHE_LISTEN": ":5001"}, "http://127.0.0.1:5001/readyz"),
        ({"REGISTRY_CACHE_LISTEN": "[::]:5002"}, "http://127.0.0.1:5002/readyz"),
        ({"REGISTRY_CACHE_LISTEN": "127.0.0.2:5003"}, "http://127.0.0.2:5003/readyz"),
        ({"REGISTRY_CACHE_LISTEN": "[::1]:5004"}, "http://[::1]:5004/readyz"),
        ({"REGISTRY_CACHE_TLS_CERT": "/etc/tls/cert.pem"}, "https://127.0.0.1:5000/readyz"),
    ],
)
def test_readyz_url_follows_the_servers_environment(env: dict[str, str], url: str) -> None:
    assert readyz_url(env) == url


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = b'{"status": "not ready", "checks": {"data_dir": "read-only"}}'
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.HTTPServer]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_exit_status_and_one_line_reason(
    server: http.server.HTTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"REGISTRY_CACHE_LISTEN": f"127.0.0.1:{server.server_address[1]}"}
    _Handler.status = 200
    assert main([], env) == 0
    assert capsys.readouterr().err == ""
    _Handler.status = 503
    try:
        assert main([], env) == 1
    finally:
        _Handler.status = 200
    err = capsys.readouterr().err
    assert err.startswith(f"not ready: {readyz_url(env)}: 503 ")
    assert "read-only" in err and err.count("\n") == 1


def test_nothing_listening_is_one_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    with http.server.HTTPServer(("127.0.0.1", 0), _Handler) as closed:
        port = closed.server_address[1]  # bound, then closed below: refused
    assert main([f"http://127.0.0.1:{port}/readyz"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("not ready: http://127.0.0.1:") and err.count("\n") == 1
    assert "Traceback" not in err
